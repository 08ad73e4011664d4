"""Offline Fashion-MNIST loader reading the IDX files of the Debian package dataset-fashion-mnist.

Splits: ``train`` (55,000) and ``val`` (5,000) are a fixed, disjoint partition of the official
60,000 training images (``numpy.random.default_rng(0).permutation``); ``test`` is the
official 10,000. ``calib`` and ``eval`` (5,000 each) are disjoint halves of ``test``
(``numpy.random.default_rng(1).permutation``): deployment-like data for the planner to
calibrate on and for the benchmark to report on, apart from the data that trained and
selected the model (``train``, ``val``) and from each other.
Images are float32 ``[N, 1, 28, 28]`` holding ``pixel / 255`` (no normalization; models do that
themselves); labels are int64 ``[N]``. Decoded arrays are cached in-process and handed out
read-only.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
from pathlib import Path

import numpy as np

from eeopt.errors import DataError

__all__ = [
    "CALIB_SEED",
    "CLASSES",
    "DEFAULT_DIR",
    "ENV_VAR",
    "SPLITS",
    "SPLIT_SEED",
    "VAL_SIZE",
    "data_dir",
    "load_fashion_mnist",
    "load_official",
    "split_indices",
    "test_halves",
]

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "EEOPT_FASHION_MNIST_DIR"
SPLITS = ("train", "val", "test", "calib", "eval")
SPLIT_SEED = 0
VAL_SIZE = 5_000
#: the seed of the calib/eval halves of the official test split
CALIB_SEED = 1

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_INSTALL_HINT = (
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
)


def data_dir() -> Path:
    """The directory holding the IDX files: ``$EEOPT_FASHION_MNIST_DIR`` or the Debian default."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else DEFAULT_DIR


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Decode one gzip-compressed IDX file of unsigned bytes, checking magic number and size."""
    if not path.is_file():
        raise DataError(f"Fashion-MNIST file {path} not found: {_INSTALL_HINT} or set {ENV_VAR}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(
            f"Fashion-MNIST file {path} is not readable gzip ({exc}): reinstall it; {_INSTALL_HINT}"
        ) from exc
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"Fashion-MNIST file {path} is truncated: reinstall it; {_INSTALL_HINT}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"Fashion-MNIST file {path} has magic 0x{found:08x}, expected 0x{magic:08x}: "
            f"reinstall it; {_INSTALL_HINT}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header_len != expected:
        raise DataError(
            f"Fashion-MNIST file {path} holds {len(raw) - header_len} bytes of data, expected "
            f"{expected} for shape {dims}: reinstall it; {_INSTALL_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


@functools.lru_cache(maxsize=4)
def load_official(part: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one official part (``train`` or ``test``) into read-only float32/int64 arrays."""
    image_file, label_file, count = _FILES[part]
    root = Path(directory)
    raw_images = _read_idx(root / image_file, _IMAGE_MAGIC, 3)
    raw_labels = _read_idx(root / label_file, _LABEL_MAGIC, 1)
    if raw_images.shape != (count, 28, 28) or raw_labels.shape != (count,):
        raise DataError(
            f"Fashion-MNIST {part} files in {root} have shapes {raw_images.shape} and "
            f"{raw_labels.shape}, expected ({count}, 28, 28) and ({count},): {_INSTALL_HINT}"
        )
    if int(raw_labels.max()) >= len(CLASSES):
        raise DataError(
            f"Fashion-MNIST {part} labels in {root} exceed {len(CLASSES) - 1}: {_INSTALL_HINT}"
        )
    images = (raw_images.astype(np.float32) / np.float32(255.0)).reshape(count, 1, 28, 28)
    labels = raw_labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    logger.debug("decoded Fashion-MNIST %s from %s: %d images", part, root, count)
    return images, labels


@functools.lru_cache(maxsize=4)
def split_indices(total: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/val index partition of the official training set."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(total)
    train_idx = np.sort(perm[VAL_SIZE:])
    val_idx = np.sort(perm[:VAL_SIZE])
    train_idx.flags.writeable = False
    val_idx.flags.writeable = False
    return train_idx, val_idx


@functools.lru_cache(maxsize=4)
def test_halves(total: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed calib/eval index partition of the official test set (halves; sorted)."""
    perm = np.random.default_rng(CALIB_SEED).permutation(total)
    calib_idx = np.sort(perm[: total // 2])
    eval_idx = np.sort(perm[total // 2 :])
    calib_idx.flags.writeable = False
    eval_idx.flags.writeable = False
    return calib_idx, eval_idx


@functools.lru_cache(maxsize=8)
def _load_split(split: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
    if split == "test":
        return load_official("test", directory)
    if split in ("calib", "eval"):
        images, labels = load_official("test", directory)
        calib_idx, eval_idx = test_halves(len(labels))
        idx = calib_idx if split == "calib" else eval_idx
    else:
        images, labels = load_official("train", directory)
        train_idx, val_idx = split_indices(len(labels))
        idx = train_idx if split == "train" else val_idx
    sub_images, sub_labels = images[idx], labels[idx]
    sub_images.flags.writeable = False
    sub_labels.flags.writeable = False
    return sub_images, sub_labels


def load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST as ``(images, labels)``; both arrays are read-only.

    ``split`` is ``"train"`` (55,000), ``"val"`` (5,000), ``"test"`` (10,000), or one of its
    halves ``"calib"`` and ``"eval"`` (5,000 each: calibrate on one, report on the other).
    Images are float32 ``[N, 1, 28, 28]`` in ``[0, 1]``; labels are int64 ``[N]`` in ``0..9``.
    The directory is ``$EEOPT_FASHION_MNIST_DIR`` if set, else
    ``/usr/share/datasets/fashion-mnist``. Copy the arrays (``np.array(a)``) before writing to
    them.
    """
    if split not in SPLITS:
        raise DataError(f"unknown Fashion-MNIST split {split!r}: use one of {', '.join(SPLITS)}")
    return _load_split(split, str(data_dir()))
