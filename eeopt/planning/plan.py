"""Exit placement and gate thresholds from calibration data, under an accuracy budget.

An analysis: pure functions over per-exit predictions, gate scores and measured costs.

The planner chooses together which exits to keep and the threshold of each kept exit. It
minimises the expected latency per row (the profiled cost of each stage, times the fraction of
rows that reach it) subject to an accuracy loss of at most ``budget_pp`` points against the final
exit. Dropping an exit merges its backbone segment into the next kept stage: its head, gate and
stage call are gone. The search itself is ``eeopt.planning.search``; costs within the profile's
measured noise of the cheapest count as equal, and among them the most accurate plan wins.

The budget is a statistical claim about fresh data from the calibration distribution, and every
plan states which kind it carries (``Promise``):

- **best effort** (default): the search keeps ``margin_z`` standard errors of its own loss
  estimate below the budget (the cheapest plan on a sample sits at the budget's edge; the
  internal budget may go below zero, so budget 0 means "no measurable loss"). The calibration
  rows the search never saw (``holdout``) then check it: a check over the budget widens the
  margin by one standard error and plans again (up to ``max_widen`` times), else the plan keeps
  only the final exit. The promise states the estimated probability that the loss on a fresh
  sample of ``fresh_rows`` rows stays within the budget.
- **guarantee** ``P`` (Learn-then-Test): candidate plans are searched on one part of the data
  at increasing internal budgets; a fixed-sequence test on the other part keeps the most
  aggressive plan whose loss on a fresh sample of ``fresh_rows`` rows is within the budget with
  probability ``P`` (one-sided, CLT, with the variance of both the held-out estimate and the
  fresh sample: a prediction bound, which also bounds the expected loss).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from eeopt.kernels.reference import gate_features
from eeopt.planning.calibration import (
    Calibration,
    exits_of_plan,
    local_exits,
    simulate_exits,
    to_policy_threshold,
)
from eeopt.planning.search import (
    DEFAULT_GRID,
    Frontier,
    SearchResult,
    most_correct,
    search_thresholds,
)

__all__ = [
    "ExitPlan",
    "Promise",
    "ThresholdChoice",
    "evaluate_plan",
    "exit_benefit",
    "fresh_loss_probability",
    "loss_interval",
    "loss_pvalue",
    "pick_global_threshold",
    "plan_exits",
    "stage_cost_fn",
]

logger = logging.getLogger(__name__)

#: candidate plans the guarantee mode tests in its fixed sequence
GUARANTEE_STEPS = 16
#: bisection steps of the best-effort margin (the internal budget to within 1/64 of its range)
BISECT_STEPS = 6


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Promise:
    """What a plan promises about its accuracy loss on fresh data from the calibration
    distribution (``plan_exits``' module docstring)."""

    kind: str
    """``"best-effort"`` or ``"guarantee"``."""
    probability: float
    """Best effort: the estimated probability that the loss on a fresh sample of ``fresh_rows``
    rows stays within the budget (from the held-out rows). Guarantee: the certified level."""
    fresh_rows: int
    holdout_rows: int
    holdout_loss_pp: float
    holdout_interval_pp: tuple[float, float]
    """95% interval of the held-out loss, paired row by row."""
    cost_tolerance: float
    """Relative cost differences below this counted as equal (the profile's noise)."""
    margin_z: float = 0.0
    """Best effort: the margin, in standard errors of the loss estimate, the search started
    with (``widened`` more in the end)."""
    widened: int = 0
    """Best effort: how often the held-out check sent the search back with a wider margin."""
    note: str = ""
    """Why the plan keeps only the final exit, when the promise forced it to."""

    @classmethod
    def of(cls, record: dict[str, Any]) -> Promise | None:
        """From a manifest's ``plan.promise`` (None when the plan predates promises)."""
        if not record:
            return None
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in record.items() if k in names}
        d["holdout_interval_pp"] = tuple(d.get("holdout_interval_pp", (0.0, 0.0)))
        return cls(**d)

    def describe(self, budget_pp: float) -> str:
        """One line, as ``eeopt compile``, ``inspect`` and ``bench`` print it."""
        lo, hi = self.holdout_interval_pp
        if self.kind == "guarantee":
            head = (f"guaranteed: loss <= {budget_pp:g} pp with probability >= "
                    f"{self.probability:.0%} on {self.fresh_rows} fresh rows")
        else:
            head = (f"best effort: P(loss <= {budget_pp:g} pp on {self.fresh_rows} fresh rows) "
                    f"~ {self.probability:.0%}")
        return (f"{head}; held-out loss {self.holdout_loss_pp:.2f} pp [{lo:.2f}, {hi:.2f}] on "
                f"{self.holdout_rows} rows")


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
    promise: Promise | None = None

    @property
    def predicted_loss_pp(self) -> float:
        return 100.0 * (self.final_accuracy - self.predicted_accuracy)

    @property
    def predicted_speedup(self) -> float:
        return self.plain_latency_ms / self.predicted_latency_ms

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["promise"] = {} if self.promise is None else d["promise"]
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


