"""Tensor specs from probing: dtype, shape and batch axis of the tensors that cross a cut.

Pure: it reads the values the model gave for those tensors at two batch sizes
(``PROBE_BATCHES``; running the model is the caller's part, ``eeopt.build.analyse``) and finds
for each the one axis that follows the batch. That axis is what the runtime compacts when rows
leave.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from eeopt.errors import UnsupportedModelError
from eeopt.frontend import ModelGraph, value_dims
from eeopt.program import BATCH, TensorSpec

__all__ = ["PROBE_BATCHES", "specs_from_samples"]

logger = logging.getLogger(__name__)

#: two batch sizes unlikely to coincide with a model's fixed dimensions
PROBE_BATCHES = (5, 7)


def _declared_dims(graph: ModelGraph, name: str, rank: int) -> list[int | str | None]:
    vi = graph.value_info().get(name)
    dims = value_dims(vi) if vi is not None else None
    return list(dims) if dims is not None and len(dims) == rank else [None] * rank


def specs_from_samples(
    graph: ModelGraph,
    names: Sequence[str],
    samples: Mapping[int, Mapping[str, np.ndarray]],
) -> dict[str, TensorSpec]:
    """Specs for ``names`` from ``samples[b][name]``, each tensor's value when the model ran
    on inputs of batch size ``b`` for each ``b`` in ``PROBE_BATCHES``."""
    specs: dict[str, TensorSpec] = {}
    b1, b2 = PROBE_BATCHES
    for n in dict.fromkeys(names):
        a1, a2 = np.asarray(samples[b1][n]), np.asarray(samples[b2][n])
        if a1.ndim != a2.ndim:
            raise UnsupportedModelError(f"tensor {n!r} changes rank with the batch size")
        follows = [ax for ax in range(a1.ndim) if a1.shape[ax] == b1 and a2.shape[ax] == b2]
        changes = [ax for ax in range(a1.ndim) if a1.shape[ax] != a2.shape[ax]]
        if not changes:
            axis: int | None = None
        elif len(follows) == 1 and changes == follows:
            axis = follows[0]
        else:
            raise UnsupportedModelError(
                f"tensor {n!r} crosses an exit but its batch is not on a single axis (shape "
                f"{list(a1.shape)} at batch {b1}, {list(a2.shape)} at batch {b2}); per-sample "
                "exits need the batch on its own axis"
            )
        dims = _declared_dims(graph, n, a1.ndim)
        shape: list[int | str | None] = []
        for ax in range(a1.ndim):
            if ax == axis:
                shape.append(BATCH)
            elif isinstance(dims[ax], (int, str)):
                shape.append(dims[ax])
            else:
                shape.append(None)
        specs[n] = TensorSpec(n, str(a1.dtype), tuple(shape), axis)
        logger.debug("probed %s", specs[n].describe())
    return specs
