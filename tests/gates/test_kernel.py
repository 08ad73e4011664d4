"""The learned-gate ONNX subgraphs against their numpy reference, on fresh random inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eeopt.kernels.onnx_learned_gate import LearnedGate, MLPParams, build_learned_gate
from eeopt.kernels.reference import (
    learned_score,
    logit_gate_features,
    pool_features,
    twin_route,
)
from eeopt.runtime import make_session


def _mlp(rng: np.random.Generator, sizes: list[int]) -> MLPParams:
    return MLPParams(
        mean=rng.standard_normal(sizes[0]).astype(np.float32),
        inv_std=rng.uniform(0.5, 2.0, sizes[0]).astype(np.float32),
        weights=tuple(rng.standard_normal((a, b)).astype(np.float32)
                      for a, b in zip(sizes[:-1], sizes[1:], strict=True)),
        biases=tuple(rng.standard_normal(b).astype(np.float32) for b in sizes[1:]))


def _between(v: np.ndarray) -> np.ndarray:
    """A threshold halfway between the two middle values: no row sits on it."""
    s = np.sort(v)
    return np.array(0.5 * (s[v.size // 2 - 1] + s[v.size // 2]), np.float32)


def _run(gate: LearnedGate, feeds: dict[str, np.ndarray], extra_out: list[str],
         prev: str | None = None) -> list[np.ndarray]:
    sub = build_learned_gate(gate, "z", "thr", opset=18, prefix="g1", prev_prefix=prev)
    inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 10]),
              helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 6, 5, 5]),
              helper.make_tensor_value_info("thr", TensorProto.FLOAT, [])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", len(gate.columns)])
               for n in sub.state_inputs]
    types = {"g1/score": (TensorProto.FLOAT, ["N"]),
             "g1/route": (TensorProto.FLOAT, ["N", len(gate.columns)])}
    outs = [helper.make_tensor_value_info(sub.decision, TensorProto.BOOL, ["N"])]
    outs += [helper.make_tensor_value_info(n, *types[n]) for n in extra_out]
    g = helper.make_graph(list(sub.nodes), "gate", inputs, outs,
                          initializer=list(sub.initializers))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    sess = make_session(model.SerializeToString())
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("source", ["logits", "tensor+logits"])
def test_score_gate_matches_reference(source: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 33
    z = (3 * rng.standard_normal((n, 10))).astype(np.float32)
    t = rng.standard_normal((n, 6, 5, 5)).astype(np.float32)
    d = 4 + (6 if source == "tensor+logits" else 0)
    mlp = _mlp(rng, [d, 5, 1])
    gate = LearnedGate("gate-unit", source, mlp, tensor="t" if source != "logits" else None)
    x = logit_gate_features(z)
    if source == "tensor+logits":
        x = np.concatenate([pool_features(t), x], axis=1)
    want = learned_score(x, mlp.mean, mlp.inv_std, mlp.weights, mlp.biases)
    thr = _between(want)
    dec, score = _run(gate, {"z": z, "t": t, "thr": thr}, ["g1/score"])
    np.testing.assert_allclose(score, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(dec, want >= thr)
    assert 0 < dec.sum() < n


@pytest.mark.parametrize("folded", [True, False])
def test_route_gate_matches_reference(folded: bool) -> None:
    rng = np.random.default_rng(5)
    n = 17
    t = rng.standard_normal((n, 6, 5, 5)).astype(np.float32)
    mlp = _mlp(rng, [6 * 2 * 2, 8, 4])
    cols = (0, 2)
    first = LearnedGate("twin", "route", mlp, tensor="t", pool=2, rank=4, columns=cols,
                        column=0, input_shape=(6, 5, 5) if folded else ())  # folded: pooling
    # is a matrix in the first layer; else an AveragePool node
    want = twin_route(pool_features(t, 2), mlp.mean, mlp.inv_std, mlp.weights, mlp.biases, cols)
    thr = _between(want[:, 0])
    dec, route = _run(first, {"t": t, "z": t[:, 0, 0, :2].repeat(5, 1), "thr": thr},
                      ["g1/route"])
    np.testing.assert_allclose(route, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(dec, want[:, 0] >= thr)
    # a later stage reads the carried route and passes it on
    later = LearnedGate("twin", "route", None, columns=cols, column=1)
    thr1 = _between(want[:, 1])
    dec1, route1 = _run(later, {"g0/route": want, "z": t[:, 0, 0, :2].repeat(5, 1), "t": t,
                                "thr": thr1}, ["g1/route"], prev="g0")
    np.testing.assert_array_equal(route1, want)
    np.testing.assert_array_equal(dec1, want[:, 1] >= thr1)
    assert (np.diff(want, axis=1) >= -1e-6).all()  # cumulative: P(target <= k) grows with k


def test_logit_features_are_what_jei_reads() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50, 10)).astype(np.float32)
    f = logit_gate_features(z)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    s = np.sort(p, 1)
    q = p**2 / (p**2).sum(1, keepdims=True)
    np.testing.assert_allclose(f[:, 0], s[:, -1], rtol=1e-5)
    np.testing.assert_allclose(f[:, 1], -(p * np.log(p)).sum(1), rtol=1e-5)
    np.testing.assert_allclose(f[:, 2], s[:, -1] - s[:, -2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f[:, 3], -(q * np.log(q)).sum(1), rtol=1e-5)
