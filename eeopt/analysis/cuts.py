"""Cuts: split the model into one stage per exit and find what crosses each cut.

An analysis: it never touches the graph. Every node runs in the first stage whose exit needs it,
so a row that leaves early never pays for layers only later exits use, and nothing upstream is
recomputed downstream. The tensors that cross a cut (a residual skip, a dense skip that reaches
further, a graph input such as an attention mask read again later) are carried by the runtime
and compacted with the batch.

The exception is shape arithmetic: constants and chains such as Shape -> Gather -> Concat whose
value depends only on shapes. A carried shape would go stale when the batch is compacted, so each
stage that needs such a value recomputes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eeopt.analysis.exit_heads import ExitHeads
from eeopt.errors import UnsupportedModelError
from eeopt.frontend import CutView, ModelGraph, cut_view

__all__ = ["Cuts", "StageCut", "compute_cuts", "cuts_from_view", "with_shape_closure"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class StageCut:
    index: int
    output: str
    """The exit's logits tensor."""
    nodes: tuple[str, ...]
    """Nodes the stage runs, in topological order, recomputed shape arithmetic included."""
    recomputed: tuple[str, ...]
    """Shape-only nodes this stage recomputes rather than receives."""
    inputs: tuple[str, ...]
    """Tensors the stage reads from earlier stages or from the graph inputs."""
    produces: tuple[str, ...]
    """Tensors the stage computes and later stages read (new carried tensors)."""
    carry_after: tuple[str, ...]
    """Every tensor alive after this stage: what crosses the cut behind it."""


@dataclass(frozen=True)
class Cuts:
    """The model's cuts: one ``StageCut`` per exit, earliest first."""

    stages: tuple[StageCut, ...]
    graph_inputs: tuple[str, ...]

    @property
    def carried(self) -> tuple[str, ...]:
        """Every tensor that crosses at least one cut, in first-seen order."""
        seen: dict[str, None] = {}
        for s in self.stages:
            for t in s.carry_after:
                seen.setdefault(t, None)
        return tuple(seen)


def _closure(
    view: CutView, nodes: set[str] | frozenset[str]
) -> tuple[list[str], dict[str, None]]:
    members = set(nodes)
    work = list(nodes)
    while work:
        n = work.pop()
        for t in view.inputs_of[n]:
            p = view.producer.get(t)
            if p is not None and p in view.shape_only and p not in members:
                members.add(p)
                work.append(p)
    ordered = sorted(members, key=view.order.__getitem__)
    produced = {t for n in ordered for t in view.outputs_of[n]}
    reads: dict[str, None] = {}
    for n in ordered:
        for t in view.inputs_of[n]:
            if t not in produced and t not in view.constants:
                reads.setdefault(t, None)
    return ordered, reads


def with_shape_closure(
    graph: ModelGraph, nodes: set[str] | frozenset[str], shape_only: frozenset[str]
) -> tuple[list[str], dict[str, None]]:
    """``nodes`` plus the shape arithmetic they need, in topological order, and the tensors the
    result reads from outside (initializers excluded), in first-read order."""
    return _closure(cut_view(graph, shape_only), nodes)


def compute_cuts(graph: ModelGraph, heads: ExitHeads) -> Cuts:
    """Stages of the ONNX graph: ``cuts_from_view`` on its ``cut_view``."""
    return cuts_from_view(cut_view(graph), [h.output for h in heads.heads], heads.needed)


def cuts_from_view(
    view: CutView, outputs: Sequence[str], needed: Sequence[frozenset[str]]
) -> Cuts:
    """The cut analysis on any graph: ``outputs`` are the exits' logits tensors, earliest
    first, and ``needed[k]`` every node exit k depends on."""
    shape_only = view.shape_only
    for out in outputs:
        if view.producer[out] in shape_only:
            raise UnsupportedModelError(
                f"exit output {out!r} is a constant or shape computation, not logits"
            )

    stage_of: dict[str, int] = {}
    for k, nodes in enumerate(needed):
        for n in nodes:
            if n not in shape_only and n not in stage_of:
                stage_of[n] = k

    graph_inputs = tuple(view.graph_inputs)
    produced_by_stage: dict[str, int] = {}
    for n, k in stage_of.items():
        for t in view.outputs_of[n]:
            produced_by_stage[t] = k

    stage_nodes: list[list[str]] = []
    stage_recomputed: list[list[str]] = []
    stage_inputs: list[list[str]] = []
    for k, out in enumerate(outputs):
        core = {n for n, s in stage_of.items() if s == k}
        ordered, reads = _closure(view, core)
        produced = {t for n in ordered for t in view.outputs_of[n]}
        if out not in produced:
            reads.setdefault(out, None)  # the exit is a tensor an earlier stage made
        for t in reads:
            src = produced_by_stage.get(t)
            if t not in graph_inputs and (src is None or src >= k):
                raise UnsupportedModelError(
                    f"stage {k} reads tensor {t!r}, which no earlier stage or graph input "
                    "provides; the model's node order or outputs are inconsistent"
                )
        stage_nodes.append(ordered)
        stage_recomputed.append([n for n in ordered if n in shape_only])
        stage_inputs.append(list(reads))

    stages: list[StageCut] = []
    for k, out in enumerate(outputs):
        later_reads: dict[str, None] = {}
        for j in range(k + 1, len(outputs)):
            for t in stage_inputs[j]:
                later_reads.setdefault(t, None)
        carry_after = tuple(
            t for t in later_reads if t in graph_inputs or produced_by_stage.get(t, k + 1) <= k
        )
        produces = tuple(t for t in carry_after if produced_by_stage.get(t) == k)
        stages.append(
            StageCut(
                index=k,
                output=out,
                nodes=tuple(stage_nodes[k]),
                recomputed=tuple(stage_recomputed[k]),
                inputs=tuple(stage_inputs[k]),
                produces=produces,
                carry_after=carry_after,
            )
        )
        logger.debug(
            "stage %d: %d nodes (%d recomputed), reads %s, passes on %s",
            k, len(stage_nodes[k]), len(stage_recomputed[k]), stage_inputs[k], list(produces),
        )
    return Cuts(tuple(stages), graph_inputs)
