"""The C++ runtime (build/cpp/eeopt_run) against the Python runtime, row by row.

Programs are compiled fresh for every topology family and two seeds; the C++ binary must give
the same exits and logits within 1e-5 as ``eeopt.load(dir).run`` at thresholds that split the
batch and at always/never-exit thresholds, and refuse bad inputs and tampered programs with the
Python runtime's one-line messages, writing nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.errors import DataError, ManifestError
from eeopt.kernels.reference import gate_features

import topologies as T

ROOT = Path(__file__).resolve().parents[2]
EEOPT_RUN = ROOT / "build" / "cpp" / "eeopt_run"
SEEDS = (0, 1)
BATCH = 64

if not EEOPT_RUN.is_file():
    pytest.skip(
        f"{EEOPT_RUN.relative_to(ROOT)} is missing; build it with scripts/install_cpp.sh && "
        "scripts/build_cpp.sh",
        allow_module_level=True,
    )


def _load_test_program_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_test_program", ROOT / "cpp" / "tests" / "make_test_program.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cpp(
    program: Path,
    feeds: dict[str, np.ndarray],
    work: Path,
    thresholds: np.ndarray | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """eeopt_run on ``feeds`` (saved as .npy under ``work``); outputs in ``work/out``."""
    (work / "out").mkdir(parents=True, exist_ok=True)
    cmd = [str(EEOPT_RUN), str(program), "--threads", "1"]
    for name, arr in feeds.items():
        path = work / f"in_{name}.npy"
        np.save(path, arr)
        cmd += ["--input", f"{name}={path}"]
    out = work / "out"
    cmd += ["--logits", str(out / "logits.npy"), "--exits", str(out / "exits.npy")]
    if thresholds is not None:
        cmd += ["--thresholds", ",".join(repr(float(t)) for t in thresholds)]
    return subprocess.run(cmd + list(extra), capture_output=True, text=True, timeout=120)


def cpp_result(program: Path, feeds: dict[str, np.ndarray], work: Path,
               thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    proc = run_cpp(program, feeds, work, thresholds)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return np.load(work / "out" / "logits.npy"), np.load(work / "out" / "exits.npy")


def assert_same(program: Path, feeds: dict[str, np.ndarray], work: Path,
                thresholds: np.ndarray | None) -> np.ndarray:
    logits, exits = cpp_result(program, feeds, work, thresholds)
    want = eeopt.load(program).run(feeds, thresholds=thresholds)
    assert logits.dtype == np.float32 and logits.shape == want.logits.shape
    assert exits.dtype == np.int64 and exits.shape == want.exit.shape
    np.testing.assert_array_equal(exits, want.exit)
    np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-5)
    return exits


def assert_fails_cleanly(proc: subprocess.CompletedProcess[str], work: Path, message: str,
                         code: int = 1) -> None:
    """A non-zero exit, exactly one line on stderr, and no file (not even a temporary) left."""
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == f"eeopt_run: error: {message}\n"
    assert list((work / "out").iterdir()) == []


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    out = {}
    for name in T.TOPOLOGIES:
        for seed in SEEDS:
            d = tmp_path_factory.mktemp(f"cpp_{name}{seed}") / "program"
            eeopt.compile(T.make(name, seed), d, example_inputs=T.example(name, 4, seed),
                          threshold=0.5)
            out[(name, seed)] = d
    return out


def _feeds(program: Path, name: str, seed: int) -> dict[str, np.ndarray]:
    specs = eeopt.load(program).input_specs
    inputs = T.example(name, BATCH, 200 + seed)
    return {s.name: t.numpy() for s, t in zip(specs, inputs, strict=True)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(T.TOPOLOGIES))
def test_matches_python_at_mixed_thresholds(compiled, tmp_path: Path, name: str,
                                            seed: int) -> None:
    program = compiled[(name, seed)]
    feeds = _feeds(program, name, seed)
    conf = [gate_features(p)[:, 0] for p in eeopt.load(program).run_all(feeds)[:-1]]
    rng = np.random.default_rng(seed)
    for trial in range(3):
        # each exit's threshold at a quantile of its confidence, so rows really split
        thr = np.array([np.quantile(c, rng.uniform(0.2, 0.8)) for c in conf], dtype=np.float32)
        exits = assert_same(program, feeds, tmp_path / f"t{trial}", thr)
        assert len(np.unique(exits)) >= 2, f"thresholds {thr} did not split the batch"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(T.TOPOLOGIES))
def test_matches_python_at_always_never_and_compiled_thresholds(compiled, tmp_path: Path,
                                                                name: str, seed: int) -> None:
    program = compiled[(name, seed)]
    feeds = _feeds(program, name, seed)
    k = eeopt.load(program).num_exits - 1
    always = assert_same(program, feeds, tmp_path / "always", np.full(k, 1e-6, np.float32))
    assert (always == 0).all()
    never = assert_same(program, feeds, tmp_path / "never", np.full(k, 2.0, np.float32))
    assert (never == k).all()
    assert_same(program, feeds, tmp_path / "compiled", None)
    assert_same(program, {n: a[:1] for n, a in feeds.items()}, tmp_path / "one", None)


def test_compacts_along_any_batch_axis(tmp_path: Path) -> None:
    """The hand-built program carries x^T (batch axis 1), a constant (no batch axis) and x."""
    mtp = _load_test_program_module()
    program = mtp.write(tmp_path / "program")
    x = np.random.default_rng(3).random((BATCH, 4), dtype=np.float32)
    for thr in [(0.5, 0.5), (0.3, 0.8), (0.0, 0.0), (2.0, 2.0), (2.0, 0.0)]:
        exits = assert_same(program, {"x": x}, tmp_path / str(thr), np.array(thr, np.float32))
        want_logits, want_exits = mtp.expected(x, thr)
        np.testing.assert_array_equal(exits, want_exits)
        logits = np.load(tmp_path / str(thr) / "out" / "logits.npy")
        np.testing.assert_allclose(logits, want_logits, rtol=1e-6)


def _python_error(program: Path, feeds: dict[str, np.ndarray]) -> str:
    with pytest.raises(DataError) as err:
        eeopt.load(program).run(feeds)
    return str(err.value)


def test_bad_inputs_fail_with_pythons_message_and_write_nothing(compiled, tmp_path: Path) -> None:
    program = compiled[("masked", 0)]
    good = _feeds(program, "masked", 0)
    cases = {
        "dtype": {**good, "x": good["x"].astype(np.float64)},
        "rank": {**good, "mask": good["mask"][:, :, None]},
        "missing": {"x": good["x"]},
        "unknown": {**good, "extra": good["mask"]},
        "batch": {**good, "mask": good["mask"][:5]},
        "fixed_dim": {**good, "x": good["x"][:, :4]},
    }
    for case, feeds in cases.items():
        work = tmp_path / case
        assert_fails_cleanly(run_cpp(program, feeds, work), work, _python_error(program, feeds))
    work = tmp_path / "thresholds"
    assert_fails_cleanly(run_cpp(program, good, work, np.array([0.5], np.float32)), work,
                         "the program has 2 gated exits; got 1 thresholds (see eeopt_run --help)",
                         code=2)
    work = tmp_path / "not_npy"
    (work / "out").mkdir(parents=True)
    (work / "x.npy").write_text("not numpy")
    proc = subprocess.run([str(EEOPT_RUN), str(program), "--input", f"x={work / 'x.npy'}",
                           "--input", f"mask={work / 'x.npy'}", "--logits",
                           str(work / "out" / "l.npy"), "--exits", str(work / "out" / "e.npy")],
                          capture_output=True, text=True)
    assert_fails_cleanly(proc, work, f"cannot read {work / 'x.npy'} as a .npy file: it does not "
                         "start with the .npy magic string")


def test_a_failed_write_leaves_no_file(compiled, tmp_path: Path) -> None:
    program = compiled[("longskip", 0)]
    feeds = _feeds(program, "longskip", 0)
    proc = run_cpp(program, feeds, tmp_path, extra=("--exits", str(tmp_path / "no" / "e.npy")))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"eeopt_run: error: cannot write {tmp_path / 'no' / 'e.npy'}")
    assert list((tmp_path / "out").iterdir()) == []


def _manifest_error(program: Path) -> str:
    with pytest.raises(ManifestError) as err:
        eeopt.load(program)
    return str(err.value)


def test_broken_programs_fail_with_pythons_message(compiled, tmp_path: Path) -> None:
    src = compiled[("residual", 0)]
    feeds = _feeds(src, "residual", 0)

    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    with open(tampered / "stage1.onnx", "ab") as f:
        f.write(b"\0")
    message = _manifest_error(tampered)
    assert "does not match its sha256" in message
    assert_fails_cleanly(run_cpp(tampered, feeds, tmp_path / "w1"), tmp_path / "w1", message)

    outside = tmp_path / "outside"
    shutil.copytree(src, outside)
    shutil.move(outside / "stage0.onnx", tmp_path / "elsewhere.onnx")
    os.symlink(tmp_path / "elsewhere.onnx", outside / "stage0.onnx")
    message = _manifest_error(outside)
    assert "points outside the program directory" in message
    assert_fails_cleanly(run_cpp(outside, feeds, tmp_path / "w2"), tmp_path / "w2", message)

    future = tmp_path / "future"
    shutil.copytree(src, future)
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (future / "manifest.json").write_text(json.dumps(manifest))
    message = _manifest_error(future)
    assert_fails_cleanly(run_cpp(future, feeds, tmp_path / "w3"), tmp_path / "w3", message)

    missing = tmp_path / "missing"
    assert_fails_cleanly(run_cpp(missing, feeds, tmp_path / "w4"), tmp_path / "w4",
                         _manifest_error(missing))


def test_bench_mode_prints_timings(compiled, tmp_path: Path) -> None:
    program = compiled[("longskip", 1)]
    feeds = _feeds(program, "longskip", 1)
    np.save(tmp_path / "x.npy", feeds["x"])
    proc = subprocess.run([str(EEOPT_RUN), str(program), "--input", f"x={tmp_path / 'x.npy'}",
                           "--threads", "1", "--bench", "10", "--batch", "16", "--warmup", "2"],
                          capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert out["runs"] == 10 and out["batch"] == 16 and out["chunks"] == BATCH // 16
    assert len(out["total_us"]) == len(out["session_us"]) == len(out["stages_run"]) == 10
    assert all(0 < s <= t for s, t in zip(out["session_us"], out["total_us"], strict=True))
    assert sum(out["exit_counts"]) == 10 * 16


def test_usage_errors_exit_2_with_one_line(compiled, tmp_path: Path) -> None:
    program = compiled[("longskip", 0)]
    feeds = _feeds(program, "longskip", 0)
    for extra, message in [
        (("--frobnicate",), "unknown option --frobnicate"),
        (("--thresholds", "0.5,abc"), "--thresholds expects comma-separated numbers, e.g. "
                                      "0.9,0.8; got '0.5,abc'"),
        (("--threads", "-1"), "--threads expects an integer >= 0, got '-1'"),
    ]:
        work = tmp_path / extra[0].strip("-")
        assert_fails_cleanly(run_cpp(program, feeds, work, extra=extra), work,
                             f"{message} (see eeopt_run --help)", code=2)


def test_trims_padding_as_python_does(tmp_path: Path) -> None:
    """A text program: the C++ runtime cuts right padding to the longest remaining row at
    every stage, as the Python runtime does, with the same exits and logits; --no-trim keeps
    it; left padding gets Python's message."""
    import torch

    seq = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    torch.manual_seed(0)
    program = tmp_path / "text"
    prog = eeopt.compile(T.TinyEncoder().eval(), program, threshold=0.5, dynamic_shapes=seq,
                         example_inputs=T.token_batch(4, 37, seed=1))
    assert prog.manifest.sequence is not None
    ids, mask = T.token_batch(BATCH, 48, seed=3)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    lengths = feeds["attention_mask"].sum(axis=1)
    conf = [gate_features(p)[:, 0] for p in prog.run_all(feeds)[:-1]]
    cut = False
    for trial, q in enumerate((0.3, 0.6, 0.9)):
        thr = np.array([np.quantile(c, q) for c in conf], dtype=np.float32)
        exits = assert_same(program, feeds, tmp_path / f"t{trial}", thr)
        for name, arr in feeds.items():
            np.save(tmp_path / f"{name}.npy", arr)
        cmd = [str(EEOPT_RUN), str(program), "--threads", "1", "--bench", "1", "--warmup", "0",
               "--thresholds", ",".join(repr(float(t)) for t in thr)]
        for name in feeds:
            cmd += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                        check=True).stdout)
        want = [int(lengths[exits >= k].max()) for k in range(out["stages_run"][0])]
        assert out["stage_lengths"][0] == want
        cut |= min(want) < feeds["attention_mask"].shape[1]
        untrimmed = json.loads(subprocess.run(cmd + ["--no-trim"], capture_output=True,
                                              text=True, timeout=120, check=True).stdout)
        assert untrimmed["stage_lengths"][0] == [0] * untrimmed["stages_run"][0]
    assert cut, "no threshold left only short rows: nothing was trimmed"
    left = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in feeds.items()}
    work = tmp_path / "left"
    assert_fails_cleanly(run_cpp(program, left, work), work, _python_error(program, left))
