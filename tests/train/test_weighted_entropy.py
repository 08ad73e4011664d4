"""The adaptive off-ramp pieces on hand-made predictions: sample weights and resampling."""

from __future__ import annotations

import torch

from eeopt.train import WeightedEntropy, entropy_weights, exits_correctly, resample


def test_weights_follow_earlier_mistakes() -> None:
    y = torch.tensor([0, 1, 2, 3, 4])
    ramp0 = torch.tensor([0, 9, 9, 3, 9])  # right on rows 0, 3
    ramp1 = torch.tensor([9, 1, 9, 9, 9])  # right on row 1
    assert entropy_weights([], y, 0.1).tolist() == [1.0] * 5  # first ramp: every row counts
    w1 = entropy_weights([ramp0], y, 0.1)
    torch.testing.assert_close(w1, torch.tensor([0.1, 1.0, 1.0, 0.1, 1.0]))
    w2 = entropy_weights([ramp0, ramp1], y, 0.1)
    torch.testing.assert_close(w2, torch.tensor([0.1, 0.1, 1.0, 0.1, 1.0]))
    assert entropy_weights([ramp0, ramp1], y, 0.0).tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_loss_uses_the_weights() -> None:
    """Only the weighted entropy term differs between rows earlier ramps got right or wrong."""
    y = torch.tensor([0, 0])
    early = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # ramp 0: right on row 0, wrong on row 1
    ramp = torch.tensor([[0.3, 0.1], [0.3, 0.1]])  # ramp 1: the same uncertain logits
    obj = WeightedEntropy(alpha=1.0, eps=0.0, conf_weight=0.0)
    obj.begin_stage(1)
    per_row = [obj.loss([early[i : i + 1], ramp[i : i + 1]], y[i : i + 1], y, None).item()
               for i in range(2)]  # type: ignore[arg-type]
    p = torch.softmax(ramp[0], 0)
    entropy = float(-(p * p.log()).sum())
    assert abs(per_row[1] - per_row[0] - entropy) < 1e-5


def test_exits_correctly_needs_confidence_and_the_right_label() -> None:
    logits = torch.log(torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.05, 0.95]]))
    y = torch.tensor([0, 1, 0, 1])
    assert exits_correctly(logits, y, 0.9).tolist() == [True, False, False, True]


def test_resample_removes_exited_rows() -> None:
    rows = torch.arange(10, 20)
    exited = torch.zeros(10, dtype=torch.bool)
    exited[[0, 3, 4, 9]] = True
    out = resample(rows, exited, torch.Generator().manual_seed(0))
    assert sorted(out.tolist()) == [11, 12, 15, 16, 17, 18]
    again = resample(rows, exited, torch.Generator().manual_seed(0))
    assert out.tolist() == again.tolist()  # seeded
    other = resample(rows, exited, torch.Generator().manual_seed(1))
    assert sorted(other.tolist()) == sorted(out.tolist())


def test_keep_is_the_rows_that_did_not_exit_correctly() -> None:
    obj = WeightedEntropy(threshold=0.9)
    logits = torch.log(torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4]]))
    keep = obj.keep(0, [logits, logits], torch.tensor([0, 1, 0]))
    assert keep is not None and keep.tolist() == [False, True, True]
