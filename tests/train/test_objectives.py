"""Every objective trains on a small Fashion-MNIST subset: loss goes down, exits beat chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eeopt.errors import UsageError
from eeopt.train import OBJECTIVES, attach_exits, fit

from ._tiny import TinyNet


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return attach_exits(TinyNet(), "auto", head="conv-pool-linear",
                        example_inputs=torch.rand(2, 1, 28, 28))


def _train(objective: str, **kw: object) -> tuple[torch.nn.Module, dict]:
    model = _model()
    metrics = fit(model, "fashion-mnist", objective, epochs=2, limit=512, batch_size=16,
                  lr=0.1, progress=False, val_limit=500, threads=1, **kw)
    return model, metrics


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_objective_trains(objective: str) -> None:
    model, m = _train(objective)
    assert m["objective"] == objective
    assert m["num_exits"] == 3
    assert len(m["val_acc"]) == 3
    first_stage = m["loss_curve"][0]
    assert np.mean(first_stage[-4:]) < np.mean(first_stage[:4]), first_stage
    for k, acc in enumerate(m["val_acc"]):
        assert acc > 0.2, f"exit {k} at {acc:.1%}: no better than chance (10%)"
    assert all(np.isfinite(v) for curve in m["loss_curve"] for v in curve)


def test_weighted_entropy_goes_ramp_by_ramp() -> None:
    _, m = _train("weighted-entropy", threshold=0.6)
    assert [h["stage"] for h in m["history"]] == [0, 0, 1, 1, 2, 2]
    sizes = m["stage_sizes"]
    assert sizes[0] == 512
    assert sizes[1] < sizes[0], "rows that exit correctly at ramp 0 must leave the training set"
    assert sizes[2] <= sizes[1]


def test_freeze_backbone_trains_heads_only() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, "fashion-mnist", "ce", epochs=1, limit=256, batch_size=64, progress=False,
        val_limit=200, freeze_backbone=True, threads=1)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    backbone = {k for k in changed if k.startswith("backbone.") and
                not k.startswith("backbone.fc.")}
    assert not backbone, f"frozen backbone changed: {sorted(backbone)[:3]}"
    assert any(k.startswith("exits.") for k in changed)
    assert any(k.startswith("backbone.fc.") for k in changed), "final classifier must train"


def test_fit_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        model, m = _train("consistency")
        runs.append((m["loss_curve"], [v.clone() for v in model.state_dict().values()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="no setting 'alhpa'"):
        fit(_model(), objective="weighted-entropy", alhpa=1.0, limit=64, progress=False)
    with pytest.raises(UsageError, match="unknown objective"):
        fit(_model(), objective="nope", limit=64, progress=False)
    with pytest.raises(UsageError, match="tuple of logits"):
        fit(TinyNet(), limit=64, progress=False)
