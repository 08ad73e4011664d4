"""Sample inputs for a model's input specs: random arrays that fit them, or example rows tiled
to a batch size (what compile-time probing, profiling and verification feed a model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eeopt.errors import DataError, UnsupportedModelError, UsageError
from eeopt.program import TensorSpec

__all__ = ["example_feeds", "random_inputs", "tile_inputs"]


def _symbol_values(
    specs: Sequence[TensorSpec], example: Mapping[str, np.ndarray] | None
) -> dict[str, int]:
    values: dict[str, int] = {}
    if example:
        for s in specs:
            arr = example.get(s.name)
            if arr is None:
                continue
            for axis, d in enumerate(s.shape):
                if isinstance(d, str) and axis != s.batch_axis and axis < arr.ndim:
                    values.setdefault(d, int(arr.shape[axis]))
    return values


def random_inputs(
    specs: Sequence[TensorSpec],
    batch: int,
    *,
    seed: int = 0,
    example: Mapping[str, np.ndarray] | None = None,
    default_dim: int = 8,
) -> dict[str, np.ndarray]:
    """Random arrays that fit ``specs`` (floats in [0, 1), ints and bools in {0, 1}).

    Symbolic non-batch dimensions take their size from ``example`` when given, else
    ``default_dim``; dimensions sharing a name share a size.
    """
    rng = np.random.default_rng(seed)
    symbols = _symbol_values(specs, example)
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = []
        for axis, d in enumerate(s.shape):
            if axis == s.batch_axis:
                shape.append(batch)
            elif isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str):
                shape.append(symbols.setdefault(d, default_dim))
            else:
                shape.append(default_dim)
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            arr = rng.random(shape).astype(dt)
        elif dt.kind == "b":
            arr = rng.integers(0, 2, shape).astype(bool)
        elif dt.kind in "iu":
            arr = rng.integers(0, 2, shape).astype(dt)
        else:
            raise UnsupportedModelError(f"cannot make sample data for input {s.name!r} ({dt})")
        out[s.name] = arr
    return out


def tile_inputs(example: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``example`` rows repeated (or cut) along axis 0 to ``batch`` rows."""
    out = {}
    for k, v in example.items():
        n = v.shape[0]
        if n == 0:
            raise DataError(f"example input {k!r} has no rows")
        out[k] = np.ascontiguousarray(v[np.arange(batch) % n])
    return out


def example_feeds(example_inputs: Any, specs: Sequence[TensorSpec]
                  ) -> dict[str, np.ndarray] | None:
    """``example_inputs`` (a dict by input name, or a sequence in input order; arrays or
    torch tensors) as numpy feeds by input name; None stays None."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, Mapping):
        items = dict(example_inputs)
    else:
        seq = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if len(seq) != len(specs):
            raise UsageError(f"got {len(seq)} example inputs; the model has {len(specs)}")
        items = {s.name: v for s, v in zip(specs, seq, strict=True)}
    out: dict[str, np.ndarray] = {}
    for k, v in items.items():
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out
