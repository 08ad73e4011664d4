"""The Program interface: default thresholds, instrumented stage calls, and the loaders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.errors import ManifestError, UsageError
from eeopt.program import load_manifest
from eeopt.runtime import LOADERS, OrtProgram, Program, register_loader

import topologies as T


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Program:
    d = tmp_path_factory.mktemp("prog") / "p"
    return eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                         threshold=0.5)


X = T.example("residual", 32, 9)[0].numpy()


def test_set_thresholds_changes_the_default(program: Program) -> None:
    prog = eeopt.load(program.path)
    z = prog.run_all(X)[0]
    p = np.exp(z - z.max(1, keepdims=True))
    thr = float(np.median(p.max(1) / p.sum(1)))
    want = prog.run(X, thresholds=[thr, thr])
    prog.set_thresholds([thr, thr])
    assert prog.thresholds == pytest.approx((thr, thr))
    got = prog.run(X)
    np.testing.assert_array_equal(got.exit, want.exit)
    assert 0 < (got.exit == 0).sum() < len(X)
    np.testing.assert_array_equal(prog.run(X[:1]).exit, want.exit[:1])  # the one-row path too
    with pytest.raises(UsageError, match="NaN"):
        prog.set_thresholds([float("nan"), 0.5])
    with pytest.raises(UsageError, match="2 gated exits; got 3"):
        prog.set_thresholds([0.5, 0.5, 0.5])
    assert load_manifest(prog.path).thresholds == (0.5, 0.5)  # the manifest is unchanged


def test_instrument_wraps_every_stage_call_and_none_restores(program: Program) -> None:
    prog = eeopt.load(program.path)
    assert isinstance(prog, OrtProgram)
    calls: list[int] = []

    def wrap(k: int, run):  # type: ignore[no-untyped-def]
        def counted(fetch, feeds, options):  # type: ignore[no-untyped-def]
            calls.append(k)
            return run(fetch, feeds, options)
        return counted

    prog.instrument(wrap)
    never = prog.run(X, thresholds=[2.0, 2.0])  # no row leaves: every stage runs once
    assert calls == [0, 1, 2]
    prog.run(X[:1], thresholds=[2.0, 2.0])
    prog.run(X[:1])  # the one-row fast path calls the first stage itself
    assert calls[3:6] == [0, 1, 2] and calls[6] == 0
    prog.instrument(None)
    calls.clear()
    np.testing.assert_array_equal(prog.run(X, thresholds=[2.0, 2.0]).exit, never.exit)
    assert calls == []


def test_load_finds_the_loader_by_backend(program: Program, tmp_path: Path) -> None:
    assert set(LOADERS) >= {"onnxruntime", "aoti", "tensorrt"}
    d = tmp_path / "p"
    d.mkdir()
    for f in program.path.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    man = json.loads((d / "manifest.json").read_text())
    man["backend"] = "custom"
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="backend 'custom'; this runtime runs 'onnxruntime'"):
        eeopt.load(d)

    class Custom(OrtProgram):
        backend = "custom"

    register_loader("custom", lambda path, manifest, threads: Custom(path, manifest, threads))
    try:
        prog = eeopt.load(d)
        assert type(prog) is Custom
        np.testing.assert_array_equal(prog.run(X).exit, program.run(X).exit)
    finally:
        del LOADERS["custom"]
    with pytest.raises(ManifestError, match="OrtProgram runs 'onnxruntime' programs"):
        OrtProgram(d, dataclasses.replace(load_manifest(d), backend="aoti"))


def test_threshold_overrides_keep_their_policys_range(program: Program) -> None:
    """-1 and 0 once made every row leave at exit 0; a string raised a raw ValueError."""
    for bad in (-1.0, 0.0):
        with pytest.raises(UsageError, match=f"thresholds value {bad:g} for exit 0 is out of "
                                             "range for policy maxprob: each must be > 0"):
            program.run(X, thresholds=[bad, 0.5])
    with pytest.raises(UsageError, match="thresholds must be a number or one number per gated "
                                         "exit, got str '0.9'"):
        program.run(X, thresholds="0.9")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="thresholds must be numbers"):
        program.run(X, thresholds=[0.5, "high"])  # type: ignore[list-item]
    never = program.run(X, thresholds=2.0)  # above 1 disables a maxprob exit
    assert (never.exit == program.num_exits - 1).all()
    np.testing.assert_array_equal(program.run(X, thresholds=np.float32(0.5)).exit,
                                  program.run(X).exit)


def test_the_cli_and_the_cpp_runtime_refuse_the_same_overrides(program: Program,
                                                              tmp_path: Path) -> None:
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", X)
    proc = subprocess.run([sys.executable, "-m", "eeopt", "run", str(program.path), "--input",
                           str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npz"),
                           "--thresholds=-1,0.5"], capture_output=True, text=True, timeout=120)
    want = ("thresholds value -1 for exit 0 is out of range for policy maxprob: each must be "
            "> 0 (above 1 disables the exit)")
    assert proc.returncode == 2 and proc.stderr == f"eeopt run: error: --{want}\n"
    assert not (tmp_path / "o.npz").exists()
    binary = Path(__file__).resolve().parents[2] / "build" / "cpp" / "eeopt_run"
    if binary.is_file():
        cpp = subprocess.run([str(binary), str(program.path), "--input",
                              f"x={tmp_path / 'x.npy'}", "--exits", str(tmp_path / "e.npy"),
                              "--logits", str(tmp_path / "l.npy"), "--thresholds", "-1,0.5"],
                             capture_output=True, text=True, timeout=120)
        assert cpp.returncode == 2 and cpp.stderr.startswith(f"eeopt_run: error: {want}")
