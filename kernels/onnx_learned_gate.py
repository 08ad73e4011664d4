"""Learned gates as ONNX subgraphs, appended after an exit head inside its stage.

A learned gate is a small MLP whose weights become initializers of the stage. It outputs a
score ``s`` in ``[0, 1]`` and decides ``{prefix}/decision = s >= threshold`` with the same scalar
threshold input as the fixed gates, so the planner can still tune a threshold per exit and the
runtimes need no special case. What the MLP reads (``LearnedGate.source``):

- ``logits``: the exit's softmax statistics ``[max prob, entropy, margin, entropy of p^2 /
  sum p^2]`` (JEI-DNN's gate features; also the cost-sensitive policy's);
- ``tensor+logits``: the tensor feeding the exit head, globally average-pooled when it is 4-D,
  followed by the four statistics (the gate unit);
- ``route``: the distilled twin. Stage 0 computes, from a graph input downsampled by average
  pooling, a distribution over target exits and its cumulative sums ``P(target <= k)`` for the
  kept exits (one ``MatMul``), carried as a float32 ``[N, K-1]`` tensor ``{prefix}/route``; every
  gated stage ``k`` decides ``route[:, k] >= threshold`` and passes it on (``Identity``).

Every node is mirrored by a numpy function in ``reference.py`` (``logit_gate_features``,
``pool_features``, ``mlp_forward``, ``twin_route``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eeopt.errors import UnsupportedModelError
from eeopt.kernels.onnx_gate import GateSubgraph

__all__ = ["MLPParams", "LearnedGate", "build_learned_gate", "SOURCES"]

SOURCES = ("logits", "tensor+logits", "route")
MIN_OPSET = 13


@dataclass(frozen=True)
class MLPParams:
    """``(x - mean) * inv_std``, then ``Linear -> ReLU -> ... -> Linear``; weights ``[in, out]``.
    The head: ``sigmoid`` of one output (a score), or ``softmax`` over several (the twin)."""

    mean: np.ndarray
    inv_std: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def in_dim(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.weights[-1].shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {"in": self.in_dim, "out": self.out_dim,
                "hidden": [int(w.shape[1]) for w in self.weights[:-1]]}


@dataclass(frozen=True)
class LearnedGate:
    """One stage's learned gate (what FuseGate appends). ``tensor``: the tensor the MLP pools
    (``tensor+logits``: the head's input; ``route`` at stage 0: a graph input). ``pool``: the
    average-pool kernel for a 4-D route input (0: none). ``columns``: for the route, which
    target exits' cumulative probabilities to keep (the kept early exits), and ``column``: the
    one this stage reads. ``mlp`` is None on route stages after the first."""

    policy: str
    source: str
    mlp: MLPParams | None
    tensor: str | None = None
    pool: int = 0
    input_shape: tuple[int, ...] = ()
    """The route input's ``[C, H, W]`` (to fold its pooling into the first layer)."""
    rank: int = 4
    """Rank of ``tensor`` (2: used as is; 4: pooled)."""
    columns: tuple[int, ...] = ()
    column: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class _B:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def n(self, s: str) -> str:
        return f"{self.prefix}/{s}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), self.n(name)))
        return self.n(name)

    def add(self, op: str, inputs: Sequence[str], out: str, **attrs: Any) -> str:
        name = out if out.startswith(self.prefix + "/") else self.n(out)
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name


#: the compiled gate reads ``[p1, p2, -H, S, L]`` (``S = sum(p^2 log p) / sum(p^2)``,
#: ``L = log sum(p^2)``), fewer nodes than the four statistics, which are a linear map of them:
#: ``[p1, H, p1 - p2, H(p^2 / sum p^2)] = [p1, p2, -H, S, L] @ LOGIT_MAP``
LOGIT_MAP = np.array([[1, 0, 1, 0],
                      [0, 0, -1, 0],
                      [0, -1, 0, 0],
                      [0, 0, 0, -2],
                      [0, 0, 0, 1]], dtype=np.float64)

#: fold average pooling of a 4-D input into the first layer up to this many weights
MAX_FOLDED_WEIGHTS = 1 << 20


def _logit_features(b: _B, logits: str) -> str:
    """``[N, 5]``: ``[p1, p2, -H, S, L]`` (see ``LOGIT_MAP``)."""
    z = b.add("Cast", [logits], "z", to=onnx.TensorProto.FLOAT)
    p = b.add("Softmax", [z], "p", axis=-1)
    logp = b.add("LogSoftmax", [z], "logp", axis=-1)
    last = b.const("axes_last", np.array([-1], dtype=np.int64))
    k2 = b.const("k2", np.array([2], dtype=np.int64))
    top2 = b.add("TopK", [p, k2], "top2", axis=-1, largest=1, sorted=1)
    b.nodes[-1].output.append(b.n("top2_idx"))  # TopK's second output: the indices
    plogp = b.add("Mul", [p, logp], "plogp")
    negent = b.add("ReduceSum", [plogp, last], "negent", keepdims=1)
    p_sq = b.add("Mul", [p, p], "p_sq")
    s2 = b.add("ReduceSum", [p_sq, last], "sum_p_sq", keepdims=1)
    p2logp = b.add("Mul", [plogp, p], "p2logp")
    s = b.add("ReduceSum", [p2logp, last], "sum_p2logp", keepdims=1)
    s_norm = b.add("Div", [s, s2], "s_norm")
    log_s2 = b.add("Log", [s2], "log_sum_p_sq")
    return b.add("Concat", [top2, negent, s_norm, log_s2], "logit_features", axis=1)


def _pool_matrix(shape: Sequence[int], kernel: int) -> np.ndarray:
    """``[C*H*W, C*(H//k)*(W//k)]``: average pooling of a flattened ``[C, H, W]`` as a matrix
    (trailing rows and columns dropped, as ``AveragePool`` without padding does)."""
    c, h, w = (int(d) for d in shape)
    hh, ww = h // kernel, w // kernel
    m = np.zeros((c, h, w, c, hh, ww), dtype=np.float64)
    for ci in range(c):
        for i in range(hh * kernel):
            for j in range(ww * kernel):
                m[ci, i, j, ci, i // kernel, j // kernel] = 1.0 / (kernel * kernel)
    return m.reshape(c * h * w, c * hh * ww)


def _mlp(b: _B, x: str, mlp: MLPParams, pre: np.ndarray | None = None) -> str:
    """The MLP as Gemms, with the standardisation (and ``pre``, a linear map from what ``x``
    holds to the MLP's input features: ``features = x @ pre``) folded into the first layer."""
    w0 = mlp.weights[0].astype(np.float64)
    inv = mlp.inv_std.astype(np.float64)
    w_eff = inv[:, None] * w0
    b_eff = mlp.biases[0].astype(np.float64) - (mlp.mean.astype(np.float64) * inv) @ w0
    if pre is not None:
        w_eff = pre @ w_eff
    layers = [(w_eff, b_eff)] + [(w.astype(np.float64), bb.astype(np.float64))
                                 for w, bb in zip(mlp.weights[1:], mlp.biases[1:], strict=True)]
    h = x
    for i, (w, bias) in enumerate(layers):
        h = b.add("Gemm", [h, b.const(f"w{i}", w.astype(np.float32)),
                           b.const(f"b{i}", bias.astype(np.float32))], f"lin{i}")
        if i < len(layers) - 1:
            h = b.add("Relu", [h], f"relu{i}")
    return h


def _pool_tensor(b: _B, tensor: str, rank: int) -> str:
    """A 4-D tensor globally average-pooled and flattened to ``[N, C]``; ``[N, D]`` as is."""
    if rank == 2:
        return b.add("Cast", [tensor], "pooled", to=onnx.TensorProto.FLOAT)
    t = b.add("GlobalAveragePool", [tensor], "gap")
    t = b.add("Flatten", [t], "flat", axis=1)
    return b.add("Cast", [t], "pooled", to=onnx.TensorProto.FLOAT)


def build_learned_gate(gate: LearnedGate, logits: str, threshold: str, *, opset: int,
                       prefix: str, prev_prefix: str | None) -> GateSubgraph:
    """Nodes that turn the stage's tensors into ``{prefix}/decision`` for ``gate``."""
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses ONNX opset {opset}; learned gates need opset >= {MIN_OPSET}: "
            "re-export the model with a newer opset")
    if gate.source not in SOURCES:
        raise UnsupportedModelError(f"unknown learned-gate source {gate.source!r}")
    b = _B(prefix)
    decision = b.n("decision")
    if gate.source == "route":
        col = b.const("column", np.array([gate.column], dtype=np.int64))
        route = b.n("route")
        k = len(gate.columns)
        state_in: tuple[str, ...] = ()
        if gate.mlp is None:  # a later stage: read the carried route, pass it on
            if prev_prefix is None:
                raise UnsupportedModelError("a twin route stage has no stage 0 to read from")
            prev = f"{prev_prefix}/route"
            state_in = (prev,)
            b.add("Identity", [prev], route)
        else:
            assert gate.tensor is not None
            x = b.add("Cast", [gate.tensor], "route_x", to=onnx.TensorProto.FLOAT)
            pre = None
            if gate.rank == 4:
                hidden = int(gate.mlp.weights[0].shape[1])
                size = int(np.prod(gate.input_shape)) if gate.input_shape else 0
                if gate.pool and size and size * hidden <= MAX_FOLDED_WEIGHTS:
                    pre = _pool_matrix(gate.input_shape, gate.pool)  # pooling as a matrix
                elif gate.pool:
                    x = b.add("AveragePool", [x], "route_pool", kernel_shape=[gate.pool] * 2,
                              strides=[gate.pool] * 2)
                x = b.add("Flatten", [x], "route_flat", axis=1)
            logits_t = _mlp(b, x, gate.mlp, pre)
            probs = b.add("Softmax", [logits_t], "route_probs", axis=-1)
            # cumulative P(target <= c) for each kept column c: one MatMul with a 0/1 matrix
            m = gate.mlp.out_dim
            tri = (np.arange(m)[:, None] <= np.asarray(gate.columns)[None, :]).astype(np.float32)
            b.add("MatMul", [probs, b.const("cum", tri)], route)
        score = b.add("Gather", [route, col], "score_col", axis=1)  # [N, 1]
        shape = b.const("flat_shape", np.array([-1], dtype=np.int64))
        score = b.add("Reshape", [score, shape], "score")
        b.add("GreaterOrEqual", [score, threshold], decision)
        types = {t: ("float32", ("batch", k)) for t in (*state_in, route)}
        return GateSubgraph(tuple(b.nodes), tuple(b.inits), decision, None, state_in,
                            (route,), types)
    assert gate.mlp is not None
    feats = _logit_features(b, logits)
    pre = LOGIT_MAP
    if gate.source == "tensor+logits":
        assert gate.tensor is not None
        pooled = _pool_tensor(b, gate.tensor, gate.rank)
        feats = b.add("Concat", [pooled, feats], "gate_input", axis=1)
        d = gate.mlp.in_dim - LOGIT_MAP.shape[1]
        pre = np.zeros((d + LOGIT_MAP.shape[0], gate.mlp.in_dim))
        pre[:d, :d] = np.eye(d)
        pre[d:, d:] = LOGIT_MAP
    out = _mlp(b, feats, gate.mlp, pre)
    prob = b.add("Sigmoid", [out], "score2")
    shape = b.const("flat_shape", np.array([-1], dtype=np.int64))
    score = b.add("Reshape", [prob, shape], "score")
    b.add("GreaterOrEqual", [score, threshold], decision)
    return GateSubgraph(tuple(b.nodes), tuple(b.inits), decision)
