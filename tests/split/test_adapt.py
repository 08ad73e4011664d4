"""The link-adaptive device's parts: the link monitor's estimates, the split chooser's
hysteresis (it moves on a clear change, and does not flap on noise around a boundary), and the
joint plan's choices moving with the bandwidth."""

from __future__ import annotations

import numpy as np
import pytest

from eeopt.errors import ManifestError, UsageError
from eeopt.planning import Calibration
from eeopt.split import (
    LinkMonitor,
    SplitChoice,
    SplitChooser,
    SplitCosts,
    SplitMeasurement,
    SplitPlan,
    plan_split_program,
)

# two stages: split 0 (all on the edge, 4 KB cross) or 2 (all on the device, 30 ms)
EDGE = SplitChoice(0, (0.5,), SplitCosts((20.0, 10.0), (1.0, 0.5), (4000.0, 900.0, 0.0), 10.0))
DEVICE = SplitChoice(2, (0.5,), SplitCosts((20.0, 10.0), (1.0, 0.5), (4000.0, 900.0, 0.0),
                                           10.0))
PLAN = SplitPlan((EDGE, DEVICE), rtt_ms=10.0, codec_bits=(None, 1.0, None))


def test_the_monitor_takes_the_rtt_out_and_treats_short_transfers_as_bounds() -> None:
    m = LinkMonitor(window=3)
    assert m.add_transfer(1000, 0.05) is None  # no RTT known yet
    for s in (0.012, 0.010, 0.011):
        m.add_rtt(s)
    assert m.rtt_ms == pytest.approx(10.0)
    assert m.add_transfer(50_000, 0.011) is None  # a bound is no first estimate
    # 10 KB in 10 ms of wire time: 8 Mbit/s
    assert m.add_transfer(10_000, 0.020) == pytest.approx(8e6)
    assert not m.ready  # one sample of a window of three
    assert m.bandwidth_bps == pytest.approx(8e6)
    # too short to measure (1 ms of wire < RTT / 4): below the estimate it says nothing...
    assert m.add_transfer(100, 0.011) is None
    # ...nor does a small transfer, whatever its time (a shaper's burst, fixed costs)
    assert m.add_transfer(1000, 0.030) is None
    # ...above it, it is a lower bound that corrects the estimate
    assert m.add_transfer(50_000, 0.011) == pytest.approx(8 * 50_000 / 0.0025)
    m.add_transfer(10_000, 0.020)
    assert m.ready and m.bandwidth_bps == pytest.approx(8e6)  # the median of the last three


def test_the_plan_picks_the_edge_on_a_fast_link_and_the_device_on_a_slow_one() -> None:
    assert PLAN.best(1e8) == 0 and PLAN.best(1e5) == 1
    (bw, choice), = PLAN.boundaries()
    assert choice == 0
    # at the boundary both choices cost the same
    assert EDGE.expected_ms(bw, 10.0) == pytest.approx(DEVICE.expected_ms(bw, 10.0), rel=1e-2)


def test_the_chooser_moves_after_patience_and_not_on_noise_around_a_boundary() -> None:
    (bw, _), = PLAN.boundaries()
    c = SplitChooser(PLAN, 0, hysteresis=0.25, patience=3)
    rng = np.random.default_rng(0)
    for _ in range(200):  # noise within +-15% of the boundary: inside the hysteresis band
        assert c.update(bw * float(rng.uniform(0.85, 1.15))) == 0
    assert not c.moves
    assert [c.update(bw / 3) for _ in range(3)] == [0, 0, 1]  # a clear drop, 3 estimates
    assert c.update(bw * 3) == 1 and c.update(bw / 3) == 1  # one outlier resets the count
    assert [c.update(bw * 3) for _ in range(3)] == [1, 1, 0]
    assert [(f, t) for _, f, t in c.moves] == [(0, 1), (1, 0)]
    with pytest.raises(UsageError):
        SplitChooser(PLAN, 0, patience=0)


def test_a_plan_record_round_trips_and_a_bad_one_is_one_line() -> None:
    rec = PLAN.to_record()
    back = SplitPlan.from_record(rec, 2, 1)
    assert back.choices == PLAN.choices and back.codec_bits == PLAN.codec_bits
    assert rec["boundaries"] and rec["boundaries"][0][1] == 0
    with pytest.raises(ManifestError, match="does not fit this program"):
        SplitPlan.from_record(rec, 3, 2)
    with pytest.raises(ManifestError, match="malformed"):
        SplitPlan.from_record({**rec, "choices": [{"split": 0}]}, 2, 1)


def _measurement(rows: int = 600) -> SplitMeasurement:
    """Three exits on synthetic logits: exit 0 is confident and right on 60% of rows."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, rows)
    easy = rng.random(rows) < 0.6
    logits = []
    for k in range(3):
        z = rng.normal(0, 1, (rows, 4)).astype(np.float32)
        good = easy if k == 0 else np.ones(rows, bool)
        z[np.arange(rows)[good], labels[good]] += 8.0
        logits.append(z)
    return SplitMeasurement(Calibration(tuple(logits), labels), device_ms=(50.0, 50.0, 50.0),
                            bytes_per_row=(3000.0, 2000.0, 2000.0, 0.0),
                            codec_bits=(None, 1.0, 1.0), lossy_cost_pp=(0.0, 0.1, 0.1, 0.0),
                            stats=((), (), ()), device_source="given")


def test_the_joint_plan_moves_the_split_with_the_bandwidth_and_keeps_early_exits() -> None:
    plan = plan_split_program(_measurement(), policy="maxprob", budget_pp=0.5,
                              edge_speedup=10.0, rtt_ms=20.0, bandwidths_bps=[1e5, 1e9])
    slow, fast = plan.table
    assert slow["split"] == 3 and fast["split"] == 0  # a slow link keeps everything here
    # on the device, exit 0 pays: its threshold fires (below 1) and most rows leave there
    assert slow["thresholds"][0] < 1.0
    assert plan.choices[slow["choice"]].costs.reach[1] < 0.6
    # every split was priced; the choice is at least as good as each (choices planned for
    # other bandwidths are candidates too)
    for row in plan.table:
        assert row["expected_ms"] <= min(v for v in row["per_split_ms"] if v is not None) + 1e-9
    with pytest.raises(UsageError):
        plan_split_program(_measurement(), policy="maxprob", budget_pp=0.5,
                           edge_speedup=0.0, rtt_ms=20.0, bandwidths_bps=[1e6])
