"""probe_tensors: dtype, shape and batch axis of the tensors that cross a cut.

An analysis: it never touches the graph. It runs the model on ONNX Runtime at two batch sizes
with the probed tensors exposed as extra outputs, and finds for each the one axis that follows
the batch. That axis is what the runtime compacts when rows leave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx

from eeopt.capture import BATCH, value_dims
from eeopt.errors import UnsupportedModelError
from eeopt.graph import ModelGraph
from eeopt.manifest import TensorSpec

__all__ = ["probe_tensors", "PROBE_BATCHES"]

logger = logging.getLogger(__name__)

#: two batch sizes unlikely to coincide with a model's fixed dimensions
PROBE_BATCHES = (5, 7)


def _declared_dims(graph: ModelGraph, name: str, rank: int) -> list[int | str | None]:
    vi = graph.value_info().get(name)
    dims = value_dims(vi) if vi is not None else None
    return list(dims) if dims is not None and len(dims) == rank else [None] * rank


def probe_tensors(
    graph: ModelGraph,
    names: Sequence[str],
    make_feeds: Callable[[int], dict[str, np.ndarray]],
) -> dict[str, TensorSpec]:
    """Specs for ``names``; ``make_feeds(b)`` returns model inputs with batch size ``b``."""
    from eeopt.backends.ort import make_session

    names = list(dict.fromkeys(names))
    if not names:
        return {}
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    existing = {o.name for o in model.graph.output}
    for n in names:
        if n not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=n))
    session = make_session(model.SerializeToString())
    results = []
    for b in PROBE_BATCHES:
        feeds = make_feeds(b)
        outs = session.run(names, feeds)
        results.append({n: np.asarray(o) for n, o in zip(names, outs, strict=True)})
    specs: dict[str, TensorSpec] = {}
    b1, b2 = PROBE_BATCHES
    for n in names:
        a1, a2 = results[0][n], results[1][n]
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
