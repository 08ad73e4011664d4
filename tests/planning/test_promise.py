"""Every plan states its promise, and the best-effort mode keeps it honest: a margin that is
not capped at the budget, a held-out check that is never silent, and a budget of 0 that
means no measurable loss."""

from __future__ import annotations

import numpy as np
import pytest
from planning.test_search import _confident_calibration, _profile

from eeopt.planning import Calibration, Promise, evaluate_plan, plan_exits, stage_cost_fn


def test_best_effort_states_its_estimated_probability() -> None:
    calib = _confident_calibration(6000, np.random.default_rng(0))
    plan = plan_exits(calib, _profile(3), budget_pp=1.0, seed=0)
    p = plan.promise
    assert p is not None and p.kind == "best-effort" and p.widened == 0 and not p.note
    assert p.fresh_rows == 6000 and p.holdout_rows == 1800
    assert 0.5 < p.probability <= 1.0
    lo, hi = p.holdout_interval_pp
    assert lo < p.holdout_loss_pp < hi and p.holdout_loss_pp == pytest.approx(
        plan.holdout["loss_pp"])
    assert "best effort: P(loss <= 1 pp on 6000 fresh rows)" in p.describe(1.0)
    d = plan.to_dict()["promise"]
    assert isinstance(d, dict) and Promise.of(d) == p


def test_guarantee_states_its_level() -> None:
    calib = _confident_calibration(6000, np.random.default_rng(1))
    plan = plan_exits(calib, _profile(3), budget_pp=2.0, guarantee=0.9, seed=0,
                      fresh_rows=10_000)
    p = plan.promise
    assert p is not None and p.kind == "guarantee" and p.probability == 0.9
    assert p.fresh_rows == 10_000 and len(plan.kept) > 1
    assert "guaranteed: loss <= 2 pp with probability >= 90% on 10000 fresh rows" in (
        p.describe(2.0))


def test_a_smaller_budget_is_a_more_careful_plan_down_to_zero() -> None:
    """The margin is no longer capped at the budget (it once made budgets 0, 1 and 2 the same
    plan): each budget gets its own plan, and a budget of 0 leaves no measurable loss."""
    calib = _confident_calibration(20_000, np.random.default_rng(2))
    fresh = _confident_calibration(60_000, np.random.default_rng(3))
    cost = stage_cost_fn(_profile(3), 1)
    plans = {b: plan_exits(calib, _profile(3), budget_pp=b, seed=0) for b in (0.0, 1.0, 2.0)}
    lat = [plans[b].predicted_latency_ms for b in (0.0, 1.0, 2.0)]
    assert lat[0] > lat[1] > lat[2]
    assert plans[0.0].margin_pp > 0
    truth = evaluate_plan(fresh, plans[0.0].kept, plans[0.0].thresholds, "maxprob", cost)
    assert 100 * (truth["final_accuracy"] - truth["accuracy"]) < 0.15  # within noise of 0


def _split_world(seed: int, rows: int = 3000) -> Calibration:
    """Exit 0 is confident everywhere; on the rows ``plan_exits(seed=seed)`` holds out it is
    wrong wherever the final exit is right, elsewhere it agrees with the final exit. The
    search sees a free early exit; the held-out check sees a loss far over any budget."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, rows)
    hold = np.zeros(rows, bool)
    hold[np.random.default_rng(seed).permutation(rows)[: int(round(0.3 * rows))]] = True
    final = np.full((rows, 4), -5.0, np.float32)
    final[np.arange(rows), labels] = 5.0
    first = final.copy()
    wrong = hold & (rng.random(rows) < 0.5)
    first[wrong] = -5.0
    first[wrong, (labels[wrong] + 1) % 4] = 5.0
    mid = final.copy()
    return Calibration((first, mid, final), labels)


def test_a_held_out_check_over_the_budget_is_never_silent() -> None:
    plan = plan_exits(_split_world(0), _profile(3), budget_pp=1.0, seed=0)
    p = plan.promise
    assert p is not None
    # the search's plan fails the check; wider margins cannot help (the search rows show no
    # loss at all), so the plan keeps only the final exit and says why
    assert p.widened == 3 and plan.kept == (2,)
    assert "held-out check measured" in p.note and "against the 1 pp budget" in p.note


def test_the_compile_refuses_with_the_promises_reason() -> None:
    from eeopt.compiler.planner import refuse_final_only
    from eeopt.errors import UnsupportedModelError

    plan = plan_exits(_split_world(0), _profile(3), budget_pp=1.0, seed=0)
    with pytest.raises(UnsupportedModelError, match=r"within a 1 pp budget on this data: the "
                       r"held-out check measured .* pp against the 1 pp budget even 5 standard "
                       r"errors inside it; raise budget, or calibrate on more rows"):
        refuse_final_only(plan, 1.0)


@pytest.mark.parametrize("guarantee", [None, 0.9])
def test_the_frontier_changes_no_plan(guarantee: float | None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner looks its budgets up on a frontier it enumerates once; searching each
    budget afresh (as it does past the frontier's size limit) gives the same plan."""
    from eeopt.planning import Frontier

    calib = _confident_calibration(6000, np.random.default_rng(5))
    kw = {"budget_pp": 2.0 if guarantee else 0.5, "guarantee": guarantee, "seed": 3,
          "cost_tolerance": 0.05}
    fast = plan_exits(calib, _profile(3), **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(Frontier, "MAX_LEAVES", 0)
    slow = plan_exits(calib, _profile(3), **kw)  # type: ignore[arg-type]
    assert len(fast.kept) > 1
    assert (fast.kept, fast.thresholds, fast.margin_pp) == (slow.kept, slow.thresholds,
                                                            slow.margin_pp)
    assert fast.promise == slow.promise


def test_a_patience_plan_can_fire() -> None:
    """Patience p needs p gated exits before the final one: with fewer, no row can ever leave
    early, and such a plan (kept exit3 and the final, patience 2, once chosen on MiniLM) is the
    final exit alone in disguise. Every patience plan keeps enough exits for its patience."""
    calib = _confident_calibration(3000, np.random.default_rng(4))
    for budget in (0.5, 1.0, 3.0, 8.0):
        plan = plan_exits(calib, _profile(3), budget_pp=budget, policy="patience", seed=0)
        if len(plan.kept) > 1:
            assert plan.thresholds[0] <= len(plan.kept) - 1, (budget, plan.kept, plan.thresholds)
            assert sum(plan.exit_fractions[:-1]) > 0
