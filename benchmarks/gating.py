"""Learned exit policies against the max-probability threshold, on Fashion-MNIST.

    python benchmarks/gating.py            # a few minutes on 2 cores, 1 thread

DemoCNN (the committed weights) exported to ONNX as `eeopt.demo` does. Every policy is compiled
with the planner at the same accuracy budget (0.5 pp against the final exit) on
fashion-mnist:val: the fixed policies (maxprob, entropy, margin) calibrate on all 5000 rows; the
learned ones (jei, gate-unit, cost-sensitive, twin) train their gates on one half and plan on the
other (`maxprob-half` is maxprob planned on that same half). Everything is measured on
fashion-mnist:test in this one process at 1 thread: accuracy,
exit fractions, ECE (15 bins on the returned max probability), split-conformal prediction sets
(score 1 - p_y, 90% target, calibrated on the planning half of val), and latency at batch 1
(mean per row) and batch 64 (rows/s), every program and the plain network interleaved in
shuffled blocks (200 calls at batch 1), so ratios against the plain network come from the
same machine state. Offline
curves (no compile): the cost-sensitive policy over tau and JEI-DNN over lambda at threshold
0.5, JEI's own inference rule, and maxprob over a global threshold, priced by the profile.

Writes benchmarks/results/gating.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.bench import ece

RESULTS = Path(__file__).resolve().parent / "results"
FIXED = ("maxprob", "entropy", "margin")
#: maxprob planned on the same half of val the learned policies plan on (the gate compared on
#: equal data; the learned policies' other half trains their gates)
HALF = "maxprob-half"
LEARNED = ("jei", "gate-unit", "cost-sensitive", "twin")


def conformal(cal_logits: np.ndarray, cal_y: np.ndarray, logits: np.ndarray, y: np.ndarray,
              alpha: float = 0.1) -> dict[str, float]:
    """Split conformal prediction sets with the score 1 - p_y: coverage and mean set size."""
    def probs(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    pc = probs(cal_logits)
    s = 1.0 - pc[np.arange(len(cal_y)), cal_y]
    n = len(s)
    q = float(np.quantile(s, min(1.0, np.ceil((n + 1) * (1 - alpha)) / n), method="higher"))
    sets = (1.0 - probs(logits)) <= q
    return {"alpha": alpha, "qhat": q, "coverage": float(sets[np.arange(len(y)), y].mean()),
            "mean_size": float(sets.sum(axis=1).mean())}


def interleaved(runners: dict[str, Callable[[dict[str, np.ndarray]], object]],
                feeds: dict[str, np.ndarray], batch: int, rows: int, block: int,
                warmup: int = 20) -> dict[str, dict[str, float]]:
    """Per runner, latency over the same chunks of the first ``rows`` rows, in shuffled
    blocks (``eeopt.bench.time_interleaved``)."""
    from eeopt.measure import time_interleaved

    sub = {k: v[:rows] for k, v in feeds.items()}
    stats = time_interleaved(runners, sub, batch, warmup=warmup, block=block,
                             desc=f"latency @{batch}")
    return {k: {"mean_ms": st.mean_ms, "median_ms": st.median_ms, "p99_ms": st.p99_ms,
                "calls": st.calls, "ms_per_row": st.mean_ms / batch,
                "rows_per_s": batch * 1e3 / st.mean_ms} for k, st in stats.items()}


def offline_curves(gates_data: Any, test_data: Any, profile: Any, seed: int) -> dict[str, Any]:
    """Accuracy against the profile's expected ms per row, on test, with no compile."""
    from eeopt.gates import jei_paper_exits, train_gates
    from eeopt.kernels.reference import gate_features
    from eeopt.planning import simulate_exits

    k = test_data.num_exits
    cum = np.asarray(profile.cumulative_ms(list(range(k))))
    correct = test_data.correct()
    rows = np.arange(test_data.rows)

    def point(exits: np.ndarray, **extra: Any) -> dict[str, Any]:
        return {"accuracy": float(correct[exits, rows].mean()),
                "ms_per_row": float(cum[exits].mean()),
                "fractions": (np.bincount(exits, minlength=k) / len(exits)).tolist(), **extra}

    time_frac = cum / cum[-1]
    out: dict[str, Any] = {"cumulative_ms": cum.tolist(), "cost_sensitive": [], "jei": [],
                           "jei_paper_rule": [], "maxprob": []}
    for tau in (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        g = train_gates("cost-sensitive", gates_data, tau=tau, time_frac=time_frac, seed=seed,
                        progress=False)
        s = g.scores(test_data)
        out["cost_sensitive"].append(point(simulate_exits(list(s), [0.5] * (k - 1)), tau=tau))
    for lam in (0.05, 0.15, 0.3, 0.5, 0.7, 1.0):
        g = train_gates("jei", gates_data, lam=lam, seed=seed, progress=False)
        s = g.scores(test_data)
        out["jei"].append(point(simulate_exits(list(s), [0.5] * (k - 1)), lam=lam))
        out["jei_paper_rule"].append(point(jei_paper_exits(s), lam=lam))
    mp = [gate_features(z)[:, 0] for z in test_data.logits[:-1]]
    for t in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999):
        out["maxprob"].append(point(simulate_exits(mp, [t] * (k - 1)), threshold=t))
    return out


