"""The built-in data sets by name (``fashion-mnist:val``), loaded offline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from eeopt.data.fashion_mnist import SPLITS, load_fashion_mnist
from eeopt.data.tweets import SPLITS as TWEETS_SPLITS
from eeopt.data.tweets import load_tweets
from eeopt.errors import DataError

__all__ = ["DATASETS", "load_dataset"]

logger = logging.getLogger(__name__)

#: Data set name -> (loader taking a split name, the split names it accepts, the default
#: split). A loader returns ``(inputs, labels)``: inputs one array, or arrays by input name.
DATASETS: dict[str, tuple[Callable[[str], tuple[Any, np.ndarray]], tuple[str, ...], str]] = {
    "fashion-mnist": (load_fashion_mnist, SPLITS, "test"),
    "tweets": (load_tweets, TWEETS_SPLITS, "eval"),
}


def load_dataset(name_split: str) -> tuple[Any, np.ndarray]:
    """Load ``"<name>:<split>"`` (e.g. ``"fashion-mnist:val"``) as read-only ``(inputs, labels)``:
    inputs are one array (images), or arrays by input name (``tweets``: ``input_ids`` and
    ``attention_mask``). A bare name means its default split (``test``; ``eval`` for tweets).
    """
    name, _, split = name_split.strip().partition(":")
    name = name.strip().lower()
    split = split.strip().lower()
    if name not in DATASETS:
        choices = ", ".join(f"{n}:{s}" for n, (_, splits, _) in DATASETS.items() for s in splits)
        raise DataError(f"unknown data set {name_split!r}: use one of {choices}")
    loader, splits, default = DATASETS[name]
    split = split or default
    if split not in splits:
        raise DataError(
            f"unknown split {split!r} of data set {name!r}: use one of "
            + ", ".join(f"{name}:{s}" for s in splits)
        )
    logger.debug("loading data set %s split %s", name, split)
    return loader(split)
