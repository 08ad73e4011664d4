"""A tampered manifest is refused at load with one line naming the field, in both runtimes:
each of these once loaded and then gave wrong output (0 rows for a batch axis past the rank, a
-5 threshold taken) or failed mid-run with "internal error"."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.errors import ManifestError
from eeopt.program import MANIFEST_NAME, sha256_file

import topologies as T

ROOT = Path(__file__).resolve().parents[2]
EEOPT_RUN = ROOT / "build" / "cpp" / "eeopt_run"


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tamper") / "p"
    eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                  threshold=0.5)
    return d


def _swap_stage_files(d: Path, man: dict) -> None:
    """Stage 1's file becomes stage 0's (its sha256 updated): another interface."""
    shutil.copy(d / "stage0.onnx", d / "stage1.onnx")
    man["stages"][1]["sha256"] = sha256_file(d / "stage1.onnx")


def _externalize(d: Path, man: dict) -> None:
    """Stage 0 keeps its weights in ``weights.bin`` (its sha256 updated), which ONNX Runtime
    would resolve against the current directory: a file the sha256 does not cover."""
    import onnx

    model = onnx.load(d / "stage0.onnx")
    onnx.save(model, d / "stage0.onnx", save_as_external_data=True, location="weights.bin")
    man["stages"][0]["sha256"] = sha256_file(d / "stage0.onnx")


def _set(path: tuple, value: object) -> Callable[[Path, dict], None]:
    def edit(d: Path, man: dict) -> None:
        node = man
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return edit


CASES = [
    ("batch_axis", _set(("inputs", 0, "batch_axis"), 5),
     "inputs 'x' has batch_axis 5, but its shape has 4 axes"),
    ("negative threshold", _set(("stages", 0, "gate", "threshold"), -5),
     "stages[0].gate.threshold -5 is out of range for policy maxprob"),
    ("num_classes", _set(("num_classes",), 7),
     "its logits have 5 classes, the manifest says 7"),
    ("carry_after", _set(("stages", 0, "carry_after"), ["nope"]),
     "stages[0].carry_after names 'nope', which is neither alive nor produced there"),
    ("dtype", _set(("inputs", 0, "dtype"), "foo"), "inputs 'x' has dtype 'foo'"),
    ("interface", _swap_stage_files, "stage 1 file stage1.onnx does not match the manifest"),
    ("external data", _externalize, "stage 0 file stage0.onnx keeps tensor '"),
]


@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_a_tampered_manifest_is_one_line(program_dir: Path, tmp_path: Path, name: str,
                                         edit: Callable[[Path, dict], None],
                                         message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "p"
    shutil.copytree(program_dir, d)
    man = json.loads((d / MANIFEST_NAME).read_text())
    edit(d, man)
    (d / MANIFEST_NAME).write_text(json.dumps(man))
    if (d / "weights.bin").exists():  # where ONNX Runtime would look for it: the current folder
        shutil.copy(d / "weights.bin", tmp_path / "weights.bin")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        eeopt.load(d)
    x = tmp_path / "x.npy"
    np.save(x, T.example("residual", 16, 1)[0].numpy())
    proc = subprocess.run([sys.executable, "-m", "eeopt", "run", str(d), "--input", str(x),
                           "--output", str(tmp_path / "o.npz")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_a_nan_threshold_is_refused(program_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "p"
    shutil.copytree(program_dir, d)
    man = json.loads((d / MANIFEST_NAME).read_text())
    man["stages"][1]["gate"]["threshold"] = math.nan  # json writes NaN
    (d / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="stages.1..gate.threshold nan is out of range"):
        eeopt.load(d)


@pytest.mark.skipif(not EEOPT_RUN.is_file(), reason="the C++ runtime is not built")
def test_the_cpp_runtime_refuses_them_too(program_dir: Path, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, T.example("residual", 16, 1)[0].numpy())
    for name, edit, message in [*CASES[:2], CASES[-1]]:
        d = tmp_path / name.replace(" ", "_")
        shutil.copytree(program_dir, d)
        man = json.loads((d / MANIFEST_NAME).read_text())
        edit(d, man)
        (d / MANIFEST_NAME).write_text(json.dumps(man))
        if (d / "weights.bin").exists():
            shutil.copy(d / "weights.bin", tmp_path / "weights.bin")
        proc = subprocess.run([str(EEOPT_RUN), str(d), "--input", f"x={x}", "--exits",
                               str(tmp_path / "e.npy"), "--logits", str(tmp_path / "l.npy")],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
