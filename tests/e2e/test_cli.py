"""The CLI as a user types it: compile, run, inspect, and every bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from eeopt.frontend import export_torch

import topologies as T


def eeopt_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eeopt", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("masked", "residual"):
        p = d / f"{name}.onnx"
        onnx.save(export_torch(T.make(name, 11), T.example(name, 4, 0)), p)
        out[name] = p
    return out


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, match: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_compile_run_inspect(models: dict[str, Path], tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    p = eeopt_cli("compile", models["masked"], "--out", prog, "--thresholds", "0.4,0.45")
    assert p.returncode == 0, p.stderr
    assert "verified" in p.stdout
    assert (prog / "manifest.json").is_file() and (prog / "stage2.onnx").is_file()

    x, mask = T.example("masked", 50, 9)
    np.savez(tmp_path / "in.npz", x=x.numpy(), mask=mask.numpy())
    p = eeopt_cli("run", prog, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz",
                  "--batch-size", "16")
    assert p.returncode == 0, p.stderr
    assert "50 rows" in p.stdout
    with np.load(tmp_path / "out.npz") as z:
        logits, exits = z["logits"], z["exit"]
    assert logits.shape == (50, 3) and logits.dtype == np.float32 and exits.dtype == np.int64

    import eeopt

    want = eeopt.load(prog).run({"x": x.numpy(), "mask": mask.numpy()})
    np.testing.assert_array_equal(exits, want.exit)
    np.testing.assert_allclose(logits, want.logits, rtol=1e-5, atol=1e-6)

    p = eeopt_cli("inspect", prog)
    assert p.returncode == 0, p.stderr
    assert "max prob >= 0.45" in p.stdout and "final (no gate)" in p.stdout
    assert "mask float32[N, 5]" in p.stdout


def test_run_npy_single_input(models: dict[str, Path], tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    assert eeopt_cli("compile", models["residual"], "--out", prog, "--threshold", "0.5"
                     ).returncode == 0
    (x,) = T.example("residual", 5, 1)
    np.save(tmp_path / "x.npy", x.numpy())
    p = eeopt_cli("run", prog, "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npz")
    assert p.returncode == 0, p.stderr
    assert np.load(tmp_path / "o.npz")["exit"].shape == (5,)


@pytest.mark.parametrize("thr", ["0", "1.5", "-0.1", "abc"])
def test_threshold_out_of_range_is_usage_error(models: dict[str, Path], tmp_path: Path,
                                                thr: str) -> None:
    p = eeopt_cli("compile", models["masked"], "--out", tmp_path / "p", "--threshold", thr)
    _one_line_error(p, 2, "--threshold")
    assert not (tmp_path / "p").exists()


def test_wrong_threshold_count(models: dict[str, Path], tmp_path: Path) -> None:
    p = eeopt_cli("compile", models["masked"], "--out", tmp_path / "p", "--thresholds", "0.5")
    _one_line_error(p, 2, "2 early exits")
    assert not (tmp_path / "p").exists()


def test_garbage_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    p = eeopt_cli("compile", bad, "--out", tmp_path / "p", "--threshold", "0.5")
    _one_line_error(p, 1, "not a readable ONNX model")
    assert not (tmp_path / "p").exists()


def test_unsupported_model(tmp_path: Path) -> None:
    from onnx_builders import two_exit_mlp

    m = two_exit_mlp()
    del m.graph.output[1]
    onnx.save(m, tmp_path / "one.onnx")
    p = eeopt_cli("compile", tmp_path / "one.onnx", "--out", tmp_path / "p", "--threshold", "0.5")
    _one_line_error(p, 1, "one output per exit")
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def masked_prog(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    prog = tmp_path_factory.mktemp("mp") / "prog"
    assert eeopt_cli("compile", models["masked"], "--out", prog, "--threshold", "0.5"
                     ).returncode == 0
    return prog


def _run(prog: Path, tmp_path: Path, **arrays: np.ndarray) -> subprocess.CompletedProcess[str]:
    np.savez(tmp_path / "in.npz", **arrays)
    return eeopt_cli("run", prog, "--input", tmp_path / "in.npz", "--output", tmp_path / "o.npz")


def test_run_missing_input(masked_prog: Path, tmp_path: Path) -> None:
    x, _ = T.example("masked", 3, 0)
    _one_line_error(_run(masked_prog, tmp_path, x=x.numpy()), 1, "missing input 'mask'")
    assert not (tmp_path / "o.npz").exists()


def test_run_wrong_dtype(masked_prog: Path, tmp_path: Path) -> None:
    x, m = T.example("masked", 3, 0)
    p = _run(masked_prog, tmp_path, x=x.numpy().astype(np.float64), mask=m.numpy())
    _one_line_error(p, 1, "dtype float64, expected float32")
    assert not (tmp_path / "o.npz").exists()


def test_run_wrong_shape(masked_prog: Path, tmp_path: Path) -> None:
    x, m = T.example("masked", 3, 0)
    p = _run(masked_prog, tmp_path, x=x.numpy()[:, :, :2].copy(), mask=m.numpy())
    _one_line_error(p, 1, "axis 2 must be 6")
    assert not (tmp_path / "o.npz").exists()


def test_run_tampered_program(masked_prog: Path, tmp_path: Path) -> None:
    import shutil

    prog = tmp_path / "prog"
    shutil.copytree(masked_prog, prog)
    (prog / "stage1.onnx").write_bytes(b"tampered")
    x, m = T.example("masked", 3, 0)
    _one_line_error(_run(prog, tmp_path, x=x.numpy(), mask=m.numpy()), 1, "sha256")
    (prog / "stage1.onnx").unlink()
    _one_line_error(_run(prog, tmp_path, x=x.numpy(), mask=m.numpy()), 1, "is missing")
    assert not (tmp_path / "o.npz").exists()


def test_run_manifest_outside_directory(masked_prog: Path, tmp_path: Path) -> None:
    import json
    import shutil

    prog = tmp_path / "prog"
    shutil.copytree(masked_prog, prog)
    man = json.loads((prog / "manifest.json").read_text())
    man["stages"][0]["file"] = "../../stage0.onnx"
    (prog / "manifest.json").write_text(json.dumps(man))
    x, m = T.example("masked", 3, 0)
    p = _run(prog, tmp_path, x=x.numpy(), mask=m.numpy())
    _one_line_error(p, 1, "outside the program directory")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    p = eeopt_cli("--debug", "inspect", tmp_path)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_help_explains() -> None:
    p = eeopt_cli("--help")
    assert p.returncode == 0 and "compile" in p.stdout and "examples:" in p.stdout
    p = eeopt_cli("compile", "--help")
    assert p.returncode == 0 and "--thresholds" in p.stdout
