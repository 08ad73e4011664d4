"""`eeopt train` end to end on Fashion-MNIST with --limit, as a user would type it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import eeopt
import eeopt.cli
from eeopt.cli import train as train_cli
from eeopt.cli.common import Parser
from eeopt.data import load_dataset
from eeopt.errors import UsageError
from eeopt.runtime import make_session
from eeopt.train import build_model


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="eeopt")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    train_cli.add_parser(sub)
    return parser.parse_args(argv)


def _check_outputs(out: Path, arch: str, objective: str, **build: object) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json",
                                                      "model.onnx"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == objective and metrics["arch"] == arch
    assert len(metrics["val_acc"]) == metrics["num_exits"] == 4
    assert metrics["args"]["limit"] and metrics["train_seconds"] > 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    model = build_model(arch, pretrained=False, **build).eval()  # type: ignore[arg-type]
    model.load_state_dict(state)
    x = np.array(load_dataset("fashion-mnist:test")[0][:8])
    with torch.no_grad():
        ref = [o.numpy() for o in model(torch.from_numpy(x))]
    sess = make_session(str(out / "model.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x})
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
    program = eeopt.compile(str(out / "model.onnx"), out.parent / "program", threshold=0.9,
                            force=True)
    res = program.run(x)
    picked = np.stack([ref[e][i] for i, e in enumerate(res.exit)])
    np.testing.assert_allclose(res.logits, picked, atol=1e-4, rtol=1e-4)


def test_train_run_writes_a_compilable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    out = tmp_path / "run"
    args = _parse(["train", "--arch", "demo-cnn", "--objective", "distill", "--epochs", "1",
                   "--limit", "256", "--out", str(out), "--set", "temperature=2",
                   "--threads", "1"])
    assert train_cli.run(args) == 0
    assert "val accuracy" in capsys.readouterr().out
    _check_outputs(out, "demo-cnn", "distill")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left
    with pytest.raises(UsageError, match="exists; pass --force"):
        train_cli.run(_parse(["train", "--out", str(out), "--limit", "64"]))


@pytest.mark.parametrize("argv, message", [
    (["--data", "mnist"], "not a shipped data set"),
    (["--set", "alhpa=1", "--objective", "weighted-entropy"], "no setting 'alhpa'"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
    (["--grad-clip", "2", "--objective", "jei"], "--grad-clip applies to the fit objectives"),
])
def test_train_usage_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    args = _parse(["train", "--out", str(tmp_path / "x"), "--limit", "32", *argv])
    with pytest.raises(UsageError, match=message):
        train_cli.run(args)
    assert not (tmp_path / "x").exists()


def test_eeopt_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "train" in eeopt.cli.COMMANDS
    out = tmp_path / "run"
    rc = eeopt.cli.main(["train", "--data", "fashion-mnist", "--arch", "demo-cnn",
                         "--objective", "weighted-entropy", "--epochs", "1", "--limit", "256",
                         "--out", str(out), "--threads", "1"])
    assert rc == 0
    _check_outputs(out, "demo-cnn", "weighted-entropy")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        eeopt.cli.main(["train", "--objective", "nope", "--out", str(tmp_path / "y")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'nope'" in err[0]
    rc = eeopt.cli.main(["train", "--data", "mnist", "--out", str(tmp_path / "y")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["eeopt train: error: --data 'mnist' is not a shipped data set: use one of "
                   "fashion-mnist, tweets"]
    for arch, data, want in [("minilm-l6", "fashion-mnist", "--arch minilm-l6 trains on --data "
                              "tweets"),
                             ("demo-cnn", "tweets", "--arch demo-cnn trains on images, not "
                              "tweets: use --arch minilm-l6 for --data tweets")]:
        assert eeopt.cli.main(["train", "--arch", arch, "--data", data, "--out",
                               str(tmp_path / "z")]) == 2
        assert capsys.readouterr().err.strip() == f"eeopt train: error: {want}"


def test_eeopt_train_bad_objective_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        _parse(["train", "--objective", "nope", "--out", str(tmp_path)])
    assert info.value.code == 2
