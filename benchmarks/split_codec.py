"""The split codec (``eeopt.split.codec``) on the demo's real carried tensors: at each stage
boundary of the DemoCNN program, the bytes per row raw (float32), lossless, lossy and as the
calibrated rule sends them, and what lossy coding costs in accuracy (the rest of the network
run on the decoded tensors, every row to the final exit).

    python benchmarks/split_codec.py     # ~1 min; writes benchmarks/results/split_codec.*

The threshold is calibrated on fashion-mnist:calib (each carried tensor's entropy, sizes and
measured lossy cost; ``calibrate_threshold`` with ``--budget``) and the result is reported on
fashion-mnist:eval.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _final_accuracy(prog: Any, x: np.ndarray, y: np.ndarray, cut: int,
                    swap: Any = None) -> tuple[float, dict[str, np.ndarray]]:
    """Every row through every stage (gates off); the tensors carried out of stage ``cut``
    pass through ``swap`` (decode(encode(...))) first. Returns the final exit's accuracy and
    those carried tensors (before the swap)."""
    calls = prog.stage_calls({prog.input_specs[0].name: x})
    live: dict[str, np.ndarray] = {}
    carried: dict[str, np.ndarray] = {}
    logits = None
    for k, call in enumerate(calls):
        feeds = {**call.feeds, **{n: v for n, v in live.items() if n in call.feeds}}
        outs = call.run(call.fetch, feeds, None)
        logits = outs[0]
        live.update({n: np.asarray(v) for n, v in zip(call.fetch, outs, strict=True)})
        if k == cut:
            names = [n for n in prog.manifest.stages[k].carry_after
                     if n not in {s.name for s in prog.input_specs}]
            carried = {n: live[n] for n in names}
            if swap is not None:
                live.update(swap(carried))
    assert logits is not None
    return float((np.asarray(logits).argmax(1) == y).mean()), carried


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=0.3, help="accuracy cost, points")
    p.add_argument("--rows", type=int, default=2000, help="rows of each split")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import onnx
    import torch

    import eeopt
    from eeopt.data import load_dataset
    from eeopt.frontend import export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.split import calibrate_threshold, choose, decode, encode, tensor_stats

    torch.set_num_threads(1)
    data = {s: load_dataset(f"fashion-mnist:{s}") for s in ("calib", "eval")}
    data = {s: (np.asarray(x[:args.rows], np.float32), np.asarray(y[:args.rows]))
            for s, (x, y) in data.items()}
    report: dict[str, Any] = {"budget_pp": args.budget, "rows": args.rows,
                              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                              "boundaries": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28)),
                  work / "demo.onnx")
        prog = eeopt.compile(work / "demo.onnx", work / "p", thresholds=[0.84, 0.64, 0.52])

        def roundtrip(method: str | dict[str, str]) -> Any:
            def swap(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                m = {n: method for n in t} if isinstance(method, str) else method
                return decode(encode(t, m))
            return swap

        for cut in range(prog.num_exits - 1):
            cx, cy = data["calib"]
            base, carried = _final_accuracy(prog, cx, cy, cut)
            lossy_acc, _ = _final_accuracy(prog, cx, cy, cut, roundtrip("lossy"))
            # each tensor's own lossy cost (the others exact)
            stats = []
            for name, t in carried.items():
                acc, _ = _final_accuracy(prog, cx, cy, cut, roundtrip(
                    {n: ("lossy" if n == name else "lossless") for n in carried}))
                stats.append(tensor_stats(name, t, lossy_cost_pp=100.0 * (base - acc)))
            threshold = calibrate_threshold(stats, args.budget)
            ex, ey = data["eval"]
            ebase, ecarried = _final_accuracy(prog, ex, ey, cut)
            methods = {n: choose(t, threshold) for n, t in ecarried.items()}
            eacc, _ = _final_accuracy(prog, ex, ey, cut, roundtrip(methods))
            n = ex.shape[0]
            raw = sum(t.nbytes for t in ecarried.values()) / n
            sent = len(encode(ecarried, methods)) / n
            report["boundaries"].append({
                "after_stage": cut,
                "tensors": [{"name": s.name, "entropy_bits": s.entropy_bits,
                             "zero_share": s.zero_share, "raw_bytes": s.raw_bytes,
                             "lossless_bytes": s.lossless_bytes, "lossy_bytes": s.lossy_bytes,
                             "lossy_cost_pp": s.lossy_cost_pp} for s in stats],
                "calib_all_lossy_cost_pp": 100.0 * (base - lossy_acc),
                "threshold_bits": threshold, "eval_methods": methods,
                "eval_raw_bytes_per_row": raw, "eval_sent_bytes_per_row": sent,
                "eval_ratio": raw / sent, "eval_cost_pp": 100.0 * (ebase - eacc)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_codec.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# The split codec on DemoCNN's carried tensors", "",
             f"Threshold calibrated on {args.rows} fashion-mnist:calib rows for <= "
             f"{args.budget:g} pp (each tensor's lossy cost measured by running the rest of "
             f"the network on it); reported on {args.rows} fashion-mnist:eval rows. "
             f"{report['machine']}. Rerun: `python benchmarks/split_codec.py`.", "",
             "| split after stage | tensors (entropy bits, zeros) | threshold | raw B/row | "
             "sent B/row | ratio | accuracy cost (eval) |", "|---|---|---|---|---|---|---|"]
    for b in report["boundaries"]:
        ts = "; ".join(f"{t['name']} ({t['entropy_bits']:.2f}, {t['zero_share']:.0%})"
                       for t in b["tensors"])
        lines.append(f"| {b['after_stage']} | {ts} | {b['threshold_bits']:.2f} | "
                     f"{b['eval_raw_bytes_per_row']:,.0f} | {b['eval_sent_bytes_per_row']:,.0f} "
                     f"| {b['eval_ratio']:.1f}x | {b['eval_cost_pp']:+.2f} pp |")
    (args.out / "split_codec.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
