"""Metrics the benchmarks report beside accuracy and latency."""

from __future__ import annotations

import numpy as np

__all__ = ["ece"]


def ece(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the softmax max probability, ``bins`` equal-width bins
    (each ``(lo, hi]``), weighted by the rows in each."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(float(right[m].mean()) - float(conf[m].mean()))
    return float(total)
