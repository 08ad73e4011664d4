"""Labelled data for calibration and benchmarks: a built-in data set by name
(``fashion-mnist:val``) or an ``.npz`` with one array per model input plus ``y`` (int labels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eeopt.data.registry import load_dataset
from eeopt.errors import DataError
from eeopt.program import TensorSpec

__all__ = ["load_labelled"]


def load_labelled(spec: str, inputs: Sequence[TensorSpec]) -> tuple[dict[str, np.ndarray],
                                                                     np.ndarray]:
    """``(feeds, labels)`` from a built-in name or an ``.npz`` (arrays per input + ``y``)."""
    p = Path(spec)
    if p.suffix == ".npz":
        if not p.is_file():
            raise DataError(f"calibration file {p} does not exist")
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "y" not in arrays:
            raise DataError(f"{p} has no array 'y' with the labels; add one (int, [N])")
        labels = arrays.pop("y")
        missing = [s.name for s in inputs if s.name not in arrays]
        if missing:
            raise DataError(f"{p} has no array {missing[0]!r}; it needs one per model input "
                            f"({', '.join(s.name for s in inputs)}) plus 'y'")
        feeds = {s.name: arrays[s.name] for s in inputs}
    else:
        x, labels = load_dataset(spec)
        if isinstance(x, dict):  # several inputs, by name
            names = [s.name for s in inputs]
            if sorted(x) != sorted(names):
                raise DataError(f"built-in data set {spec!r} gives inputs {', '.join(x)}; the "
                                f"model's are {', '.join(names)}: name them so, or pass an .npz")
            feeds = {k: np.ascontiguousarray(x[k]) for k in names}
        elif len(inputs) != 1:
            raise DataError(f"built-in data set {spec!r} has one input; the model has "
                            f"{len(inputs)}: pass an .npz instead")
        else:
            feeds = {inputs[0].name: np.ascontiguousarray(x)}
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError("calibration labels 'y' must be a 1-D integer array")
    n = {v.shape[0] for v in feeds.values()} | {labels.shape[0]}
    if len(n) != 1:
        raise DataError(f"calibration arrays disagree on the number of rows: {sorted(n)}")
    return feeds, labels.astype(np.int64)
