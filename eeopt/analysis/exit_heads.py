"""Exit heads: which nodes form each exit's head, and which backbone tensors it reads.

An analysis: it never touches the graph. The exits are the model's outputs, earliest first. The
head of exit k is the set of nodes that feed exit k's output and no other output; everything an
exit needs beyond its head is backbone, shared with at least one other exit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eeopt.errors import UnsupportedModelError
from eeopt.frontend import CutView, ModelGraph

__all__ = ["ExitHead", "ExitHeads", "check_exit_order", "find_exit_heads"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExitHead:
    index: int
    output: str
    nodes: frozenset[str]
    reads: tuple[str, ...]
    """Backbone tensors and graph inputs the head reads (sorted)."""


@dataclass(frozen=True)
class ExitHeads:
    heads: tuple[ExitHead, ...]
    needed: tuple[frozenset[str], ...]
    """Per exit: every node its output depends on (head and backbone)."""

    @property
    def num_exits(self) -> int:
        return len(self.heads)


def find_exit_heads(graph: ModelGraph) -> ExitHeads:
    outputs = graph.output_names
    if len(outputs) < 2:
        raise UnsupportedModelError(
            f"the model has {len(outputs)} output(s); a multi-exit model needs one output per "
            "exit (earliest first, final classifier last), so at least 2"
        )
    if len(set(outputs)) != len(outputs):
        raise UnsupportedModelError("two model outputs share a name; give each exit its own")
    inputs = set(graph.input_names)
    for name in outputs:
        if name in inputs or name in graph.initializer_names:
            raise UnsupportedModelError(
                f"output {name!r} is a graph input or constant, not an exit's logits"
            )
        if name not in graph.producer:
            raise UnsupportedModelError(f"output {name!r} is produced by no node")

    needed = [frozenset(graph.ancestors_of_tensor(o)) for o in outputs]

    heads = []
    for k, out in enumerate(outputs):
        others: set[str] = set()
        for j, nd in enumerate(needed):
            if j != k:
                others |= nd
        head = frozenset(needed[k] - others)
        reads: set[str] = set()
        for n in head:
            for t in graph.inputs_of[n]:
                if t in graph.initializer_names:
                    continue
                if graph.producer.get(t) not in head:
                    reads.add(t)
        heads.append(ExitHead(k, out, head, tuple(sorted(reads))))
        logger.debug("exit %d (%s): head of %d nodes reads %s", k, out, len(head), sorted(reads))
    _check_order(graph, heads)
    return ExitHeads(tuple(heads), tuple(needed))


def _branch_point(graph: ModelGraph, head: ExitHead) -> int:
    """Position of the latest backbone node the head reads from (-1: graph inputs only)."""
    return max(
        (graph.order[graph.producer[t]] for t in head.reads if t in graph.producer), default=-1
    )


def _check_order(graph: ModelGraph, heads: list[ExitHead]) -> None:
    """Exits must be listed earliest first: each branches off no later than the next one.
    A head that reads only graph inputs (a separate network, as in a cascade) branches off
    nothing and may stand anywhere."""
    points = [(k, p) for k, h in enumerate(heads) if (p := _branch_point(graph, h)) >= 0]
    for (i, pi), (j, pj) in zip(points, points[1:], strict=False):
        if pi > pj:
            raise UnsupportedModelError(
                f"exit {heads[j].output!r} branches off the backbone before "
                f"{heads[i].output!r}: list the outputs earliest exit first and the final "
                "classifier last"
            )


def check_exit_order(view: CutView, outputs: Sequence[str],
                      needed: Sequence[frozenset[str]]) -> None:
    """What ``find_exit_heads`` checks on ONNX, on any ``CutView`` (the FX graph's): each exit
    branches off the backbone no later than the next one. ``needed[k]``: every node exit k
    depends on."""
    points = []
    for k in range(len(outputs)):
        others: set[str] = set()
        for j, nd in enumerate(needed):
            if j != k:
                others |= nd
        head = needed[k] - others
        reads = {t for n in head for t in view.inputs_of[n]
                 if t in view.producer and view.producer[t] not in head}
        points.append(max((view.order[view.producer[t]] for t in reads), default=-1))
    for k in range(len(outputs) - 1):
        if points[k] > points[k + 1]:
            raise UnsupportedModelError(
                f"exit {outputs[k + 1]!r} branches off the backbone before {outputs[k]!r}: "
                "return the exits earliest first and the final classifier last")
