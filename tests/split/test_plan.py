"""The split choice: expected latency per split point, by hand on a small case; the choice
against exhaustive search; the bandwidths where it changes."""

from __future__ import annotations

import pytest

from eeopt.errors import UsageError
from eeopt.split import SplitCosts, boundaries, expected_ms, plan_split

# three stages; 60% leave after stage 0, 20% after stage 1
COSTS = SplitCosts.from_exit_fractions(device_ms=(2.0, 4.0, 8.0), exit_fractions=(0.6, 0.2, 0.2),
                                       bytes_=(3136.0, 1600.0, 800.0, 0.0), edge_speedup=4.0)


def test_expected_latency_by_hand() -> None:
    assert COSTS.reach == pytest.approx((1.0, 0.4, 0.2))
    # all on the device: 2 + 0.4 * 4 + 0.2 * 8
    assert expected_ms(COSTS, 3, 1e6, 20.0) == pytest.approx(5.2)
    # split before stage 1 at 10 Mbit/s, 20 ms RTT: 2 + 0.4 * (20 + 1.28) + (1.6 + 1.6) / 4
    assert expected_ms(COSTS, 1, 1e7, 20.0) == pytest.approx(2.0 + 0.4 * 21.28 + 0.8)
    # all on the edge: the raw input crosses for every row
    assert expected_ms(COSTS, 0, 1e7, 20.0) == pytest.approx(20.0 + 2.5088 + 5.2 / 4)


def test_the_choice_is_the_exhaustive_best_and_moves_with_the_link() -> None:
    for bw in (1e5, 1e6, 1e7, 1e8, 1e9, 1e10):
        for rtt in (0.0, 1.0, 20.0):
            best, lat = plan_split(COSTS, bw, rtt)
            assert lat[best] == min(lat) and lat == [expected_ms(COSTS, s, bw, rtt)
                                                     for s in range(4)]
    assert plan_split(COSTS, 1e6, 20.0)[0] == 3  # slow link: stay on the device
    assert plan_split(COSTS, 1e10, 0.0)[0] == 0  # free link, fast edge: send everything
    cuts = boundaries(COSTS, rtt_ms=0.0)
    bws = [b for b, _ in cuts]
    assert cuts and bws == sorted(bws)
    for bw, s in cuts:  # just above a boundary the new split is the best
        assert plan_split(COSTS, bw * 1.01, 0.0)[0] == s


def test_bad_costs_are_refused() -> None:
    with pytest.raises(UsageError, match="K stage costs"):
        SplitCosts((1.0,), (1.0, 0.5), (1.0, 0.0))
    with pytest.raises(UsageError, match="speed-up"):
        SplitCosts((1.0,), (1.0,), (1.0, 0.0), edge_speedup=0.0)
    with pytest.raises(UsageError, match="bandwidth"):
        plan_split(COSTS, 0.0, 1.0)


def test_row_latencies_and_percentiles_by_hand() -> None:
    from eeopt.split import SplitChoice, SplitPlan, latency_ms, row_latencies

    # all on the device: rows leave after 2, 6 and 14 ms, 60/20/20%
    assert row_latencies(COSTS, 3, 1e7, 20.0) == pytest.approx([(2.0, 0.6), (6.0, 0.2),
                                                                (14.0, 0.2)])
    assert latency_ms(COSTS, 3, 1e7, 20.0, "p50") == 2.0
    assert latency_ms(COSTS, 3, 1e7, 20.0, "p90") == 14.0
    # the weighted mean of the rows' latencies is the expected latency, at every split
    for split in range(4):
        rows = row_latencies(COSTS, split, 1e7, 20.0)
        assert sum(ms * w for ms, w in rows) == pytest.approx(expected_ms(COSTS, split, 1e7,
                                                                          20.0))
    with pytest.raises(UsageError, match="objective"):
        latency_ms(COSTS, 3, 1e7, 20.0, "p42")
    # a device whose first exit takes most rows in 30 ms, the rest in 60 ms, against an edge
    # that answers every row in 40 ms: the mean prefers the edge, the median the device
    slow = SplitCosts.from_exit_fractions((30.0, 30.0), (0.6, 0.4), (100.0, 100.0, 0.0), 10.0)
    edge, device = SplitChoice(0, (0.5,), slow), SplitChoice(2, (0.5,), slow)
    assert edge.expected_ms(1e9, 34.0) < device.expected_ms(1e9, 34.0)
    by_mean = SplitPlan((edge, device), 34.0, (None, None, None))
    by_p50 = SplitPlan((edge, device), 34.0, (None, None, None), objective="p50")
    assert by_mean.best(1e9) == 0 and by_p50.best(1e9) == 1
    assert SplitPlan.from_record(by_p50.to_record(), 2, 1).objective == "p50"
