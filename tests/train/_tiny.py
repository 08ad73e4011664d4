"""A small torchvision-free backbone for the exit-training tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyBlock(nn.Module):
    """conv3x3 + BN + ReLU, with an identity skip when the shape allows."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        return torch.relu(out + x if self.skip else out)


class TinyNet(nn.Module):
    """[B, 1, 28, 28] -> [B, 10]: a stem, three blocks, global average pool, linear."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1), nn.ReLU())
        self.layer1 = TinyBlock(width, width)
        self.layer2 = TinyBlock(width, 2 * width, stride=2)
        self.layer3 = TinyBlock(2 * width, 2 * width)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x - 0.286))))
        return self.fc(x.mean(dim=(2, 3)))
