"""The profile: every part measured on this machine."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eeopt.frontend import export_torch
from eeopt.measure import profile_model
from eeopt.planning import ProfileReport

import topologies as T


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
