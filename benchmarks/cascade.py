"""Network-selection cascade on Fashion-MNIST: accuracy against measured latency, against the
largest model alone.

    python benchmarks/cascade.py            # writes benchmarks/results/cascade.{json,md,png}

Networks (committed weights): TinyCNN (0.27 M MACs, scripts/train_tiny_cnn.py), the 32x64 TinyCNN
(1 M MACs, if its weights exist), and the DemoCNN cut to its final output (13 M MACs): the
"largest model alone". Cascades, cheapest first: tiny -> demo and tiny -> mid -> demo, each
merged and compiled with `eeopt.cascade.compile_cascade` and planned at a 0.5 pp budget on
fashion-mnist:val (maxprob gates). Beside them, the DemoCNN's own early exits (the `make demo`
program, planned the same way) and each network alone.

Everything is measured in this one process at 1 thread (ONNX Runtime and torch): accuracy on
the full test split (10k), batch-1 latency (mean is the headline, median and p99 beside it) and
batch-64 throughput, each program interleaved with the largest model alone by `eeopt.bench`
(`run_bench`, `compare_batch1`, `compare_throughput`), so every ratio is against the largest
model measured in the same run. Each program's budget sweep is `run_bench`'s frontier (planned
on the validation split with a shared profile; batch-1 latency on the first 3,000 test rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
WEIGHTS = REPO / "eeopt" / "models" / "weights"


def _export(work: Path) -> dict[str, Path]:
    """ONNX files of every network, and the DemoCNN with its four exits."""
    import onnx
    import torch

    from eeopt.frontend import ModelGraph, export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.models.tiny_cnn import load_tiny_cnn
    from eeopt.passes import cut_to_outputs

    work.mkdir(parents=True, exist_ok=True)
    x = torch.rand(2, 1, 28, 28)
    out: dict[str, Path] = {}
    out["tiny"] = work / "tiny.onnx"
    onnx.save(export_torch(load_tiny_cnn(), x), out["tiny"])
    if (WEIGHTS / "tiny_cnn_32x64.pt").is_file():
        out["mid"] = work / "mid.onnx"
        onnx.save(export_torch(load_tiny_cnn(WEIGHTS / "tiny_cnn_32x64.pt"), x), out["mid"])
    full = export_torch(load_demo_cnn(), x)
    out["demo_exits"] = work / "demo_exits.onnx"
    onnx.save(full, out["demo_exits"])
    out["demo"] = work / "demo.onnx"
    onnx.save(cut_to_outputs(ModelGraph(full), [full.graph.output[-1].name]).model, out["demo"])
    return out


def _session_runner(path: Path) -> Any:
    from eeopt.runtime import make_session

    sess = make_session(Path(path).read_bytes())
    name = sess.get_outputs()[-1].name

    def run(f: Mapping[str, np.ndarray]) -> np.ndarray:
        return sess.run([name], dict(f))[0]

    return run


def _accuracy(run: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([np.asarray(run({"x": x[i:i + 256]})).argmax(1)
                           for i in range(0, len(y), 256)])
    return float((pred == y).mean())


def _expected_macs(kept: list[str], fractions: list[float], macs: dict[str, int],
                   members: list[str]) -> float:
    """Per row: every network a row ran, weighted by where rows left (cascades only)."""
    total = paid = 0.0
    for out, f in zip(kept, fractions, strict=True):
        k = int(out.split("/", 1)[0][1:])
        paid = sum(macs[m] for m in members[: k + 1])
        total += f * paid
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=REPO / "build" / "cascade-bench",
                   help="scratch directory for models and programs")
    p.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    p.add_argument("--budget", type=float, default=0.5, help="headline budget (pp)")
    p.add_argument("--budgets", default="0,0.25,0.5,1,2", help="sweep budgets (pp)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test rows")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    budgets = tuple(float(b) for b in args.budgets.split(","))

    from eeopt.runtime import configure_threads

    configure_threads(1)
    import torch

    torch.set_num_threads(1)

    import eeopt
    from eeopt.analysis import model_macs
    from eeopt.bench import run_bench
    from eeopt.cascade import compile_cascade
    from eeopt.data import load_fashion_mnist
    from eeopt.measure import compare_batch1, compare_throughput

    t_start = time.perf_counter()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    work: Path = args.work
    files = _export(work / "models")
    nets = [n for n in ("tiny", "mid", "demo") if n in files]
    macs = {n: model_macs(files[n]) for n in nets}
    x, y = (np.array(a) for a in load_fashion_mnist("test"))
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    feeds = {"x": x}

    chains = {"tiny -> demo": ["tiny", "demo"]}
    if "mid" in files:
        chains["tiny -> mid -> demo"] = ["tiny", "mid", "demo"]
    configs: dict[str, dict[str, Any]] = {}
    for name, members in chains.items():
        tag = name.replace(" -> ", "_")
        say(f"[cascade {name}] compile, planned at {args.budget:g} pp on fashion-mnist:val")
        merged = work / f"{tag}.onnx"
        program = compile_cascade([files[m] for m in members], work / tag, save_merged=merged,
                                  calib="fashion-mnist:val", budget=args.budget, threads=1,
                                  force=True, progress=True)
        say(f"[cascade {name}] bench on fashion-mnist:test vs the largest model alone")
        res = run_bench(str(work / tag), "fashion-mnist:test", batches=(1, 64), model=str(merged),
                        calib="fashion-mnist:val", budgets=budgets, threads=1, limit=args.limit)
        res["plan"] = program.manifest.plan.to_dict() if program.manifest.plan else None
        res["members"] = members
        res["expected_macs"] = _expected_macs(res["kept_outputs"], res["exit_fractions"], macs,
                                              members)
        configs[name] = res

    say(f"[demo early exits] compile the DemoCNN's own exits at {args.budget:g} pp, bench")
    demo_prog = eeopt.compile(files["demo_exits"], work / "demo_exits", calib="fashion-mnist:val",
                              budget=args.budget, threads=1, force=True, progress=True)
    res = run_bench(str(work / "demo_exits"), "fashion-mnist:test", batches=(1, 64),
                    model=str(files["demo_exits"]), calib="fashion-mnist:val", budgets=budgets,
                    threads=1, limit=args.limit)
    res["plan"] = demo_prog.manifest.plan.to_dict() if demo_prog.manifest.plan else None
    configs["DemoCNN early exits"] = res

    say("[single networks] each alone vs the largest model alone")
    largest = _session_runner(files["demo"])
    singles: dict[str, dict[str, Any]] = {}
    sub = {"x": x[:3000]}
    for n in nets:
        run = _session_runner(files[n])
        c1 = compare_batch1(largest, run, sub)
        c64 = compare_throughput(largest, run, feeds, 64)
        singles[n] = {"macs": macs[n], "accuracy": _accuracy(run, x, y),
                      "batch1": c1.to_dict(), "batch64": c64.to_dict()}

    seconds = time.perf_counter() - t_start
    largest_acc = singles["demo"]["accuracy"]
    results = {
        "description": "network-selection cascades vs the largest model alone, Fashion-MNIST",
        "command": "python benchmarks/cascade.py",
        "budget_pp": args.budget,
        "budgets": list(budgets),
        "test_rows": int(len(y)),
        "threads": 1,
        "seconds": round(seconds, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "eeopt": eeopt.__version__},
        "networks": singles,
        "largest": "demo",
        "largest_accuracy": largest_acc,
        "configs": configs,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "cascade.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results / "cascade.md").write_text(_markdown(results))
    _plot(results, args.results / "cascade.png")
    say(_markdown(results))
    say(f"wrote {args.results}/cascade.{{json,md,png}} in {seconds:.0f} s")
    return 0


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Network-selection cascade on Fashion-MNIST",
        "",
        f"Rerun: `{r['command']}` ({r['seconds']:.0f} s on this machine). One process, "
        f"{r['threads']} thread, {r['test_rows']:,} test images; every ratio is against the "
        "largest model alone (DemoCNN cut to its final output) measured interleaved in the "
        "same call, so machine noise cancels in the ratio but not in the absolute times. "
        f"Programs planned at {r['budget_pp']:g} pp on fashion-mnist:val (maxprob gates).",
        "",
        _headline(r),
        "",
        "| configuration | test acc | vs largest | b1 mean ms | largest b1 mean ms | b1 speedup "
        "(mean) | b1 median ratio | b64 rows/s | b64 speedup | exits (fraction) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in r["configs"].items():
        l1, l64 = c["latency"]["1"], c["latency"]["64"]
        fr = ", ".join(f"{o} {f:.1%}" for o, f in zip(c["kept_outputs"], c["exit_fractions"],
                                                      strict=True))
        lines.append(
            f"| {name} | {c['accuracy']['program']:.2%} | {-c['loss_pp']:+.2f} pp | "
            f"{l1['program']['mean_ms']:.3f} | {l1['plain']['mean_ms']:.3f} | "
            f"{l1['speedup_mean']:.2f}x | "
            f"{l1['plain']['median_ms'] / l1['program']['median_ms']:.2f}x | "
            f"{l64['program_rows_per_s']:,.0f} | {l64['speedup_mean']:.2f}x | {fr} |")
    for n, s in r["networks"].items():
        b1, b64 = s["batch1"], s["batch64"]
        lines.append(
            f"| {n} alone ({s['macs'] / 1e6:.2f} M MACs) | {s['accuracy']:.2%} | "
            f"{100 * (s['accuracy'] - r['largest_accuracy']):+.2f} pp | "
            f"{b1['program']['mean_ms']:.3f} | {b1['plain']['mean_ms']:.3f} | "
            f"{b1['speedup_mean']:.2f}x | "
            f"{b1['plain']['median_ms'] / b1['program']['median_ms']:.2f}x | "
            f"{b64['program_rows_per_s']:,.0f} | {b64['speedup_mean']:.2f}x | - |")
    lines += ["", "Plans (thresholds of the kept early exits; loss and speedup as predicted on "
              "validation):", ""]
    for name, c in r["configs"].items():
        pl = c["plan"]
        extra = (f"; expected {c['expected_macs'] / 1e6:.2f} M MACs per image"
                 if "expected_macs" in c else "")
        lines.append(
            f"- {name}: kept {', '.join(pl['kept_outputs'])}, thresholds "
            + ", ".join(f"{t:.4g}" for t in pl["thresholds"])
            + f"; predicted loss {pl['predicted_loss_pp']:+.2f} pp, {pl['predicted_speedup']:.2f}x"
            + extra)
    lines += ["", "Budget sweep (each budget planned on validation with one shared profile and "
              "no closed-loop correction; accuracy on every test row, batch-1 latency on the "
              "first 3,000, speedup against the largest model alone in the same call):", "",
              "| configuration | budget pp | test acc | b1 mean ms | largest ms | speedup | kept |",
              "|---|---|---|---|---|---|---|"]
    for name, c in r["configs"].items():
        for f in c["frontier"]:
            if "accuracy" not in f:
                lines.append(f"| {name} | {f['budget_pp']:g} | - | - | - | - | "
                             f"skipped: {f['skipped'][:60]} |")
                continue
            lines.append(f"| {name} | {f['budget_pp']:g} | {f['accuracy']:.2%} | "
                         f"{f['program_mean_ms']:.3f} | {f['plain_mean_ms']:.3f} | "
                         f"{f['speedup']:.2f}x | {', '.join(f['kept'])} |")
    return "\n".join(lines) + "\n"


def _headline(r: dict[str, Any]) -> str:
    name = next(iter(r["configs"]))
    c = r["configs"][name]
    largest = r["networks"][r["largest"]]
    return (
        f"**Headline ({name}, planned at {r['budget_pp']:g} pp):** "
        f"{c['latency']['1']['speedup_mean']:.2f}x mean batch-1 latency and "
        f"{c['latency']['64']['speedup_mean']:.2f}x batch-64 throughput against the largest "
        f"model alone, at {-c['loss_pp']:+.2f} pp test accuracy "
        f"({c['accuracy']['program']:.2%} vs {c['accuracy']['plain']:.2%}); "
        f"{c['exit_fractions'][0]:.1%} of the images stop after the first network, and the "
        f"expected cost is {c['expected_macs'] / 1e6:.2f} M MACs per image against "
        f"{largest['macs'] / 1e6:.2f} M. The 'demo alone' row times the largest model against "
        "itself: its distance from 1.00x is the measurement noise.")


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # x: latency relative to the largest model alone timed interleaved in the same call, so
    # points measured minutes apart on a noisy machine stay comparable
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:orange"]
    for (name, c), color in zip(r["configs"].items(), colors, strict=False):
        pts = [f for f in c["frontier"] if "accuracy" in f]
        if pts:
            ax.plot([f["program_mean_ms"] / f["plain_mean_ms"] for f in pts],
                    [100 * f["accuracy"] for f in pts],
                    "o-", color=color, alpha=0.6, label=f"{name} (budget sweep)")
        l1 = c["latency"]["1"]
        ax.plot([l1["program"]["mean_ms"] / l1["plain"]["mean_ms"]],
                [100 * c["accuracy"]["program"]],
                "*", ms=14, color=color, label=f"{name} @ {r['budget_pp']:g} pp")
    for n, s in r["networks"].items():
        b1 = s["batch1"]
        rel = b1["program"]["mean_ms"] / b1["plain"]["mean_ms"]
        ax.plot([rel], [100 * s["accuracy"]], "s", color="tab:red",
                alpha=1.0 if n == r["largest"] else 0.5)
        ax.annotate(f"{n} alone", (rel, 100 * s["accuracy"]),
                    textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xlabel("mean batch-1 latency relative to the largest model alone "
                  "(same run, 1 thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST: cascades vs the largest model alone")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
