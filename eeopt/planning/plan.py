"""Exit placement and gate thresholds from calibration data, under an accuracy budget.

An analysis: pure functions over per-exit predictions, gate scores and measured costs.

The planner chooses together which exits to keep and the threshold of each kept exit. It
minimises the expected latency per row (the profiled cost of each stage, times the fraction of
rows that reach it) subject to an accuracy loss of at most ``budget_pp`` points against the final
exit on the calibration data. Dropping an exit merges its backbone segment into the next kept
stage: its head, gate and stage call are gone.

The search itself is ``eeopt.planning.search``.

Without ``guarantee`` the search keeps ``margin_z`` standard errors of its own loss estimate
below the budget, since the cheapest plan on a sample sits at the budget's edge.

``guarantee``: Learn-then-Test style risk control. Candidate plans are searched on one part of
the data at increasing internal budgets; a fixed-sequence test on the other part (one-sided, on
the paired per-row loss, CLT p-values) keeps the most aggressive plan whose accuracy loss is
certified to be within the budget with probability ``guarantee``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from eeopt.kernels.reference import gate_features
from eeopt.planning.calibration import (
    Calibration,
    exits_of_plan,
    local_exits,
    simulate_exits,
    to_policy_threshold,
)
from eeopt.planning.search import DEFAULT_GRID, SearchResult, search_thresholds

__all__ = [
    "ExitPlan",
    "ThresholdChoice",
    "evaluate_plan",
    "exit_benefit",
    "loss_pvalue",
    "pick_global_threshold",
    "plan_exits",
    "stage_cost_fn",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class ExitPlan:
    policy: str
    kept: tuple[int, ...]
    """Kept exits (indices into the model's outputs); the final exit is always last."""
    thresholds: tuple[float, ...]
    """One per kept early exit."""
    budget_pp: float
    batch: int
    """The batch size the latency model was priced at."""
    predicted_accuracy: float
    final_accuracy: float
    predicted_latency_ms: float
    """Expected ms per row on the search data."""
    plain_latency_ms: float
    exit_fractions: tuple[float, ...]
    """Per kept exit, on the search data."""
    search_rows: int
    holdout: dict[str, float] = field(default_factory=dict)
    """Accuracy, loss and latency of the plan on calibration rows the search never saw."""
    guarantee: float | None = None
    exact: bool = True
    margin_pp: float = 0.0
    """Safety margin the search kept below the budget (standard errors of the loss estimate)."""

    @property
    def predicted_loss_pp(self) -> float:
        return 100.0 * (self.final_accuracy - self.predicted_accuracy)

    @property
    def predicted_speedup(self) -> float:
        return self.plain_latency_ms / self.predicted_latency_ms

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["predicted_loss_pp"] = self.predicted_loss_pp
        d["predicted_speedup"] = self.predicted_speedup
        return d


def stage_cost_fn(profile: object, batch: int) -> Callable[[int, int], float]:
    """``cost(prev, k)``: ms per row of the stage from kept exit ``prev`` to ``k`` in calls of
    ``batch`` rows, from a profile (anything with ``stage_cost``)."""
    def cost(prev: int, k: int) -> float:
        return float(profile.stage_cost(prev, k).per_row(batch))  # type: ignore[attr-defined]

    return cost


def evaluate_plan(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                  policy: str, cost: Callable[[int, int], float]) -> dict[str, float]:
    """Accuracy, exit fractions and expected cost per row of a plan on ``calib`` (thresholds
    in the policy's own terms)."""
    final = calib.num_exits - 1
    kept = list(kept)
    ex_local = local_exits(calib, kept, thresholds, policy)
    ex = np.asarray(kept)[ex_local]
    corr = calib.correct()
    acc = float(corr[ex, np.arange(calib.rows)].mean())
    frac = np.bincount(ex_local, minlength=len(kept)) / calib.rows
    cum, prev, total = [], -1, 0.0
    for k in kept:
        total += cost(prev, k)
        cum.append(total)
        prev = k
    return {"accuracy": acc, "final_accuracy": float(corr[final].mean()),
            "latency_ms": float(frac @ np.asarray(cum)), "fractions": frac.tolist(),  # type: ignore[dict-item]
            "rows": calib.rows}


def _search(calib: Calibration, policy: str, cost: Callable[[int, int], float],
            budget_pp: float, grid: np.ndarray | None, max_leaves: int) -> SearchResult:
    corr = calib.correct()
    final_correct = int(corr[-1].sum())
    min_correct = int(math.ceil(final_correct - budget_pp / 100.0 * calib.rows - 1e-9))
    if policy == "patience":  # one integer patience over all kept exits, every subset
        km1 = calib.num_exits - 1
        best: SearchResult | None = None
        for mask in range(1 << km1):
            kept = tuple(k for k in range(km1) if mask >> k & 1) + (km1,)
            for p in range(2, len(kept) + 1):
                ev = evaluate_plan(calib, kept, [float(p)] * (len(kept) - 1), policy, cost)
                c = ev["latency_ms"] * calib.rows
                r = int(round(ev["accuracy"] * calib.rows))
                if r >= min_correct and (best is None or c < best.cost):
                    best = SearchResult(kept, (float(p),) * (len(kept) - 1), c, r, True)
        return best or SearchResult((km1,), (), cost(-1, km1) * calib.rows, final_correct, True)
    scores = calib.scores(policy)
    if grid is None:
        base = DEFAULT_GRID if policy in ("maxprob", "margin") else -np.unique(
            np.concatenate([np.linspace(0.0, 1.2, 41), np.logspace(-4, -1, 21)]))[::-1]
        # plus the data's own quantiles, so the grid fits wherever this model's scores live
        grid = np.concatenate([base, np.quantile(scores, np.linspace(0.02, 0.98, 33))])
    res = search_thresholds(scores, corr, cost, min_correct=min_correct,
                            grid=np.sort(grid), max_leaves=max_leaves)
    return replace(res, thresholds=tuple(to_policy_threshold(policy, t)
                                         for t in res.thresholds))


def _loss_stderr_pp(calib: Calibration, res: SearchResult, policy: str) -> float:
    """Standard error (points) of the plan's accuracy loss, paired row by row."""
    corr = calib.correct()
    ex = exits_of_plan(calib, res.kept, res.thresholds, policy)
    diff = corr[-1].astype(float) - corr[ex, np.arange(calib.rows)].astype(float)
    return float(100.0 * diff.std() / math.sqrt(max(calib.rows, 1)))


def loss_pvalue(diff: np.ndarray, budget: float) -> float:
    """p-value of "the mean per-row loss exceeds ``budget``" from paired per-row losses in
    [-1, 1] (a one-sided test with the CLT, as Learn-then-Test allows for bounded losses)."""
    n = diff.shape[0]
    if n == 0:
        return 1.0
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        return 0.0 if mean <= budget else 1.0
    z = (budget - mean) / (sd / math.sqrt(n))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def plan_exits(
    calib: Calibration,
    profile: object,
    *,
    budget_pp: float,
    policy: str = "maxprob",
    batch: int = 1,
    holdout: float = 0.3,
    guarantee: float | None = None,
    seed: int = 0,
    grid: np.ndarray | None = None,
    max_leaves: int = 200_000,
    margin_z: float = 2.0,
) -> ExitPlan:
    """Choose kept exits and thresholds (see the module docstring)."""
    if budget_pp < 0:
        raise ValueError("budget_pp must be >= 0")
    cost = stage_cost_fn(profile, batch)
    plain = profile.plain  # type: ignore[attr-defined]
    plain_ms = float(plain.per_row(batch))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(calib.rows)
    n_hold = int(round(holdout * calib.rows)) if 0 < holdout < 1 else 0
    search_part = calib.subset(np.sort(perm[n_hold:]))
    hold_part = calib.subset(np.sort(perm[:n_hold])) if n_hold else None

    margin = 0.0
    if guarantee is None:
        # The cheapest plan within the budget on a sample sits at the budget's edge, and noise
        # puts it past the edge about half the time on new data. Keep a margin of `margin_z`
        # standard errors (default 2) of the plan's paired loss estimate (iterated, since it
        # depends on the plan).
        res = _search(search_part, policy, cost, budget_pp, grid, max_leaves)
        for _ in range(4):
            se = _loss_stderr_pp(search_part, res, policy)
            new_margin = min(margin_z * se, budget_pp)
            if abs(new_margin - margin) < 0.01:
                break
            margin = new_margin
            res = _search(search_part, policy, cost, budget_pp - margin, grid, max_leaves)
    else:
        if hold_part is None:
            raise ValueError("the guarantee mode needs holdout > 0 for its test")
        delta = 1.0 - guarantee
        res = SearchResult((calib.num_exits - 1,), (), 0.0, 0, True)  # no early exit: safe
        n = hold_part.rows
        corr = hold_part.correct()
        for b in np.linspace(0.0, budget_pp, 11)[1:]:  # fixed sequence, most careful first
            cand = _search(search_part, policy, cost, float(b), grid, max_leaves)
            ex = exits_of_plan(hold_part, cand.kept, cand.thresholds, policy)
            # per-row net loss in {-1, 0, 1}: final right and program wrong, or the reverse
            diff = corr[-1].astype(float) - corr[ex, np.arange(n)].astype(float)
            pval = loss_pvalue(diff, budget_pp / 100.0)
            logger.debug("guarantee: internal budget %.3f pp, loss %.3f pp, p=%.4f", b,
                         100 * diff.mean(), pval)
            if pval > delta:
                break
            res = cand
    ev = evaluate_plan(search_part, res.kept, res.thresholds, policy, cost)
    plan = ExitPlan(
        policy=policy, kept=tuple(res.kept), thresholds=tuple(res.thresholds),
        budget_pp=float(budget_pp), batch=int(batch), predicted_accuracy=ev["accuracy"],
        final_accuracy=ev["final_accuracy"], predicted_latency_ms=ev["latency_ms"],
        plain_latency_ms=plain_ms, exit_fractions=tuple(ev["fractions"]),  # type: ignore[arg-type]
        search_rows=search_part.rows, guarantee=guarantee, exact=res.exact, margin_pp=margin)
    if hold_part is not None:
        hv = evaluate_plan(hold_part, res.kept, res.thresholds, policy, cost)
        plan = replace(plan, holdout={
            "rows": hold_part.rows, "accuracy": hv["accuracy"],
            "final_accuracy": hv["final_accuracy"],
            "loss_pp": 100.0 * (hv["final_accuracy"] - hv["accuracy"]),
            "latency_ms": hv["latency_ms"]})
    return plan


def exit_benefit(calib: Calibration, profile: object, *, budget_pp: float, folds: int = 5,
                 policy: str = "maxprob", batch: int = 1, seed: int = 0) -> list[dict[str, float]]:
    """Per early exit (CN111445026A, embodiment 1): its accuracy and marginal cost, and the
    latency it saves on its own (kept with the final exit only, threshold chosen on the other
    folds for ``budget_pp``), cross-validated."""
    cost = stage_cost_fn(profile, batch)
    final = calib.num_exits - 1
    idx = np.random.default_rng(seed).permutation(calib.rows)
    parts = np.array_split(idx, folds)
    out = []
    corr = calib.correct()
    for k in range(final):
        accs, saves, losses = [], [], []
        for f in range(folds):
            test = calib.subset(np.sort(parts[f]))
            train = calib.subset(np.sort(np.concatenate([parts[i] for i in range(folds)
                                                         if i != f])))
            sub_tr = Calibration((train.logits[k], train.logits[final]), train.labels)
            sub_te = Calibration((test.logits[k], test.logits[final]), test.labels)

            def sub_cost(p: int, j: int, _k: int = k) -> float:
                return cost(-1 if p == -1 else _k, _k if j == 0 else final)

            res = _search(sub_tr, policy, sub_cost, budget_pp, None, 10_000)
            ev = evaluate_plan(sub_te, (0, 1) if len(res.kept) == 2 else (1,), res.thresholds,
                               policy, sub_cost)
            accs.append(float(corr[k, parts[f]].mean()))
            saves.append(cost(-1, final) - ev["latency_ms"])
            losses.append(100.0 * (ev["final_accuracy"] - ev["accuracy"]))
        marginal = profile.stage_cost(k - 1, k)  # type: ignore[attr-defined]
        out.append({
            "exit": k, "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "marginal_cost_ms": float(marginal.per_row(batch)),
            "saved_ms": float(np.mean(saves)), "saved_ms_std": float(np.std(saves)),
            "loss_pp": float(np.mean(losses)),
        })
    return out


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
    """The one max-probability threshold (shared by every early exit) with the lowest
    expected cost whose accuracy is within ``max_loss_pp`` points of the final exit's."""
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
