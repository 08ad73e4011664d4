"""JEI-DNN's alternating training on the torch model (``eeopt train --objective jei``): a tiny
run changes the heads and the gates and lowers the gate phase's loss; the program compiled from
the torch-trained gates matches a pure-torch reference (the model's exits and the gate modules);
the gates round-trip through ``GateSet.save/load`` and ``eeopt compile --gates``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import eeopt
from eeopt.cli import main as eeopt_main
from eeopt.data import load_dataset
from eeopt.errors import UsageError
from eeopt.frontend import export_torch
from eeopt.gates import GateSet
from eeopt.models.demo_cnn import load_demo_cnn
from eeopt.train import JEIResult, torch_reference, train_jei


@pytest.fixture(scope="module")
def jei(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny run: 384 training rows, batch 32, phases of 3 batches, 2 epochs (4 alternations
    of each phase); the model exported and the gates saved."""
    torch.set_num_threads(1)
    res = train_jei(load_demo_cnn(), data="fashion-mnist", lam=0.3, epochs=2, alternate=3,
                    limit=384, batch_size=32, lr=0.01, gate_lr=0.05, val_limit=300,
                    threads=1, progress=False)
    d = tmp_path_factory.mktemp("jei")
    onnx.save(export_torch(res.model.eval(), torch.rand(2, 1, 28, 28)), d / "model.onnx")
    res.gateset.save(d / "gates.npz")
    xt, yt = load_dataset("fashion-mnist:test")
    return {"res": res, "dir": d, "x": np.array(xt[:96], dtype=np.float32),
            "y": np.asarray(yt[:96])}


def _res(j: dict[str, object]) -> JEIResult:
    r = j["res"]
    assert isinstance(r, JEIResult)
    return r


def test_training_changes_heads_and_gates(jei: dict[str, object]) -> None:
    res = _res(jei)
    start = load_demo_cnn().state_dict()
    end = res.model.state_dict()
    for key, v in start.items():
        if key.startswith("segments."):  # the backbone (and its BN statistics) stays frozen
            torch.testing.assert_close(end[key], v, rtol=0, atol=0)
    assert any(not torch.equal(end[k], v) for k, v in start.items()
               if k.startswith("heads.") and k.endswith("weight"))
    m = res.metrics
    assert m["head_change_l2"] > 0 and m["gate_change_l2"] > 0
    phases = [p["phase"] for p in m["phases"]]
    assert phases == ["im", "gate"] * 4
    losses = m["gate_phase_mean_loss"]
    assert losses[-1] < losses[0], losses
    assert res.gateset.policy == "jei" and res.gateset.num_exits == 4
    assert len(res.gateset.mlps) == 3 and res.gateset.info["lam"] == 0.3
    assert abs(sum(m["oracle_fractions_train_end"]) - 1) < 1e-3


def test_gateset_roundtrip(jei: dict[str, object]) -> None:
    gs = GateSet.load(Path(str(jei["dir"])) / "gates.npz")
    orig = _res(jei).gateset
    assert (gs.policy, gs.num_exits, gs.sources) == (orig.policy, orig.num_exits, orig.sources)
    for a, b in zip(gs.mlps, orig.mlps, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.inv_std, b.inv_std)
        for wa, wb in zip(a.weights + a.biases, b.weights + b.biases, strict=True):
            np.testing.assert_array_equal(wa, wb)
    assert gs.info["lam"] == orig.info["lam"]


def test_compiled_matches_torch_reference(jei: dict[str, object], tmp_path: Path) -> None:
    res = _res(jei)
    d = Path(str(jei["dir"]))
    x = jei["x"]
    assert isinstance(x, np.ndarray)
    _, _, scores = torch_reference(res.model, res.gates, torch.from_numpy(x), [2.0] * 3)
    rng = np.random.default_rng(0)
    thr = [float(np.quantile(s, rng.uniform(0.3, 0.7))) for s in scores]
    want_e, want_l, _ = torch_reference(res.model, res.gates, torch.from_numpy(x), thr)
    assert len(np.unique(want_e)) >= 3  # the thresholds really split the rows
    prog = eeopt.compile(str(d / "model.onnx"), tmp_path / "p", policy="jei",
                         gates=GateSet.load(d / "gates.npz"), thresholds=thr)
    name = onnx.load(str(d / "model.onnx")).graph.input[0].name
    for batch in (1, 32):
        got_e, got_l = [], []
        for i in range(0, x.shape[0], batch):
            r = prog.run({name: x[i:i + batch]})
            got_e.append(r.exit)
            got_l.append(r.logits)
        np.testing.assert_array_equal(np.concatenate(got_e), want_e)
        np.testing.assert_allclose(np.concatenate(got_l), want_l, rtol=1e-4, atol=1e-4)


