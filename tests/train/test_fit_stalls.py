"""fit trains a backbone without batch norm, and says so when a run learns nothing.

A BN-free residual CNN at PyTorch's default init sits at chance for tens of steps; when it
starts to learn its gradient norm jumps ~50x, and unclipped SGD with momentum threw it back to
chance: with objective "ce", 2 epochs of 10,000 Fashion-MNIST rows ended at 25% (this init) and
every exit near chance in epoch 1, with no word from fit. The step is now clipped to gradient
norm 1.0, and a first epoch whose loss does not fall is reported."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eeopt.errors import UsageError
from eeopt.train import attach_exits, fit, stalled_loss


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Conv2d(c_in, c_out, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.skip(x) + self.conv2(F.relu(self.conv1(x))))


class PlainResNet(nn.Module):
    """A stem conv and three residual blocks, no batch norm, default init, raw [0, 1] input."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.block1 = ResBlock(width, width, 1)
        self.block2 = ResBlock(width, width, 2)
        self.block3 = ResBlock(width, width, 2)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(F.relu(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def test_ce_trains_a_residual_cnn_without_batch_norm() -> None:
    torch.manual_seed(2)  # an init on which unclipped training stayed at chance
    model = attach_exits(PlainResNet(), points="auto")
    m = fit(model, data="fashion-mnist", objective="ce", epochs=2, limit=10000, val_limit=2000,
            progress=False)
    # unclipped: 0.23/0.12/0.25, epoch 1 at chance on every exit; clipped: 0.27/0.47/0.59
    assert m["val_acc"][-1] > 0.5, m["history"]
    assert m["history"][0]["loss"] < 6.5, m["history"]  # 3 exits at chance: 3 ln 10 = 6.9
    assert m["grad_clip"] == 1.0 and m["warnings"] == []


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) * 0.5 + F.one_hot(y, 8).float() * 3
    return x, y


class TwoExitMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 16)
        self.head0, self.head1 = nn.Linear(16, 4), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x))
        return self.head0(h), self.head1(torch.relu(self.b(h)))


def test_a_first_epoch_that_learns_nothing_is_reported(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    data = _blobs(1024, 0)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="eeopt.train"):
        stuck = fit(TwoExitMLP(), data=data, val_data=data, objective="ce", lr=1e-7,
                    batch_size=32, progress=False, threads=1)
    assert len(stuck["warnings"]) == 1, stuck["warnings"]
    assert "the model is not learning" in stuck["warnings"][0]
    assert "try another lr (now 1e-07)" in stuck["warnings"][0]
    assert any("not learning" in r.getMessage() for r in caplog.records)
    torch.manual_seed(0)
    fine = fit(TwoExitMLP(), data=data, val_data=data, objective="ce", batch_size=32,
               progress=False, threads=1)
    assert fine["warnings"] == [] and min(fine["val_acc"]) > 0.9


def test_stalled_loss_judges_the_first_and_last_tenth() -> None:
    assert stalled_loss([2.3] * 40) is not None
    assert stalled_loss([2.3] * 20 + [2.2] * 20) is not None  # 4% down: stalled
    assert stalled_loss([2.3] * 20 + [1.9] * 20) is None  # 17% down
    assert stalled_loss([2.3] * 19) is None  # too few steps to judge
    assert stalled_loss([0.0] * 40) is None  # nothing left to fall


def test_grad_clip_is_checked() -> None:
    data = _blobs(64, 0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="grad_clip must be a positive number or None"):
            fit(TwoExitMLP(), data=data, grad_clip=bad, progress=False)
