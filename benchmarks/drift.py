"""Thresholds that adapt online under drift (``eeopt.adapt``) against fixed thresholds, on the
Fashion-MNIST demo: the evaluation rows streamed in batches, clean for the first half, then with
Gaussian noise that grows (a camera going bad). Measured against the final exit on the same
rows, which is exactly what the budget bounds.

    python benchmarks/drift.py            # ~2 min on 2 cores; writes benchmarks/results/

1. Compile the committed DemoCNN for ``--budget`` on ``fashion-mnist:calib`` (the planner).
   The calibration labels are the final exit's own answers, so the budget bounds the
   disagreement with the final exit: what the controller measures live.
2. Stream ``fashion-mnist:eval`` twice over (10,000 rows), batches of 32: the first half clean,
   the second half with noise of standard deviation ramping from 0 to ``--noise`` (pixels in
   [0, 1], clipped).
3. Serve every batch twice: with the compiled thresholds fixed, and through ``eeopt.adapt``
   (``--shadow`` of the early-exited rows run to the final exit off the response path). The
   final exit on every row is computed separately, for the truth only.
4. Report the windowed loss (points against the final exit, windows of ``--window`` rows), the
   level and thresholds over time, the transient after the shift, and the shadowing's cost.

Results: ``benchmarks/results/drift.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=1.0, help="points (default 1)")
    p.add_argument("--shadow", type=float, default=0.05, help="shadowed share (default 0.05)")
    p.add_argument("--noise", type=float, default=0.5, help="final noise std (default 0.5)")
    p.add_argument("--window", type=int, default=1000, help="rows per reported window "
                   "(default 1000: at 500, binomial noise alone puts a 0.8 pp process over 1 pp "
                   "in about one window in five)")
    p.add_argument("--batch", type=int, default=32, help="rows per request (default 32)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    started = time.perf_counter()

    import onnx
    import torch

    import eeopt
    from eeopt.data import load_dataset
    from eeopt.frontend import export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.runtime import configure_threads

    configure_threads(1)
    torch.set_num_threads(1)
    x, _ = load_dataset("fashion-mnist:eval")
    x = np.asarray(x, dtype=np.float32)
    rng = np.random.default_rng(0)
    stream = np.concatenate([x, x[rng.permutation(len(x))]])
    n = stream.shape[0]
    half = n // 2
    sigma = np.where(np.arange(n) < half, 0.0,
                     args.noise * (np.arange(n) - half) / max(1, n - half - 1))
    noisy = np.clip(stream + rng.standard_normal(stream.shape).astype(np.float32)
                    * sigma[:, None, None, None].astype(np.float32), 0.0, 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28)),
                  work / "demo.onnx")
        # planned on the final exit's own answers: the budget then bounds the disagreement
        # with the final exit, the quantity the controller measures live
        cx, _ = load_dataset("fashion-mnist:calib")
        cx = np.asarray(cx, dtype=np.float32)
        full = eeopt.compile(work / "demo.onnx", work / "full", threshold=0.9, threads=1)
        self_labels = full.run_in_batches(cx, 256, thresholds=[float("inf")] * len(
            full.thresholds)).logits.argmax(1)
        prog = eeopt.compile(work / "demo.onnx", work / "program", budget=args.budget,
                             calib=({full.input_specs[0].name: cx}, self_labels), threads=1)
        final_k = prog.num_exits - 1
        never = [float("inf")] * len(prog.thresholds)
        truth = prog.run_in_batches(noisy, 256, thresholds=never).logits.argmax(1)
        served = eeopt.adapt(prog, budget=args.budget, shadow=args.shadow, seed=0)
        fixed_pred = np.empty(n, dtype=np.int64)
        fixed_exit = np.empty(n, dtype=np.int64)
        adapt_pred = np.empty(n, dtype=np.int64)
        adapt_exit = np.empty(n, dtype=np.int64)
        level = np.empty(n, dtype=np.int64)
        t_fixed = t_adapt = 0.0
        for i in range(0, n, args.batch):
            xb = noisy[i:i + args.batch]
            t0 = time.perf_counter()
            rf = prog.run(xb)
            t_fixed += time.perf_counter() - t0
            level[i:i + args.batch] = served.level
            t0 = time.perf_counter()
            ra = served.run(xb)
            t_adapt += time.perf_counter() - t0
            served.process_shadow()  # in a server: a background thread (eeopt serve --adapt)
            fixed_pred[i:i + args.batch], fixed_exit[i:i + args.batch] = (rf.logits.argmax(1),
                                                                          rf.exit)
            adapt_pred[i:i + args.batch], adapt_exit[i:i + args.batch] = (ra.logits.argmax(1),
                                                                          ra.exit)
        state = served.state()
    w = args.window
    starts = list(range(0, n - w + 1, w))

    def windows(pred: np.ndarray, ex: np.ndarray) -> tuple[list[float], list[float]]:
        loss = [100.0 * float((pred[s:s + w] != truth[s:s + w]).mean()) for s in starts]
        early = [float((ex[s:s + w] < final_k).mean()) for s in starts]
        return loss, early

    fl, fe = windows(fixed_pred, fixed_exit)
    al, ae = windows(adapt_pred, adapt_exit)
    over_fixed = [i for i, v in enumerate(fl) if v > args.budget]
    over_adapt = [i for i, v in enumerate(al) if v > args.budget]
    first_over = over_fixed[0] if over_fixed else None
    report: dict[str, Any] = {
        "budget_pp": args.budget, "shadow_share": args.shadow, "noise_final_std": args.noise,
        "rows": n, "shift_row": half, "batch": args.batch, "window": w,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "compiled_thresholds": list(prog.thresholds),
        "windows": {"start_row": starts, "sigma": [float(sigma[s + w // 2]) for s in starts],
                    "fixed_loss_pp": fl, "adapt_loss_pp": al, "fixed_early": fe,
                    "adapt_early": ae, "adapt_level": [int(level[s + w // 2]) for s in starts]},
        "fixed_windows_over_budget": len(over_fixed),
        "adapt_windows_over_budget": len(over_adapt),
        "adapt_over_budget_rows": [starts[i] for i in over_adapt],
        "first_fixed_window_over": None if first_over is None else starts[first_over],
        "mean_loss_pp_second_half": {
            "fixed": 100.0 * float((fixed_pred[half:] != truth[half:]).mean()),
            "adapt": 100.0 * float((adapt_pred[half:] != truth[half:]).mean())},
        "early_share_second_half": {"fixed": float((fixed_exit[half:] < final_k).mean()),
                                    "adapt": float((adapt_exit[half:] < final_k).mean())},
        "serve_seconds": {"fixed": t_fixed, "adapt": t_adapt},
        "shadow": {"rows": state["shadow_rows"], "seconds": state["shadow_seconds"],
                   "share_of_rows": state["shadow_rows"] / n,
                   "cost_vs_serving": state["shadow_seconds"] / max(t_adapt, 1e-9)},
        "decisions": state["decisions"],
    }
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift.json").write_text(json.dumps(report, indent=1) + "\n")
    md = _markdown(report)
    (args.out / "drift.md").write_text(md)
    _plot(report, args.out / "drift.png")
    print(md)
    print(f"wrote {args.out}/drift.{{json,md,png}} in {report['seconds']:.0f} s")
    return 0


def _markdown(r: dict[str, Any]) -> str:
    m, e, sh = r["mean_loss_pp_second_half"], r["early_share_second_half"], r["shadow"]
    lines = [
        "# Adaptive thresholds under drift (eeopt.adapt vs fixed)",
        "",
        f"DemoCNN planned for {r['budget_pp']:g} pp of disagreement with its final exit on "
        "fashion-mnist:calib (labels: the final exit's answers; thresholds "
        + ", ".join(f"{t:.3g}" for t in r["compiled_thresholds"])
        + f"); {r['rows']:,} rows of fashion-mnist:eval streamed in requests of {r['batch']}, "
        f"Gaussian noise from row {r['shift_row']:,} ramping to std {r['noise_final_std']:g}; "
        f"shadow {r['shadow_share']:g}; loss = points of disagreement with the final exit on the "
        f"same rows, in windows of {r['window']} rows. {r['machine']}. Rerun: "
        "`python benchmarks/drift.py`.",
        "",
        "| | fixed thresholds | eeopt.adapt |",
        "|---|---|---|",
        f"| windows over the budget | {r['fixed_windows_over_budget']} | "
        f"{r['adapt_windows_over_budget']} |",
        f"| loss after the shift (pp) | {m['fixed']:.2f} | {m['adapt']:.2f} |",
        f"| early share after the shift | {e['fixed']:.1%} | {e['adapt']:.1%} |",
        f"| serving time (s) | {r['serve_seconds']['fixed']:.2f} | "
        f"{r['serve_seconds']['adapt']:.2f} |",
        "",
        f"Shadowing ran {sh['rows']:,} rows ({sh['share_of_rows']:.2%} of all) to the final "
        f"exit in {sh['seconds']:.2f} s, {sh['cost_vs_serving']:.1%} of the serving time, off "
        "the response path.",
        "",
        "Decisions: " + ("; ".join(
            f"row {d['rows']:,}: {d['action']} to level {d['level']} (window loss "
            f"{d['loss_pp']:.2f} pp, bound {d['loss_upper_pp']:.2f} pp on {d['shadowed']} "
            "shadowed rows)" for d in r["decisions"]) or "none"),
        "",
        "Windows over the budget with eeopt.adapt start at rows: "
        + (", ".join(f"{s:,}" for s in r["adapt_over_budget_rows"]) or "none")
        + ". Those are the transient: the rows it takes to shadow enough early exits to show "
        "the excess (and, while the noise keeps growing, a target that moves).",
        "",
        "![drift](drift.png)",
        "",
    ]
    return "\n".join(lines)


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = r["windows"]
    fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax[0].plot(w["start_row"], w["fixed_loss_pp"], label="fixed thresholds", color="#c44e52")
    ax[0].plot(w["start_row"], w["adapt_loss_pp"], label="eeopt.adapt", color="#4c72b0")
    ax[0].axhline(r["budget_pp"], ls="--", color="grey", label="budget")
    ax[0].axvline(r["shift_row"], ls=":", color="black")
    ax[0].set_ylabel("windowed loss vs final exit (pp)")
    ax[0].legend()
    ax[1].plot(w["start_row"], w["adapt_level"], color="#4c72b0", label="adapt level")
    ax[1].plot(w["start_row"], w["sigma"], color="#dd8452", label="noise std")
    ax[1].axvline(r["shift_row"], ls=":", color="black")
    ax[1].set_xlabel("row of the stream")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
