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
    "defined_rows",
    "check_threshold",
    "compaction_order",
    "check_run_threshold",
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
    with np.errstate(invalid="ignore"):  # 0 * -inf: a masked class adds 0 log 0 = 0
        ent = -np.where(p == 0, 0.0, p * logp).sum(axis=-1)
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
    agreed on it. A row whose softmax is undefined (``defined_rows``) has no prediction to
    agree on: its streak resets to 0, so it cannot leave here."""
    pred = logits.argmax(axis=1).astype(np.int64)
    if prev_pred is None or streak is None:
        new = np.ones_like(pred)
    else:
        new = np.where(pred == prev_pred, streak + 1, 1).astype(np.int64)
    return pred, np.where(defined_rows(logits), new, 0).astype(np.int64)


def defined_rows(logits: np.ndarray) -> np.ndarray:
    """``[N]`` bool: is the row's softmax defined (no NaN, no +inf, not every logit -inf; a
    single -inf, a masked class, is fine)? No gate fires on a row where it is not: for
    maxprob, entropy and margin it follows from NaN comparing false."""
    return np.isfinite(logits.astype(np.float64).max(axis=1))


def gate_decision(logits: np.ndarray, threshold: float, policy: str = "maxprob",
                  streak: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: does each row leave at this exit? (patience needs this exit's ``streak``)."""
    t = np.float32(threshold)
    if policy == "patience":
        if streak is None:
            raise ValueError("the patience policy needs the streak from patience_step")
        return (streak.astype(np.float32) >= t) & defined_rows(logits)
    f = gate_features(logits)
    if policy == "maxprob":
        return f[:, 0] >= t
    if policy == "entropy":
        return f[:, 1] <= t
    if policy == "margin":
        return f[:, 2] >= t
    raise ValueError(f"unknown gate policy {policy!r}; choose one of {', '.join(POLICIES)}")


def compaction_order(decision: np.ndarray) -> tuple[np.ndarray, int]:
    """The compaction indices a device-side runtime gathers with, from a prefix sum over the
    decisions: ``order[:count]`` are the rows that stay, ascending; ``order[count:]`` the rows
    that leave, descending (each leaving row ``i`` goes to ``N - 1 - (leaving rows before i)``).
    Returns ``(order int64 [N], count)``."""
    leave = np.asarray(decision, dtype=bool).reshape(-1)
    stay = ~leave
    n = leave.shape[0]
    stay_before = np.cumsum(stay) - stay
    leave_before = np.cumsum(leave) - leave
    pos = np.where(stay, stay_before, n - 1 - leave_before)
    order = np.empty(n, dtype=np.int64)
    order[pos] = np.arange(n, dtype=np.int64)
    return order, int(stay.sum())


# ---------------------------------------------------------------------------- learned gates
# The numpy truth for kernels/onnx_learned_gate.py (see eeopt.gates for how they are trained).

#: gate policies whose decision is learned from calibration data: the gate outputs a score in
#: [0, 1] and fires when score >= T (T in [0, 1]; default 0.5)
#:   jei             JEI-DNN gate: sigmoid(Linear(4 -> 1)) on the exit's softmax statistics
#:   gate-unit       CN111445026A: an MLP on the head's pooled input + the softmax statistics
#:   cost-sensitive  Bolukbasi et al. 2017: a weighted classifier on the softmax statistics
#:   twin            EP4356304A1 claim 2: stage 0 predicts the target exit from the input;
#:                   exit k fires when P(target <= k) >= T
LEARNED_POLICIES = ("jei", "gate-unit", "cost-sensitive", "twin")
NEVER.update({p: np.inf for p in LEARNED_POLICIES})


def logit_gate_features(logits: np.ndarray) -> np.ndarray:
    """``[N, C]`` logits -> ``[N, 4]`` float32: max probability, entropy, margin, and the
    entropy of ``p^2 / sum(p^2)`` (JEI-DNN's gate inputs)."""
    p, logp = _softmax(logits)
    top2 = np.sort(p, axis=-1)[:, -2:]
    with np.errstate(invalid="ignore"):  # 0 * -inf: a masked class adds 0 log 0 = 0
        ent = -np.where(p == 0, 0.0, p * logp).sum(axis=-1)
    s2 = (p * p).sum(axis=-1, keepdims=True)
    q = p * p / s2
    ent2 = -(q * (2.0 * logp - np.log(s2))).sum(axis=-1)
    return np.stack([top2[:, 1], ent, top2[:, 1] - top2[:, 0], ent2], axis=1).astype(np.float32)


def pool_features(t: np.ndarray, kernel: int = 0) -> np.ndarray:
    """A ``[N, C, H, W]`` tensor average-pooled (globally when ``kernel`` is 0, else with a
    ``kernel`` x ``kernel`` window and stride, trailing rows dropped) and flattened; ``[N, D]``
    passes through."""
    t = np.asarray(t, dtype=np.float32)
    if t.ndim == 2:
        return t
    if t.ndim != 4:
        raise ValueError(f"pool_features takes [N, D] or [N, C, H, W], got shape {t.shape}")
    if not kernel:
        return t.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
    n, c, h, w = t.shape
    hh, ww = h // kernel, w // kernel
    v = t[:, :, : hh * kernel, : ww * kernel].reshape(n, c, hh, kernel, ww, kernel)
    return v.mean(axis=(3, 5), dtype=np.float64).reshape(n, -1).astype(np.float32)


def mlp_forward(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
                weights: list[np.ndarray] | tuple[np.ndarray, ...],
                biases: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
    """``(x - mean) * inv_std`` through ``Linear -> ReLU -> ... -> Linear`` (pre-activation)."""
    h = (np.asarray(x, dtype=np.float64) - mean) * inv_std
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ np.asarray(w, dtype=np.float64) + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def learned_score(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
                  weights: list[np.ndarray] | tuple[np.ndarray, ...],
                  biases: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
    """``[N]`` float32 score in [0, 1]: the sigmoid of the MLP's one output."""
    z = mlp_forward(x, mean, inv_std, weights, biases)[:, 0]
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def twin_route(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
               weights: list[np.ndarray] | tuple[np.ndarray, ...],
               biases: list[np.ndarray] | tuple[np.ndarray, ...],
               columns: tuple[int, ...] | list[int]) -> np.ndarray:
    """``[N, len(columns)]`` float32: the twin's ``P(target exit <= c)`` for each column c."""
    z = mlp_forward(x, mean, inv_std, weights, biases)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    cum = np.cumsum(p, axis=1)
    return cum[:, list(columns)].astype(np.float32)


def check_run_threshold(policy: str, threshold: float) -> str | None:
    """None if ``threshold`` may override ``policy``'s at run time, else the rule it breaks:
    the compile-time range, or a value that disables the exit (maxprob, margin and the learned
    policies: above 1; entropy: below 0; patience: +inf). Only NaN is refused for a policy this
    eeopt does not know. The C++ runtime applies the same rule (cpp/src/inputs.cpp)."""
    t = float(threshold)
    if np.isnan(t):
        return "a threshold must be a number, not NaN"
    if policy in ("maxprob", "margin"):
        return None if t > 0.0 else "each must be > 0 (above 1 disables the exit)"
    if policy in LEARNED_POLICIES:
        return None if t >= 0.0 else "each must be >= 0 (above 1 disables the exit)"
    if policy == "entropy":
        return None if t < np.inf else "each must be finite (below 0 disables the exit)"
    if policy == "patience":
        return None if t >= 1.0 else "each must be >= 1 (inf disables the exit)"
    return None  # a policy this eeopt does not know: no range to hold it to
