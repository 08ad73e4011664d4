"""Exit decisions from calibration data: simulate a gate setting, pick thresholds.

An analysis: pure functions over per-exit confidence scores, labels and costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eeopt.kernels.reference import gate_features

__all__ = ["simulate_exits", "ThresholdChoice", "pick_global_threshold", "DEFAULT_GRID"]

#: candidate thresholds: dense near 1, where max-probability gates live
DEFAULT_GRID = np.unique(
    np.concatenate([np.linspace(0.3, 0.9, 61), 1.0 - np.logspace(-1, -4, 61)])
)


def simulate_exits(scores: Sequence[np.ndarray], thresholds: Sequence[float]) -> np.ndarray:
    """The exit each row takes: the first k with ``scores[k] >= thresholds[k]``, else the last.

    ``scores``: one ``[N]`` max-probability array per early exit (the final exit needs none).
    """
    n = scores[0].shape[0]
    exit_ = np.full(n, len(scores), dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for k, (s, t) in enumerate(zip(scores, thresholds, strict=True)):
        fire = open_ & (s >= np.float32(t))
        exit_[fire] = k
        open_ &= ~fire
    return exit_


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    accuracy: float
    final_accuracy: float
    exit_fractions: tuple[float, ...]
    expected_cost: float
    full_cost: float

    @property
    def loss_pp(self) -> float:
        return 100.0 * (self.final_accuracy - self.accuracy)

    @property
    def ideal_speedup(self) -> float:
        return self.full_cost / self.expected_cost


def pick_global_threshold(
    logits: Sequence[np.ndarray],
    labels: np.ndarray,
    cumulative_cost: Sequence[float],
    *,
    max_loss_pp: float,
    grid: np.ndarray = DEFAULT_GRID,
) -> ThresholdChoice:
    """The one threshold (shared by every early exit) with the lowest expected cost whose
    accuracy is within ``max_loss_pp`` points of the final exit's, on the given data."""
    scores = [gate_features(z)[:, 0] for z in logits[:-1]]
    preds = np.stack([z.argmax(axis=1) for z in logits])
    correct = preds == labels[None, :]
    final_acc = float(correct[-1].mean())
    cum = np.asarray(cumulative_cost, dtype=float)
    best: ThresholdChoice | None = None
    for t in grid:
        ex = simulate_exits(scores, [float(t)] * len(scores))
        acc = float(correct[ex, np.arange(len(labels))].mean())
        frac = np.bincount(ex, minlength=len(logits)) / len(labels)
        cost = float(frac @ cum)
        choice = ThresholdChoice(float(t), acc, final_acc, tuple(frac.tolist()), cost,
                                 float(cum[-1]))
        if choice.loss_pp <= max_loss_pp and (best is None or cost < best.expected_cost):
            best = choice
    if best is None:  # nothing meets the budget: never exit early
        frac = np.zeros(len(logits))
        frac[-1] = 1.0
        best = ThresholdChoice(1.0, final_acc, final_acc, tuple(frac.tolist()), float(cum[-1]),
                               float(cum[-1]))
    return best
