"""Exit placement and gate thresholds from calibration data, under an accuracy budget.

An analysis: pure functions over per-exit predictions, gate scores and measured costs.

The planner chooses together which exits to keep and the threshold of each kept exit. It
minimises the expected latency per row (the profiled cost of each stage, times the fraction of
rows that reach it) subject to an accuracy loss of at most ``budget_pp`` points against the final
exit on the calibration data. Dropping an exit merges its backbone segment into the next kept
stage: its head, gate and stage call are gone.

Search: a depth-first enumeration over the ordered exits, each either dropped or given a
threshold from a grid, with the last gated exit's grid evaluated in one vectorised pass and
branches pruned by a cost lower bound. It is exact over the grid; past ``max_leaves`` it falls
back to coordinate descent from the best single global threshold.

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

from eeopt.kernels.reference import gate_features, patience_step

__all__ = [
    "DEFAULT_GRID",
    "Calibration",
    "ExitPlan",
    "SearchResult",
    "ThresholdChoice",
    "exit_benefit",
    "pick_global_threshold",
    "plan_exits",
    "search_thresholds",
    "simulate_exits",
    "simulate_patience",
    "evaluate_plan",
    "to_policy_threshold",
    "loss_pvalue",
]

logger = logging.getLogger(__name__)

#: candidate thresholds for max-probability-like scores: dense near 1
DEFAULT_GRID = np.unique(
    np.concatenate([np.linspace(0.3, 0.9, 31), 1.0 - np.logspace(-1, -4, 31)])
)


# ---------------------------------------------------------------------------- calibration


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


# ---------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchResult:
    kept: tuple[int, ...]
    """Kept exits, ascending; the final exit is always last."""
    thresholds: tuple[float, ...]
    """One per kept early exit."""
    cost: float
    """Expected cost per row."""
    correct: int
    exact: bool


DROP = -1


def _levels(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``[K-1, N]``: how many grid thresholds each row's score reaches (it fires for grid
    index g iff g < level)."""
    return np.searchsorted(grid, scores, side="right").astype(np.int64)


