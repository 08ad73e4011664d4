"""The bench's cost model: expected ms per row from stage costs and an exit distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from eeopt.bench import _ideal_and_predicted
from eeopt.profile import ZERO, CostFit


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
    _, pred = _ideal_and_predicted(PROFILE, [0, 1, 2], f, batch)
    want = _simulated(f, batch, np.random.default_rng(batch))
    assert pred == pytest.approx(want, rel=0.02)


def test_later_stages_pay_their_fixed_cost_once_per_call() -> None:
    """At batch 64 a stage that 10% of rows reach is still called in almost every batch: its
    fixed cost is shared by those few rows, not by all 64."""
    f = np.array([0.9, 0.1, 0.0])
    _, pred = _ideal_and_predicted(PROFILE, [0, 1, 2], f, 64)
    rt, s0, s1 = PROFILE.runtime, PROFILE.stages[0], PROFILE.stages[1]
    naive = (rt + s0).per_row(64) + 0.1 * (rt + s1).per_row(64)
    assert pred > naive
    called = 1 - 0.9 ** 64
    assert pred == pytest.approx((rt + s0).at(64) / 64 + (
        (s1.fixed_ms + rt.fixed_ms) * called + (s1.per_row_ms + rt.per_row_ms) * 6.4) / 64)


def test_ideal_leaves_out_the_runtime() -> None:
    f = np.array([0.7, 0.2, 0.1])
    ideal, pred = _ideal_and_predicted(PROFILE, [0, 1, 2], f, 1)
    reach = [1.0, 0.3, 0.1]
    assert ideal == pytest.approx(sum(r * s.at(1) for r, s in zip(reach, PROFILE.stages,
                                                                  strict=True)))
    assert pred - ideal == pytest.approx(sum(reach) * PROFILE.runtime.at(1))


def test_the_plans_cost_model_round_trips_through_the_manifest() -> None:
    """bench predicts with the cost model the plan was priced with (JSON in the manifest)."""
    import json

    from eeopt.bench import _PlannedCosts

    kept = [0, 2]
    costs = [PROFILE.stage_cost(-1, 0), PROFILE.stages[1] + PROFILE.stages[2]]
    plan = json.loads(json.dumps({"cost_model": {
        "plain": _linear(0.2, 0.05).to_dict(), "stages": [c.to_dict() for c in costs]}}))
    planned = _PlannedCosts.of(plan, kept)
    assert planned is not None
    assert planned.plain == _linear(0.2, 0.05)
    assert planned.stage_cost(-1, 0) == costs[0] and planned.stage_cost(0, 2) == costs[1]
    assert _PlannedCosts.of({}, kept) is None
    assert _PlannedCosts.of(plan, [0, 1, 2]) is None  # a plan for other exits: not used


def test_ece() -> None:
    """0 when confidence equals accuracy in every bin; the gap when it does not."""
    from eeopt.bench import ece

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    # every row 70% confident (log-odds chosen so), right on exactly 70% of the rows
    z = np.full((1000, 4), 0.0)
    pred = labels.copy()
    wrong = np.arange(1000) % 10 >= 7
    pred[wrong] = (labels[wrong] + 1) % 4
    z[np.arange(1000), pred] = np.log(0.7 * 3 / 0.3)
    assert ece(z, labels) == pytest.approx(0.0, abs=1e-9)
    assert ece(z, pred) == pytest.approx(0.3, abs=1e-9)  # 70% confident, always right


def test_interleaved_times_every_runner_on_every_chunk() -> None:
    """Plain, program and the extra runners each see every chunk once, block by block, in an
    order that changes from block to block."""
    from eeopt.bench import compare_batch1

    calls: list[tuple[str, int]] = []

    def runner(name: str):  # type: ignore[no-untyped-def]
        return lambda f: calls.append((name, int(f["x"][0, 0])))

    names = ["plain", "program", "a", "b"]
    feeds = {"x": np.arange(120, dtype=np.float32).reshape(120, 1)}
    c = compare_batch1(runner("plain"), runner("program"), feeds, warmup=0, block=4,
                       others={"a": runner("a"), "b": runner("b")})
    assert set(c.others) == {"a", "b"} and c.others["a"].calls == c.plain.calls == 120
    for name in names:
        assert [i for n, i in calls if n == name] == list(range(120))
    orders = set()
    for pos in range(0, len(calls), 16):  # blocks of 4 chunks: each runner's 4 calls in a row
        run = [calls[pos + 4 * j][0] for j in range(4)]
        assert sorted(run) == sorted(names)
        assert all(calls[pos + 4 * j + i][0] == run[j] for j in range(4) for i in range(4))
        orders.add(tuple(run))
    assert len(orders) > 4  # the order changes


def test_bare_stages_weight_each_stage_by_how_often_it_runs() -> None:
    """At batch 1 a stage's weight is the fraction of rows that reach it; at batch b it is
    P(any of b rows reaches it) / b, timed at the expected rows per such call; stages no row
    reaches are left out."""
    from eeopt.bench import _bare_stages

    class _Prog:
        class manifest:  # noqa: N801 - stands in for the Manifest attribute
            stages = (0, 1, 2)

        def __init__(self) -> None:
            self.rows: list[int] = []

        def stage_calls(self, feeds):  # type: ignore[no-untyped-def]
            n = feeds["x"].shape[0]
            self.rows.append(n)
            return [lambda f=None, n=n: n] * 3

    feeds = {"x": np.zeros((100, 1), dtype=np.float32)}
    fr = np.array([0.8, 0.2, 0.0])
    prog = _Prog()
    one = _bare_stages(prog, feeds, fr, 1)
    assert list(one) == ["stage0", "stage1"]
    assert one["stage0"][0] == 1.0 and one["stage1"][0] == pytest.approx(0.2)
    prog.rows.clear()
    many = _bare_stages(prog, feeds, fr, 64)
    called = 1 - 0.8 ** 64
    assert many["stage0"][0] == pytest.approx(1 / 64)
    assert many["stage1"][0] == pytest.approx(called / 64)
    assert prog.rows == [64, round(64 * 0.2 / called)]
    assert _bare_stages(object(), feeds, fr, 1) == {}
