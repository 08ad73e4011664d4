from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from eeopt.build import analyse_model
from eeopt.data import load_dataset
from eeopt.frontend import export_torch
from eeopt.gates import GateData, collect_gate_data
from eeopt.models.demo_cnn import load_demo_cnn


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The shipped DemoCNN as ONNX, 800 labelled validation rows and 128 test rows of
    Fashion-MNIST, and the gates' training data on the validation rows."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gates")
    path = d / "model.onnx"
    onnx.save(export_torch(load_demo_cnn(), torch.rand(2, 1, 28, 28)), path)
    x, y = load_dataset("fashion-mnist:val")
    xt, yt = load_dataset("fashion-mnist:test")
    prep = analyse_model(str(path))
    name = prep.inputs[0].name
    feeds = {name: np.ascontiguousarray(x[:800])}
    data = collect_gate_data(prep, feeds, y[:800], progress=False)
    test = {name: np.ascontiguousarray(xt[:128])}
    test_data = collect_gate_data(prep, test, yt[:128], progress=False)
    return {"path": path, "prep": prep, "feeds": feeds, "labels": np.asarray(y[:800]),
            "data": data, "test": test, "test_data": test_data, "name": name}


def gate_data(d: dict[str, object]) -> GateData:
    data = d["data"]
    assert isinstance(data, GateData)
    return data


def path_of(d: dict[str, object]) -> Path:
    p = d["path"]
    assert isinstance(p, Path)
    return p
