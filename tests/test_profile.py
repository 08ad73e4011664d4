"""The profile: MAC counts, measured roll-up, and how merged stages are priced."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eeopt.capture import export_torch
from eeopt.profile import CostFit, ProfileReport, StageProfile, count_macs, profile_model

import topologies as T


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


def test_count_macs_matches_layer_arithmetic() -> None:
    m = export_torch(T.make("longskip", 0), T.example("longskip", 2, 0))
    macs = count_macs(m)
    # 12->16 stem, 16->16 l1, l2, 32->16 l3, three 16->4 heads and a 16->4 final, at batch 1
    assert sum(macs.values()) == 12 * 16 + 2 * 16 * 16 + 32 * 16 + 4 * 16 * 4


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ProfileReport:
    path = tmp_path_factory.mktemp("prof") / "m.onnx"
    onnx.save(export_torch(T.make("residual", 0), T.example("residual", 2, 0)), path)
    return profile_model(path, threads=1, batches=(1, 4), min_time_s=0.02, progress=False)


def test_profile_measures_every_part(report: ProfileReport) -> None:
    assert report.num_exits == 3 and report.batches == (1, 4)
    for e in report.exits:
        assert set(e.stage.samples) == {1, 4}
        assert all(v > 0 for v in e.stage.samples.values())
        assert e.macs > 0
        if e.exit < 2:
            assert e.head_gate.at(1) > 0 and e.gate_us > 0
            # the backbone segment is what the stage costs beyond its head and gate
            assert e.backbone.samples[1] == pytest.approx(
                max(e.stage.samples[1] - e.head_gate.samples[1], 0.0))
    assert report.plain.at(1) > 0 and report.plain_macs > 0
    stages = {n.stage for n in report.nodes}
    assert stages == {0, 1, 2}
    assert any("eeopt_gate" in n.name for n in report.nodes)
    assert sum(e.macs for e in report.exits) >= report.plain_macs
    d = report.to_dict()
    assert np.isfinite(d["exits"][0]["stage"]["fixed_ms"])
