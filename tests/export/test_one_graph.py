"""One ONNX graph per program (``eeopt export``): for every kind of program the suite compiles
(the demo CNN; each test topology; every gate policy, learned ones and patience's carried state
included; a text encoder whose padding is re-trimmed), at batches 0, 1, 7 and 64 and random
thresholds, the exported graph gives exactly ``eeopt.load(dir).run(x)``: the same exits and
logits within 1e-6. The graphs run in a separate process that never imports eeopt: a plain
``onnxruntime.InferenceSession``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import eeopt
from eeopt.errors import EEOptError, UsageError
from eeopt.export import THRESHOLDS, export_onnx

import topologies as T

BATCHES = (0, 1, 7, 64)
SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


def _demo_onnx(d: Path) -> Path:
    from eeopt.frontend import export_torch
    from eeopt.models.demo_cnn import load_demo_cnn

    path = d / "demo.onnx"
    if not path.exists():
        onnx.save(export_torch(load_demo_cnn(), torch.rand(2, 1, 28, 28)), path)
    return path


def _demo_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    from eeopt.data import load_dataset

    x, _ = load_dataset("fashion-mnist:test")
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return {"x": np.ascontiguousarray(x[idx])}


def _demo(policy: str) -> Callable[[Path], tuple[Any, Callable[[int, int], dict]]]:
    def build(d: Path) -> tuple[Any, Callable[[int, int], dict]]:
        from eeopt.data import load_dataset

        kw: dict[str, Any] = {"threshold": 0.5 if policy != "maxprob" else 0.9}
        if policy != "maxprob":
            x, y = load_dataset("fashion-mnist:val")
            kw["calib"] = ({"x": np.ascontiguousarray(x[:600])}, np.asarray(y[:600]))
        prog = eeopt.compile(_demo_onnx(d), d / policy, policy=policy, **kw)

        def rows(n: int, seed: int) -> dict[str, np.ndarray]:
            got = _demo_rows(n, seed)
            return {prog.input_specs[0].name: got["x"]}
        return prog, rows
    return build


def _topology(name: str, policy: str = "maxprob") -> Callable[[Path], Any]:
    def build(d: Path) -> tuple[Any, Callable[[int, int], dict]]:
        from eeopt.kernels.reference import gate_features

        model = T.make(name, 4)
        with torch.no_grad():
            outs = [o.numpy() for o in model(*T.example(name, 64, 21))]
        if policy == "patience":
            thr = [2.0] * (len(outs) - 1)
        else:  # each exit's median confidence: about half the rows leave at each
            col = {"maxprob": 0, "entropy": 1, "margin": 2}[policy]
            thr = [float(np.median(gate_features(z)[:, col])) for z in outs[:-1]]
        prog = eeopt.compile(model, d / f"{name}-{policy}", example_inputs=T.example(name, 4, 0),
                             thresholds=thr, policy=policy)

        def rows(n: int, seed: int) -> dict[str, np.ndarray]:
            ts = T.example(name, max(n, 1), seed)
            return {s.name: t.numpy()[:n] for s, t in zip(prog.input_specs, ts, strict=True)}
        return prog, rows
    return build


def _text(policy: str) -> Callable[[Path], Any]:
    def build(d: Path) -> tuple[Any, Callable[[int, int], dict]]:
        torch.manual_seed(3)
        model = T.TinyEncoder(layers=4).eval()
        thr = {"maxprob": 0.4, "patience": 2.0}[policy]
        prog = eeopt.compile(model, d / f"text-{policy}", example_inputs=T.token_batch(4, 37, 1),
                             dynamic_shapes=SEQ, threshold=thr, policy=policy)
        assert prog.trim_padding

        def rows(n: int, seed: int) -> dict[str, np.ndarray]:
            ids, mask = T.token_batch(max(n, 1), 24, seed)
            pad = (0, 8)  # padding past every row: the graph must cut it as the runtime does
            ids, mask = (torch.nn.functional.pad(t, pad)[:n] for t in (ids, mask))
            return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        return prog, rows
    return build


CASES: dict[str, Callable[[Path], Any]] = {
    "demo-maxprob": _demo("maxprob"),
    "demo-jei": _demo("jei"),
    "demo-gate-unit": _demo("gate-unit"),
    "demo-cost-sensitive": _demo("cost-sensitive"),
    "demo-twin": _demo("twin"),
    **{f"{name}-maxprob": _topology(name) for name in (*T.TOPOLOGIES, "heavy")},
    **{f"longskip-{p}": _topology("longskip", p) for p in ("entropy", "margin", "patience")},
    "masked-patience": _topology("masked", "patience"),
    "text-maxprob": _text("maxprob"),
    "text-patience": _text("patience"),
}


def _random_thresholds(prog: Any, rng: np.random.Generator) -> list[float]:
    out = []
    for st in prog.manifest.stages:
        if st.gate is None:
            continue
        p = st.gate.policy
        if p == "patience":
            out.append(float(rng.integers(1, 3)))
        elif p == "entropy":
            out.append(float(rng.uniform(0.0, np.log(prog.num_classes))))
        else:
            out.append(float(rng.uniform(0.2, 1.0)))
    return out


RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort
    cases = json.loads(sys.argv[1])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    out = {}
    for name, (model, files) in cases.items():
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for f in files:
            with np.load(f) as z:
                feeds = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
                logits, exit_ = s.run(["logits", "exit"], feeds)
                assert logits.dtype == np.float32 and exit_.dtype == np.int64
                out[f] = {"exit_equal": bool(np.array_equal(exit_, z["exit"])),
                          "max_diff": float(np.abs(logits - z["logits"]).max(initial=0.0)),
                          "shape_ok": logits.shape == z["logits"].shape,
                          "rows": int(exit_.shape[0]),
                          "exits": sorted(set(exit_.tolist()))}
    assert "eeopt" not in sys.modules
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case compiled and exported, with saved inputs and eeopt's results."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("one_graph")
    cases: dict[str, Any] = {}
    for name, build in CASES.items():
        prog, rows = build(d)
        model = prog.export_onnx(d / f"{name}.onnx")
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        files = []
        for n in BATCHES:
            for trial in range(2):
                feeds = rows(n, 100 + 7 * n + trial)
                thr = (list(prog.thresholds) if trial == 0 else _random_thresholds(prog, rng))
                res = prog.run(feeds, thresholds=thr)
                f = d / f"{name}-{n}-{trial}.npz"
                np.savez(f, logits=res.logits, exit=res.exit,
                         **{f"in:{k}": v for k, v in feeds.items()},
                         **{f"in:{THRESHOLDS}": np.asarray(thr, dtype=np.float32)})
                files.append(str(f))
        cases[name] = (str(model), files, prog)
    proc = subprocess.run([sys.executable, "-c", RUNNER,
                           json.dumps({k: v[:2] for k, v in cases.items()})],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"cases": cases, "results": json.loads(proc.stdout)}


@pytest.mark.parametrize("name", list(CASES))
def test_the_graph_equals_the_program_in_a_process_without_eeopt(exported: dict[str, Any],
                                                                  name: str) -> None:
    _, files, prog = exported["cases"][name]
    seen: set[int] = set()
    for f in files:
        r = exported["results"][f]
        assert r["shape_ok"], f
        assert r["exit_equal"], f
        assert r["max_diff"] <= 1e-6, (f, r["max_diff"])
        seen.update(r["exits"])
    # the early exits really fired somewhere, and rows also went on (compaction ran)
    assert len(seen) >= 2, (name, seen)
    assert prog.num_exits >= 2


def test_the_graph_passes_the_full_checker_and_strict_shape_inference(
        exported: dict[str, Any]) -> None:
    for name in ("demo-maxprob", "text-patience", "masked-patience", "demo-twin"):
        model = onnx.load(exported["cases"][name][0])
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        outs = {o.name: o for o in inferred.graph.output}
        assert [o.name for o in model.graph.input][-1] == THRESHOLDS
        assert outs["logits"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert outs["exit"].type.tensor_type.elem_type == onnx.TensorProto.INT64
        ops = {n.op_type for n in model.graph.node}
        assert "If" in ops
        meta = {p.key: p.value for p in model.metadata_props}
        prog = exported["cases"][name][2]
        assert meta["eeopt.exits"] == ",".join(prog.exit_names)
        assert [float(t) for t in meta["eeopt.thresholds"].split(",")] == pytest.approx(
            list(prog.thresholds), rel=1e-5)


def test_the_cli_writes_the_file_whole_and_refuses_what_it_cannot(
        exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eeopt.cli import main

    prog = exported["cases"]["longskip-maxprob"][2]
    out = tmp_path / "p.onnx"
    assert main(["export", str(prog.path), "--format", "onnx", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    with open(out, "rb") as f:
        assert onnx.load_model_from_string(f.read()).graph.output[0].name == "logits"
    before = out.read_bytes()
    assert main(["export", str(prog.path), "--out", str(out)]) == 2  # exists: kept
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", str(prog.path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q.onnx")]) == 1
    assert not (tmp_path / "q.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx"]  # no temporary left
    assert main(["export", str(prog.path), "--out", str(out), "--force"]) == 0


def test_a_tampered_stage_is_refused_before_anything_is_written(
        exported: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    prog = exported["cases"]["longskip-maxprob"][2]
    d = tmp_path / "p"
    shutil.copytree(prog.path, d)
    (d / "stage1.onnx").write_bytes((d / "stage1.onnx").read_bytes() + b"\0")
    with pytest.raises(EEOptError, match="sha256"):
        export_onnx(d, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(UsageError, match="exists"):
        export_onnx(prog.path, exported["cases"]["longskip-maxprob"][0])


def test_the_graph_cuts_padding_to_the_longest_row_left_at_every_stage(
        exported: dict[str, Any], tmp_path: Path) -> None:
    """ONNX Runtime's profile shows each Slice's output: after stage k the sequence axis of
    every carried tensor is the longest row that goes on (the exits alone cannot show it:
    trimmed and untrimmed logits agree)."""
    import onnxruntime as ort

    model, _, prog = exported["cases"]["text-maxprob"]
    seq = prog.manifest.sequence.axes
    so = ort.SessionOptions()
    so.use_per_session_threads = False  # this process already has eeopt's global pool
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "profile")
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    ids, mask = T.token_batch(48, 24, seed=5)
    ids, mask = (torch.nn.functional.pad(t, (0, 8)).numpy() for t in (ids, mask))
    thr = np.array(prog.thresholds, dtype=np.float32)
    _, exits = s.run(["logits", "exit"], {"input_ids": ids, "attention_mask": mask,
                                          THRESHOLDS: thr})
    events = json.loads(Path(s.end_profiling()).read_text())
    lengths = mask.sum(axis=1)
    levels = set()
    for ev in events:
        name = ev.get("name", "")
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        tag, _, tensor = name[: -len("_kernel_time")].partition("/")
        if tensor not in seq or not (tag == "t" or tag[1:].isdigit() and tag[0] == "t"):
            continue
        reach = exits >= (int(tag[1:]) + 1 if tag != "t" else 0)
        shape = next(iter(ev["args"]["output_type_shape"][0].values()))
        assert shape[seq[tensor]] == lengths[reach].max(), (name, shape)
        levels.add(tag)
    assert "t" in levels and len(levels) >= 3 and len(set(exits.tolist())) >= 3, levels


JS = Path(__file__).resolve().parents[1] / "js"


def test_onnxruntime_node_serves_the_graph_with_no_eeopt_code(exported: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """JavaScript (onnxruntime-node from npm, installed by `make test` into tests/js) gives the
    exits and logits Python gave, for the demo and for a two-input model."""
    import os
    import shutil

    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "onnxruntime-node").is_dir():
        if os.environ.get("EEOPT_REQUIRE_JS"):
            pytest.fail("node or tests/js/node_modules is missing: run `make test` (it runs "
                        "npm ci in tests/js)")
        pytest.skip("needs node and `npm ci --prefix tests/js` (make test does both)")
    cases = []
    for name in ("demo-maxprob", "masked-patience"):
        model, files, _ = exported["cases"][name]
        for f in files:
            with np.load(f) as z:
                spec: dict[str, Any] = {"model": model, "inputs": {}}
                for key in z.files:
                    a = np.ascontiguousarray(z[key])
                    raw = tmp_path / f"{Path(f).stem}-{key.replace(':', '_')}.bin"
                    raw.write_bytes(a.astype(a.dtype.newbyteorder("<")).tobytes())
                    entry = {"file": str(raw), "dtype": str(a.dtype), "shape": list(a.shape)}
                    if key.startswith("in:"):
                        spec["inputs"][key[3:]] = entry
                    else:
                        spec[key] = entry
                cases.append(spec)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run([node, str(JS / "check_one_graph.mjs"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=300, cwd=JS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got) == len(cases)
    seen: dict[str, set[int]] = {}
    for spec, r in zip(cases, got, strict=True):
        assert r["exit_equal"], (spec["exit"], r)
        assert r["max_diff"] <= 1e-6, r
        assert r["logits_type"] == "float32" and r["exit_type"] == "int64"
        assert r["rows"] == spec["exit"]["shape"][0]
        seen.setdefault(spec["model"], set()).update(r["exits"])
    assert all(len(s) >= 2 for s in seen.values()), seen


def test_a_tensorrt_engine_without_tensorrt_is_one_line_and_no_file(
        exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eeopt.cli import main

    prog = exported["cases"]["demo-maxprob"][2]
    out = tmp_path / "p.engine"
    assert main(["export", str(prog.path), "--out", str(out), "--fp16"]) == 2
    assert "--fp16 applies to --format tensorrt" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert main(["export", str(prog.path), "--format", "tensorrt", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "TensorRT 10" in err
        assert not out.exists() and not list(tmp_path.iterdir())
    else:  # pragma: no cover - needs TensorRT and a GPU; never yet run
        assert main(["export", str(prog.path), "--format", "tensorrt", "--out", str(out)]) == 0
        assert out.stat().st_size > 0
