"""``eeopt plan-split`` end to end on a small program: the table, the plan recorded in the
manifest (a dry run leaves it alone), and split runs that follow the recorded plan on loopback:
bit-exact with the lossless codec, and within the recorded codec cost with the entropy rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("grpc")
pytest.importorskip("zstandard")

import eeopt  # noqa: E402
from eeopt.split import SplitPlan  # noqa: E402
from eeopt.split._wire import program_hash  # noqa: E402
from tests.split.test_edge import Edge  # noqa: E402

import topologies as T  # noqa: E402


def _eeopt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eeopt", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray],
                                                                np.ndarray]:
    root = tmp_path_factory.mktemp("plansplit")
    prog = eeopt.compile(T.make("masked", 3), root / "p",
                         example_inputs=T.example("masked", 4, 0), threshold=0.5)
    x, mask = T.example("masked", 400, 7)
    feeds = {"x": x.numpy(), "mask": mask.numpy()}
    labels = prog.run(feeds, thresholds=[2.0] * (prog.num_exits - 1)).logits.argmax(1)
    labels[::10] = (labels[::10] + 1) % prog.num_classes  # the final exit is not always right
    np.savez(root / "calib.npz", **feeds, y=labels)
    before = program_hash(root / "p")
    args = [str(root / "p"), "--calib", str(root / "calib.npz"), "--device-ms", "5,5,5",
            "--edge-speedup", "4", "--bandwidths", "1,1000", "--budget", "2"]
    dry = _eeopt("plan-split", *args, "--dry-run", "--objective", "p50")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and program_hash(root / "p") == before
    assert "p50 ms" in dry.stdout
    done = _eeopt("plan-split", *args)
    assert done.returncode == 0, done.stderr
    assert "mean ms" in done.stdout and "recorded in" in done.stdout
    assert program_hash(root / "p") != before
    return root / "p", feeds, labels


def test_the_plan_is_in_the_manifest(planned: Any) -> None:
    path, _, _ = planned
    manifest = json.loads((path / "manifest.json").read_text())
    rec = manifest["split"]
    assert [r["bandwidth_bps"] for r in rec["table"]] == [1e6, 1e9]
    assert rec["info"]["device"] == "given" and rec["info"]["edge_speedup"] == 4
    assert rec["objective"] == "mean"
    plan = SplitPlan.of_manifest(eeopt.load(path).manifest)
    assert plan is not None and len(plan.codec_bits) == 4
    shown = _eeopt("inspect", str(path))
    assert shown.returncode == 0 and "split plan (eeopt plan-split; RTT 20 ms" in shown.stdout


def test_split_runs_follow_the_recorded_plan(planned: Any) -> None:
    path, feeds, labels = planned
    edge = Edge(path)
    try:
        prog = eeopt.load(path)
        plan = SplitPlan.of_manifest(prog.manifest)
        assert plan is not None
        client = prog.connect_edge(edge.address, codec="lossless", adapt=False)
        split, thr = client.choice
        assert (split, thr) == (plan.choices[plan.default].split,
                                list(plan.choices[plan.default].thresholds))
        got = prog.run(feeds, edge=edge.address)
        want = prog.run(feeds, thresholds=thr)
        np.testing.assert_array_equal(got.exit, want.exit)
        np.testing.assert_array_equal(got.logits, want.logits)
        # the entropy rule at every split point a choice uses: within its recorded cost
        inner = [c for c in plan.choices if 0 < c.split < prog.num_exits]
        assert inner  # every split was planned, so the inner ones are choices too
        for c in inner:
            prog.connect_edge(edge.address, split=c.split, thresholds=list(c.thresholds))
            lossy = prog.run(feeds, edge=edge.address)
            exact = prog.run(feeds, thresholds=list(c.thresholds))
            loss = 100.0 * float((exact.logits.argmax(1) == labels).mean()
                                 - (lossy.logits.argmax(1) == labels).mean())
            assert loss <= c.lossy_cost_pp + 100.0 / labels.shape[0] + 1e-9
    finally:
        edge.stop()


def test_plan_split_refuses_bad_settings_in_one_line(planned: Any) -> None:
    path, _, _ = planned
    bad = _eeopt("plan-split", str(path), "--calib", "nowhere.npz", "--budget", "1",
                 "--codec-budget", "2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--codec-budget" in bad.stderr
    wrong = _eeopt("plan-split", str(path), "--calib", str(path.parent / "calib.npz"),
                   "--device-ms", "1,2")
    assert wrong.returncode == 2 and "--device-ms needs one cost per stage" in wrong.stderr
