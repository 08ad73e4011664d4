"""ExtractHead: one exit's head alone, as a model from the backbone tensors it reads to its
logits (what a profile times to tell a head's cost apart from its backbone segment's)."""

from __future__ import annotations

from collections.abc import Mapping

from eeopt.analysis import ExitHead, StageCut, with_shape_closure
from eeopt.frontend import ModelGraph, shape_only_nodes
from eeopt.passes._infra import Pass, PassResult
from eeopt.passes.extract_stage import stage_model
from eeopt.program import TensorSpec

__all__ = ["ExtractHead"]


class ExtractHead(Pass):
    """The whole model -> exit ``head``'s head, plus the shape arithmetic it needs."""

    def __init__(self, head: ExitHead, specs: Mapping[str, TensorSpec]) -> None:
        self.head = head
        self.specs = specs

    def call(self, graph: ModelGraph) -> PassResult:
        nodes, reads = with_shape_closure(graph, self.head.nodes, shape_only_nodes(graph))
        cut = StageCut(index=self.head.index, output=self.head.output, nodes=tuple(nodes),
                       recomputed=(), inputs=tuple(reads), produces=(), carry_after=())
        model = stage_model(graph, cut, self.specs)
        return PassResult(ModelGraph(model), True, {"nodes": len(model.graph.node)})
