"""The fused gate as an ONNX subgraph, appended after an exit head inside its stage.

From ``[N, C]`` logits it computes softmax features ``[N, 3]`` (max probability, entropy, margin:
see ``reference.GATE_FEATURES``) and the decision ``max_prob >= threshold`` as ``[N]`` bool. The
threshold is a scalar graph input, so it can change without a recompile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eeopt.errors import UnsupportedModelError

__all__ = ["GateSubgraph", "build_gate", "MIN_OPSET"]

#: LogSoftmax/Softmax over the last axis and ReduceSum with axes as an input need opset 13
MIN_OPSET = 13


@dataclass(frozen=True)
class GateSubgraph:
    nodes: tuple[onnx.NodeProto, ...]
    initializers: tuple[onnx.TensorProto, ...]
    decision: str
    features: str


def build_gate(
    logits: str, threshold: str, *, opset: int, prefix: str = "eeopt_gate", policy: str = "maxprob"
) -> GateSubgraph:
    """Nodes that turn ``logits`` into ``{prefix}/decision`` and ``{prefix}/features``."""
    if policy != "maxprob":
        raise UnsupportedModelError(f"unknown gate policy {policy!r}; supported: maxprob")
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
        helper.make_node("Squeeze", [n("p1"), n("idx1")], [n("max_prob")], name=n("max_prob")),
        helper.make_node("GreaterOrEqual", [n("max_prob"), threshold], [n("decision")],
                         name=n("decision")),
    ]
    return GateSubgraph(tuple(nodes), tuple(inits), n("decision"), n("features"))
