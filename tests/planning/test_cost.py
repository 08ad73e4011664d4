"""The cost model's predictions: expected ms per row from stage costs and an exit distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from eeopt.planning import (
    ZERO,
    CostFit,
    PlannedCosts,
    ProfileReport,
    StageProfile,
    ideal_and_predicted,
)
from eeopt.program import CostModelRecord


@dataclass(frozen=True)
class _Profile:
    stages: tuple[CostFit, ...]
    runtime: CostFit = ZERO

    def stage_cost(self, prev: int, exit: int) -> CostFit:
        assert exit == prev + 1  # every exit kept
        return self.runtime + self.stages[exit]


def _linear(fixed: float, per_row: float) -> CostFit:
    return CostFit(fixed, per_row, {b: fixed + per_row * b for b in (1, 8, 64)})


PROFILE = _Profile((_linear(0.05, 0.01), _linear(0.04, 0.02), _linear(0.06, 0.03)),
                   runtime=_linear(0.005, 0.0001))


def _simulated(fractions: np.ndarray, batch: int, rng: np.random.Generator) -> float:
    """Monte Carlo: draw each row's exit, run every stage that still has rows."""
    total, calls = 0.0, 4000
    for _ in range(calls):
        exits = rng.choice(len(fractions), size=batch, p=fractions)
        for k, st in enumerate(PROFILE.stages):
            n = int((exits >= k).sum())
            if n:
                total += (PROFILE.runtime + st).at(n) if n in (1, 8, 64) else (
                    st.fixed_ms + PROFILE.runtime.fixed_ms
                    + (st.per_row_ms + PROFILE.runtime.per_row_ms) * n)
    return total / (calls * batch)


@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("fractions", [[0.9, 0.08, 0.02], [0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
def test_prediction_matches_simulated_batches(batch: int, fractions: list[float]) -> None:
    f = np.array(fractions)
    _, pred = ideal_and_predicted(PROFILE, [0, 1, 2], f, batch)
    want = _simulated(f, batch, np.random.default_rng(batch))
    assert pred == pytest.approx(want, rel=0.02)


def test_later_stages_pay_their_fixed_cost_once_per_call() -> None:
    """At batch 64 a stage that 10% of rows reach is still called in almost every batch: its
    fixed cost is shared by those few rows, not by all 64."""
    f = np.array([0.9, 0.1, 0.0])
    _, pred = ideal_and_predicted(PROFILE, [0, 1, 2], f, 64)
    rt, s0, s1 = PROFILE.runtime, PROFILE.stages[0], PROFILE.stages[1]
    naive = (rt + s0).per_row(64) + 0.1 * (rt + s1).per_row(64)
    assert pred > naive
    called = 1 - 0.9 ** 64
    assert pred == pytest.approx((rt + s0).at(64) / 64 + (
        (s1.fixed_ms + rt.fixed_ms) * called + (s1.per_row_ms + rt.per_row_ms) * 6.4) / 64)


def test_ideal_leaves_out_the_runtime() -> None:
    f = np.array([0.7, 0.2, 0.1])
    ideal, pred = ideal_and_predicted(PROFILE, [0, 1, 2], f, 1)
    reach = [1.0, 0.3, 0.1]
    assert ideal == pytest.approx(sum(r * s.at(1) for r, s in zip(reach, PROFILE.stages,
                                                                  strict=True)))
    assert pred - ideal == pytest.approx(sum(reach) * PROFILE.runtime.at(1))


def test_the_plans_cost_model_round_trips_through_the_manifest() -> None:
    """bench predicts with the cost model the plan was priced with (JSON in the manifest)."""
    import json

    kept = [0, 2]
    costs = [PROFILE.stage_cost(-1, 0), PROFILE.stages[1] + PROFILE.stages[2]]
    record = CostModelRecord(_linear(0.2, 0.05).record(), tuple(c.record() for c in costs))
    cost_model = CostModelRecord.from_dict(json.loads(json.dumps(record.to_dict())), "plan")
    planned = PlannedCosts.of(cost_model, kept)
    assert planned is not None
    assert planned.plain == _linear(0.2, 0.05)
    assert planned.stage_cost(-1, 0) == costs[0] and planned.stage_cost(0, 2) == costs[1]
    assert PlannedCosts.of(None, kept) is None
    assert PlannedCosts.of(cost_model, [0, 1, 2]) is None  # a plan for other exits: not used


def _fit(fixed: float, per_row: float) -> CostFit:
    return CostFit.fit({b: fixed + per_row * b for b in (1, 8, 64)})


def test_costfit_recovers_a_line_and_prefers_measurements() -> None:
    c = _fit(0.05, 0.01)
    assert c.fixed_ms == pytest.approx(0.05) and c.per_row_ms == pytest.approx(0.01)
    assert c.at(8) == pytest.approx(0.13)
    assert c.at(32) == pytest.approx(0.05 + 0.32)  # not measured: the fit
    assert c.per_row(64) == pytest.approx((0.05 + 0.64) / 64)
    assert (c - c).at(1) == pytest.approx(0.0)


def test_stage_cost_rolls_up_dropped_exits() -> None:
    runtime = _fit(0.002, 0.0)
    exits = tuple(
        StageProfile(exit=k, output=f"e{k}", stage=_fit(0.01 + 0.1 * (k + 1), 0.0),
                     head_gate=_fit(0.01 + 0.02, 0.0) if k < 3 else CostFit(0, 0, {}),
                     backbone=_fit(0.1 * (k + 1) - 0.02, 0.0) if k < 3 else
                     _fit(0.01 + 0.4, 0.0), node_us=0, gate_us=0, macs=0)
        for k in range(4))
    r = ProfileReport("m", 1, (1, 8, 64), exits, plain=_fit(1.0, 0.0), runtime=runtime,
                      plain_macs=0)
    # consecutive: the measured stage plus the runtime's cost
    assert r.stage_cost(0, 1).at(1) == pytest.approx(exits[1].stage.at(1) + 0.002)
    # dropping exits 1 and 2: their backbone segments join exit 3's stage, their heads vanish
    want = exits[1].backbone.at(1) + exits[2].backbone.at(1) + exits[3].stage.at(1) + 0.002
    assert r.stage_cost(0, 3).at(1) == pytest.approx(want)
    # merging into an early exit: backbone segments + that exit's head and gate
    want = exits[0].backbone.at(1) + exits[1].backbone.at(1) + exits[1].head_gate.at(1) + 0.002
    assert r.stage_cost(-1, 1).at(1) == pytest.approx(want)
    cum = r.cumulative_ms([0, 3])
    assert cum[1] == pytest.approx(cum[0] + r.stage_cost(0, 3).at(1))
