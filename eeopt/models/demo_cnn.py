"""DemoCNN: a small residual CNN for Fashion-MNIST with three early exits and a final classifier.

The network is a chain of four segments; after segment ``k`` an exit head turns the features
into logits ``exit k``. Segment 0 downsamples to 14x14 almost at once so that exit 0 is cheap;
channels grow as the feature map shrinks (16 @28x28 -> 16 @14x14 -> 48 @7x7 -> 112 @4x4).
Channel counts are multiples of 16 so that blocked (NCHWc) CPU convolutions waste no lanes.
Every exit head is a 1x1 conv + BN + ReLU followed by a tiny linear classifier over the (pooled)
map; the final exit is global average pooling + linear. ``forward`` takes float32 ``[B, 1, 28, 28]``
in ``[0, 1]``, normalizes inside, and returns the four logits ``[B, 10]``, earliest first.

Per-image cost (multiply-accumulates of Conv2d and Linear layers) is given by
:func:`count_exit_macs`; the trained weights ship as ``weights/demo_cnn.pt`` and are reproduced
by ``scripts/train_demo_cnn.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from eeopt.errors import DataError

__all__ = [
    "DEFAULT_WEIGHTS",
    "INPUT_SHAPE",
    "MEAN",
    "NUM_CLASSES",
    "NUM_EXITS",
    "STD",
    "DemoCNN",
    "count_exit_macs",
    "layer_macs",
    "load_demo_cnn",
]

logger = logging.getLogger(__name__)

MEAN = 0.2860
STD = 0.3530
NUM_CLASSES = 10
NUM_EXITS = 4
INPUT_SHAPE = (1, 28, 28)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo_cnn.pt"


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Normalize(nn.Module):
    """``(x - MEAN) / STD`` with Fashion-MNIST's training-set statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) * (1.0 / STD)


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN with an identity skip (ResNet basic block, no downsampling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class _ExitHead(nn.Module):
    """1x1 conv + BN + ReLU, optional average pooling, then flatten + linear."""

    def __init__(self, c_in: int, c_mid: int, size: int, pool: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_mid)
        self.relu = nn.ReLU(inplace=True)
        self.pool: nn.Module = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.fc = nn.Linear(c_mid * (size // pool) ** 2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(out, 1))


class _FinalHead(nn.Module):
    """Global average pooling + linear."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))


class DemoCNN(nn.Module):
    """Residual CNN with exits after segments 0, 1, 2 (early) and 3 (final).

    ``segments[k]`` is the backbone between exit ``k - 1`` and exit ``k``; ``heads[k]`` maps its
    output to logits. ``forward`` returns ``(exit0, exit1, exit2, exit3)``. With the default
    ``widths=(w0, w1, w2, w3)``:

    - segment 0: normalize, conv3x3 1->w0 @28x28, conv3x3/2 w0->w1 @14x14, 2 basic blocks (w1)
    - segment 1: conv3x3/2 w1->w2 @7x7, 1 basic block (w2)
    - segment 2: conv3x3/2 w2->w3 @4x4, 1 basic block (w3)
    - segment 3: 1 basic block (w3)
    - heads 0-2: conv1x1 -> 32/32/64 + BN + ReLU (+ 2x2 avg pool at 14x14), flatten, linear
    - head 3: global average pool, linear

    Every conv is followed by BatchNorm; a basic block is conv-BN-ReLU-conv-BN + identity, ReLU.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 16, 48, 112)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.widths = widths
        self.segments = nn.ModuleList(
            [
                nn.Sequential(  # 28x28 -> 14x14
                    _Normalize(),
                    _conv_bn_relu(1, w0),
                    _conv_bn_relu(w0, w1, stride=2),
                    _BasicBlock(w1),
                    _BasicBlock(w1),
                ),
                nn.Sequential(_conv_bn_relu(w1, w2, stride=2), _BasicBlock(w2)),  # -> 7x7
                nn.Sequential(_conv_bn_relu(w2, w3, stride=2), _BasicBlock(w3)),  # -> 4x4
                nn.Sequential(_BasicBlock(w3)),  # 4x4
            ]
        )
        self.heads = nn.ModuleList(
            [
                _ExitHead(w1, 32, size=14, pool=2),
                _ExitHead(w2, 32, size=7),
                _ExitHead(w3, 64, size=4),
                _FinalHead(w3),
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for segment, head in zip(self.segments, self.heads, strict=True):
            x = segment(x)
            outputs.append(head(x))
        return tuple(outputs)


def layer_macs(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> dict[str, int]:
    """Per-image multiply-accumulates of each Conv2d and Linear layer, by module name, from one
    forward pass on a ``[1, *input_shape]`` input. BN, ReLU, pooling and adds are not
    counted."""
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(module: nn.Module, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                macs = output[0].numel() * (module.in_channels // module.groups) * k
            else:
                assert isinstance(module, nn.Linear)
                macs = module.in_features * module.out_features
            counts[name] = counts.get(name, 0) + macs

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counts


def count_exit_macs(model: DemoCNN) -> dict[str, list[int]]:
    """Per-image multiply-accumulates of the Conv2d and Linear layers, per exit.

    Returns ``segment`` (backbone segment ``k`` alone), ``head`` (exit head ``k`` alone) and
    ``cumulative``: what a sample leaving at exit ``k`` computes, i.e. segments ``0..k`` plus
    heads ``0..k`` (the earlier heads ran to decide not to exit). BN, ReLU, pooling and adds
    are not counted.
    """
    counts: dict[str, int] = {}
    for name, macs in layer_macs(model).items():
        part = ".".join(name.split(".")[:2])  # "segments.k" or "heads.k"
        counts[part] = counts.get(part, 0) + macs
    segment = [counts.get(f"segments.{k}", 0) for k in range(NUM_EXITS)]
    head = [counts.get(f"heads.{k}", 0) for k in range(NUM_EXITS)]
    cumulative = [sum(segment[: k + 1]) + sum(head[: k + 1]) for k in range(NUM_EXITS)]
    return {"segment": segment, "head": head, "cumulative": cumulative}


def load_demo_cnn(weights_path: str | Path | None = None) -> DemoCNN:
    """Build :class:`DemoCNN` with trained weights (default: the shipped ones), in eval mode."""
    path = Path(weights_path) if weights_path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise DataError(
            f"DemoCNN weights {path} not found: pass an existing weights_path or regenerate them "
            "with `python scripts/train_demo_cnn.py`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise DataError(
            f"DemoCNN weights {path} could not be read ({type(exc).__name__}): regenerate them "
            "with `python scripts/train_demo_cnn.py`"
        ) from exc
    model = DemoCNN()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(
            f"DemoCNN weights {path} do not match the DemoCNN architecture: regenerate them "
            "with `python scripts/train_demo_cnn.py`"
        ) from exc
    logger.debug("loaded DemoCNN weights from %s", path)
    return model.eval()
