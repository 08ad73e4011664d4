"""The planner through the CLI: compile --calib/--budget, inspect, profile, bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from e2e.test_cli import _one_line_error, eeopt_cli

from eeopt.frontend import export_torch

import topologies as T


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small model and labelled data on which its first exit is informative: the label is
    exit 0's prediction where exit 0 is confident (top half), else the final exit's; 5% are
    flipped."""
    d = tmp_path_factory.mktemp("plan")
    model = T.make("heavy", 5)
    onnx.save(export_torch(model, T.example("heavy", 4, 0)), d / "m.onnx")
    for name, seed, n in (("calib", 1, 2000), ("test", 2, 600)):
        (x,) = T.example("heavy", n, seed)
        with torch.no_grad():
            outs = model(x)
        conf0 = torch.softmax(outs[0], 1).max(1).values.numpy()
        y = np.where(conf0 >= np.median(conf0), outs[0].argmax(1).numpy(),
                     outs[-1].argmax(1).numpy())
        flip = np.random.default_rng(seed).random(n) < 0.05
        y = np.where(flip, (y + 1) % 4, y)
        np.savez(d / f"{name}.npz", x=x.numpy(), y=y)
    return {"dir": d, "model": d / "m.onnx", "calib": d / "calib.npz", "test": d / "test.npz"}


def test_compile_with_planner_then_inspect(setup: dict[str, Path]) -> None:
    out = setup["dir"] / "prog"
    p = eeopt_cli("compile", setup["model"], "--out", out, "--calib", setup["calib"],
                  "--budget", "2", "--threads", "1", "--force")
    assert p.returncode == 0, p.stderr
    assert "kept exits" in p.stdout and "held-out check" in p.stdout
    man = json.loads((out / "manifest.json").read_text())
    plan = man["plan"]
    assert plan["budget_pp"] == 2.0 and plan["kept_outputs"][-1] == "exit3"
    assert len(man["stages"]) == len(plan["kept_outputs"])
    # the cost model the plan was priced with, one stage per kept exit, for `eeopt bench`
    assert len(plan["cost_model"]["stages"]) == len(plan["kept_outputs"])
    assert plan["cost_model"]["plain"]["samples"]["1"] > 0
    assert plan["predicted_loss_pp"] <= 2.0 + 1e-9
    assert [s["gate"]["threshold"] for s in man["stages"][:-1]] == pytest.approx(
        plan["thresholds"])
    p = eeopt_cli("inspect", out)
    assert p.returncode == 0 and "predicted accuracy" in p.stdout and "held-out check" in p.stdout
    assert "promise: best effort: P(loss <= 2 pp on 2000 fresh rows) ~ " in p.stdout
    assert plan["promise"]["kind"] == "best-effort" and plan["promise"]["fresh_rows"] == 2000
    # Result.exit k -> the model output it left at, also after the planner dropped exits
    import eeopt

    kept = tuple(plan["kept_outputs"])
    assert eeopt.load(out).exit_names == kept
    mapping = ", ".join(f"{k} -> {name}" for k, name in enumerate(kept))
    assert f"(Result.exit -> model output: {mapping})" in p.stdout
    x = np.load(setup["test"])["x"][:40]
    np.save(setup["dir"] / "x40.npy", x)
    p = eeopt_cli("run", out, "--input", setup["dir"] / "x40.npy", "--output",
                  setup["dir"] / "o40.npz")
    assert p.returncode == 0, p.stderr
    assert all(f"exit {k} ({name}): " in p.stdout for k, name in enumerate(kept)), p.stdout


def test_guarantee_mode_compiles(setup: dict[str, Path]) -> None:
    out = setup["dir"] / "prog_g"
    p = eeopt_cli("compile", setup["model"], "--out", out, "--calib", setup["calib"],
                  "--budget", "3", "--guarantee", "0.9", "--threads", "1")
    if p.returncode == 1:  # nothing certifiable on this little data is a legitimate answer
        _one_line_error(p, 1, "keeps only the final classifier")
        return
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "manifest.json").read_text())["plan"]["guarantee"] == 0.9


