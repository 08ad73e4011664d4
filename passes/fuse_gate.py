"""FuseGate: append the exit gate to a stage graph, after its exit head.

Outputs added: the decision ``[N]`` bool and, with ``features=True``, the gate features
``[N, 3]`` (max probability, entropy, margin; off by default, since they cost as much as the
rest of the gate at batch 1). Input added: the scalar threshold, so thresholds change without a
recompile.
The patience policy also reads the previous exit's argmax and streak and writes this exit's, as
int64 ``[N]`` tensors the runtime carries like any other. The gate it fused (its decision,
features and carried state, with their types) comes back in ``PassResult.info["gate"]``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from eeopt.errors import PreconditionError
from eeopt.frontend import ModelGraph
from eeopt.kernels.onnx_gate import build_gate
from eeopt.kernels.onnx_learned_gate import LearnedGate, build_learned_gate
from eeopt.kernels.reference import GATE_FEATURES
from eeopt.passes._infra import Pass, PassResult
from eeopt.program import BATCH, GATE_PREFIX, THRESHOLD_INPUT, gate_prefix

__all__ = ["FuseGate"]


class FuseGate(Pass):
    def __init__(self, logits: str, policy: str = "maxprob", *, stage: int = 0,
                 prev_state: tuple[str, str] | None = None, features: bool = False,
                 learned: LearnedGate | None = None) -> None:
        self.learned = learned  # a learned gate (eeopt.gates) instead of the fixed policy
        self.stage = stage
        self.logits = logits
        self.features = features
        self.policy = policy
        self.prefix = gate_prefix(stage)
        self.prev_state = prev_state

    def _made(self, graph: ModelGraph) -> set[str]:
        names = set(graph.initializer_names)
        for n in graph.graph.node:
            names.update(n.output)
        return names

    def requires(self, graph: ModelGraph) -> None:
        if self.logits not in graph.output_names:
            raise PreconditionError(f"the stage has no output {self.logits!r} to gate")
        inputs = {i.name for i in graph.graph.input}
        if THRESHOLD_INPUT in inputs or any(
            n.startswith(GATE_PREFIX) for n in self._made(graph)
        ):
            raise PreconditionError(
                f"the stage already has tensors named {GATE_PREFIX}*/... or {THRESHOLD_INPUT}: "
                "it is gated already, or the model uses eeopt's reserved names"
            )

    def call(self, graph: ModelGraph) -> PassResult:
        if self.learned is None:
            gate = build_gate(self.logits, THRESHOLD_INPUT, opset=graph.opset,
                              prefix=self.prefix, policy=self.policy,
                              prev_state=self.prev_state, features=self.features)
            policy = self.policy
        else:  # a learned gate: its network's weights become initializers
            learned = self.learned
            have = self._made(graph) | {i.name for i in graph.graph.input}
            if learned.tensor is not None and learned.tensor not in have:
                raise PreconditionError(
                    f"the {learned.policy} gate of stage {self.stage} reads "
                    f"{learned.tensor!r}, which this stage neither computes nor receives; "
                    "retrain the gates for this model (or choose another {policy})")
            prev = gate_prefix(self.stage - 1) if self.stage > 0 else None
            gate = build_learned_gate(learned, self.logits, THRESHOLD_INPUT, opset=graph.opset,
                                      prefix=self.prefix, prev_prefix=prev)
            policy = learned.policy
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        g = model.graph
        g.node.extend(gate.nodes)
        g.initializer.extend(gate.initializers)
        g.input.append(helper.make_tensor_value_info(THRESHOLD_INPUT, onnx.TensorProto.FLOAT, []))

        def info(name: str) -> onnx.ValueInfoProto:
            """Carried gate state, typed as the subgraph declares (patience: int64 [N];
            the twin's route: float [N, K])."""
            dtype, shape = gate.state_type(name)
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            return helper.make_tensor_value_info(name, elem, [BATCH if d == "batch" else d
                                                              for d in shape])

        g.input.extend(info(n) for n in gate.state_inputs)
        g.output.append(helper.make_tensor_value_info(gate.decision, onnx.TensorProto.BOOL,
                                                      [BATCH]))
        if gate.features is not None:
            g.output.append(helper.make_tensor_value_info(
                gate.features, onnx.TensorProto.FLOAT, [BATCH, len(GATE_FEATURES)]))
        g.output.extend(info(n) for n in gate.state_outputs)
        return PassResult(ModelGraph(model), True, {"gate_nodes": len(gate.nodes),
                                                    "policy": policy}, {"gate": gate})

    def ensures(self, graph: ModelGraph) -> None:
        outs = set(graph.output_names)
        wanted = [f"{self.prefix}/decision"] + ([f"{self.prefix}/features"] if self.features
                                                else [])
        for n in wanted:
            if n not in outs:
                raise PreconditionError(f"the gated stage lacks the output {n!r}")
