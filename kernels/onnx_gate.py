"""The fused gate as an ONNX subgraph, appended after an exit head inside its stage.

From ``[N, C]`` logits it computes softmax features ``[N, 3]`` (max probability, entropy, margin:
see ``reference.GATE_FEATURES``) and the policy's decision as ``[N]`` bool. The threshold is a
scalar graph input, so it can change without a recompile. The patience policy also reads the
previous exit's argmax and streak (carried tensors) and outputs this exit's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eeopt.errors import UnsupportedModelError
from eeopt.kernels.reference import POLICIES

__all__ = ["GateSubgraph", "build_gate", "MIN_OPSET"]

#: LogSoftmax/Softmax over the last axis and ReduceSum with axes as an input need opset 13
MIN_OPSET = 13


@dataclass(frozen=True)
class GateSubgraph:
    nodes: tuple[onnx.NodeProto, ...]
    initializers: tuple[onnx.TensorProto, ...]
    decision: str
    features: str
    state_inputs: tuple[str, ...] = ()
    """Carried state the gate reads (patience: previous argmax, streak), int64 [N]."""
    state_outputs: tuple[str, ...] = ()
    """Carried state the gate writes for the next exit, int64 [N]."""


def build_gate(
    logits: str,
    threshold: str,
    *,
    opset: int,
    prefix: str = "eeopt_gate",
    policy: str = "maxprob",
    prev_state: tuple[str, str] | None = None,
) -> GateSubgraph:
    """Nodes that turn ``logits`` into ``{prefix}/decision`` and ``{prefix}/features``.

    ``prev_state`` (patience only): the previous exit's ``(pred, streak)`` tensor names, or None
    at the first exit.
    """
    if policy not in POLICIES:
        raise UnsupportedModelError(
            f"unknown gate policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses ONNX opset {opset}; the fused gate needs opset >= {MIN_OPSET}: "
            "re-export the model with a newer opset (or onnx.version_converter.convert_version)"
        )

    def n(s: str) -> str:
        return f"{prefix}/{s}"

    inits = [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), n("axes_last")),
        numpy_helper.from_array(np.array([2], dtype=np.int64), n("k2")),
        numpy_helper.from_array(np.array([0], dtype=np.int64), n("idx0")),
        numpy_helper.from_array(np.array([1], dtype=np.int64), n("idx1")),
    ]
    nodes = [
        helper.make_node("Cast", [logits], [n("logits_f32")], to=onnx.TensorProto.FLOAT,
                         name=n("cast")),
        helper.make_node("Softmax", [n("logits_f32")], [n("probs")], axis=-1, name=n("softmax")),
        helper.make_node("LogSoftmax", [n("logits_f32")], [n("logp")], axis=-1,
                         name=n("logsoftmax")),
        # top-2 probabilities: [N, 2], sorted descending
        helper.make_node("TopK", [n("probs"), n("k2")], [n("top2"), n("top2_idx")], axis=-1,
                         largest=1, sorted=1, name=n("topk")),
        helper.make_node("Gather", [n("top2"), n("idx0")], [n("p1")], axis=1, name=n("p1")),
        helper.make_node("Gather", [n("top2"), n("idx1")], [n("p2")], axis=1, name=n("p2")),
        helper.make_node("Sub", [n("p1"), n("p2")], [n("margin")], name=n("margin")),
        helper.make_node("Mul", [n("probs"), n("logp")], [n("plogp")], name=n("plogp")),
        helper.make_node("ReduceSum", [n("plogp"), n("axes_last")], [n("neg_entropy")],
                         keepdims=1, name=n("sum_plogp")),
        helper.make_node("Neg", [n("neg_entropy")], [n("entropy")], name=n("entropy")),
        helper.make_node("Concat", [n("p1"), n("entropy"), n("margin")], [n("features")],
                         axis=1, name=n("features")),
    ]
    state_in: tuple[str, ...] = ()
    state_out: tuple[str, ...] = ()

    def flat(src: str, dst: str) -> onnx.NodeProto:
        return helper.make_node("Squeeze", [src, n("idx1")], [dst], name=dst)

    if policy == "maxprob":
        nodes += [flat(n("p1"), n("max_prob")),
                  helper.make_node("GreaterOrEqual", [n("max_prob"), threshold], [n("decision")],
                                   name=n("decision"))]
    elif policy == "margin":
        nodes += [flat(n("margin"), n("margin_flat")),
                  helper.make_node("GreaterOrEqual", [n("margin_flat"), threshold],
                                   [n("decision")], name=n("decision"))]
    elif policy == "entropy":
        nodes += [flat(n("entropy"), n("entropy_flat")),
                  helper.make_node("LessOrEqual", [n("entropy_flat"), threshold],
                                   [n("decision")], name=n("decision"))]
    else:  # patience
        inits.append(numpy_helper.from_array(np.array(1, dtype=np.int64), n("one")))
        nodes.append(helper.make_node("ArgMax", [n("logits_f32")], [n("pred")], axis=1,
                                      keepdims=0, select_last_index=0, name=n("argmax")))
        if prev_state is None:
            nodes += [
                helper.make_node("Shape", [n("pred")], [n("pred_shape")], name=n("shape")),
                helper.make_node("ConstantOfShape", [n("pred_shape")], [n("streak")],
                                 value=numpy_helper.from_array(np.array([1], dtype=np.int64)),
                                 name=n("streak")),
            ]
        else:
            prev_pred, prev_streak = prev_state
            state_in = (prev_pred, prev_streak)
            nodes += [
                helper.make_node("Equal", [n("pred"), prev_pred], [n("same")], name=n("same")),
                helper.make_node("Add", [prev_streak, n("one")], [n("longer")],
                                 name=n("longer")),
                helper.make_node("Where", [n("same"), n("longer"), n("one")], [n("streak")],
                                 name=n("streak")),
            ]
        nodes += [
            helper.make_node("Cast", [n("streak")], [n("streak_f32")],
                             to=onnx.TensorProto.FLOAT, name=n("streak_f32")),
            helper.make_node("GreaterOrEqual", [n("streak_f32"), threshold], [n("decision")],
                             name=n("decision")),
        ]
        state_out = (n("pred"), n("streak"))
    return GateSubgraph(tuple(nodes), tuple(inits), n("decision"), n("features"), state_in,
                        state_out)
