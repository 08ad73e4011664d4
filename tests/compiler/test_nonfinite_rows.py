"""A row whose softmax is undefined (a NaN, a +inf, or every logit -inf) never fires a gate,
under every policy, in the Python runtime and in the C++ one: it goes on to the final exit.
(The patience gate once let such rows out at exit 1, as if two exits had agreed.) A single
-inf logit, a masked class, is an ordinary row."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import eeopt

ROOT = Path(__file__).resolve().parents[2]
EEOPT_RUN = ROOT / "build" / "cpp" / "eeopt_run"

#: thresholds at which every finite row leaves at the first exit it can
FIRE = {"maxprob": 0.2, "entropy": 10.0, "margin": 1e-6, "patience": 2.0}
#: where a finite row leaves at those thresholds (patience needs two agreeing exits)
FIRST = {"maxprob": 0, "entropy": 0, "margin": 0, "patience": 1}


def _model() -> onnx.ModelProto:
    """exit k = x + c_k: every exit agrees with the others on every finite row."""
    shifts = [numpy_helper.from_array(np.full(4, 0.01 * k, dtype=np.float32), f"c{k}")
              for k in range(3)]
    nodes = [helper.make_node("Add", ["x", f"c{k}"], [f"exit{k}"], name=f"add{k}")
             for k in range(3)]
    g = helper.make_graph(
        nodes, "nonfinite", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(f"exit{k}", TensorProto.FLOAT, ["N", 4])
         for k in range(3)], initializer=shifts)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    finite = rng.standard_normal((6, 4)).astype(np.float32) * 3
    nan, inf = np.nan, np.inf
    bad = np.array([[nan] * 4, [inf, 0, 0, 0], [-inf] * 4, [nan, 1, 2, 3], [inf, -inf, 0, 0]],
                   dtype=np.float32)
    masked = np.array([[1, 2, 3, -inf]], dtype=np.float32)
    x = np.concatenate([finite[:3], bad, masked, finite[3:]])
    return x, np.array([True] * 3 + [False] * 5 + [True] * 4)


@pytest.mark.parametrize("policy", list(FIRE))
def test_nonfinite_rows_go_on_to_the_final_exit(tmp_path: Path, policy: str) -> None:
    prog = eeopt.compile(_model(), tmp_path / "p", threshold=FIRE[policy], policy=policy)
    x, finite = _rows()
    want = np.where(finite, FIRST[policy], 2)
    np.testing.assert_array_equal(prog.run(x).exit, want)
    np.testing.assert_array_equal([prog.run(x[i:i + 1]).exit[0] for i in range(len(x))], want)
    if EEOPT_RUN.is_file():  # the C++ runtime runs the same gate graphs
        np.save(tmp_path / "x.npy", x)
        proc = subprocess.run(
            [str(EEOPT_RUN), str(tmp_path / "p"), "--input", f"x={tmp_path / 'x.npy'}",
             "--threads", "1", "--exits", str(tmp_path / "e.npy"), "--logits",
             str(tmp_path / "l.npy")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), want)
