"""The fused gate as an ONNX subgraph, appended after an exit head inside its stage.

From ``[N, C]`` logits it computes the policy's decision as ``[N]`` bool, from only the statistic
the policy needs, and on request the softmax features ``[N, 3]`` (max probability, entropy,
margin: see ``reference.GATE_FEATURES``). The threshold is a scalar graph input, so it can change
without a recompile. The patience policy also reads the previous exit's argmax and streak
(carried tensors) and outputs this exit's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    features: str | None = None
    """The ``[N, 3]`` features output, when asked for (``features=True``)."""
    state_inputs: tuple[str, ...] = ()
    """Carried state the gate reads (patience: previous argmax, streak), int64 [N]."""
    state_outputs: tuple[str, ...] = ()
    """Carried state the gate writes for the next exit."""
    state_types: dict[str, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    """Carried tensor name -> (numpy dtype name, shape with the batch as ``"batch"``); a name
    not listed is int64 ``[batch]`` (the patience policy's argmax and streak)."""

    def state_type(self, name: str) -> tuple[str, tuple[Any, ...]]:
        return self.state_types.get(name, ("int64", ("batch",)))


def build_gate(
    logits: str,
    threshold: str,
    *,
    opset: int,
    prefix: str = "eeopt_gate",
    policy: str = "maxprob",
    prev_state: tuple[str, str] | None = None,
    features: bool = False,
) -> GateSubgraph:
    """Nodes that turn ``logits`` into ``{prefix}/decision`` (and, with ``features=True``,
    ``{prefix}/features``).

    The decision needs only the policy's own statistic, so only that is computed: maxprob is
    Softmax -> ReduceMax -> GreaterOrEqual (three nodes). The ``[N, 3]`` features are for
    diagnostics and cost about as much as the rest of the gate again at batch 1.
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

    b = _Builder(logits, n, opset)
    decision = n("decision")
    state_in: tuple[str, ...] = ()
    state_out: tuple[str, ...] = ()
    if policy == "maxprob":
        b.add("GreaterOrEqual", [b.max_prob(), threshold], decision)
    elif policy == "margin":
        b.add("GreaterOrEqual", [b.margin(), threshold], decision)
    elif policy == "entropy":
        b.add("LessOrEqual", [b.entropy(), threshold], decision)
    else:  # patience: the streak of equal argmaxes, carried from exit to exit
        one = b.const("one", np.array(1, dtype=np.int64))
        pred = b.add("ArgMax", [logits], n("pred"), axis=1, keepdims=0, select_last_index=0)
        if prev_state is None:
            shape = b.add("Shape", [pred], n("pred_shape"))
            agreed = b.add("ConstantOfShape", [shape], n("agreed"),
                           value=numpy_helper.from_array(np.array([1], dtype=np.int64)))
        else:
            prev_pred, prev_streak = prev_state
            state_in = (prev_pred, prev_streak)
            same = b.add("Equal", [pred, prev_pred], n("same"))
            longer = b.add("Add", [prev_streak, one], n("longer"))
            agreed = b.add("Where", [same, longer, one], n("agreed"))
        # a row whose softmax is undefined (a NaN, a +inf, or every logit -inf: the softmax
        # sums to NaN exactly then) has no prediction to agree on: its streak resets to 0 and
        # it does not leave (reference.defined_rows)
        prob_sum = b.add("ReduceSum", [b.probs(), b.const("axes_last",
                                                          np.array([-1], dtype=np.int64))],
                         n("prob_sum"), keepdims=0)
        defined = b.add("Not", [b.add("IsNaN", [prob_sum], n("undefined"))], n("defined"))
        zero = b.const("zero", np.array(0, dtype=np.int64))
        streak = b.add("Where", [defined, agreed, zero], n("streak"))
        streak_f = b.add("Cast", [streak], n("streak_f32"), to=onnx.TensorProto.FLOAT)
        agrees = b.add("GreaterOrEqual", [streak_f, threshold], n("agrees"))
        b.add("And", [agrees, defined], decision)
        state_out = (pred, streak)
    feats = None
    if features:
        cols = [b.unsqueeze(v) for v in (b.max_prob(), b.entropy(), b.margin())]
        feats = b.add("Concat", cols, n("features"), axis=1)
    return GateSubgraph(tuple(b.nodes), tuple(b.inits), decision, feats, state_in, state_out)


class _Builder:
    """Appends gate nodes, computing each softmax statistic at most once (all ``[N]``)."""

    def __init__(self, logits: str, n: Callable[[str], str], opset: int) -> None:
        self.logits = logits
        self.n = n
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._made: dict[str, str] = {}

    def add(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        full = self.n(name)
        if full not in self._made:
            self.inits.append(numpy_helper.from_array(value, full))
            self._made[full] = full
        return full

    def _once(self, key: str, make: Callable[[], str]) -> str:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def logits_f32(self) -> str:
        return self._once("logits_f32", lambda: self.add(
            "Cast", [self.logits], self.n("logits_f32"), to=onnx.TensorProto.FLOAT))

    def probs(self) -> str:
        return self._once("probs", lambda: self.add(
            "Softmax", [self.logits_f32()], self.n("probs"), axis=-1))

    def max_prob(self) -> str:
        def make() -> str:
            if self.opset >= 18:  # axes became an input in opset 18
                axes = self.const("axes_last", np.array([-1], dtype=np.int64))
                return self.add("ReduceMax", [self.probs(), axes], self.n("max_prob"),
                                keepdims=0)
            return self.add("ReduceMax", [self.probs()], self.n("max_prob"), axes=[-1],
                            keepdims=0)
        return self._once("max_prob", make)

    def entropy(self) -> str:
        def make() -> str:
            logp = self.add("LogSoftmax", [self.logits_f32()], self.n("logp"), axis=-1)
            plogp = self.add("Mul", [self.probs(), logp], self.n("plogp_raw"))
            # 0 log 0 = 0: a masked class (logit -inf) gives 0 * -inf = NaN; a NaN row keeps
            # its NaN (NaN != 0) and never fires
            zero = self.const("zero_f32", np.array(0.0, dtype=np.float32))
            masked = self.add("Equal", [self.probs(), zero], self.n("p_is_zero"))
            plogp = self.add("Where", [masked, zero, plogp], self.n("plogp"))
            axes = self.const("axes_last", np.array([-1], dtype=np.int64))
            neg = self.add("ReduceSum", [plogp, axes], self.n("neg_entropy"), keepdims=0)
            return self.add("Neg", [neg], self.n("entropy"))
        return self._once("entropy", make)

    def margin(self) -> str:
        def make() -> str:
            k2 = self.const("k2", np.array([2], dtype=np.int64))
            top2 = self.add("TopK", [self.probs(), k2], self.n("top2"), axis=-1, largest=1,
                            sorted=1)
            self.nodes[-1].output.append(self.n("top2_idx"))
            p1 = self.add("Gather", [top2, self.const("idx0", np.array(0, dtype=np.int64))],
                          self.n("p1"), axis=1)
            p2 = self.add("Gather", [top2, self.const("idx1", np.array(1, dtype=np.int64))],
                          self.n("p2"), axis=1)
            return self.add("Sub", [p1, p2], self.n("margin"))
        return self._once("margin", make)

    def unsqueeze(self, v: str) -> str:
        axes = self.const("axes_last", np.array([-1], dtype=np.int64))
        return self.add("Unsqueeze", [v, axes], f"{v}_col")