def run(out_dir: Path, *, budget: float, limit: int | None, b1_rows: int, seed: int
        ) -> dict[str, Any]:
    from eeopt.runtime import configure_threads

    configure_threads(1)
    import onnx
    import torch

    torch.set_num_threads(1)
    import eeopt
    from eeopt.build import analyse_model
    from eeopt.data import load_dataset
    from eeopt.frontend import ModelGraph, export_torch
    from eeopt.gates import TRAIN_FRACTION, collect_gate_data, split_rows, train_gates
    from eeopt.measure import profile_model
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.passes import cut_to_outputs
    from eeopt.runtime import make_session

    def say(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    proto = export_torch(load_demo_cnn(), torch.rand(2, 1, 28, 28))
    onnx.save(proto, model_path)
    prep = analyse_model(str(model_path))
    name = prep.inputs[0].name
    xv, yv = load_dataset("fashion-mnist:val")
    xt, yt = load_dataset("fashion-mnist:test")
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    val = {name: np.ascontiguousarray(xv)}
    test = {name: np.ascontiguousarray(xt)}
    yv, yt = np.asarray(yv), np.asarray(yt)
    say("profiling the model (1 thread)")
    report = profile_model(str(model_path), threads=1, progress=False)
    say("running every exit on val and test")
    val_data = collect_gate_data(prep, val, yv, progress=False)
    test_data = collect_gate_data(prep, test, yt, progress=False)
    tr, pl = split_rows(val_data.rows, TRAIN_FRACTION, seed)
    cum = np.asarray(report.cumulative_ms(list(range(val_data.num_exits))))
    plan_feeds = {name: np.ascontiguousarray(xv[pl])}

    programs: dict[str, Any] = {}
    gatesets: dict[str, Any] = {}
    compile_s: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="gating-", dir=out_dir))
    for policy in FIXED + (HALF,) + LEARNED:
        say(f"compiling {policy} (budget {budget} pp)")
        t0 = time.time()
        if policy == HALF:
            prog = eeopt.compile(str(model_path), tmp / policy, calib=(plan_feeds, yv[pl]),
                                 budget=budget, policy="maxprob", profile=report, threads=1)
        elif policy in FIXED:
            prog = eeopt.compile(str(model_path), tmp / policy, calib=(val, yv), budget=budget,
                                 policy=policy, profile=report, threads=1)
        else:
            gs = train_gates(policy, val_data.subset(tr), time_frac=cum / cum[-1], seed=seed,
                             progress=False)
            gatesets[policy] = gs
            prog = eeopt.compile(str(model_path), tmp / policy, calib=(plan_feeds, yv[pl]),
                                 budget=budget, policy=policy, profile=report, threads=1,
                                 gates=gs)
        compile_s[policy] = time.time() - t0
        programs[policy] = prog

    plain = make_session(cut_to_outputs(ModelGraph(proto), [proto.graph.output[-1].name])
                         .model.SerializeToString())
    plain_out = plain.get_outputs()[0].name
    plain_logits = np.concatenate([plain.run([plain_out], {name: test[name][i:i + 500]})[0]
                                   for i in range(0, len(yt), 500)])
    rows: dict[str, dict[str, Any]] = {"plain": {
        "accuracy": float((plain_logits.argmax(1) == yt).mean()), "ece": ece(plain_logits, yt),
        "conformal": conformal(val_data.logits[-1][pl], yv[pl], plain_logits, yt)}}
    for k in range(val_data.num_exits):
        rows[f"exit{k} alone"] = {"accuracy": float(test_data.correct()[k].mean()),
                                  "ece": ece(test_data.logits[k], yt)}
    right: dict[str, np.ndarray] = {}
    for policy, prog in programs.items():
        res = [prog.run({name: test[name][i:i + 500]}) for i in range(0, len(yt), 500)]
        logits = np.concatenate([r.logits for r in res])
        right[policy] = logits.argmax(1) == yt
        exits = np.concatenate([r.exit for r in res])
        cal_res = prog.run(plan_feeds)
        plan = prog.manifest.plan.to_dict() if prog.manifest.plan else {}
        kept = plan.get("kept_outputs", [])
        rows[policy] = {
            "accuracy": float((logits.argmax(1) == yt).mean()),
            "loss_pp": 100.0 * float((plain_logits.argmax(1) == yt).mean()
                                     - (logits.argmax(1) == yt).mean()),
            "ece": ece(logits, yt),
            "conformal": conformal(cal_res.logits, yv[pl], logits, yt),
            "exit_fractions": (np.bincount(exits, minlength=prog.num_exits) / len(yt)).tolist(),
            "kept": kept, "thresholds": list(prog.thresholds),
            "predicted_speedup": plan.get("predicted_speedup"),
            "holdout_loss_pp": (plan.get("holdout") or {}).get("loss_pp"),
            "compile_s": compile_s[policy],
        }
        if policy in gatesets:
            rows[policy]["gates"] = gatesets[policy].describe()

    for policy in programs:  # paired against maxprob on the same planning rows
        diff = right[policy].astype(float) - right[HALF].astype(float)
        rows[policy]["vs_half"] = {"diff_pp": 100 * float(diff.mean()),
                                   "se_pp": 100 * float(diff.std(ddof=1) / np.sqrt(len(diff)))}
    runners: dict[str, Callable[[dict[str, np.ndarray]], object]] = {
        "plain": lambda f: plain.run([plain_out], f)}
    for policy, prog in programs.items():
        runners[policy] = prog.run
    say(f"latency at batch 1 ({b1_rows} test rows, {len(runners)} runners interleaved)")
    lat1 = interleaved(runners, test, 1, b1_rows, block=200)
    say("throughput at batch 64 (every test row)")
    lat64 = interleaved(runners, test, 64, len(yt), block=4, warmup=3)
    for key, r in rows.items():
        if key in lat1:
            r["batch1"] = lat1[key]
            r["batch64"] = lat64[key]
            r["speedup_b1"] = lat1["plain"]["mean_ms"] / lat1[key]["mean_ms"]
            r["speedup_b64"] = lat64[key]["rows_per_s"] / lat64["plain"]["rows_per_s"]
    say("offline curves (tau, lambda, global threshold)")
    curves = offline_curves(val_data.subset(tr), test_data, report, seed)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "model": "DemoCNN (committed weights)", "calib": "fashion-mnist:val",
        "test": "fashion-mnist:test", "test_rows": int(len(yt)), "budget_pp": budget,
        "threads": 1, "batch1_rows": b1_rows, "gate_train_rows": int(len(tr)),
        "gate_plan_rows": int(len(pl)), "seed": seed, "policies": rows, "curves": curves,
        "profile_cumulative_ms": cum.tolist(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor()},
        "wall_s": time.time() - t_start,
    }


