"""The built-in data sets by name (``fashion-mnist:val``), loaded offline."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from eeopt.data.fashion_mnist import SPLITS, load_fashion_mnist
from eeopt.errors import DataError

__all__ = ["DATASETS", "load_dataset"]

logger = logging.getLogger(__name__)

#: Data set name -> (loader taking a split name, the split names it accepts).
DATASETS: dict[str, tuple[Callable[[str], tuple[np.ndarray, np.ndarray]], tuple[str, ...]]] = {
    "fashion-mnist": (load_fashion_mnist, SPLITS),
}


def load_dataset(name_split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load ``"<name>:<split>"`` (e.g. ``"fashion-mnist:val"``) as read-only ``(inputs, labels)``.

    A bare name means its ``test`` split.
    """
    name, _, split = name_split.strip().partition(":")
    name = name.strip().lower()
    split = split.strip().lower() or "test"
    if name not in DATASETS:
        choices = ", ".join(f"{n}:{s}" for n, (_, splits) in DATASETS.items() for s in splits)
        raise DataError(f"unknown data set {name_split!r}: use one of {choices}")
    loader, splits = DATASETS[name]
    if split not in splits:
        raise DataError(
            f"unknown split {split!r} of data set {name!r}: use one of "
            + ", ".join(f"{name}:{s}" for s in splits)
        )
    logger.debug("loading data set %s split %s", name, split)
    return loader(split)