def test_planner_on_torch_trained_gates(jei: dict[str, object], tmp_path: Path) -> None:
    """The Python API with a budget: the planner tunes thresholds on the learned scores of
    every calibration row (the gates were trained elsewhere)."""
    from eeopt.measure import profile_model

    d = Path(str(jei["dir"]))
    xv, yv = load_dataset("fashion-mnist:val")
    name = onnx.load(str(d / "model.onnx")).graph.input[0].name
    feeds = {name: np.ascontiguousarray(xv[:600])}
    report = profile_model(str(d / "model.onnx"), threads=1, batches=(1, 8), min_time_s=0.05,
                           progress=False)
    prog = eeopt.compile(str(d / "model.onnx"), tmp_path / "p", policy="jei",
                         gates=GateSet.load(d / "gates.npz"), calib=(feeds, np.asarray(yv[:600])),
                         budget=1.0, profile=report, threads=1)
    plan = prog.manifest.plan
    assert plan is not None and plan.policy == "jei" and plan.plan_rows == 600
    assert prog.manifest.settings["gates"]["trained"].startswith("torch")


def test_compile_cli_gates_errors(jei: dict[str, object], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    d = Path(str(jei["dir"]))
    model = str(d / "model.onnx")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    gs = _res(jei).gateset
    three = GateSet(gs.policy, gs.mlps[:2], gs.sources[:2], gs.tensor_names[:2],
                    gs.tensor_ranks[:2], 3, info=gs.info)
    three.save(tmp_path / "three.npz")
    cases = [
        (["--gates", str(tmp_path / "missing.npz")], "not found"),
        (["--gates", str(bad)], "not a valid eeopt gate file"),
        (["--gates", str(tmp_path / "three.npz")], "trained for 3 exits; the model has 4"),
        (["--gates", str(d / "gates.npz"), "--policy", "maxprob"], "--gates applies to"),
        (["--gates", str(d / "gates.npz"), "--policy", "twin"], "trained for policy jei"),
        (["--gates", str(d / "gates.npz"), "--lambda", "0.5"], "trained already"),
    ]
    for extra, msg in cases:
        argv = ["compile", model, "--out", str(tmp_path / "o"), "--threshold", "0.5"]
        if "--policy" not in extra:
            argv += ["--policy", "jei"]
        assert eeopt_main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    with pytest.raises(UsageError, match="not found"):
        GateSet.load(tmp_path / "missing.npz")
    assert eeopt_main(["compile", model, "--out", str(tmp_path / "ok"), "--policy", "jei",
                       "--gates", str(d / "gates.npz"), "--threshold", "0.5"]) == 0
    assert "compiled" in capsys.readouterr().out


def test_train_cli_jei(tmp_path: Path) -> None:
    import argparse

    from eeopt.cli import train as train_cli

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    train_cli.add_parser(sub)
    out = tmp_path / "run"
    args = p.parse_args(["train", "--objective", "jei", "--lambda", "0.3", "--limit", "256",
                         "--alternate", "2", "--batch-size", "32", "--threads", "1",
                         "--out", str(out)])
    assert train_cli.run(args) == 0
    assert {f.name for f in out.iterdir()} == {"checkpoint.pt", "model.onnx", "gates.npz",
                                               "metrics.json"}
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["objective"] == "jei" and rec["args"]["lr"] == 0.01
    assert "--lambda 0.3 --alternate 2" in rec["command"]
    assert len(rec["metrics"]["gate_phase_mean_loss"]) == 2
    gs = GateSet.load(out / "gates.npz")
    assert gs.num_exits == 4 and gs.info["alternate"] == 2
    bad = p.parse_args(["train", "--objective", "ce", "--lambda", "0.3", "--out",
                        str(tmp_path / "x")])
    with pytest.raises(UsageError, match="apply to --objective jei"):
        train_cli.run(bad)