def _grid(calib: Calibration, policy: str, grid: np.ndarray | None) -> np.ndarray:
    if grid is not None:
        return np.sort(grid)
    base = DEFAULT_GRID if policy in ("maxprob", "margin") else -np.unique(
        np.concatenate([np.linspace(0.0, 1.2, 41), np.logspace(-4, -1, 21)]))[::-1]
    # plus the data's own quantiles, so the grid fits wherever this model's scores live
    return np.sort(np.concatenate([base, np.quantile(calib.scores(policy),
                                                     np.linspace(0.02, 0.98, 33))]))


def _search(calib: Calibration, policy: str, cost: Callable[[int, int], float],
            budget_pp: float, grid: np.ndarray | None, max_leaves: int,
            tolerance: float = 0.0, ceiling: int | None = None,
            frontier: Frontier | None = None) -> SearchResult:
    """The planner's search on ``calib`` for ``budget_pp`` (below zero: plans that beat the
    final exit). ``ceiling``: the most rows any plan gets right (``most_correct``), if known:
    a budget asking for more returns the final exit alone without searching. ``frontier``:
    ``calib``'s frontier over the same grid and cost, if built: the search is then a lookup."""
    corr = calib.correct()
    final_correct = int(corr[-1].sum())
    min_correct = int(math.ceil(final_correct - budget_pp / 100.0 * calib.rows - 1e-9))
    final_only = SearchResult((calib.num_exits - 1,), (), cost(-1, calib.num_exits - 1)
                              * calib.rows, final_correct, True)
    if ceiling is not None and min_correct > ceiling:
        return final_only
    if frontier is not None:
        res = frontier.search(min_correct, tolerance)
        if res is None:
            return final_only
        return replace(res, thresholds=tuple(to_policy_threshold(policy, t)
                                             for t in res.thresholds))
    if policy == "patience":  # one integer patience over all kept exits, every subset
        km1 = calib.num_exits - 1
        plans = []
        for mask in range(1 << km1):
            kept = tuple(k for k in range(km1) if mask >> k & 1) + (km1,)
            # a streak of p needs p gated exits: a larger patience never fires (that plan is
            # the final exit alone in disguise)
            for p in range(2, len(kept)):
                thr = (float(p),) * (len(kept) - 1)
                ev = evaluate_plan(calib, kept, thr, policy, cost)
                r = int(round(ev["accuracy"] * calib.rows))
                if r >= min_correct:
                    plans.append(SearchResult(kept, thr, ev["latency_ms"] * calib.rows, r, True))
        if not plans:
            return SearchResult((km1,), (), cost(-1, km1) * calib.rows, final_correct, True)
        cap = min(q.cost for q in plans) * (1.0 + tolerance)
        # the most accurate of the (near-)cheapest, then the cheaper
        return min((q for q in plans if q.cost <= cap), key=lambda q: (-q.correct, q.cost))
    res = search_thresholds(calib.scores(policy), corr, cost, min_correct=min_correct,
                            grid=_grid(calib, policy, grid), max_leaves=max_leaves,
                            tolerance=tolerance)
    return replace(res, thresholds=tuple(to_policy_threshold(policy, t)
                                         for t in res.thresholds))


def _diff(calib: Calibration, kept: Sequence[int], thresholds: Sequence[float],
          policy: str) -> np.ndarray:
    """Per row, the plan's loss against the final exit: 1 where the final exit is right and
    the plan wrong, -1 for the reverse, else 0."""
    corr = calib.correct()
    ex = exits_of_plan(calib, kept, thresholds, policy)
    return corr[-1].astype(float) - corr[ex, np.arange(calib.rows)].astype(float)


