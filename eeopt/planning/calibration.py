"""Calibration: every exit's logits on labelled data, and what a choice of kept exits and
thresholds makes of them (which exit each row takes). Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eeopt.kernels.reference import gate_features, patience_step

__all__ = ["Calibration", "exits_of_plan", "local_exits", "simulate_exits",
           "simulate_patience", "to_policy_threshold"]


@dataclass(frozen=True)
class Calibration:
    """Every exit's logits on labelled calibration data (run once, with no early exit)."""

    logits: tuple[np.ndarray, ...]
    labels: np.ndarray

    @property
    def num_exits(self) -> int:
        return len(self.logits)

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def correct(self) -> np.ndarray:
        """``[K, N]`` bool: is exit k right on row n?"""
        return np.stack([z.argmax(axis=1) == self.labels for z in self.logits])

    def scores(self, policy: str) -> np.ndarray:
        """``[K-1, N]`` float: a row fires at exit k when ``score >= threshold`` (entropy is
        negated so that this holds for every threshold policy)."""
        col = {"maxprob": 0, "entropy": 1, "margin": 2}[policy]
        sign = -1.0 if policy == "entropy" else 1.0
        return np.stack([sign * gate_features(z)[:, col] for z in self.logits[:-1]])

    def subset(self, idx: np.ndarray) -> Calibration:
        return Calibration(tuple(z[idx] for z in self.logits), self.labels[idx])


def simulate_exits(scores: Sequence[np.ndarray], thresholds: Sequence[float],
                   n: int | None = None) -> np.ndarray:
    """The exit each row takes: the first k with ``scores[k] >= thresholds[k]``, else the last.

    ``scores``: one ``[N]`` array per early exit (the final exit needs none; with no early exit
    at all, pass ``n``).
    """
    if n is None:
        n = scores[0].shape[0]
    exit_ = np.full(n, len(scores), dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for k, (s, t) in enumerate(zip(scores, thresholds, strict=True)):
        fire = open_ & (s >= np.float32(t))
        exit_[fire] = k
        open_ &= ~fire
    return exit_


def simulate_patience(logits: Sequence[np.ndarray], patience: float) -> np.ndarray:
    n = logits[0].shape[0]
    exit_ = np.full(n, len(logits) - 1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    pred = streak = None
    for k, z in enumerate(logits[:-1]):
        pred, streak = patience_step(z, pred, streak)
        fire = open_ & (streak >= patience)
        exit_[fire] = k
        open_ &= ~fire
    return exit_


def to_policy_threshold(policy: str, score_threshold: float) -> float:
    """Search space (fire when score >= t) -> the policy's own threshold, and back (the map is
    its own inverse): entropy scores are negated entropies."""
    return -score_threshold + 0.0 if policy == "entropy" else score_threshold


def local_exits(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                 policy: str) -> np.ndarray:
    """Index into ``kept`` of the exit each row takes (thresholds in the policy's terms)."""
    kept = list(kept)
    if policy == "patience":
        return simulate_patience([calib.logits[k] for k in kept],
                                 thresholds[0] if thresholds else np.inf)
    sc = calib.scores(policy)
    return simulate_exits([sc[k] for k in kept[:-1]],
                          [to_policy_threshold(policy, t) for t in thresholds], n=calib.rows)


def exits_of_plan(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                   policy: str) -> np.ndarray:
    return np.asarray(list(kept))[local_exits(calib, kept, thresholds, policy)]
