"""The fused ONNX gate against the numpy reference, on fresh random logits, every policy."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from eeopt.errors import PassError
from eeopt.frontend import ModelGraph
from eeopt.kernels.reference import gate_decision, gate_features, patience_step
from eeopt.passes import FuseGate
from eeopt.program import THRESHOLD_INPUT, gate_prefix
from eeopt.runtime import make_session


def _identity_stage(classes: int, opset: int = 18) -> ModelGraph:
    node = helper.make_node("Identity", ["z"], ["logits"], name="id")
    g = helper.make_graph(
        [node], "s",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
    )
    return ModelGraph(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


def _session(graph: ModelGraph) -> ort.InferenceSession:
    # eeopt's sessions share one global thread pool; once it exists, ONNX Runtime refuses
    # sessions with their own pools in the same process, so tests go through make_session too
    return make_session(graph.model.SerializeToString())


def _threshold(policy: str, rng: np.random.Generator) -> float:
    return {"maxprob": rng.uniform(0.3, 0.95), "margin": rng.uniform(0.05, 0.9),
            "entropy": rng.uniform(0.05, 1.5)}[policy]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("opset", [13, 18, 20])
@pytest.mark.parametrize("policy", ["maxprob", "entropy", "margin"])
@pytest.mark.parametrize("features", [False, True])
def test_gate_matches_reference(seed: int, classes: int, opset: int, policy: str,
                                features: bool) -> None:
    rng = np.random.default_rng(seed)
    res = FuseGate("logits", policy, stage=3, features=features)(_identity_stage(classes, opset))
    assert res.modified
    p = gate_prefix(3)
    z = (rng.standard_normal((64, classes)) * rng.uniform(0.5, 8.0)).astype(np.float32)
    thr = float(_threshold(policy, rng))
    outs = [o.name for o in res.graph.graph.output]
    assert (f"{p}/features" in outs) == features
    logits, decision, *feats = _session(res.graph).run(
        ["logits", f"{p}/decision"] + ([f"{p}/features"] if features else []),
        {"z": z, THRESHOLD_INPUT: np.array(thr, dtype=np.float32)},
    )
    ref = gate_features(z)
    if features:
        np.testing.assert_allclose(feats[0], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(logits, z)
    col = {"maxprob": 0, "entropy": 1, "margin": 2}[policy]
    near = np.abs(ref[:, col] - thr) < 1e-5
    assert decision.dtype == bool and decision.shape == (64,)
    np.testing.assert_array_equal(decision[~near], gate_decision(z, thr, policy)[~near])


@pytest.mark.parametrize("seed", [0, 1])
def test_patience_gate_carries_argmax_and_streak(seed: int) -> None:
    rng = np.random.default_rng(seed)
    first = FuseGate("logits", "patience", stage=0)(_identity_stage(3)).graph
    p0, p1 = gate_prefix(0), gate_prefix(1)
    second = FuseGate("logits", "patience", stage=1,
                      prev_state=(f"{p0}/pred", f"{p0}/streak"))(_identity_stage(3)).graph
    assert {f"{p0}/pred", f"{p0}/streak"} <= {i.name for i in second.graph.input}
    z0 = rng.standard_normal((50, 3)).astype(np.float32)
    z1 = rng.standard_normal((50, 3)).astype(np.float32)
    thr = np.array(2.0, dtype=np.float32)
    d0, pred0, streak0 = _session(first).run(
        [f"{p0}/decision", f"{p0}/pred", f"{p0}/streak"], {"z": z0, THRESHOLD_INPUT: thr})
    want_pred0, want_streak0 = patience_step(z0, None, None)
    np.testing.assert_array_equal(pred0, want_pred0)
    np.testing.assert_array_equal(streak0, want_streak0)
    assert not d0.any()  # one exit alone never makes a streak of 2
    d1, pred1, streak1 = _session(second).run(
        [f"{p1}/decision", f"{p1}/pred", f"{p1}/streak"],
        {"z": z1, THRESHOLD_INPUT: thr, f"{p0}/pred": pred0, f"{p0}/streak": streak0})
    want_pred1, want_streak1 = patience_step(z1, want_pred0, want_streak0)
    np.testing.assert_array_equal(pred1, want_pred1)
    np.testing.assert_array_equal(streak1, want_streak1)
    np.testing.assert_array_equal(d1, gate_decision(z1, 2.0, "patience", want_streak1))
    assert d1.any() and not d1.all()


def test_reference_features_are_softmax_statistics() -> None:
    z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    f = gate_features(z)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(f[:, 0], p.max(1), rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], -(p * np.log(p)).sum(1), rtol=1e-6)
    np.testing.assert_allclose(f[1], [1 / 3, np.log(3), 0.0], atol=1e-6)
    np.testing.assert_allclose(f[0, 2], p[0, 0] - p[0, 1], rtol=1e-6)


def test_fuse_gate_refuses_a_gated_stage() -> None:
    once = FuseGate("logits")(_identity_stage(4)).graph
    with pytest.raises(PassError, match="gated already"):
        FuseGate("logits", stage=1)(once)


def test_fuse_gate_refuses_old_opset() -> None:
    with pytest.raises(PassError, match="opset"):
        FuseGate("logits")(_identity_stage(4, opset=11))


@pytest.mark.parametrize("policy,ops", [
    ("maxprob", ["Cast", "Softmax", "ReduceMax", "GreaterOrEqual"]),
    ("entropy", ["Cast", "Softmax", "LogSoftmax", "Mul", "Equal", "Where", "ReduceSum", "Neg",
                 "LessOrEqual"]),
    ("margin", ["Cast", "Softmax", "TopK", "Gather", "Gather", "Sub", "GreaterOrEqual"]),
])
def test_gate_computes_only_what_its_policy_reads(policy: str, ops: list[str]) -> None:
    """Without features, the gate is the policy's statistic and one comparison."""
    res = FuseGate("logits", policy, stage=0)(_identity_stage(10, 20))
    got = [n.op_type for n in res.graph.graph.node if n.name.startswith(gate_prefix(0))]
    assert sorted(got) == sorted(ops)
    full = FuseGate("logits", policy, stage=0, features=True)(_identity_stage(10, 20))
    assert len(full.graph.graph.node) > len(res.graph.graph.node)
