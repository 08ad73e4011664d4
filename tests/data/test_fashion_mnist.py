"""The offline Fashion-MNIST loader: splits, dtypes, caching and the errors it raises."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from eeopt.data import CLASSES, load_dataset, load_fashion_mnist
from eeopt.data import fashion_mnist as fm
from eeopt.errors import DataError

#: the first labels of the calib and eval halves (CALIB_SEED 1): golden, like the other splits
CALIB_HEAD = [1, 6, 5, 5, 3, 1, 2, 4, 8, 0]
EVAL_HEAD = [9, 2, 1, 1, 4, 6, 7, 4, 7, 4]

needs_data = pytest.mark.skipif(
    not (fm.data_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


@needs_data
@pytest.mark.parametrize(("split", "size"), [("train", 55_000), ("val", 5_000), ("test", 10_000),
                                             ("calib", 5_000), ("eval", 5_000)])
def test_split_sizes_dtypes_and_ranges(split: str, size: int) -> None:
    images, labels = load_fashion_mnist(split)
    assert images.shape == (size, 1, 28, 28)
    assert labels.shape == (size,)
    assert images.dtype == np.float32
    assert labels.dtype == np.int64
    assert float(images.min()) == 0.0
    assert float(images.max()) == 1.0
    # pixel / 255, not normalized: the mean is Fashion-MNIST's ~0.286, not ~0.
    assert 0.27 < float(images.mean()) < 0.30
    assert set(np.unique(labels).tolist()) == set(range(len(CLASSES)))


@needs_data
def test_train_and_val_partition_the_official_training_set() -> None:
    train_idx, val_idx = fm.split_indices(60_000)
    assert len(train_idx) == 55_000
    assert len(val_idx) == 5_000
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(60_000))
    official_x, official_y = fm.load_official("train", str(fm.data_dir()))
    val_x, val_y = load_fashion_mnist("val")
    np.testing.assert_array_equal(val_x, official_x[val_idx])
    np.testing.assert_array_equal(val_y, official_y[val_idx])
    train_x, _ = load_fashion_mnist("train")
    np.testing.assert_array_equal(train_x[:100], official_x[train_idx[:100]])


@needs_data
def test_calib_and_eval_partition_the_official_test_set() -> None:
    calib_idx, eval_idx = fm.test_halves(10_000)
    assert len(calib_idx) == len(eval_idx) == 5_000
    np.testing.assert_array_equal(np.union1d(calib_idx, eval_idx), np.arange(10_000))
    test_x, test_y = load_fashion_mnist("test")
    for split, idx in (("calib", calib_idx), ("eval", eval_idx)):
        x, y = load_fashion_mnist(split)
        np.testing.assert_array_equal(x, test_x[idx])
        np.testing.assert_array_equal(y, test_y[idx])


@needs_data
def test_split_is_fixed() -> None:
    # Golden labels: changing the seed or the permutation breaks reproducibility of the weights.
    assert load_fashion_mnist("train")[1][:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 0]
    assert load_fashion_mnist("val")[1][:10].tolist() == [5, 4, 3, 5, 2, 0, 6, 3, 6, 1]
    assert load_fashion_mnist("test")[1][:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert load_fashion_mnist("calib")[1][:10].tolist() == CALIB_HEAD
    assert load_fashion_mnist("eval")[1][:10].tolist() == EVAL_HEAD


@needs_data
def test_cached_arrays_are_read_only() -> None:
    images, labels = load_fashion_mnist("val")
    assert load_fashion_mnist("val")[0] is images
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        labels[0] = 3


@needs_data
def test_load_dataset_parses_name_and_split() -> None:
    x, y = load_dataset("fashion-mnist:val")
    assert x is load_fashion_mnist("val")[0]
    assert y is load_fashion_mnist("val")[1]
    assert load_dataset("Fashion-MNIST")[0].shape == (10_000, 1, 28, 28)


def test_load_dataset_rejects_unknown_names() -> None:
    with pytest.raises(DataError, match="fashion-mnist:val"):
        load_dataset("mnist:val")
    with pytest.raises(DataError, match="fashion-mnist:train"):
        load_dataset("fashion-mnist:holdout")
    with pytest.raises(DataError, match="train, val, test"):
        load_fashion_mnist("validation")


def test_missing_directory_raises_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist("test")
    assert "\n" not in str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + payload)


def test_env_var_overrides_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(10_000, 28, 28), dtype=np.uint8)
    labels = np.arange(10_000, dtype=np.uint8) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (10_000, 28, 28), pixels.tobytes())
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (10_000,), labels.tobytes())
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    images, got_labels = load_fashion_mnist("test")
    np.testing.assert_array_equal(images[:, 0], pixels.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


@pytest.mark.parametrize(
    ("magic", "dims", "payload", "message"),
    [
        (0x801, (10_000, 28, 28), bytes(100), "magic"),
        (0x803, (10_000, 28, 28), bytes(100), "bytes of data"),
    ],
)
def test_corrupt_file_raises_data_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    magic: int,
    dims: tuple[int, ...],
    payload: bytes,
    message: str,
) -> None:
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", magic, dims, payload)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (10_000,), bytes(10_000))
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=message):
        load_fashion_mnist("test")


def test_not_gzip_raises_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"definitely not gzip")
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist("test")
