"""Where the command line writes: --force replaces only an earlier output, an unwritable place
is one line before any work, and SIGTERM leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import eeopt
from eeopt.frontend import export_torch

import topologies as T


def _cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eeopt", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("out") / "m.onnx"
    onnx.save(export_torch(T.make("heavy", 0), T.example("heavy", 2, 0)), path)
    return path


def test_force_never_deletes_a_folder_of_someone_elses_files(model: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = _cli("compile", model, "--out", mine, "--threshold", "0.5", "--force")
    _one_line(proc, 2, "holds files eeopt did not write", "--force replaces only",
              "choose another --out")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no stray ..old-XXXX
    prog = tmp_path / "prog"
    assert _cli("compile", model, "--out", prog, "--threshold", "0.5").returncode == 0
    assert _cli("compile", model, "--out", prog, "--threshold", "0.6", "--force").returncode == 0
    assert eeopt.load(prog).thresholds == pytest.approx((0.6, 0.6, 0.6))
    _one_line(_cli("compile", model, "--out", ".", "--threshold", "0.5", "--force", cwd=prog),
              2, "--out . is the current folder or contains it")
    inside = prog / "m.onnx"
    inside.write_bytes(model.read_bytes())
    _one_line(_cli("compile", inside, "--out", prog, "--threshold", "0.5", "--force"), 2,
              f"the model {inside} is inside --out {prog}")
    assert inside.is_file()


def test_an_unwritable_place_is_one_line_before_any_work(model: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    _one_line(_cli("compile", model, "--out", "/proc/eeopt-prog", "--calib",
                   "fashion-mnist:val", "--budget", "0.5"), 2, "cannot write /proc/eeopt-prog")
    assert time.perf_counter() - started < 30  # no profiling first
    prog = tmp_path / "prog"
    assert _cli("compile", model, "--out", prog, "--threshold", "0.5").returncode == 0
    np.save(tmp_path / "x.npy", T.example("heavy", 3, 1)[0].numpy())
    _one_line(_cli("run", prog, "--input", tmp_path / "x.npy", "--output", "/proc/o.npz"), 2,
              "cannot write /proc/o.npz")
    (tmp_path / "dir.npz").mkdir()
    _one_line(_cli("run", prog, "--input", tmp_path / "x.npy", "--output", tmp_path / "dir.npz"),
              2, "is a folder; name a file to write")


def test_sigterm_during_a_compile_leaves_nothing(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "prog"
    proc = subprocess.Popen([sys.executable, "-m", "eeopt", "compile", model, "--out", out,
                             "--threshold", "0.5"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".prog.tmp-") for p in tmp_path.iterdir()):
            break  # the program is being written (and verified) in its temporary folder
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.skip("the compile finished before it could be stopped")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "eeopt: terminated"
    assert list(tmp_path.iterdir()) == []
