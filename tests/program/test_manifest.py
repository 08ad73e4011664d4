"""Loading refuses tampered, missing, out-of-directory and wrong-version programs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import eeopt
from eeopt.errors import ManifestError, UnsupportedModelError, UsageError
from eeopt.program import load_manifest

import topologies as T


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prog") / "program"
    eeopt.compile(T.make("longskip", 0), d, example_inputs=T.example("longskip", 3, 0),
                  threshold=0.7)
    return d


@pytest.fixture
def copy(program_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(program_dir, dst)
    return dst


def _edit(d: Path, fn) -> None:  # type: ignore[no-untyped-def]
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_manifest_records_what_it_should(program_dir: Path) -> None:
    m = load_manifest(program_dir)
    assert m.schema_version == 1 and m.backend == "onnxruntime"
    assert m.eeopt_version == eeopt.__version__ and m.backend_version
    assert [s.file for s in m.stages] == [f"stage{k}.onnx" for k in range(4)]
    assert all(len(s.sha256) == 64 for s in m.stages)
    assert m.thresholds == pytest.approx((0.7, 0.7, 0.7))
    assert m.stages[-1].gate is None
    assert m.inputs[0].name == "x" and m.inputs[0].shape == ("N", 12)
    # the long skip is carried past stages 0 and 1
    assert "tanh" in m.stages[0].carry_after and "tanh" in m.stages[1].carry_after


def test_tampered_stage_file(copy: Path) -> None:
    with open(copy / "stage1.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="stage 1 file stage1.onnx does not match"):
        eeopt.load(copy)


def test_missing_stage_file(copy: Path) -> None:
    (copy / "stage2.onnx").unlink()
    with pytest.raises(ManifestError, match="stage2.onnx is missing"):
        eeopt.load(copy)


@pytest.mark.parametrize("bad", ["../stage0.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_path_outside_directory(copy: Path, bad: str) -> None:
    _edit(copy, lambda m: m["stages"][0].__setitem__("file", bad))
    with pytest.raises(ManifestError, match="outside the program directory|not a relative"):
        eeopt.load(copy)


def test_symlink_escaping_directory(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    shutil.copy(copy / "stage0.onnx", outside)
    (copy / "stage0.onnx").unlink()
    (copy / "stage0.onnx").symlink_to(outside)
    with pytest.raises(ManifestError, match="outside the program directory"):
        eeopt.load(copy)


def test_schema_version_mismatch(copy: Path) -> None:
    _edit(copy, lambda m: m.__setitem__("schema_version", 99))
    with pytest.raises(ManifestError, match="schema_version 99"):
        eeopt.load(copy)


def test_manifest_missing_field(copy: Path) -> None:
    _edit(copy, lambda m: m["stages"][1].pop("sha256"))
    with pytest.raises(ManifestError, match=r"stages\[1\] is missing the field 'sha256'"):
        eeopt.load(copy)


def test_not_json(copy: Path) -> None:
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        eeopt.load(copy)


def test_not_a_program(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        eeopt.load(tmp_path)


def test_failed_compile_leaves_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    out = tmp_path / "out"
    with pytest.raises(UnsupportedModelError, match="not a readable ONNX model"):
        eeopt.compile(garbage, out, threshold=0.5)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["garbage.onnx"]


def test_existing_output_needs_force(program_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="already exists"):
        eeopt.compile(T.make("longskip", 0), program_dir, example_inputs=T.example(
            "longskip", 3, 0), threshold=0.5)


@pytest.mark.parametrize("kw", [{"threshold": 0.0}, {"threshold": 1.5},
                                {"thresholds": [0.5, 2.0, 0.5]}, {}])
def test_threshold_out_of_range(tmp_path: Path, kw: dict) -> None:
    with pytest.raises(UsageError):
        eeopt.compile(T.make("longskip", 0), tmp_path / "p",
                      example_inputs=T.example("longskip", 3, 0), **kw)
    assert not (tmp_path / "p").exists()


def test_wrong_threshold_count(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="3 early exits"):
        eeopt.compile(T.make("longskip", 0), tmp_path / "p",
                      example_inputs=T.example("longskip", 3, 0), thresholds=[0.5, 0.5])
    assert not (tmp_path / "p").exists()