@pytest.mark.parametrize("args,match", [
    (["--budget", "1"], "needs both --calib DATA and --budget"),
    (["--calib", "fashion-mnist:val", "--budget", "-1"], "--budget -1.0 must be >= 0"),
    (["--threshold", "0.5", "--guarantee", "0.9"], "--guarantee needs the planner"),
])
def test_planner_usage_errors(setup: dict[str, Path], args: list[str], match: str) -> None:
    out = setup["dir"] / "never"
    _one_line_error(eeopt_cli("compile", setup["model"], "--out", out, *args), 2, match)
    assert not out.exists()


def test_calib_file_without_labels(setup: dict[str, Path]) -> None:
    bad = setup["dir"] / "nolabels.npz"
    np.savez(bad, x=np.zeros((3, 1, 24, 24), np.float32))
    p = eeopt_cli("compile", setup["model"], "--out", setup["dir"] / "x", "--calib", bad,
                  "--budget", "1")
    _one_line_error(p, 1, "has no array 'y'")


def test_profile_cli(setup: dict[str, Path]) -> None:
    js = setup["dir"] / "profile.json"
    x = setup["dir"] / "x_profile.npy"
    np.save(x, np.load(setup["calib"])["x"][:8])
    p = eeopt_cli("profile", setup["model"], "--batches", "1,4", "--json", js,
                  "--example-inputs", x)
    assert p.returncode == 0, p.stderr
    assert "plain network" in p.stdout and "slowest nodes" in p.stdout
    rep = json.loads(js.read_text())
    assert len(rep["exits"]) == 4 and rep["batches"] == [1, 4]


def test_bench_cli(setup: dict[str, Path]) -> None:
    out = setup["dir"] / "prog_b"
    assert eeopt_cli("compile", setup["model"], "--out", out, "--calib", setup["calib"],
                     "--budget", "2").returncode == 0
    js, png = setup["dir"] / "bench.json", setup["dir"] / "frontier.png"
    p = eeopt_cli("bench", out, "--data", setup["test"], "--batch", "1,16", "--budgets", "1,4",
                  "--limit", "300", "--json", js, "--plot", png, "--passes", "3")
    assert p.returncode == 0, p.stderr
    assert "batch 1 mean (headline)" in p.stdout and "frontier" in p.stdout
    res = json.loads(js.read_text())
    assert set(res["latency"]) == {"1", "16"}
    for lat in res["latency"].values():  # the reported pass is the median of the three
        speedups = sorted(q["speedup_mean"] for q in lat["passes"])
        assert len(speedups) == 3 and lat["speedup_mean"] == speedups[1]
    assert sum(res["exit_fractions"]) == pytest.approx(1.0)
    assert len(res["frontier"]) == 2
    assert png.stat().st_size > 10_000
    # the loss comes with its paired interval, and the plan's promise with whether it held
    lo, hi = res["loss_interval_pp"]
    assert lo <= res["loss_pp"] <= hi and hi - lo > 0
    assert res["promise"]["kind"] == "best-effort" and res["budget_pp"] == 2.0
    assert "loss, 95% interval (paired)" in p.stdout and "promise (" in p.stdout
    assert "best effort: P(loss <= 2 pp on" in p.stdout
    for f in res["frontier"]:
        if "accuracy" in f:
            assert f["loss_interval_pp"][0] <= f["loss_pp"] <= f["loss_interval_pp"][1]
    # a budget no plan meets is a row that says so, and its whole reason below the table
    from eeopt.bench import format_bench

    why = "no early exit pays off within a 0 pp budget on this data: " + "x" * 80
    res["frontier"].insert(0, {"budget_pp": 0.0, "skipped": why})
    text = format_bench(res)
    assert "none: serve the plain network (below)" in text and f"  budget 0: {why}" in text