def _loss_stderr_pp(calib: Calibration, res: SearchResult, policy: str) -> float:
    """Standard error (points) of the plan's accuracy loss, paired row by row."""
    diff = _diff(calib, res.kept, res.thresholds, policy)
    return float(100.0 * diff.std() / math.sqrt(max(calib.rows, 1)))


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def loss_interval(diff: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(loss, low, high)`` in points: the mean of paired per-row losses (``final right`` minus
    ``program right``, in {-1, 0, 1}) and its two-sided ``level`` interval (CLT)."""
    n = int(diff.shape[0])
    if n == 0:
        return 0.0, -100.0, 100.0
    mean = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else 1.0
    z = _z(0.5 + level / 2)
    return 100 * mean, 100 * (mean - z * se), 100 * (mean + z * se)


def _z(p: float) -> float:
    """The standard normal quantile (bisection on the CDF; plenty for a few digits)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _norm_cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def _spread(diff: np.ndarray, fresh_rows: int | None) -> float:
    """The standard deviation of (fresh-sample loss - this sample's loss), per row's variance
    estimated from ``diff`` (at least one discordant row's worth, so that a sample without
    any disagreement does not claim certainty)."""
    n = diff.shape[0]
    var = max(float(diff.var(ddof=1)) if n > 1 else 0.0, 1.0 / n)
    return math.sqrt(var / n + (var / fresh_rows if fresh_rows else 0.0))


def loss_pvalue(diff: np.ndarray, budget: float, fresh_rows: int | None = None) -> float:
    """p-value of "the loss exceeds ``budget``" from paired per-row losses in [-1, 1] (a
    one-sided test with the CLT, as Learn-then-Test allows for bounded losses). Without
    ``fresh_rows`` the loss is the expected one; with it, the loss measured on a fresh sample
    of that many rows (a prediction bound: it adds that sample's own noise)."""
    n = diff.shape[0]
    if n == 0:
        return 1.0
    mean = float(diff.mean())
    if n > 1 and float(diff.std()) == 0.0 and fresh_rows is None:
        return 0.0 if mean <= budget else 1.0
    return 1.0 - _norm_cdf((budget - mean) / _spread(diff, fresh_rows))


def fresh_loss_probability(diff: np.ndarray, budget: float, fresh_rows: int) -> float:
    """Estimated probability that the loss on a fresh sample of ``fresh_rows`` rows stays
    within ``budget`` (a fraction), from paired per-row losses on rows the plan was not
    chosen on."""
    if diff.shape[0] == 0:
        return 0.0
    return _norm_cdf((budget - float(diff.mean())) / _spread(diff, fresh_rows))


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
    cost_tolerance: float = 0.0,
    fresh_rows: int | None = None,
    max_widen: int = 3,
) -> ExitPlan:
    """Choose kept exits and thresholds, and state the plan's promise (see the module
    docstring). ``cost_tolerance``: relative cost differences the search counts as equal (the
    profile's noise). ``fresh_rows``: the size of the fresh sample the promise speaks of
    (default: as many rows as ``calib``)."""
    if budget_pp < 0:
        raise ValueError("budget_pp must be >= 0")
    cost = stage_cost_fn(profile, batch)
    plain = profile.plain  # type: ignore[attr-defined]
    plain_ms = float(plain.per_row(batch))
    fresh = int(fresh_rows or calib.rows)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(calib.rows)
    n_hold = int(round(holdout * calib.rows)) if 0 < holdout < 1 else 0
    search_part = calib.subset(np.sort(perm[n_hold:]))
    hold_part = calib.subset(np.sort(perm[:n_hold])) if n_hold else None
    final_only = SearchResult((calib.num_exits - 1,), (), 0.0, 0, True)

    # every plan's cost and rows right, enumerated once: the bisection and the guarantee's
    # sequence below ask many budgets of the same rows (None: too many plans, search each)
    frontier = None if policy == "patience" else Frontier.build(
        search_part.scores(policy), search_part.correct(), cost,
        grid=_grid(search_part, policy, grid))
    ceiling: list[int | None] = []  # found once, when a budget below zero first asks for it

    def search(b: float) -> SearchResult:
        if frontier is not None:
            return _search(search_part, policy, cost, b, grid, max_leaves, cost_tolerance,
                           frontier=frontier)
        if b < 0 and not ceiling:
            ceiling.append(None if policy == "patience" else most_correct(
                search_part.scores(policy), search_part.correct(),
                grid=_grid(search_part, policy, grid), max_leaves=max_leaves))
        return _search(search_part, policy, cost, b, grid, max_leaves, cost_tolerance,
                       ceiling[0] if ceiling else None)

    margin = 0.0
    widened = 0
    note = ""
    if guarantee is None:
        def with_margin(z: float) -> tuple[SearchResult, float]:
            # The cheapest plan within the budget on a sample sits at the budget's edge, and
            # noise puts it past the edge about half the time on new data. Take the plan
            # whose loss estimate plus `z` of its own standard errors is within the budget:
            # bisect the internal budget b (the search's plan for b loses at most b on the
            # search rows; a lower b gives a more careful plan, with a smaller standard
            # error). b may go below zero; the final exit alone always fits.
            def fits(r: SearchResult) -> bool:
                loss = 100 * float(_diff(search_part, r.kept, r.thresholds, policy).mean())
                return loss + z * _loss_stderr_pp(search_part, r, policy) <= budget_pp + 1e-9

            top = search(budget_pp)
            if fits(top):
                return top, 0.0
            lo = budget_pp - z * _loss_stderr_pp(search_part, top, policy)
            low = search(lo)
            while not fits(low):  # rare: lower still, down to the final exit alone
                lo -= max(budget_pp, 0.25)
                low = search(lo)
            hi = budget_pp
            for _ in range(BISECT_STEPS):
                mid = (lo + hi) / 2
                r = search(mid)
                if fits(r):
                    lo, low = mid, r
                else:
                    hi = mid
            return low, budget_pp - lo

        res, margin = with_margin(margin_z)
        while hold_part is not None and len(res.kept) > 1:
            hold_loss = 100 * float(_diff(hold_part, res.kept, res.thresholds, policy).mean())
            if hold_loss <= budget_pp:
                break
            if widened == max_widen:
                note = (f"the held-out check measured {hold_loss:.2f} pp against the "
                        f"{budget_pp:g} pp budget even {margin_z + widened:g} standard errors "
                        "inside it")
                res = final_only
                break
            widened += 1
            logger.info("held-out loss %.2f pp exceeds the %g pp budget: planning again "
                        "%g standard errors inside it", hold_loss, budget_pp, margin_z + widened)
            res, margin = with_margin(margin_z + widened)
    else:
        if hold_part is None:
            raise ValueError("the guarantee mode needs holdout > 0 for its test")
        delta = 1.0 - guarantee
        res = final_only  # no early exit: safe
        # a fixed sequence, most careful first: from internal budgets below zero (plans that
        # beat the final exit on the search rows; the search's own pick overfits them) up to
        # the budget itself
        start = budget_pp - 2.0 * max(budget_pp, 0.5)
        for b in np.linspace(start, budget_pp, GUARANTEE_STEPS):
            cand = search(float(b))
            diff = _diff(hold_part, cand.kept, cand.thresholds, policy)
            pval = loss_pvalue(diff, budget_pp / 100.0, fresh_rows=fresh)
            logger.debug("guarantee: internal budget %.3f pp, loss %.3f pp, p=%.4f", b,
                         100 * diff.mean(), pval)
            if pval > delta:
                break
            res = cand
        if len(res.kept) == 1:
            note = (f"no plan with an early exit could be certified within {budget_pp:g} pp at "
                    f"{guarantee:.0%} on {hold_part.rows} held-out rows")
    ev = evaluate_plan(search_part, res.kept, res.thresholds, policy, cost)
    plan = ExitPlan(
        policy=policy, kept=tuple(res.kept), thresholds=tuple(res.thresholds),
        budget_pp=float(budget_pp), batch=int(batch), predicted_accuracy=ev["accuracy"],
        final_accuracy=ev["final_accuracy"], predicted_latency_ms=ev["latency_ms"],
        plain_latency_ms=plain_ms, exit_fractions=tuple(ev["fractions"]),  # type: ignore[arg-type]
        search_rows=search_part.rows, guarantee=guarantee, exact=res.exact, margin_pp=margin)
    if hold_part is not None:
        hv = evaluate_plan(hold_part, res.kept, res.thresholds, policy, cost)
        diff = _diff(hold_part, res.kept, res.thresholds, policy)
        loss, lo, hi = loss_interval(diff)
        prob = (float(guarantee) if guarantee is not None
                else fresh_loss_probability(diff, budget_pp / 100.0, fresh))
        plan = replace(plan, holdout={
            "rows": hold_part.rows, "accuracy": hv["accuracy"],
            "final_accuracy": hv["final_accuracy"],
            "loss_pp": 100.0 * (hv["final_accuracy"] - hv["accuracy"]),
            "latency_ms": hv["latency_ms"]}, promise=Promise(
            kind="best-effort" if guarantee is None else "guarantee", probability=prob,
            fresh_rows=fresh, holdout_rows=hold_part.rows, holdout_loss_pp=loss,
            holdout_interval_pp=(lo, hi), cost_tolerance=float(cost_tolerance),
            margin_z=float(margin_z) if guarantee is None else 0.0, widened=widened,
            note=note))
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
