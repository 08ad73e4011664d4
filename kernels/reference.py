"""The numpy truth for the fused gate: softmax features and the exit decision."""

from __future__ import annotations

import numpy as np

__all__ = ["GATE_FEATURES", "gate_features", "gate_decision"]

#: column order of the gate-feature matrix every implementation returns
GATE_FEATURES = ("max_prob", "entropy", "margin")


def _softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.exp(logp), logp


def gate_features(logits: np.ndarray) -> np.ndarray:
    """``[N, C]`` logits -> ``[N, 3]`` float32: softmax max probability, entropy (nats), and
    margin (top-1 minus top-2 probability)."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"gate needs [N, C>=2] logits, got shape {logits.shape}")
    p, logp = _softmax(logits)
    top2 = np.sort(p, axis=-1)[:, -2:]
    ent = -(p * logp).sum(axis=-1)
    return np.stack([top2[:, 1], ent, top2[:, 1] - top2[:, 0]], axis=1).astype(np.float32)


def gate_decision(logits: np.ndarray, threshold: float, policy: str = "maxprob") -> np.ndarray:
    """``[N]`` bool: does each row leave at this exit? ``maxprob``: max probability >= threshold."""
    if policy != "maxprob":
        raise ValueError(f"unknown gate policy {policy!r}; supported: maxprob")
    return gate_features(logits)[:, 0] >= np.float32(threshold)
