"""The planner's search against brute force, and its guarantee mode's coverage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eeopt.planning import (
    Calibration,
    CostFit,
    ProfileReport,
    StageProfile,
    plan_exits,
    search_thresholds,
    simulate_exits,
)


def _brute(scores, correct, cost, min_correct, grid):  # type: ignore[no-untyped-def]
    """The cheapest of ``_every_plan``."""
    best = None
    for total, kept, right in _every_plan(scores, correct, cost, min_correct, grid):
        if best is None or total < best[0] - 1e-9:
            best = (total, kept, right)
    return best


def _every_plan(scores, correct, cost, min_correct, grid):  # type: ignore[no-untyped-def]
    """Every (drop | threshold) per gated exit with enough rows right, as (total cost, kept,
    rows right); plain loops, no cleverness."""
    km1, n = scores.shape
    for choice in itertools.product([None, *grid], repeat=km1):
        kept = [k for k in range(km1) if choice[k] is not None] + [km1]
        exits = simulate_exits([scores[k] for k in kept[:-1]],
                               [choice[k] for k in kept[:-1]], n=n)
        exits = np.asarray(kept)[exits]
        right = int(correct[exits, np.arange(n)].sum())
        total = 0.0
        for r in range(n):
            prev = -1
            for k in kept:
                total += cost(prev, k)
                prev = k
                if k == exits[r]:
                    break
        if right >= min_correct:
            yield total, tuple(kept), right


def _synthetic(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    scores = np.stack([np.clip(1 - difficulty + rng.normal(0, 0.15, n) + 0.1 * j, 0, 1)
                       for j in range(k - 1)]).astype(np.float32)
    acc = [0.6 + 0.1 * j for j in range(k)]
    correct = np.stack([rng.random(n) < np.clip(acc[j] + 0.4 * (1 - difficulty), 0, 1)
                        for j in range(k)])
    return scores, correct


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_search_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(100 + seed)
    scores, correct = _synthetic(60, k, seed)
    seg = rng.uniform(0.5, 2.0, k)
    head = rng.uniform(0.05, 0.6, k)

    def cost(prev: int, j: int) -> float:
        return float(seg[prev + 1 : j + 1].sum() + head[j] + 0.1)

    grid = np.sort(rng.uniform(0.2, 1.0, 5)).astype(np.float32).astype(np.float64)
    final = int(correct[-1].sum())
    for slack in (0, 3, 8):
        want = _brute(scores, correct, cost, final - slack, grid)
        got = search_thresholds(scores, correct, cost, min_correct=final - slack, grid=grid)
        assert got.exact
        assert got.correct >= final - slack
        assert got.cost == pytest.approx(want[0], rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_costs_within_the_tolerance_count_as_equal(seed: int) -> None:
    """Among plans within ``tolerance`` of the cheapest, the one with the most rows right
    (then the cheaper) wins: timing noise must not choose between plans of equal cost."""
    rng = np.random.default_rng(200 + seed)
    scores, correct = _synthetic(60, 3, seed)
    seg = rng.uniform(0.5, 2.0, 3)

    def cost(prev: int, j: int) -> float:
        return float(seg[prev + 1 : j + 1].sum() + 0.2)

    grid = np.sort(rng.uniform(0.2, 1.0, 6)).astype(np.float32).astype(np.float64)
    need = int(correct[-1].sum()) - 6
    plans = list(_every_plan(scores, correct, cost, need, grid))
    cheapest = min(p[0] for p in plans)
    for tol in (0.0, 0.05, 0.3):
        near = [p for p in plans if p[0] <= cheapest * (1 + tol) + 1e-9]
        most = max(p[2] for p in near)
        want = min(p[0] for p in near if p[2] == most)
        got = search_thresholds(scores, correct, cost, min_correct=need, grid=grid,
                                tolerance=tol)
        assert got.correct == most and got.cost == pytest.approx(want, abs=1e-9)
    assert max(p[2] for p in plans if p[0] <= cheapest * 1.3 + 1e-9) > min(
        p[2] for p in plans if p[0] <= cheapest + 1e-9)  # the tolerance mattered here


def test_coordinate_descent_fallback_is_feasible_and_close() -> None:
    scores, correct = _synthetic(80, 4, 7)
    seg = np.array([1.0, 1.2, 0.8, 1.5])

    def cost(prev: int, j: int) -> float:
        return float(seg[prev + 1 : j + 1].sum() + 0.2)

    grid = np.linspace(0.3, 0.95, 6).astype(np.float32).astype(np.float64)
    need = int(correct[-1].sum()) - 4
    exact = search_thresholds(scores, correct, cost, min_correct=need, grid=grid)
    approx = search_thresholds(scores, correct, cost, min_correct=need, grid=grid,
                               max_leaves=1)
    assert not approx.exact and approx.correct >= need
    assert approx.cost >= exact.cost - 1e-9
    assert approx.cost <= 1.15 * exact.cost


def test_loss_pvalue() -> None:
    from eeopt.planning import loss_pvalue

    rng = np.random.default_rng(0)
    diff = rng.choice([-1.0, 0.0, 1.0], size=4000, p=[0.02, 0.96, 0.02])  # mean loss ~0
    assert loss_pvalue(diff, 0.02) < 0.01  # far below a 2% budget: certified
    assert loss_pvalue(diff, -0.02) > 0.99  # above a negative budget: not
    assert loss_pvalue(np.zeros(10), 0.0) == 0.0


def _profile(k: int) -> ProfileReport:
    def fit(ms: float) -> CostFit:
        return CostFit(0.0, ms, {1: ms})

    exits = tuple(StageProfile(exit=j, output=f"e{j}", stage=fit(1.2), head_gate=fit(0.2),
                               backbone=fit(1.0), node_us=0.0, gate_us=0.0, macs=0)
                  for j in range(k))
    return ProfileReport(model="synthetic", threads=1, batches=(1,), exits=exits,
                         plain=fit(float(k)), runtime=fit(0.0), plain_macs=0)


def _confident_calibration(n: int, rng: np.random.Generator) -> Calibration:
    """Three exits whose confidence is informative but imperfect."""
    labels = rng.integers(0, 4, n)
    logits = []
    for j, quality in enumerate((0.55, 0.75, 0.95)):
        z = rng.normal(0, 1, (n, 4)).astype(np.float32)
        right = rng.random(n) < quality
        # confident when right, hesitant when wrong: informative but imperfect
        boost = np.where(right, rng.uniform(1.0, 6.0 + j, n), rng.uniform(0.0, 2.5, n))
        z[np.arange(n), np.where(right, labels, (labels + 1) % 4)] += boost
        logits.append(z)
    return Calibration(tuple(logits), labels)


def test_guarantee_mode_covers() -> None:
    """Over many draws of calibration data, the plan's loss on fresh data stays within the
    budget in at least (about) the guaranteed share of draws."""
    budget, guarantee, trials = 2.0, 0.9, 60
    rng = np.random.default_rng(0)
    big = _confident_calibration(40_000, rng)
    prof = _profile(3)
    ok = 0
    for t in range(trials):
        calib = _confident_calibration(1500, np.random.default_rng(1000 + t))
        plan = plan_exits(calib, prof, budget_pp=budget, guarantee=guarantee, seed=t,
                          holdout=0.5)
        sc = big.scores("maxprob")
        local = simulate_exits([sc[k] for k in plan.kept[:-1]], list(plan.thresholds),
                               n=big.rows)
        ex = np.asarray(plan.kept)[local]
        corr = big.correct()
        loss = 100 * (corr[-1].mean() - corr[ex, np.arange(big.rows)].mean())
        ok += loss <= budget
    # binomial slack: 60 trials at 0.9 coverage rarely show fewer than 48 successes
    assert ok >= 48, ok


def test_plan_meets_budget_and_generalises() -> None:
    from eeopt.planning import evaluate_plan, stage_cost_fn

    fresh = _confident_calibration(60_000, np.random.default_rng(99))
    prof = _profile(3)
    for seed in range(3):
        calib = _confident_calibration(6000, np.random.default_rng(seed))
        plan = plan_exits(calib, prof, budget_pp=1.0, holdout=0.3, seed=seed)
        assert plan.predicted_loss_pp <= 1.0 + 1e-9
        assert plan.holdout["rows"] == 1800 and "loss_pp" in plan.holdout
        assert plan.predicted_latency_ms < plan.plain_latency_ms
        assert plan.kept[-1] == 2 and len(plan.thresholds) == len(plan.kept) - 1
        truth = evaluate_plan(fresh, plan.kept, plan.thresholds, "maxprob", stage_cost_fn(prof, 1))
        # on unseen data the loss drifts by sampling noise, not by more
        assert 100 * (truth["final_accuracy"] - truth["accuracy"]) <= 1.0 + 0.75
        assert truth["latency_ms"] == pytest.approx(plan.predicted_latency_ms, rel=0.1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_frontier_answers_every_search(seed: int, k: int) -> None:
    """One enumeration of the cost/accuracy frontier gives, for every budget and tolerance,
    the search's own answer (the planner asks it many budgets on the same rows)."""
    from eeopt.planning import Frontier

    rng = np.random.default_rng(300 + seed)
    scores, correct = _synthetic(80, k, seed)
    seg = rng.uniform(0.5, 2.0, k)

    def cost(prev: int, j: int) -> float:
        return float(seg[prev + 1 : j + 1].sum() + 0.15)

    grid = np.sort(rng.uniform(0.2, 1.0, 7)).astype(np.float32).astype(np.float64)
    front = Frontier.build(scores, correct, cost, grid=grid)
    assert front is not None
    assert np.all(np.diff(front.cost) >= 0) and np.all(np.diff(front.correct) > 0)
    final = int(correct[-1].sum())
    for slack in (-3, 0, 3, 8):
        for tol in (0.0, 0.1):
            want = search_thresholds(scores, correct, cost, min_correct=final - slack,
                                     grid=grid, tolerance=tol)
            got = front.search(final - slack, tol)
            if got is None:  # nothing gets that many right: the search falls back to the final
                assert slack < 0 and want.kept == (k - 1,) and want.correct < final - slack
                continue
            assert got.cost == pytest.approx(want.cost, abs=1e-9)
            assert got.correct == want.correct
            # the plan it names does cost and score what it says
            exits = simulate_exits([scores[e] for e in got.kept[:-1]], list(got.thresholds),
                                   n=scores.shape[1])
            ex = np.asarray(got.kept)[exits]
            assert int(correct[ex, np.arange(scores.shape[1])].sum()) == got.correct
