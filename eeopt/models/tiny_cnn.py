"""TinyCNN: a single-exit CNN for Fashion-MNIST, small enough to be a cascade's first network.

Two strided 3x3 conv + BN + ReLU layers (28x28 -> 14x14 -> 7x7) and a linear classifier over the
flattened 7x7 map. With the default widths ``(16, 32)`` it costs about 0.27 M multiply-
accumulates per image, about 2% of the DemoCNN's 13 M. ``forward`` takes float32
``[B, 1, 28, 28]`` in ``[0, 1]``, normalizes inside (the DemoCNN's statistics), and returns one
``[B, 10]`` logits tensor (a tuple of one, so that ``eeopt.frontend.export_torch`` takes it).

The trained weights ship as ``weights/tiny_cnn.pt`` and are reproduced by
``scripts/train_tiny_cnn.py``; ``weights/tiny_cnn.json`` records how they were made.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from eeopt.errors import DataError
from eeopt.models.demo_cnn import INPUT_SHAPE, MEAN, NUM_CLASSES, STD, layer_macs

__all__ = ["DEFAULT_WEIGHTS", "TinyCNN", "count_macs", "load_tiny_cnn"]

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny_cnn.pt"


class TinyCNN(nn.Module):
    """normalize -> conv3x3/2 1->w0 -> BN -> ReLU -> conv3x3/2 w0->w1 -> BN -> ReLU -> flatten
    -> linear(w1*7*7 -> 10)."""

    def __init__(self, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        w0, w1 = widths
        self.widths = widths
        self.features = nn.Sequential(
            nn.Conv2d(1, w0, 3, stride=2, padding=1, bias=False),  # 28 -> 14
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
            nn.Conv2d(w0, w1, 3, stride=2, padding=1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(w1 * 7 * 7, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = (x - MEAN) * (1.0 / STD)
        return (self.fc(torch.flatten(self.features(x), 1)),)


def count_macs(model: nn.Module) -> int:
    """Per-image multiply-accumulates of the model's Conv2d and Linear layers."""
    return sum(layer_macs(model, INPUT_SHAPE).values())


def load_tiny_cnn(weights_path: str | Path | None = None) -> TinyCNN:
    """Build :class:`TinyCNN` with trained weights (default: the shipped ones), in eval mode."""
    path = Path(weights_path) if weights_path is not None else DEFAULT_WEIGHTS
    fix = "regenerate them with `python scripts/train_tiny_cnn.py`"
    if not path.is_file():
        raise DataError(f"TinyCNN weights {path} not found: pass an existing path or {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise DataError(f"TinyCNN weights {path} could not be read "
                        f"({type(exc).__name__}): {fix}") from exc
    widths = state.pop("_widths", None) if isinstance(state, dict) else None
    model = TinyCNN(tuple(int(w) for w in widths.tolist()) if widths is not None  # type: ignore[arg-type]
                    else (16, 32))
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"TinyCNN weights {path} do not match the TinyCNN architecture: "
                        f"{fix}") from exc
    logger.debug("loaded TinyCNN weights from %s", path)
    return model.eval()
