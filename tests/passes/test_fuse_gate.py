"""The fused ONNX gate against the numpy reference, on fresh random logits."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from eeopt.errors import PassError
from eeopt.graph import ModelGraph
from eeopt.kernels.reference import gate_decision, gate_features
from eeopt.passes import GATE_PREFIX, THRESHOLD_INPUT, FuseGate


def _identity_stage(classes: int, opset: int = 18) -> ModelGraph:
    node = helper.make_node("Identity", ["z"], ["logits"], name="id")
    g = helper.make_graph(
        [node], "s",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
    )
    return ModelGraph(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("opset", [13, 18, 20])
def test_gate_matches_reference(seed: int, classes: int, opset: int) -> None:
    rng = np.random.default_rng(seed)
    res = FuseGate("logits")(_identity_stage(classes, opset))
    assert res.modified
    sess = ort.InferenceSession(res.graph.model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    scale = rng.uniform(0.5, 8.0)
    z = (rng.standard_normal((64, classes)) * scale).astype(np.float32)
    thr = float(rng.uniform(0.3, 0.95))
    logits, decision, feats = sess.run(
        ["logits", f"{GATE_PREFIX}/decision", f"{GATE_PREFIX}/features"],
        {"z": z, THRESHOLD_INPUT: np.array(thr, dtype=np.float32)},
    )
    ref = gate_features(z)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(logits, z)
    near = np.abs(ref[:, 0] - thr) < 1e-6
    np.testing.assert_array_equal(decision[~near], gate_decision(z, thr)[~near])
    assert decision.dtype == bool


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
        FuseGate("logits")(once)


def test_fuse_gate_refuses_old_opset() -> None:
    with pytest.raises(PassError, match="opset"):
        FuseGate("logits")(_identity_stage(4, opset=11))
