"""merge_models: structure of the merged graph, and every input/opset/class mismatch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from cascade._models import mlp, two_input
from onnx import TensorProto

from eeopt.cascade import merge_models, model_prefix
from eeopt.errors import UnsupportedModelError, UsageError
from eeopt.runtime import make_session


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return make_session(model.SerializeToString()).run(None, feeds)


def test_two_models_structure() -> None:
    a, b = mlp(0), mlp(1, hidden=5)
    merged = merge_models([a, b])
    onnx.checker.check_model(merged, full_check=True)
    assert [i.name for i in merged.graph.input] == ["x"]  # one shared input, its own name
    assert [o.name for o in merged.graph.output] == ["m0/exit0", "m1/exit0"]
    assert len(merged.graph.node) == len(a.graph.node) + len(b.graph.node)
    names = [n.name for n in merged.graph.node]
    assert len(set(names)) == len(names)  # both models have mm0, head0, ...: no clash
    for k, m in enumerate((a, b)):
        mine = [n for n in merged.graph.node if n.name.startswith(model_prefix(k))]
        assert [n.name for n in mine] == [model_prefix(k) + n.name for n in m.graph.node]
        assert [n.op_type for n in mine] == [n.op_type for n in m.graph.node]
    inits = {i.name for i in merged.graph.initializer}
    assert inits == {model_prefix(k) + i.name for k, m in enumerate((a, b))
                     for i in m.graph.initializer}
    reads_x = [n.name for n in merged.graph.node if "x" in n.input]
    assert reads_x == ["m0/mm0", "m1/mm0"]  # both models read the shared input


def test_outputs_in_order_with_a_multi_exit_model() -> None:
    models = [mlp(0), mlp(1, exits=2), mlp(2, hidden=12)]
    merged = merge_models(models)
    assert [o.name for o in merged.graph.output] == [
        "m0/exit0", "m1/exit0", "m1/exit1", "m2/exit0"]
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    got = _run(merged, {"x": x})
    want = [o for m in models for o in _run(m, {"x": x})]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_merge_does_not_touch_its_inputs() -> None:
    a, b = mlp(0), mlp(1)
    before = (a.SerializeToString(), b.SerializeToString())
    merge_models([a, b])
    assert (a.SerializeToString(), b.SerializeToString()) == before


def test_paths_are_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    onnx.save(mlp(0), tmp_path / "a.onnx")
    onnx.save(mlp(1), tmp_path / "b.onnx")
    merged = merge_models([tmp_path / "a.onnx", str(tmp_path / "b.onnx")])
    assert [o.name for o in merged.graph.output] == ["m0/exit0", "m1/exit0"]


def test_inputs_mapped_by_position_when_names_differ() -> None:
    a, b = mlp(0, input_name="x"), mlp(1, input_name="pixels")
    merged = merge_models([a, b])
    assert [i.name for i in merged.graph.input] == ["x"]
    assert not any("pixels" in t for n in merged.graph.node for t in n.input)
    x = np.random.default_rng(1).random((3, 6), dtype=np.float32)
    np.testing.assert_allclose(_run(merged, {"x": x})[1], _run(b, {"pixels": x})[0], rtol=1e-6)


def test_inputs_matched_by_name_when_names_agree() -> None:
    a = two_input(0, order=(0, 1))
    b = two_input(1, order=(1, 0))  # same names, declared in the other order
    merged = merge_models([a, b])
    assert [i.name for i in merged.graph.input] == ["x", "z"]
    rng = np.random.default_rng(2)
    feeds = {"x": rng.random((4, 3), dtype=np.float32), "z": rng.random((4, 5), dtype=np.float32)}
    got = _run(merged, feeds)
    np.testing.assert_allclose(got[1], _run(b, feeds)[0], rtol=1e-6)


def test_opsets_are_unified() -> None:
    merged = merge_models([mlp(0, opset=17), mlp(1, opset=18)])
    assert [(i.domain, i.version) for i in merged.opset_import] == [("", 18)]
    onnx.checker.check_model(merged, full_check=True)


def test_fewer_than_two_models() -> None:
    with pytest.raises(UsageError, match="at least 2 models, got 1"):
        merge_models([mlp(0)])


@pytest.mark.parametrize(("other", "match"), [
    (mlp(1, features=7), "cascade inputs do not match: model 1 input x float32"),
    (mlp(1, dtype=TensorProto.DOUBLE), "cascade inputs do not match: model 1 input x float64"),
    (two_input(1), r"model 0 takes 1 input\(s\).*model 1 takes 2"),
    (mlp(1, classes=5), "disagree on the number of classes"),
])
def test_mismatches_are_one_clear_error(other: onnx.ModelProto, match: str) -> None:
    with pytest.raises(UnsupportedModelError, match=match) as info:
        merge_models([mlp(0), other])
    assert "\n" not in str(info.value)
