"""The one GPU check: the gpu tests, then DemoCNN on Fashion-MNIST on CUDA, committed.

    python benchmarks/gpu_check.py            # or: make gpu-check
    python benchmarks/gpu_check.py --skip-tests --thresholds 0.74,0.56,0.30

1. ``pytest -m gpu`` (the Triton gate against the reference, the custom op on CUDA, TensorRT
   where it imports, the AOTI program on CUDA against the ORT program).
2. DemoCNN at batch 1, 64 and 256, on one CUDA device, TF32 off everywhere:
   - the full model in eager mode (every head computed, the final exit's prediction);
   - the full model under ``torch.compile`` (default mode, and ``reduce-overhead``, which uses
     CUDA graphs);
   - the eeopt program (``backend="aoti"``, ``device="cuda"``, the fused gate as the
     ``eeopt::gate`` op running the Triton kernel), with exits, run eagerly and from CUDA graphs
     per batch bucket;
   each with its accuracy on the Fashion-MNIST test set, latency per call (mean, median, p99;
   every call synchronised) and rows per second; plus the program's exit fractions, and its
   agreement with the ONNX Runtime CPU program of the same thresholds.
3. Writes ``benchmarks/results/gpu-<date>.json`` and ``.md``.

Without a CUDA device it stops with one line. Without the Fashion-MNIST files it still runs the
latency benchmark on random images and records why accuracy is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: the demo plan's thresholds (benchmarks/results/demo_fashion_mnist.json), if that is missing
FALLBACK_THRESHOLDS = [0.74, 0.56, 0.30]
BATCHES = (1, 64, 256)


def _fail(msg: str) -> int:
    print(f"gpu_check: {msg}", file=sys.stderr)
    return 1


def demo_thresholds() -> list[float]:
    path = RESULTS / "demo_fashion_mnist.json"
    try:
        plan = json.loads(path.read_text())["plan"]
        if list(plan["kept"]) == [0, 1, 2, 3]:
            return [float(t) for t in plan["thresholds"]]
    except (OSError, KeyError, ValueError):
        pass
    return list(FALLBACK_THRESHOLDS)


def run_gpu_tests() -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
           str(ROOT / "tests")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    print(out[-4000:])
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
            "summary": lines[-1] if lines else "", "seconds": round(time.perf_counter() - t0, 1),
            "tail": out[-4000:]}


def timeit(fn: Callable[[Any], Any], batches: list[Any], iters: int, warmup: int) -> dict:
    import torch

    for i in range(warmup):
        fn(batches[i % len(batches)])
    torch.cuda.synchronize()
    times = np.empty(iters)
    for i in range(iters):
        x = batches[i % len(batches)]
        t0 = time.perf_counter()
        fn(x)
        torch.cuda.synchronize()
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    rows = int(batches[0].shape[0])
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p99_ms": float(np.percentile(ms, 99)), "rows_per_s": float(rows / times.mean()),
            "iters": iters}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--thresholds", default=None, metavar="T0,T1,T2",
                   help="maxprob thresholds of the 3 early exits (default: the demo plan's)")
    p.add_argument("--skip-tests", action="store_true", help="skip pytest -m gpu")
    p.add_argument("--iters", type=int, default=300, help="timed calls per batch size")
    p.add_argument("--out-dir", default=str(RESULTS), help="where to write gpu-<date>.{json,md}")
    p.add_argument("--work", default=None, help="where to compile the program (default: tmp)")
    args = p.parse_args(argv)

    try:
        import torch
    except ImportError:
        return _fail("torch is not installed; install a CUDA build of torch==2.13.0")
    if not torch.cuda.is_available():
        return _fail(f"no CUDA device is visible (torch {torch.__version__}, built for CUDA "
                     f"{torch.version.cuda}); run this on a machine with an NVIDIA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    thr = ([float(t) for t in args.thresholds.split(",")] if args.thresholds
           else demo_thresholds())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "thresholds": thr, "tf32": False,
        "errors": [],
    }
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None

    if not args.skip_tests:
        res["gpu_tests"] = run_gpu_tests()
    try:
        bench(res, thr, args)
    except Exception as exc:  # keep whatever was measured, and say what broke
        res["errors"].append(f"benchmark: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu-{date}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"gpu-{date}.md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {out}/gpu-{date}.{{json,md}}")
    failed = res.get("gpu_tests", {}).get("returncode", 0) != 0 or res["errors"]
    return 1 if failed else 0


def bench(res: dict[str, Any], thr: list[float], args: argparse.Namespace) -> None:
    import torch

    import eeopt
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.runtime import load_torch

    dev = torch.device("cuda")
    model = load_demo_cnn().to(dev).eval()
    try:
        from eeopt.data import load_dataset

        x_np, y_np = load_dataset("fashion-mnist:test")
        res["data"] = {"name": "fashion-mnist:test", "rows": int(len(y_np))}
    except Exception as exc:
        res["errors"].append(f"no Fashion-MNIST ({exc}); latency on random images, no accuracy")
        x_np = np.random.default_rng(0).random((2048, 1, 28, 28), dtype=np.float32)
        y_np = None
        res["data"] = {"name": "random", "rows": int(len(x_np))}
    x_all = torch.from_numpy(np.ascontiguousarray(x_np)).to(dev)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="eeopt-gpu-"))
    t0 = time.perf_counter()
    prog = eeopt.compile(model, work / "aoti", example_inputs=(x_all[:4],), thresholds=thr,
                         backend="aoti", device="cuda", force=True, progress=True)
    res["compile_s"] = round(time.perf_counter() - t0, 1)
    res["gate"] = prog.manifest.settings.get("gate")
    graphed = load_torch(work / "aoti", device="cuda", cuda_graphs=True, graph_max_batch=256,
                         allow_native=True)  # built just above

    # parity with the ONNX Runtime CPU program of the same thresholds
    cpu_model = load_demo_cnn().eval()
    ort = eeopt.compile(cpu_model, work / "ort", example_inputs=(torch.from_numpy(
        np.ascontiguousarray(x_np[:4])),), thresholds=thr, force=True, threads=4)
    n_par = min(2048, len(x_np))
    got = prog.run(x_np[:n_par])
    want = ort.run(np.ascontiguousarray(x_np[:n_par]))
    same = got.exit == want.exit
    res["parity_vs_ort_cpu"] = {
        "rows": n_par, "exit_agreement": float(same.mean()),
        "max_abs_logit_diff_same_exit": float(np.abs(got.logits[same] - want.logits[same]).max()),
    }
    g_got = graphed.run(x_np[:n_par])
    res["parity_cuda_graphs_vs_eager_program"] = {
        "exit_agreement": float((g_got.exit == got.exit).mean()),
        "max_abs_logit_diff": float(np.abs(g_got.logits - got.logits).max()),
        "capture_errors": graphed.graph_errors,
    }

    def final(out: Any) -> Any:
        return out[-1] if isinstance(out, (tuple, list)) else out

    compiled = torch.compile(model)
    compiled_ro = torch.compile(model, mode="reduce-overhead")

    methods: dict[str, Callable[[Any], Any]] = {
        "eager": lambda x: final(model(x)),
        "torch.compile": lambda x: final(compiled(x)),
        "torch.compile reduce-overhead": lambda x: final(compiled_ro(x)),
        "eeopt aoti": lambda x: prog.run_torch(x)[0],
        "eeopt aoti + cuda graphs": lambda x: graphed.run_torch(x)[0],
    }
    res["methods"] = {}
    with torch.inference_mode():
        for name, fn in methods.items():
            entry: dict[str, Any] = {}
            try:
                if y_np is not None:
                    preds, exits = [], []
                    for s in range(0, len(x_all), 256):
                        xb = x_all[s:s + 256]
                        if name.startswith("eeopt"):
                            runner = prog if name == "eeopt aoti" else graphed
                            lg, ex = runner.run_torch(xb)
                            exits.append(ex.cpu().numpy())
                        else:
                            lg = fn(xb)
                        preds.append(lg.argmax(1).cpu().numpy())
                    pred = np.concatenate(preds)
                    entry["accuracy"] = float((pred == y_np).mean())
                    if exits:
                        ex_all = np.concatenate(exits)
                        entry["exit_fractions"] = (np.bincount(ex_all, minlength=4)
                                                   / len(ex_all)).tolist()
                for b in BATCHES:
                    nb = max(1, min(64, len(x_all) // b))
                    batches = [x_all[i * b:(i + 1) * b] for i in range(nb)]
                    iters = args.iters if b == 1 else max(50, args.iters // 3)
                    entry[str(b)] = timeit(fn, batches, iters, warmup=20)
                    print(f"{name:32s} batch {b:4d}: {entry[str(b)]['mean_ms']:.3f} ms/call")
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                res["errors"].append(f"{name}: {entry['error']}")
                traceback.print_exc()
            res["methods"][name] = entry


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# GPU check {res['date']}",
        "",
        f"{res['device']}; torch {res['torch']} (CUDA {res['cuda']}), triton {res['triton']}; "
        f"TF32 off. DemoCNN (4 exits), maxprob thresholds {res['thresholds']}; data "
        f"{res.get('data', {}).get('name')}. Rerun: `make gpu-check`.",
        "",
    ]
    t = res.get("gpu_tests")
    if t:
        lines += [f"`pytest -m gpu`: {t['summary']} (exit status {t['returncode']})", ""]
    methods = res.get("methods", {})
    if methods:
        head = "| method | accuracy | " + " | ".join(
            f"batch {b} mean / p99 ms | batch {b} rows/s" for b in BATCHES) + " |"
        lines += [head, "|---" * (2 + 2 * len(BATCHES)) + "|"]
        for name, e in methods.items():
            acc = f"{e['accuracy']:.2%}" if "accuracy" in e else "-"
            cells = []
            for b in BATCHES:
                m = e.get(str(b))
                cells += ([f"{m['mean_ms']:.3f} / {m['p99_ms']:.3f}", f"{m['rows_per_s']:,.0f}"]
                          if m else ["-", "-"])
            lines.append(f"| {name} | {acc} | " + " | ".join(cells) + " |")
        lines.append("")
        for name, e in methods.items():
            if "exit_fractions" in e:
                lines.append(f"{name} exit fractions: "
                             + ", ".join(f"{f:.1%}" for f in e["exit_fractions"]))
    for key in ("parity_vs_ort_cpu", "parity_cuda_graphs_vs_eager_program"):
        if key in res:
            lines.append(f"- {key}: {json.dumps(res[key])}")
    if "compile_s" in res:
        lines.append(f"- eeopt aoti compile: {res['compile_s']} s, gate {res.get('gate')}")
    for err in res.get("errors", []):
        lines.append(f"- error: {err}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
