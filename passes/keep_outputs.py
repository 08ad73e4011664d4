"""KeepOutputs: restrict the model to some of its outputs, dropping what only the others needed
(e.g. the plain network: the multi-exit model cut to its final classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from eeopt.errors import UnsupportedModelError
from eeopt.frontend import ModelGraph
from eeopt.passes._infra import Pass, PassResult
from eeopt.passes.remove_dead_nodes import RemoveDeadNodes

__all__ = ["KeepOutputs", "cut_to_outputs"]


class KeepOutputs(Pass):
    """Keep the outputs named (in the model's order), then remove the dead nodes."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.outputs = tuple(outputs)

    def requires(self, graph: ModelGraph) -> None:
        missing = [o for o in self.outputs if o not in graph.output_names]
        if missing:
            raise UnsupportedModelError(f"the model has no output {missing[0]!r}")

    def call(self, graph: ModelGraph) -> PassResult:
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        keep = [o for o in model.graph.output if o.name in set(self.outputs)]
        dropped = len(model.graph.output) - len(keep)
        del model.graph.output[:]
        model.graph.output.extend(keep)
        pruned = RemoveDeadNodes()(ModelGraph(model))
        return PassResult(pruned.graph, bool(dropped) or pruned.modified,
                          {"outputs": dropped, **pruned.stats})


def cut_to_outputs(graph: ModelGraph, outputs: Sequence[str]) -> ModelGraph:
    """The model restricted to ``outputs`` (dead nodes removed)."""
    missing = [o for o in outputs if o not in graph.output_names]
    if missing:  # before the pass, so that the message is not wrapped in a PassError
        raise UnsupportedModelError(f"the model has no output {missing[0]!r}")
    return KeepOutputs(outputs)(graph).graph