def search_thresholds(
    scores: np.ndarray,
    correct: np.ndarray,
    stage_cost: Callable[[int, int], float],
    *,
    min_correct: int,
    grid: np.ndarray = DEFAULT_GRID,
    allow_drop: bool = True,
    max_leaves: int = 200_000,
) -> SearchResult:
    """Cheapest (kept exits, thresholds) with at least ``min_correct`` rows right.

    ``scores``: ``[K-1, N]``; ``correct``: ``[K, N]``; ``stage_cost(prev, k)``: per-row cost of
    the stage from kept exit ``prev`` (-1: the input) to kept exit ``k``.
    """
    km1, n = scores.shape
    final = km1
    # thresholds reach the runtime as float32: search over float32-exact values
    grid = np.unique(np.asarray(grid, dtype=np.float32).astype(np.float64))
    g = len(grid)
    options = g + (1 if allow_drop else 0)
    leaves = options ** max(km1 - 1, 0)
    lvl = _levels(scores, grid)
    cost_tab = {(p, k): stage_cost(p, k) for p in range(-1, final) for k in range(p + 1, final + 1)}
    if km1 == 0:
        return SearchResult((final,), (), cost_tab[(-1, final)], int(correct[final].sum()), True)
    if leaves > max_leaves:
        return _coordinate_descent(lvl, correct, cost_tab, grid, min_correct, allow_drop)

    best: list[SearchResult | None] = [None]
    corr_final = correct[final]
    # cheapest conceivable cost of moving on from kept exit p: the cheapest next stage
    next_min = {p: min(cost_tab[(p, k)] for k in range(p + 1, final + 1))
                for p in range(-1, final)}

    def leaf(rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
             kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        k = km1 - 1  # the last gated exit, vectorised over its grid
        m = rows.size
        cf_all = int(corr_final[rows].sum())
        # option: drop exit k
        if allow_drop:
            cost = cost_sum + m * (paid + cost_tab[(prev, final)])
            corr = corr_sum + cf_all
            _consider(cost, corr, kept + (final,), thr)
        if m == 0:
            return
        lv = lvl[k, rows]
        hist_n = np.bincount(lv, minlength=g + 1)
        hist_ck = np.bincount(lv, weights=correct[k, rows], minlength=g + 1)
        hist_cf = np.bincount(lv, weights=corr_final[rows], minlength=g + 1)
        # rows firing at grid index j have level > j
        fire_n = np.cumsum(hist_n[::-1])[::-1][1:]          # [g]: #(lv > j)
        fire_ck = np.cumsum(hist_ck[::-1])[::-1][1:]
        stay_cf = cf_all - np.cumsum(hist_cf[::-1])[::-1][1:]
        c_here = paid + cost_tab[(prev, k)]
        costs = cost_sum + m * c_here + (m - fire_n) * cost_tab[(k, final)]
        corrs = corr_sum + fire_ck + stay_cf
        ok = np.flatnonzero(corrs >= min_correct - 1e-9)
        if ok.size:
            j = int(ok[np.argmin(costs[ok])])
            _consider(float(costs[j]), int(round(corrs[j])), kept + (k, final),
                      thr + (float(grid[j]),))

    def _consider(cost: float, corr: int, kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        if corr < min_correct:
            return
        b = best[0]
        if b is None or cost < b.cost - 1e-12:
            best[0] = SearchResult(kept, thr, float(cost), int(corr), True)

    def dfs(k: int, rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
            kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        b = best[0]
        if b is not None and cost_sum + rows.size * (paid + next_min[prev]) >= b.cost:
            return  # every completion costs at least this
        if k == km1 - 1:
            leaf(rows, paid, prev, cost_sum, corr_sum, kept, thr)
            return
        if allow_drop:
            dfs(k + 1, rows, paid, prev, cost_sum, corr_sum, kept, thr)
        c_here = paid + cost_tab[(prev, k)]
        lv = lvl[k, rows]
        for j in range(g):
            fire = lv > j
            nf = int(fire.sum())
            here = rows[fire]
            dfs(k + 1, rows[~fire], c_here, k, cost_sum + nf * c_here,
                corr_sum + int(correct[k, here].sum()), kept + (k,), thr + (float(grid[j]),))
            if nf == 0:
                break  # higher thresholds fire nobody either: same as the last one

    dfs(0, np.arange(n), 0.0, -1, 0.0, 0, (), ())
    if best[0] is None:  # not even the final exit alone meets it (min_correct too high)
        return SearchResult((final,), (), n * cost_tab[(-1, final)], int(corr_final.sum()), True)
    return best[0]


def _evaluate(lvl: np.ndarray, correct: np.ndarray, cost_tab: dict[tuple[int, int], float],
              choice: Sequence[int]) -> tuple[float, int]:
    """Total cost and correct rows for one grid index (or DROP) per gated exit."""
    km1, n = lvl.shape
    final = km1
    open_ = np.ones(n, dtype=bool)
    cost = 0.0
    corr = 0
    paid = 0.0
    prev = -1
    for k, j in enumerate(choice):
        if j == DROP:
            continue
        paid += cost_tab[(prev, k)]
        fire = open_ & (lvl[k] > j)
        cost += int(fire.sum()) * paid
        corr += int(correct[k, fire].sum())
        open_ &= ~fire
        prev = k
    paid += cost_tab[(prev, final)]
    cost += int(open_.sum()) * paid
    corr += int(correct[final, open_].sum())
    return cost, corr


def _coordinate_descent(lvl: np.ndarray, correct: np.ndarray,
                        cost_tab: dict[tuple[int, int], float], grid: np.ndarray,
                        min_correct: int, allow_drop: bool) -> SearchResult:
    km1 = lvl.shape[0]
    g = len(grid)
    opts = list(range(g)) + ([DROP] if allow_drop else [])
    # start from the best single global threshold (or all dropped)
    start = [DROP] * km1 if allow_drop else [g - 1] * km1
    best_cost, best_corr = _evaluate(lvl, correct, cost_tab, start)
    best = list(start)
    for j in range(g):
        c, r = _evaluate(lvl, correct, cost_tab, [j] * km1)
        if r >= min_correct and (best_corr < min_correct or c < best_cost):
            best, best_cost, best_corr = [j] * km1, c, r
    improved = True
    while improved:
        improved = False
        for k in range(km1):
            for j in opts:
                trial = list(best)
                trial[k] = j
                c, r = _evaluate(lvl, correct, cost_tab, trial)
                if r >= min_correct and c < best_cost - 1e-12:
                    best, best_cost, best_corr, improved = trial, c, r, True
    kept = tuple(k for k in range(km1) if best[k] != DROP) + (km1,)
    thr = tuple(float(grid[best[k]]) for k in range(km1) if best[k] != DROP)
    return SearchResult(kept, thr, float(best_cost), int(best_corr), False)


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


def _cost_fn(profile: object, batch: int) -> Callable[[int, int], float]:
    def cost(prev: int, k: int) -> float:
        return float(profile.stage_cost(prev, k).per_row(batch))  # type: ignore[attr-defined]

    return cost


def to_policy_threshold(policy: str, score_threshold: float) -> float:
    """Search space (fire when score >= t) -> the policy's own threshold, and back (the map is
    its own inverse): entropy scores are negated entropies."""
    return -score_threshold + 0.0 if policy == "entropy" else score_threshold


def evaluate_plan(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                  policy: str, cost: Callable[[int, int], float]) -> dict[str, float]:
    """Accuracy, exit fractions and expected cost per row of a plan on ``calib`` (thresholds
    in the policy's own terms)."""
    final = calib.num_exits - 1
    kept = list(kept)
    ex_local = _local_exits(calib, kept, thresholds, policy)
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
    ex = _plan_exits_of(calib, res.kept, res.thresholds, policy)
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
    cost = _cost_fn(profile, batch)
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
            ex = _plan_exits_of(hold_part, cand.kept, cand.thresholds, policy)
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


def _local_exits(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                 policy: str) -> np.ndarray:
    """Index into ``kept`` of the exit each row takes (thresholds in the policy's terms)."""
    kept = list(kept)
    if policy == "patience":
        return simulate_patience([calib.logits[k] for k in kept],
                                 thresholds[0] if thresholds else np.inf)
    sc = calib.scores(policy)
    return simulate_exits([sc[k] for k in kept[:-1]],
                          [to_policy_threshold(policy, t) for t in thresholds], n=calib.rows)


def _plan_exits_of(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
                   policy: str) -> np.ndarray:
    return np.asarray(list(kept))[_local_exits(calib, kept, thresholds, policy)]


# ---------------------------------------------------------------------------- benefit


def exit_benefit(calib: Calibration, profile: object, *, budget_pp: float, folds: int = 5,
                 policy: str = "maxprob", batch: int = 1, seed: int = 0) -> list[dict[str, float]]:
    """Per early exit (CN111445026A, embodiment 1): its accuracy and marginal cost, and the
    latency it saves on its own (kept with the final exit only, threshold chosen on the other
    folds for ``budget_pp``), cross-validated."""
    cost = _cost_fn(profile, batch)
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


# ---------------------------------------------------------------------------- simple


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
