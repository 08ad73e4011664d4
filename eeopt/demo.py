"""The Fashion-MNIST demo: `make demo` (python -m eeopt.demo).

1. Loads the committed DemoCNN weights (a 4-exit residual CNN trained by
   scripts/train_demo_cnn.py) and exports OUT/model.onnx: input float32 [B,1,28,28] = pixel/255,
   outputs exit0..exit3, earliest first.
2. Compiles OUT/program/ with the planner: it profiles every candidate exit on this machine,
   runs them over the *calibration* half of the test split (fashion-mnist:calib: deployment-like
   data that neither trained nor selected the model), and keeps the exits and thresholds that
   minimise expected batch-1 latency within --budget points of accuracy, stating its promise
   (best effort, with the estimated probability that the budget holds on fresh data).
3. Benchmarks on the other half (fashion-mnist:eval, 5k images the planner never saw) against
   the plain network (the model cut to its final output, OUT/plain.onnx), interleaved in this one
   process at --threads threads: accuracy and the loss with its paired 95% interval, exit
   fractions, batch-1 mean/median/p99 latency (mean is the expected cost per input, the
   headline), batch-64 throughput, the ideal speedup (bare stage calls x exit mix) and the
   efficiency.
4. Writes OUT/results.json and OUT/frontier.png, the accuracy-latency frontier across budgets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

from eeopt.bench import format_bench, plot_frontier, run_bench
from eeopt.compiler import compile as compile_model
from eeopt.errors import EEOptError
from eeopt.frontend import ModelGraph, export_torch
from eeopt.passes import cut_to_outputs
from eeopt.planning import Promise
from eeopt.program import write_file
from eeopt.runtime import configure_threads

__all__ = ["CALIB", "EVAL", "main", "run_demo"]

#: the planner calibrates on one half of the test split and the benchmark reports on the other
CALIB = "fashion-mnist:calib"
EVAL = "fashion-mnist:eval"

logger = logging.getLogger(__name__)


def run_demo(out: Path, *, budget_pp: float = 0.5, threads: int = 1, weights: str | None = None,
             limit: int | None = None,
             budgets: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)) -> dict[str, Any]:
    configure_threads(threads)  # before any session: one global pool for everything below

    import torch

    from eeopt.models import load_demo_cnn

    def say(msg: str) -> None:
        print(msg, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/3] exporting the DemoCNN to {out / 'model.onnx'}")
    model = load_demo_cnn(weights)
    proto = export_torch(model, torch.rand(2, 1, 28, 28))
    write_file(out / "model.onnx", proto.SerializeToString())
    plain = cut_to_outputs(ModelGraph(proto), [proto.graph.output[-1].name]).model
    write_file(out / "plain.onnx", plain.SerializeToString())

    prog_dir = out / "program"
    say(f"[2/3] compiling {prog_dir}: profiling every exit, planning on fashion-mnist:calib "
        f"for <= {budget_pp:g} pp")
    program = compile_model(out / "model.onnx", prog_dir, calib=CALIB, budget=budget_pp,
                            threads=threads, force=True, progress=True)
    plan = program.manifest.plan
    assert plan is not None  # a planned compile records its plan
    say(f"      kept {', '.join(plan.kept_outputs)}; thresholds "
        + ", ".join(f"{t:.4g}" for t in program.thresholds)
        + f"; predicted {plan.predicted_speedup:.2f}x at "
        f"{plan.predicted_loss_pp:.2f} pp on the calibration rows it searched")
    promise = Promise.of(plan.promise)
    if promise is not None:
        say(f"      {promise.describe(plan.budget_pp)}")

    say(f"[3/3] benchmarking on {EVAL} against the plain network, {threads} thread(s), "
        "interleaved")
    res = run_bench(str(prog_dir), EVAL, batches=(1, 64), model=str(out / "model.onnx"),
                    calib=CALIB, budgets=budgets, threads=threads, limit=limit)
    res["plan"] = plan.to_dict()
    res["machine"] = {"python": platform.python_version(), "processor": platform.processor(),
                      "cpus": os.cpu_count()}
    write_file(out / "results.json", json.dumps(res, indent=2) + "\n")
    plot_frontier(res, str(out / "frontier.png"))
    say("")
    print(format_bench(res))
    say(f"\nwrote {out / 'results.json'} and {out / 'frontier.png'}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eeopt.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/demo", help="output directory (default build/demo)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="accuracy loss allowed against the final exit, in points (default 0.5)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.add_argument("--weights", default=None, help="DemoCNN weights (default: the committed)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N evaluation images")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_demo(Path(args.out), budget_pp=args.budget, threads=args.threads,
                 weights=args.weights, limit=args.limit)
    except EEOptError as exc:
        sys.stderr.write(f"eeopt demo: error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
