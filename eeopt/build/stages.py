"""Stage building for the ONNX path: per stage, one pass pipeline over the analysed model.

    PassManager [ExtractStage(cut), FuseGate (gated stages), RemoveDeadNodes, CheckModel]

Each stage comes back as its ONNX model and its manifest record (``StageSpec``, the sha256 left
to the writer). The gate's carried state (the patience streak, the twin's route) is typed from
the gate ``FuseGate`` reports in its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import onnx

from eeopt.build.analyse import AnalysedModel
from eeopt.kernels.onnx_gate import GateSubgraph
from eeopt.kernels.onnx_learned_gate import LearnedGate
from eeopt.kernels.reference import GATE_FEATURES
from eeopt.passes import (
    CheckModel,
    ExtractStage,
    FuseGate,
    Pass,
    PassManager,
    RemoveDeadNodes,
    stage_logits_name,
)
from eeopt.program import BATCH, THRESHOLD_INPUT, GateSpec, StageSpec, TensorSpec, gate_prefix

__all__ = ["BuiltStage", "build_onnx_stages"]


class BuiltStage(NamedTuple):
    model: onnx.ModelProto
    spec: StageSpec
    """The stage's manifest record; ``sha256`` is filled in once the file is written."""


def _state_specs(gate: GateSubgraph, names: Sequence[str]) -> tuple[TensorSpec, ...]:
    """Carried gate state, typed as the gate declares it (patience: int64 [N]; the twin's
    route: float [N, K])."""
    out = []
    for n in names:
        dtype, shape = gate.state_type(n)
        out.append(TensorSpec(n, dtype, tuple(BATCH if d == "batch" else d for d in shape), 0))
    return tuple(out)


def build_onnx_stages(model: AnalysedModel, thresholds: Sequence[float], policy: str,
                      gates: Sequence[LearnedGate] | None = None) -> list[BuiltStage]:
    """One ``BuiltStage`` per exit. ``gates``: one learned gate per early exit for the learned
    policies (``eeopt.gates``), None for the fixed ones."""
    last = len(model.cuts.stages) - 1
    built = []
    prev_state: tuple[str, str] | None = None
    for cut in model.cuts.stages:
        logits = stage_logits_name(cut)
        gated = cut.index != last
        passes: list[Pass] = [ExtractStage(cut, model.specs)]
        if gated:
            passes.append(FuseGate(logits, policy, stage=cut.index, prev_state=prev_state,
                                   learned=None if gates is None else gates[cut.index]))
        passes += [RemoveDeadNodes(), CheckModel(f"stage {cut.index}")]
        result = PassManager(passes)(model.graph)
        gate: Any = result.info["FuseGate"]["gate"] if gated else None
        state_in: tuple[TensorSpec, ...] = ()
        state_out: tuple[TensorSpec, ...] = ()
        if gate is not None:
            state_in = _state_specs(gate, gate.state_inputs)
            if cut.index + 1 < last:  # the final stage has no gate to pass state to
                state_out = _state_specs(gate, gate.state_outputs)
            prev_state = ((state_out[0].name, state_out[1].name) if len(state_out) == 2
                          else None)
        built.append(BuiltStage(result.graph.model, StageSpec(
            index=cut.index,
            file=f"stage{cut.index}.onnx",
            sha256="",
            exit_output=cut.output,
            inputs=tuple(model.specs[t] for t in cut.inputs) + state_in,
            produces=tuple(model.specs[t] for t in cut.produces) + state_out,
            carry_after=cut.carry_after + tuple(t.name for t in state_out),
            logits=logits,
            decision=f"{gate_prefix(cut.index)}/decision" if gated else None,
            features=gate.features if gated else None,
            threshold_input=THRESHOLD_INPUT if gated else None,
            gate=GateSpec(policy, float(thresholds[cut.index]),
                          GATE_FEATURES if gate.features else ()) if gated else None,
            nodes=len(result.graph.graph.node),
        )))
    return built
