"""Models eeopt cannot compile are refused with one line that says why."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import eeopt
from eeopt.errors import DataError, UnsupportedModelError

from onnx_builders import two_exit_mlp


def _save(m: onnx.ModelProto, tmp_path: Path) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    return p


def test_single_output(tmp_path: Path) -> None:
    m = two_exit_mlp()
    del m.graph.output[0]
    with pytest.raises(UnsupportedModelError, match="1 output"):
        eeopt.compile(_save(m, tmp_path), tmp_path / "out", threshold=0.5)
    assert not (tmp_path / "out").exists()


def test_fixed_batch(tmp_path: Path) -> None:
    m = two_exit_mlp()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(UnsupportedModelError, match="fixed batch dimension"):
        eeopt.compile(_save(m, tmp_path), tmp_path / "out", threshold=0.5)


def test_exit_not_2d(tmp_path: Path) -> None:
    m = two_exit_mlp()
    m.graph.node.append(helper.make_node("Unsqueeze", ["exit0", "ax"], ["exit0_3d"]))
    m.graph.initializer.append(helper.make_tensor("ax", TensorProto.INT64, [1], [2]))
    m.graph.output[0].name = "exit0_3d"
    m.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 1
    with pytest.raises(UnsupportedModelError, match=r"\[batch, classes\]"):
        eeopt.compile(_save(m, tmp_path), tmp_path / "out", threshold=0.5)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        eeopt.compile(tmp_path / "nope.onnx", tmp_path / "out", threshold=0.5)


def test_torch_module_returning_one_tensor(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="tuple of logits"):
        eeopt.compile(torch.nn.Linear(3, 2), tmp_path / "out",
                      example_inputs=torch.zeros(2, 3), threshold=0.5)


def test_torch_module_without_examples(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="example_inputs"):
        eeopt.compile(torch.nn.Linear(3, 2), tmp_path / "out", threshold=0.5)


def test_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="cannot compile a dict"):
        eeopt.compile({}, tmp_path / "out", threshold=0.5)
