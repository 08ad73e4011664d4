"""The numpy truth for the fused gate: softmax features and each policy's exit decision."""

from __future__ import annotations

import numpy as np

__all__ = [
    "GATE_FEATURES",
    "POLICIES",
    "NEVER",
    "gate_features",
    "gate_scores",
    "gate_decision",
    "patience_step",
    "check_threshold",
]

#: column order of the gate-feature matrix every implementation returns
GATE_FEATURES = ("max_prob", "entropy", "margin")

#: gate policies: how a stage decides that a row leaves
#:   maxprob   softmax max probability >= T            (T in (0, 1])
#:   entropy   softmax entropy (nats) <= T             (T >= 0)
#:   margin    top-1 minus top-2 probability >= T      (T in (0, 1])
#:   patience  the argmax has been the same for T consecutive exits, this one included (PABEE;
#:             T >= 1; the runtime carries each row's previous argmax and streak)
POLICIES = ("maxprob", "entropy", "margin", "patience")

#: a threshold that never fires, per policy (runtime overrides, calibration runs)
NEVER = {"maxprob": np.inf, "entropy": -np.inf, "margin": np.inf, "patience": np.inf}


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


def check_threshold(policy: str, threshold: float) -> str | None:
    """None if ``threshold`` is valid for ``policy``, else the rule it breaks."""
    if policy not in POLICIES:
        return f"unknown gate policy {policy!r}; choose one of {', '.join(POLICIES)}"
    t = float(threshold)
    if not np.isfinite(t):
        return "must be finite"
    if policy in ("maxprob", "margin") and not 0.0 < t <= 1.0:
        return "each must satisfy 0 < T <= 1"
    if policy == "entropy" and t < 0.0:
        return "an entropy threshold must be >= 0 (nats)"
    if policy == "patience" and t < 1.0:
        return "a patience must be >= 1"
    return None


def gate_scores(logits: np.ndarray, policy: str) -> np.ndarray:
    """A score per row that fires when ``score >= sign * T``: max prob, -entropy or margin."""
    f = gate_features(logits)
    if policy == "maxprob":
        return f[:, 0]
    if policy == "entropy":
        return -f[:, 1]
    if policy == "margin":
        return f[:, 2]
    raise ValueError(f"policy {policy!r} has no per-exit score")


def patience_step(
    logits: np.ndarray, prev_pred: np.ndarray | None, streak: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One exit of PABEE: the argmax, and how many consecutive exits (this one included) have
    agreed on it."""
    pred = logits.argmax(axis=1).astype(np.int64)
    if prev_pred is None or streak is None:
        return pred, np.ones_like(pred)
    return pred, np.where(pred == prev_pred, streak + 1, 1).astype(np.int64)


def gate_decision(logits: np.ndarray, threshold: float, policy: str = "maxprob",
                  streak: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: does each row leave at this exit? (patience needs this exit's ``streak``)."""
    t = np.float32(threshold)
    if policy == "patience":
        if streak is None:
            raise ValueError("the patience policy needs the streak from patience_step")
        return streak.astype(np.float32) >= t
    f = gate_features(logits)
    if policy == "maxprob":
        return f[:, 0] >= t
    if policy == "entropy":
        return f[:, 1] <= t
    if policy == "margin":
        return f[:, 2] >= t
    raise ValueError(f"unknown gate policy {policy!r}; choose one of {', '.join(POLICIES)}")
