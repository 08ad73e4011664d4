"""The shipped TinyCNN weights (the cascade benchmark's first network) match their record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eeopt.errors import DataError  # noqa: E402
from eeopt.models.tiny_cnn import DEFAULT_WEIGHTS, count_macs, load_tiny_cnn  # noqa: E402


def test_shipped_weights_match_their_record() -> None:
    record = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    model = load_tiny_cnn()
    assert list(model.widths) == record["widths"]
    assert count_macs(model) == record["macs"] < 1_000_000
    assert DEFAULT_WEIGHTS.stat().st_size == record["weights_bytes"] < 1_000_000
    try:
        from eeopt.data import load_fashion_mnist

        x, y = load_fashion_mnist("test")
    except DataError:
        pytest.skip("Fashion-MNIST is not installed")
    with torch.no_grad():
        (logits,) = model(torch.from_numpy(np.array(x[:2000])))
    acc = float((logits.argmax(1).numpy() == y[:2000]).mean())
    assert abs(acc - record["test_acc"]) < 0.02  # the first 2,000 of the 10,000


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train_tiny_cnn.py"):
        load_tiny_cnn(tmp_path / "nope.pt")
