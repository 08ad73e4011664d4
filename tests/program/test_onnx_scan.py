"""The external-data scan (``eeopt.program.onnx_scan``) agrees with onnx on where tensors keep
their data, at every place an ONNX model can hold a tensor, without importing onnx itself."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import eeopt
from eeopt.program.onnx_scan import MalformedModel, external_data_tensors

import topologies as T


def _external(t: TensorProto) -> TensorProto:
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    entry = t.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    t.ClearField("raw_data")
    return t


def _tensor(name: str, external: bool) -> TensorProto:
    t = numpy_helper.from_array(np.ones((2, 2), np.float32), name)
    return _external(t) if external else t


def _model(where: str | None) -> onnx.ModelProto:
    """y = x @ w, with an If whose branch holds a Constant, a sparse initializer and a local
    function; ``where`` names the one tensor kept externally."""
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_tensor("branch_const", where == "if"))],
        "branch", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])])
    values = _tensor("sparse_values", where == "sparse")
    values.CopyFrom(numpy_helper.from_array(np.ones(2, np.float32), "sparse_values"))
    if where == "sparse":
        _external(values)
    sparse = helper.make_sparse_tensor(
        values, numpy_helper.from_array(np.array([0, 3], np.int64), "sparse_idx"), [2, 2])
    fn_node = helper.make_node("Constant", [], ["k"], value=_tensor("fn_const", where == "fn"))
    fn = helper.make_function("local", "F", [], ["k"], [fn_node], [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]),
         helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch),
         helper.make_node("Add", ["m", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [_tensor("w", where == "init")], sparse_initializer=[sparse])
    return helper.make_model(graph, functions=[fn],
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("where,name", [(None, None), ("init", "w"), ("if", "branch_const"),
                                        ("sparse", "sparse_values"), ("fn", "fn_const")])
def test_finds_external_data_wherever_a_tensor_can_be(where: str | None,
                                                      name: str | None) -> None:
    found = external_data_tensors(_model(where).SerializeToString())
    assert set(found) == (set() if name is None else {name})  # the If's two branches: twice


def test_agrees_with_onnx_on_a_model_it_saved_with_external_data(tmp_path) -> None:
    model = _model(None)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    saved = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    expected = sorted(t.name for t in saved.graph.initializer
                      if t.data_location == TensorProto.EXTERNAL)
    assert expected and sorted(external_data_tensors((tmp_path / "m.onnx").read_bytes())) == \
        expected


def test_every_stage_eeopt_writes_is_self_contained(tmp_path) -> None:
    d = tmp_path / "p"
    eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                  threshold=0.5)
    stages = sorted(d.glob("stage*.onnx"))
    assert len(stages) >= 2
    for f in stages:
        assert external_data_tensors(f.read_bytes()) == []


@pytest.mark.parametrize("data", [b"hello, world", b"\x3a\x05ab", b"\x08" + b"\xff" * 11])
def test_bytes_that_are_not_protobuf_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedModel):
        external_data_tensors(data)