def markdown(res: dict[str, Any]) -> str:
    p = res["policies"]
    lines = [
        "# Learned exit policies vs the max-probability threshold (Fashion-MNIST, DemoCNN)",
        "",
        f"Budget {res['budget_pp']} pp against the final exit, planned on fashion-mnist:val "
        f"(fixed policies: all 5000 rows; learned policies: gates trained on "
        f"{res['gate_train_rows']} rows, planned on the other {res['gate_plan_rows']}; "
        "maxprob-half: maxprob planned on that same half). "
        f"Test: {res['test_rows']} rows of fashion-mnist:test. ONNX Runtime CPU, 1 thread, one "
        "process; latency of every program and the plain network interleaved in shuffled "
        f"blocks (batch 1: the first {res['batch1_rows']} test rows, 200 calls a block; batch "
        "64: every row). "
        "Speed-ups are against the plain network in the same run. ECE: 15 bins on the "
        "returned max probability. Conformal: split conformal sets, score 1 - p_y, target "
        "coverage 90%, calibrated on the planning half of val. Rerun: "
        "`python benchmarks/gating.py`.",
        "",
        "| policy | accuracy | loss pp | b1 mean ms | b1 speedup | b64 rows/s | b64 speedup "
        "| ECE | conformal cov / size | exit fractions | kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ("plain",) + FIXED + (HALF,) + LEARNED:
        r = p[k]
        conf = r.get("conformal") or {}
        cf = f"{conf['coverage']:.3f} / {conf['mean_size']:.2f}" if conf else ""
        fr = ", ".join(f"{f:.1%}" for f in r.get("exit_fractions", []))
        lines.append(
            f"| {k} | {r['accuracy']:.2%} | {r.get('loss_pp', 0.0):+.2f} | "
            f"{r['batch1']['mean_ms']:.3f} | {r.get('speedup_b1', 1.0):.2f}x | "
            f"{r['batch64']['rows_per_s']:,.0f} | {r.get('speedup_b64', 1.0):.2f}x | "
            f"{r['ece']:.4f} | {cf} | {fr} | {', '.join(r.get('kept', []))} |")
    lines += ["", "## Findings (computed from the numbers above)", ""] + findings(res)
    lines += ["", "Each exit alone on test: " + ", ".join(
        f"{k} {v['accuracy']:.2%} (ECE {v['ece']:.4f})" for k, v in p.items()
        if k.endswith("alone")), ""]
    c = res["curves"]
    lines += ["## Offline curves (test set, priced by the profile; no compile)", "",
              "Expected ms per row from the profile's cumulative cost of each exit "
              f"({', '.join(f'{v:.3f}' for v in c['cumulative_ms'])} ms). Learned gates fire "
              "at 0.5.", "",
              "| curve | setting | accuracy | expected ms/row | exit fractions |",
              "|---|---|---|---|---|"]
    for key, label, par in (("cost_sensitive", "cost-sensitive", "tau"),
                            ("jei", "jei (g_l >= 0.5)", "lam"),
                            ("jei_paper_rule", "jei (paper rule)", "lam"),
                            ("maxprob", "maxprob (global T)", "threshold")):
        for pt in c[key]:
            lines.append(f"| {label} | {par} {pt[par]:g} | {pt['accuracy']:.2%} | "
                         f"{pt['ms_per_row']:.4f} | "
                         + ", ".join(f"{f:.1%}" for f in pt["fractions"]) + " |")
    lines += ["", "![gating](gating.png)", ""]
    return "\n".join(lines)


def findings(res: dict[str, Any]) -> list[str]:
    """Who wins where, and whether JEI-DNN's calibration claim holds, from this run."""
    p = res["policies"]
    budget = res["budget_pp"]
    names = list(FIXED + (HALF,) + LEARNED)
    ok = [k for k in names if p[k]["loss_pp"] <= budget + 1e-9]
    over = [f"{k} ({p[k]['loss_pp']:+.2f} pp)" for k in names if k not in ok]
    out = [f"- Within the {budget} pp budget on test: {', '.join(ok) or 'none'}; over it: "
           f"{', '.join(over) or 'none'}."]
    if ok:
        b1 = min(ok, key=lambda k: p[k]["batch1"]["mean_ms"])
        b64 = max(ok, key=lambda k: p[k]["batch64"]["rows_per_s"])
        acc = max(ok, key=lambda k: p[k]["accuracy"])
        out.append(f"- Fastest within budget at batch 1: {b1} ({p[b1]['batch1']['mean_ms']:.3f} "
                   f"ms, {p[b1]['speedup_b1']:.2f}x the plain network); at batch 64: {b64} "
                   f"({p[b64]['speedup_b64']:.2f}x); most accurate: {acc} "
                   f"({p[acc]['accuracy']:.2%}).")
    for k in LEARNED:
        r, m = p[k], p[HALF]
        v = r.get("vs_half", {"diff_pp": 100 * (r["accuracy"] - m["accuracy"]), "se_pp": 0.0})
        out.append(f"- {k} vs maxprob-half (same planning rows): accuracy "
                   f"{v['diff_pp']:+.2f} pp (paired s.e. {v['se_pp']:.2f}), batch-1 latency "
                   f"{r['batch1']['mean_ms'] / m['batch1']['mean_ms']:.2f}x, batch-64 "
                   f"throughput {r['batch64']['rows_per_s'] / m['batch64']['rows_per_s']:.2f}x, "
                   f"ECE {r['ece']:.4f} vs {m['ece']:.4f}.")
    base = min(p["maxprob"]["ece"], p[HALF]["ece"])
    verdict = "holds" if p["jei"]["ece"] < base - 0.002 else "does not hold"
    out.append(f"- JEI-DNN's calibration claim (lower ECE than thresholding) {verdict} here: ECE "
               f"{p['jei']['ece']:.4f} vs maxprob {p['maxprob']['ece']:.4f} / maxprob-half "
               f"{p[HALF]['ece']:.4f} (plain network {p['plain']['ece']:.4f}). Our jei trains the "
               "gates only (frozen heads), so the returned probabilities are the same heads' and "
               "only the choice of exit differs.")
    c = res["curves"]
    pairs = []
    for pt in c["jei_paper_rule"]:
        cands = [m for m in c["maxprob"] if m["accuracy"] >= pt["accuracy"] - 1e-12]
        if cands:
            m = min(cands, key=lambda q: q["ms_per_row"])
            pairs.append(f"lambda {pt['lam']:g}: {pt['accuracy']:.2%} at {pt['ms_per_row']:.4f} "
                         f"ms vs maxprob T={m['threshold']:g} {m['accuracy']:.2%} at "
                         f"{m['ms_per_row']:.4f} ms")
    if pairs:
        out.append("- Offline, JEI's own inference rule against the cheapest global maxprob "
                   "threshold at least as accurate: " + "; ".join(pairs) + ".")
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = res["policies"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=120)
    ax = axes[0]
    for k in ("plain",) + FIXED + (HALF,) + LEARNED:
        r = p[k]
        ax.plot(r["batch1"]["mean_ms"], 100 * r["accuracy"], "s" if k == "plain" else "o",
                ms=8)
        ax.annotate(k, (r["batch1"]["mean_ms"], 100 * r["accuracy"]), fontsize=8,
                    textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("measured mean latency per row, batch 1 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"compiled, budget {res['budget_pp']} pp (1 thread)")
    ax.grid(alpha=0.3)
    ax = axes[1]
    c = res["curves"]
    for key, label in (("maxprob", "maxprob, global T"), ("cost_sensitive", "cost-sensitive, tau"),
                       ("jei", "jei g>=0.5, lambda"), ("jei_paper_rule", "jei paper rule")):
        xs = [pt["ms_per_row"] for pt in c[key]]
        ys = [100 * pt["accuracy"] for pt in c[key]]
        order = np.argsort(xs)
        ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], "o-", ms=4, label=label)
    ax.axhline(100 * p["plain"]["accuracy"], color="gray", ls="--", lw=1, label="plain")
    ax.set_xlabel("expected ms per row from the profile")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("offline sweeps (no compile)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/gating", help="work directory")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None, help="first N test rows only")
    ap.add_argument("--b1-rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS), help="where to write gating.*")
    args = ap.parse_args(argv)
    res = run(Path(args.out), budget=args.budget, limit=args.limit, b1_rows=args.b1_rows,
              seed=args.seed)
    dest = Path(args.results)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gating.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, dest / "gating.png")
    (dest / "gating.md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {dest}/gating.{{json,md,png}} in {res['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
