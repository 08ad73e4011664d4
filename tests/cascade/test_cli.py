"""`eeopt cascade` as a user types it: compile, run, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cascade._models import mlp
from e2e.test_cli import _one_line_error, eeopt_cli

from eeopt.cascade import reference_run
from eeopt.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    made = {"a": mlp(0), "b": mlp(1, hidden=16), "c": mlp(2, hidden=32),
            "wide": mlp(3, features=7), "five": mlp(4, classes=5)}
    out = {}
    for name, m in made.items():
        onnx.save(m, d / f"{name}.onnx")
        out[name] = d / f"{name}.onnx"
    return out


def test_cascade_compile_run(files: dict[str, Path], tmp_path: Path) -> None:
    prog, merged = tmp_path / "prog", tmp_path / "merged.onnx"
    p = eeopt_cli("cascade", files["a"], files["b"], files["c"], "--threshold", "0.9",
                  "--out", prog, "--threads", "1", "--save-merged", merged)
    assert p.returncode == 0, p.stderr
    assert "cascade of 3 models" in p.stdout and "verified" in p.stdout
    assert "m0/exit0, m1/exit0, m2/exit0" in p.stdout
    assert (prog / "manifest.json").is_file() and (prog / "stage2.onnx").is_file()
    assert [o.name for o in onnx.load(merged).graph.output] == [
        "m0/exit0", "m1/exit0", "m2/exit0"]

    x = np.random.default_rng(5).random((40, 6), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    p = eeopt_cli("run", prog, "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npz",
                  "--batch-size", "16")
    assert p.returncode == 0, p.stderr
    with np.load(tmp_path / "o.npz") as z:
        logits, exits = z["logits"], z["exit"]
    want_logits, want_exit = reference_run([files[k] for k in "abc"], {"x": x}, [0.9, 0.9])
    np.testing.assert_array_equal(exits, want_exit)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)

    p = eeopt_cli("inspect", prog)
    assert p.returncode == 0 and str(merged) in p.stdout  # the merged model is the source


def test_help_explains() -> None:
    p = eeopt_cli("cascade", "--help")
    assert p.returncode == 0
    for word in ("cheapest first", "--calib", "--budget", "--threshold", "every network"):
        assert word in p.stdout, word


@pytest.mark.parametrize(("args", "code", "match"), [
    (["a"], 2, "a cascade needs at least 2 models, got 1"),
    (["a", "wide"], 1, "cascade inputs do not match"),
    (["a", "five"], 1, "disagree on the number of classes"),
    (["a", "b", "--budget", "1"], 2, "the planner needs both --calib DATA and --budget PP"),
    (["a", "b"], 2, "no thresholds"),
    (["a", "b", "--threshold", "0.9", "--policy", "nope"], 2, "unknown --policy 'nope'"),
])
def test_errors_are_one_line(files: dict[str, Path], tmp_path: Path, args: list[str],
                             code: int, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    """In process (``eeopt.cli.main``, what ``python -m eeopt`` calls) to keep the test fast;
    test_missing_file_and_existing_out goes through a real process."""
    argv = [str(files[a]) if a in files else a for a in args]
    rc = main(["cascade", *argv, "--out", str(tmp_path / "prog")])
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert lines[0].startswith("eeopt cascade: error: ")
    assert not (tmp_path / "prog").exists()


def test_missing_file_and_existing_out(files: dict[str, Path], tmp_path: Path) -> None:
    _one_line_error(eeopt_cli("cascade", files["a"], tmp_path / "nope.onnx", "--threshold",
                              "0.9", "--out", tmp_path / "p"), 1, "does not exist")
    (tmp_path / "p").mkdir()
    _one_line_error(eeopt_cli("cascade", files["a"], files["b"], "--threshold", "0.9",
                              "--out", tmp_path / "p"), 2, "already exists")
