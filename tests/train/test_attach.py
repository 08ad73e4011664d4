"""attach_exits on backbones it was not written for, exported and compiled with eeopt."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import eeopt
from eeopt.errors import UnsupportedModelError, UsageError
from eeopt.models.demo_cnn import DemoCNN
from eeopt.train import attach_exits, candidate_points

from ._tiny import TinyNet


def _compile_and_compare(model: nn.Module, tmp_path: Path, x: torch.Tensor,
                         always: bool = True) -> None:
    model.eval()
    with torch.no_grad():
        ref = [o.numpy() for o in model(x)]
    # never exit: the final logits; always exit: exit 0's logits
    never = eeopt.compile(model, tmp_path / "never", example_inputs=x[:4], threshold=1.0)
    res = never.run(x.numpy())
    assert (res.exit == len(ref) - 1).all()
    np.testing.assert_allclose(res.logits, ref[-1], atol=1e-4, rtol=1e-4)
    if always:
        first = eeopt.compile(model, tmp_path / "always", example_inputs=x[:4],
                              thresholds=[1e-6] * (len(ref) - 1))
        res = first.run(x.numpy())
        assert (res.exit == 0).all()
        np.testing.assert_allclose(res.logits, ref[0], atol=1e-4, rtol=1e-4)
    mid = eeopt.compile(model, tmp_path / "mid", example_inputs=x[:4], threshold=0.9)
    res = mid.run(x.numpy())
    picked = np.stack([ref[e][i] for i, e in enumerate(res.exit)])
    np.testing.assert_allclose(res.logits, picked, atol=1e-4, rtol=1e-4)


def test_custom_backbone_auto(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = TinyNet()
    assert candidate_points(backbone) == ["layer1", "layer2", "layer3"]
    model = attach_exits(backbone, head="conv-pool-linear")
    assert model.points == ("layer1", "layer2")  # never the block next to the classifier
    x = torch.rand(16, 1, 28, 28)
    outs = model(x)
    assert len(outs) == 3 and all(o.shape == (16, 10) for o in outs)
    torch.testing.assert_close(outs[-1], backbone(x))  # the backbone's own output comes last
    _compile_and_compare(model, tmp_path, x)


def test_demo_cnn_backbone(tmp_path: Path) -> None:
    torch.manual_seed(1)
    backbone = DemoCNN()
    for m in backbone.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with pytest.raises(UsageError, match="pass example_inputs"):  # it guesses 32x32
        attach_exits(backbone)
    model = attach_exits(backbone, ["segments.1", "segments.0.2"], head="pool-linear",
                         example_inputs=torch.rand(2, 1, 28, 28))
    assert model.points == ("segments.0.2", "segments.1")  # execution order
    x = torch.rand(12, 1, 28, 28)
    _compile_and_compare(model, tmp_path, x, always=False)


def test_explicit_points_and_heads() -> None:
    model = attach_exits(TinyNet(), ["stem", "layer2"], head="pool-linear", num_exits=5,
                         example_inputs=torch.rand(3, 1, 28, 28))
    assert model.points == ("stem", "layer2")
    assert isinstance(model.exits[0].fc, nn.Linear) and model.exits[0].fc.in_features == 16
    names = {id(p) for p in model.exit_parameters()}
    assert {id(p) for p in model.backbone.fc.parameters()} <= names
    assert not {id(p) for p in model.backbone.layer1.parameters()} & names


def test_deepcopy_keeps_hooks_on_the_copy() -> None:
    model = attach_exits(TinyNet()).eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.exits.parameters():
            p.add_(1.0)
        x = torch.rand(4, 1, 28, 28)
        a, b = model(x), twin(x)
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[-1], b[-1])


def test_transformer_like_tokens() -> None:
    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.relu(self.lin(x))

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.layers = nn.ModuleList([Layer() for _ in range(4)])
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            for layer in self.layers:
                h = layer(h)
            return self.head(h.mean(1))

    model = attach_exits(Tokens(), num_exits=2, head="conv-pool-linear",
                         example_inputs=torch.rand(2, 5, 4))
    assert len(model.points) == 2
    assert [o.shape for o in model(torch.rand(3, 5, 4))] == [(3, 3)] * 3


def test_errors() -> None:
    with pytest.raises(UsageError, match="unknown exit head"):
        attach_exits(TinyNet(), head="mlp")
    with pytest.raises(UsageError, match="no submodule named 'layer9'"):
        attach_exits(TinyNet(), ["layer9"])
    with pytest.raises(UsageError, match="num_classes=7"):
        attach_exits(TinyNet(), num_classes=7)

    class Unused(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Conv2d(16, 16, 1)

    with pytest.raises(UnsupportedModelError, match="'spare' did not run"):
        attach_exits(Unused(), ["layer1", "spare"])
