"""FuseGate: append the exit gate to a stage graph, after its exit head.

Outputs added: the decision ``[N]`` bool and the gate features ``[N, 3]`` (max probability,
entropy, margin); input added: the scalar threshold, so thresholds change without a recompile.
"""

from __future__ import annotations

import onnx
from onnx import helper

from eeopt.capture import BATCH
from eeopt.errors import PreconditionError
from eeopt.graph import ModelGraph
from eeopt.kernels.onnx_gate import build_gate
from eeopt.kernels.reference import GATE_FEATURES
from eeopt.passes._infra import Pass, PassResult

__all__ = ["FuseGate", "THRESHOLD_INPUT", "GATE_PREFIX"]

THRESHOLD_INPUT = "eeopt_threshold"
GATE_PREFIX = "eeopt_gate"


class FuseGate(Pass):
    def __init__(self, logits: str, policy: str = "maxprob") -> None:
        self.logits = logits
        self.policy = policy

    def _names(self, graph: ModelGraph) -> set[str]:
        names = {i.name for i in graph.graph.input} | set(graph.initializer_names)
        for n in graph.graph.node:
            names.update(n.output)
        return names

    def requires(self, graph: ModelGraph) -> None:
        if self.logits not in graph.output_names:
            raise PreconditionError(f"the stage has no output {self.logits!r} to gate")
        if any(n.startswith(GATE_PREFIX) or n == THRESHOLD_INPUT for n in self._names(graph)):
            raise PreconditionError(
                f"the stage already has tensors named {GATE_PREFIX}/* or {THRESHOLD_INPUT}: "
                "it is gated already, or the model uses eeopt's reserved names"
            )

    def call(self, graph: ModelGraph) -> PassResult:
        gate = build_gate(self.logits, THRESHOLD_INPUT, opset=graph.opset, prefix=GATE_PREFIX,
                          policy=self.policy)
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        g = model.graph
        g.node.extend(gate.nodes)
        g.initializer.extend(gate.initializers)
        g.input.append(helper.make_tensor_value_info(THRESHOLD_INPUT, onnx.TensorProto.FLOAT, []))
        g.output.append(helper.make_tensor_value_info(gate.decision, onnx.TensorProto.BOOL,
                                                      [BATCH]))
        g.output.append(helper.make_tensor_value_info(gate.features, onnx.TensorProto.FLOAT,
                                                      [BATCH, len(GATE_FEATURES)]))
        return PassResult(ModelGraph(model), True, {"gate_nodes": len(gate.nodes)})

    def ensures(self, graph: ModelGraph) -> None:
        outs = set(graph.output_names)
        for n in (f"{GATE_PREFIX}/decision", f"{GATE_PREFIX}/features"):
            if n not in outs:
                raise PreconditionError(f"the gated stage lacks the output {n!r}")
