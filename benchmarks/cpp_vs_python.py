"""C++ runtime (build/cpp/eeopt_run) against the Python runtime (eeopt.load(...).run) on the
Fashion-MNIST demo program: latency at batch 1 and 64 on one thread, same images, same order,
and each runtime's own overhead: the time of one run() minus the time of the bare ONNX Runtime
session runs it made (per call, and per stage it ran).

    python benchmarks/cpp_vs_python.py                # needs build/cpp/eeopt_run (make cpp)
    python benchmarks/cpp_vs_python.py --program DIR --images 2000

Builds build/demo/program first if it is missing (python -m eeopt.demo --out build/demo
--limit 2000). Writes benchmarks/results/cpp_vs_python.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EEOPT_RUN = ROOT / "build" / "cpp" / "eeopt_run"
RESULTS = ROOT / "benchmarks" / "results"
RERUN = "python benchmarks/cpp_vs_python.py"


class _TimedRun:
    """Wraps a stage's session call (ONNX Runtime's binding, through
    ``OrtProgram.instrument``) and adds up the time spent in it."""

    def __init__(self, run: Any) -> None:
        self.inner = run
        self.ns = 0
        self.calls = 0

    def __call__(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        t0 = time.perf_counter_ns()
        out = self.inner(output_names, feeds, run_options)
        self.ns += time.perf_counter_ns() - t0
        self.calls += 1
        return out


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "mean": float(a.mean()),
            "p90": float(np.percentile(a, 90)), "min": float(a.min())}


def _stats(total_us: list[float], session_us: list[float], stages: list[int]) -> dict[str, Any]:
    overhead = [t - s for t, s in zip(total_us, session_us, strict=True)]
    return {
        "total_us": _summary(total_us),
        "session_us": _summary(session_us),
        "overhead_us": _summary(overhead),
        "overhead_per_stage_us": _summary(
            [o / k for o, k in zip(overhead, stages, strict=True)]),
        "stages_run_mean": float(np.mean(stages)),
    }


def _chunks(x: np.ndarray, batch: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]


class PythonBench:
    """The Python runtime on the same call sequence as eeopt_run --bench: warm-up calls on chunk
    i % n, then timed calls; once plain (what a user's call costs) and once with every stage's
    session wrapped in a timer."""

    def __init__(self, program_dir: Path, x: np.ndarray, batch: int) -> None:
        import eeopt

        self.prog = eeopt.load(program_dir, threads=1)
        self.chunks = _chunks(x, batch)
        self.timed = [_TimedRun(None) for _ in range(self.prog.num_exits)]

    def _use(self, timed: bool) -> None:
        def wrap(k: int, run: Any) -> Any:
            self.timed[k].inner = run
            return self.timed[k]

        # every session call the runtime's run loop makes goes through the wrapper
        self.prog.instrument(wrap if timed else None)

    def run(self, runs: int, warmup: int) -> dict[str, list[float]]:
        n = len(self.chunks)
        self._use(False)
        for i in range(warmup):
            self.prog.run(self.chunks[i % n])
        plain = []
        for r in range(runs):
            t0 = time.perf_counter_ns()
            self.prog.run(self.chunks[r % n])
            plain.append((time.perf_counter_ns() - t0) / 1e3)
        self._use(True)
        total, session, stages = [], [], []
        for r in range(runs):
            for t in self.timed:
                t.ns = t.calls = 0
            t0 = time.perf_counter_ns()
            self.prog.run(self.chunks[r % n])
            total.append((time.perf_counter_ns() - t0) / 1e3)
            session.append(sum(t.ns for t in self.timed) / 1e3)
            stages.append(sum(t.calls for t in self.timed))
        self._use(False)
        return {"total_us": total, "session_us": session, "stages_run": stages, "plain_us": plain}


def bench_cpp(program_dir: Path, x_path: Path, batch: int, runs: int,
              warmup: int) -> dict[str, list[float]]:
    proc = subprocess.run(
        [str(EEOPT_RUN), str(program_dir), "--input", f"x={x_path}", "--threads", "1",
         "--bench", str(runs), "--batch", str(batch), "--warmup", str(warmup)],
        capture_output=True, text=True, check=True)
    raw = json.loads(proc.stdout)
    return {k: raw[k] for k in ("total_us", "session_us", "stages_run")}


def interleaved(program_dir: Path, x: np.ndarray, x_path: Path, batch: int, runs: int,
                warmup: int, rounds: int) -> dict[str, Any]:
    """C++ and Python take turns, ``rounds`` times, so that drift in the machine's load hits
    both alike; each turn makes runs / rounds timed calls after ``warmup`` warm-up calls."""
    py = PythonBench(program_dir, x, batch)
    per_round = max(1, runs // rounds)
    acc: dict[str, dict[str, list[float]]] = {"cpp": {}, "python": {}}
    for _ in range(rounds):
        for name, got in (("cpp", bench_cpp(program_dir, x_path, batch, per_round, warmup)),
                          ("python", py.run(per_round, warmup))):
            for k, v in got.items():
                acc[name].setdefault(k, []).extend(v)
    out: dict[str, Any] = {}
    for name, raw in acc.items():
        out[name] = _stats(raw["total_us"], raw["session_us"], raw["stages_run"])
    out["python"]["uninstrumented_total_us"] = _summary(acc["python"]["plain_us"])
    out["runs"] = per_round * rounds
    return out


def check_same(program_dir: Path, x: np.ndarray, x_path: Path, tmp: Path) -> dict[str, Any]:
    """Both runtimes on all images at once: identical exits, logits within float noise."""
    import eeopt

    subprocess.run([str(EEOPT_RUN), str(program_dir), "--input", f"x={x_path}", "--threads", "1",
                    "--logits", str(tmp / "l.npy"), "--exits", str(tmp / "e.npy")], check=True)
    want = eeopt.load(program_dir, threads=1).run(x)
    exits = np.load(tmp / "e.npy")
    counts = np.bincount(exits, minlength=eeopt.load(program_dir).num_exits)
    return {"exits_identical": bool((exits == want.exit).all()),
            "max_abs_logit_diff": float(np.abs(np.load(tmp / "l.npy") - want.logits).max()),
            "exit_fractions": [round(float(c) / len(x), 4) for c in counts]}


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout
        cxx = cxx.splitlines()[0]
    except (OSError, IndexError):
        cxx = "unknown"
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "compiler": cxx}


def _cells(s: dict[str, Any], key: str) -> str:
    return f"{s[key]['median']:.1f} | {s[key]['mean']:.1f}"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    lines = [
        "# C++ runtime vs Python runtime",
        "",
        f"Program `{result['program']}` ({result['num_exits']} exits, thresholds "
        f"{result['thresholds']}), {result['images']} Fashion-MNIST test images, one ONNX "
        "Runtime thread, the same images in the same order for both runtimes. Both use the "
        f"same libonnxruntime ({m['onnxruntime']}). Times in microseconds per call.",
        "",
        "*Overhead* = time of one `run()` minus the time inside the ONNX Runtime session runs it "
        "made (C++: `Ort::Session::Run`; Python: the binding's `run` that the runtime calls, "
        "`InferenceSession._sess.run`, which includes the numpy <-> OrtValue conversion; the "
        "timer around it adds well under a microsecond). *Per stage* divides it by the number "
        "of stages that call ran.",
        "",
        "| batch | runtime | calls | total median | total mean | in ORT median | in ORT mean "
        "| overhead median | overhead mean | overhead/stage median | overhead/stage mean "
        "| stages run (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in result["batches"]:
        for rt in ("cpp", "python"):
            s = b[rt]
            lines.append(
                f"| {b['batch']} | {'C++' if rt == 'cpp' else 'Python'} | {b['runs']} "
                f"| {_cells(s, 'total_us')} | {_cells(s, 'session_us')} "
                f"| {_cells(s, 'overhead_us')} | {_cells(s, 'overhead_per_stage_us')} "
                f"| {s['stages_run_mean']:.2f} |")
    lines += ["", "End-to-end speed-up of the C++ runtime (Python without the session timers / "
              "C++):"]
    for b in result["batches"]:
        py = b["python"]["uninstrumented_total_us"]
        lines.append(
            f"- batch {b['batch']}: {b['speedup_median']:.2f}x by median, "
            f"{b['speedup_mean']:.2f}x by mean (Python uninstrumented: median "
            f"{py['median']:.1f} us, mean {py['mean']:.1f} us)")
    lines += ["", f"Calls alternate between the runtimes in {result['batches'][0]['rounds']} "
              "rounds, so that changes in the machine's load hit both alike."]
    same = result["equivalence"]
    lines += [
        "",
        f"Equivalence on all {result['images']} images at once: exits identical: "
        f"{same['exits_identical']}, max |logit difference| {same['max_abs_logit_diff']:.2g}; "
        f"exit fractions {same['exit_fractions']}.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}; Python "
        f"{m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}, {m['compiler']}.",
        "",
        "Rerun:",
        "",
        "```sh",
        "scripts/install_cpp.sh && scripts/build_cpp.sh   # build/cpp/eeopt_run",
        RERUN + "                # builds build/demo/program if missing",
        "```",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--program", type=Path, default=ROOT / "build" / "demo" / "program")
    p.add_argument("--images", type=int, default=2000, help="test images to cycle through")
    p.add_argument("--runs1", type=int, default=2000, help="timed calls at batch 1")
    p.add_argument("--runs64", type=int, default=400, help="timed calls at batch 64")
    p.add_argument("--rounds", type=int, default=8, help="turns each runtime takes")
    p.add_argument("--out", type=Path, default=RESULTS / "cpp_vs_python")
    args = p.parse_args()

    if not EEOPT_RUN.is_file():
        raise SystemExit(f"{EEOPT_RUN} is missing: run scripts/install_cpp.sh && "
                         "scripts/build_cpp.sh")
    if not (args.program / "manifest.json").is_file():
        if args.program != ROOT / "build" / "demo" / "program":
            raise SystemExit(f"{args.program} is not a compiled program")
        print("building the demo program: python -m eeopt.demo --out build/demo --limit 2000",
              flush=True)
        subprocess.run([sys.executable, "-m", "eeopt.demo", "--out", str(ROOT / "build" / "demo"),
                        "--limit", "2000"], check=True, cwd=ROOT)

    import eeopt
    from eeopt.data import load_dataset

    x_all, _ = load_dataset("fashion-mnist:test")
    x = np.ascontiguousarray(x_all[: args.images], dtype=np.float32)
    prog = eeopt.load(args.program, threads=1)
    result: dict[str, Any] = {
        "program": os.path.relpath(args.program, ROOT), "num_exits": prog.num_exits,
        "thresholds": [round(t, 6) for t in prog.thresholds], "images": len(x), "threads": 1,
        "machine": machine(), "batches": [],
        "rerun": RERUN,
    }
    with tempfile.TemporaryDirectory() as tmp:
        x_path = Path(tmp) / "x.npy"
        np.save(x_path, x)
        result["equivalence"] = check_same(args.program, x, x_path, Path(tmp))
        for batch, runs, warmup in ((1, args.runs1, 100), (64, args.runs64, 10)):
            print(f"batch {batch}: {runs} calls per runtime in {args.rounds} rounds", flush=True)
            got = interleaved(args.program, x, x_path, batch, runs, warmup, args.rounds)
            cpp, py = got["cpp"], got["python"]
            result["batches"].append({
                "batch": batch, "runs": got["runs"], "warmup_per_round": warmup,
                "rounds": args.rounds, "cpp": cpp, "python": py,
                "speedup_median": py["uninstrumented_total_us"]["median"]
                / cpp["total_us"]["median"],
                "speedup_mean": py["uninstrumented_total_us"]["mean"] / cpp["total_us"]["mean"],
            })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
