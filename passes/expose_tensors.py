"""ExposeTensors: make intermediate tensors extra graph outputs, so that one run of the model
also returns them (the values a probe, a profile or a gate's training data needs)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from eeopt.frontend import ModelGraph
from eeopt.passes._infra import Pass, PassResult

__all__ = ["ExposeTensors"]


class ExposeTensors(Pass):
    """Append each named tensor that is not a graph input or output already as an (untyped)
    output, in the order given."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(dict.fromkeys(names))

    def call(self, graph: ModelGraph) -> PassResult:
        have = set(graph.output_names) | set(graph.input_names)
        new = [n for n in self.names if n not in have]
        if not new:
            return PassResult(graph, False, {"exposed": 0})
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in new)
        return PassResult(ModelGraph(model), True, {"exposed": len(new)})
