"""The one verifier: NaN the model gives itself is the model's, not a mismatch of eeopt's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import eeopt
from eeopt.build import verify_exits
from eeopt.errors import VerificationError


def _sqrt_model():  # type: ignore[no-untyped-def]
    """exit0 = 2x, exit1 = sqrt(x - 0.5): NaN for every value below 0.5 (random inputs are in
    [0, 1), so about half)."""
    half = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    nodes = [helper.make_node("Mul", ["x", "two"], ["exit0"], name="mul"),
             helper.make_node("Sub", ["x", "half"], ["d"], name="sub"),
             helper.make_node("Sqrt", ["d"], ["exit1"], name="sqrt")]
    g = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        ["N", 3])],
                          [helper.make_tensor_value_info(f"exit{k}", TensorProto.FLOAT, ["N", 3])
                           for k in range(2)], initializer=[half, two])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_that_gives_nan_compiles_when_the_stages_give_the_same_nan(
        tmp_path: Path) -> None:
    prog = eeopt.compile(_sqrt_model(), tmp_path / "p", threshold=0.5)  # was: "please report"
    x = np.array([[0.9, 0.7, 0.6], [0.1, 0.9, 0.9]], dtype=np.float32)
    out = prog.run_all(x)[1]
    assert np.isnan(out[1, 0]) and np.isfinite(out[0]).all()


def test_a_mismatch_where_the_model_gives_nan_says_so() -> None:
    nan = np.float32(np.nan)
    want = [np.array([[1.0, nan]], dtype=np.float32)]
    with pytest.raises(VerificationError, match="the model itself gives NaN there") as info:
        verify_exits(lambda x: [np.array([[1.0, 2.0]], dtype=np.float32)], lambda x: want,
                     [(1, None)], exits=["'e'"])
    assert "example_inputs" in str(info.value) and "report" not in str(info.value)
    with pytest.raises(VerificationError, match="please report this model"):
        verify_exits(lambda x: [np.array([[1.5, nan]], dtype=np.float32)],
                     lambda x: [np.array([[1.0, nan]], dtype=np.float32)],
                     [(1, None)], exits=["'e'"], atol=0.1)
    assert verify_exits(lambda x: want, lambda x: want, [(1, None)], exits=["'e'"]) == 0.0
