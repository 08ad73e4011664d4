"""What stage-level rebatching (E3, SOSP'24: survivors of stage k from several request groups
merged before stage k+1) could buy inside one eeopt serve replica, measured before building it.

    python benchmarks/rebatch.py        # ~1 min; writes benchmarks/results/rebatch.{json,md}

Rebatching helps only where a stage's cost per row falls as its batch grows: then the few rows
that survive a group's early exits run cheaper when several groups' survivors run together.
For each stage of the MiniLM tweets program (maxprob, 1 pp thresholds) and the DemoCNN program
(0.5 pp), this times the stage's own session call for the rows that reach it in a 64-row
group (from the exit mix on the eval rows) and for 4x as many, at 1 thread, and reports the
per-row saving merging 4 groups would give, and what it would cost in waiting (the survivors
of the first group wait for 3 more groups).
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
TEXT_THRESHOLDS = (0.7722, 0.791, 0.6938, 0.52, 0.5328)


def _time(call: Any, feeds: dict[str, np.ndarray], reps: int) -> float:
    for _ in range(3):
        call(feeds)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call(feeds)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def _rows(feeds: dict[str, np.ndarray], n: int, batch: int) -> dict[str, np.ndarray]:
    """The first ``n`` rows of every batched feed (``batch`` rows each); scalars as they are."""
    return {k: np.ascontiguousarray(v[:n]) if v.ndim and v.shape[0] == batch else v
            for k, v in feeds.items()}


def measure(prog: Any, x: Any, group: int, merge: int, reps: int) -> dict[str, Any]:
    """Per stage: rows reaching it in a ``group``-row batch (the exit mix on ``x``), the stage's
    time for those rows and for ``merge`` x as many, per row."""
    res = prog.run_in_batches(x, 256)
    reach = [float((res.exit >= k).mean()) for k in range(prog.num_exits)]
    batch = merge * group
    calls = prog.stage_calls({k: v[:batch] for k, v in x.items()})
    stages = []
    for k, call in enumerate(calls):
        m = max(1, round(reach[k] * group))
        one = _time(call, _rows(call.feeds, m, batch), reps)
        many = _time(call, _rows(call.feeds, merge * m, batch), reps)
        stages.append({"stage": k, "reach": reach[k], "rows": m, "ms": one,
                       "ms_merged": many, "per_row_ms": one / m,
                       "per_row_ms_merged": many / (merge * m)})
    total = sum(s["ms"] for s in stages)
    merged = sum(s["ms_merged"] for s in stages) / merge
    return {"group_rows": group, "merge": merge, "stages": stages, "group_ms": total,
            "group_ms_if_merged": merged, "saving": 1.0 - merged / total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", type=int, default=64, help="rows per Program.run (default 64)")
    p.add_argument("--merge", type=int, default=4, help="groups merged (default 4)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnx
    import torch

    import eeopt
    from eeopt.data import load_dataset, load_tweets
    from eeopt.frontend import export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.models.minilm import load_minilm_tweets
    from eeopt.runtime import configure_threads

    configure_threads(1)
    torch.set_num_threads(1)
    report: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                              "threads": 1, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28)),
                  work / "demo.onnx")
        demo = eeopt.compile(work / "demo.onnx", work / "demo", calib="fashion-mnist:calib",
                             budget=0.5, threads=1)
        x, _ = load_dataset("fashion-mnist:eval")
        report["models"]["demo"] = measure(demo, {demo.input_specs[0].name: np.asarray(
            x[:2000])}, args.group, args.merge, args.reps)
        ex = load_tweets("val")[0]
        example = (torch.from_numpy(np.array(ex["input_ids"][:4])),
                   torch.from_numpy(np.array(ex["attention_mask"][:4])))
        seq = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
        onnx.save(export_torch(load_minilm_tweets().eval(), example, dynamic_shapes=seq),
                  work / "minilm.onnx")
        text = eeopt.compile(work / "minilm.onnx", work / "minilm",
                             thresholds=list(TEXT_THRESHOLDS), threads=1)
        feeds, _ = load_tweets("eval")
        report["models"]["minilm"] = measure(text, {k: np.asarray(v[:1000]) for k, v in
                                                    feeds.items()}, args.group, args.merge,
                                             args.reps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rebatch.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Stage-level rebatching: what it could buy, measured before building it", "",
             f"Each stage's own session call at 1 thread ({report['machine']}), for the rows "
             f"that reach it in a {args.group}-row group and for {args.merge}x as many (the "
             f"survivors of {args.merge} groups merged). Rerun: `python benchmarks/rebatch.py`.",
             ""]
    for m, r in report["models"].items():
        lines += [f"## {m}", "", "| stage | rows reaching it | ms | per row | per row merged |",
                  "|---|---|---|---|---|"]
        for s in r["stages"]:
            lines.append(f"| {s['stage']} | {s['rows']} | {s['ms']:.3f} | "
                         f"{s['per_row_ms']:.4f} | {s['per_row_ms_merged']:.4f} |")
        lines += ["", f"A group costs {r['group_ms']:.2f} ms; merged, "
                  f"{r['group_ms_if_merged']:.2f} ms per group: {r['saving']:.1%} saved, "
                  f"for survivors that wait for {args.merge - 1} more groups.", ""]
    (args.out / "rebatch.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
