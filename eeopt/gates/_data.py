"""What the learned gates train on: every exit's logits and the tensors the gates read, on
labelled calibration data, from one pass of the uncut model (no early exit)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from eeopt.analysis import model_macs
from eeopt.build import AnalysedModel
from eeopt.errors import UnsupportedModelError
from eeopt.frontend import ModelGraph
from eeopt.kernels.reference import pool_features
from eeopt.passes import ExposeTensors, cut_to_outputs
from eeopt.runtime import make_session

__all__ = ["GateData", "collect_gate_data", "exit_costs", "earliest_correct"]

logger = logging.getLogger(__name__)

#: the twin pools a 4-D input down to about this many cells per side
TWIN_GRID = 7


@dataclass(frozen=True)
class GateData:
    """Per exit ``k``: ``logits[k]`` ``[N, C]``; per early exit: ``tensors[k]``, the pooled
    tensor feeding its head (``[N, D]``, or None when the head reads nothing poolable), named
    ``tensor_names[k]`` with rank ``tensor_ranks[k]``. ``route_x``: the twin's input, a graph
    input average-pooled with ``route_pool`` (``[N, D]``). ``macs``: the fraction of the whole
    model's multiply-accumulates a row leaving at exit ``k`` has paid (JEI-DNN's ``c_l``)."""

    logits: tuple[np.ndarray, ...]
    labels: np.ndarray
    tensors: tuple[np.ndarray | None, ...]
    tensor_names: tuple[str | None, ...]
    tensor_ranks: tuple[int, ...]
    route_x: np.ndarray | None
    route_input: str | None
    route_pool: int
    route_rank: int
    macs: np.ndarray
    route_shape: tuple[int, ...] = ()
    """The route input's dims after the batch (``[C, H, W]`` or ``[D]``)."""

    @property
    def num_exits(self) -> int:
        return len(self.logits)

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def correct(self) -> np.ndarray:
        """``[K, N]`` bool."""
        return np.stack([z.argmax(axis=1) == self.labels for z in self.logits])

    def subset(self, idx: np.ndarray) -> GateData:
        return replace(
            self, logits=tuple(z[idx] for z in self.logits), labels=self.labels[idx],
            tensors=tuple(None if t is None else t[idx] for t in self.tensors),
            route_x=None if self.route_x is None else self.route_x[idx])


def earliest_correct(correct: np.ndarray) -> np.ndarray:
    """``[N]``: the first exit that classifies each row correctly (the last exit if none does)."""
    k = correct.shape[0]
    first = np.where(correct.any(axis=0), correct.argmax(axis=0), k - 1)
    return first.astype(np.int64)


def _head_tensor(prep: AnalysedModel, k: int) -> tuple[str | None, int]:
    """The tensor feeding exit ``k``'s head that a gate can pool: the largest float tensor of
    rank 2 or 4 the head reads (not a graph input)."""
    best: tuple[int, str, int] | None = None
    for t in prep.heads.heads[k].reads:
        spec = prep.specs.get(t)
        if spec is None or t in prep.graph.input_names or len(spec.shape) not in (2, 4):
            continue
        if np.dtype(spec.dtype).kind != "f" or spec.batch_axis != 0:
            continue
        dims = [d for d in spec.shape[1:] if isinstance(d, int)]
        if len(dims) != len(spec.shape) - 1:
            continue
        size = int(np.prod(dims))
        if best is None or size > best[0]:
            best = (size, t, len(spec.shape))
    return (None, 0) if best is None else (best[1], best[2])


def _route_input(prep: AnalysedModel) -> tuple[str | None, int, int, tuple[int, ...]]:
    """The graph input the twin reads: the first float input of rank 2 or 4 (static dims)."""
    for s in prep.inputs:
        if np.dtype(s.dtype).kind != "f" or s.batch_axis != 0 or len(s.shape) not in (2, 4):
            continue
        dims = tuple(d for d in s.shape[1:] if isinstance(d, int))
        if len(dims) != len(s.shape) - 1:
            continue
        pool = max(1, dims[1] // TWIN_GRID) if len(s.shape) == 4 else 0
        return s.name, pool, len(s.shape), dims
    return None, 0, 0, ()


def exit_costs(graph: ModelGraph) -> np.ndarray:
    """``[K]``: multiply-accumulates up to exit ``k`` (every earlier head included) over those
    of the whole model."""
    outs = graph.output_names
    total = max(model_macs(graph.model), 1)
    macs = [model_macs(cut_to_outputs(graph, outs[: k + 1]).model) for k in range(len(outs))]
    frac = np.asarray(macs, dtype=np.float64) / total
    return np.maximum.accumulate(np.clip(frac, 0.0, 1.0))


def collect_gate_data(prep: AnalysedModel, feeds: dict[str, np.ndarray], labels: np.ndarray,
                      *, batch: int = 500, progress: bool = True,
                      macs: Sequence[float] | None = None) -> GateData:
    """Run the uncut model once over ``feeds`` with the gates' tensors as extra outputs."""
    graph = prep.graph
    outs = list(graph.output_names)
    k = len(outs)
    heads = [_head_tensor(prep, i) for i in range(k - 1)]
    names = sorted({t for t, _ in heads if t is not None})
    tap = ExposeTensors(names)(graph).graph
    sess = make_session(tap.model.SerializeToString())
    fetch = outs + [t for t in names if t not in outs]
    route_name, route_pool, route_rank, route_shape = _route_input(prep)
    n = int(labels.shape[0])
    logit_chunks: list[list[np.ndarray]] = [[] for _ in outs]
    pooled: dict[str, list[np.ndarray]] = {t: [] for t in names}
    route_chunks: list[np.ndarray] = []
    for start in tqdm(range(0, n, batch), desc="eeopt gates: run exits", unit="batch",
                      disable=not progress or None, leave=False):
        f = {key: v[start:start + batch] for key, v in feeds.items()}
        res = dict(zip(fetch, sess.run(fetch, f), strict=True))
        for i, o in enumerate(outs):
            logit_chunks[i].append(np.asarray(res[o], dtype=np.float32))
        for t in names:
            pooled[t].append(pool_features(res[t]))
        if route_name is not None:
            route_chunks.append(pool_features(f[route_name], route_pool))
    tensors = tuple(None if t is None else np.concatenate(pooled[t]) for t, _ in heads)
    return GateData(
        logits=tuple(np.concatenate(c) for c in logit_chunks),
        labels=np.asarray(labels, dtype=np.int64),
        tensors=tensors,
        tensor_names=tuple(t for t, _ in heads),
        tensor_ranks=tuple(r for _, r in heads),
        route_x=np.concatenate(route_chunks) if route_chunks else None,
        route_input=route_name, route_pool=route_pool, route_rank=route_rank,
        route_shape=route_shape,
        macs=np.asarray(macs if macs is not None else exit_costs(graph), dtype=np.float64),
    )


def require_route(data: GateData) -> None:
    if data.route_x is None:
        raise UnsupportedModelError(
            "the twin policy reads a float model input of shape [N, D] or [N, C, H, W] with "
            "static dims, and this model has none; use another {policy}")
