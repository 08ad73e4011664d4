"""``eeopt bench``: a program against the plain network, and the accuracy-latency frontier."""

from __future__ import annotations

import argparse
import json
from typing import Any

from eeopt.bench import format_bench, plot_frontier, run_bench
from eeopt.cli.common import in_flags, int_list
from eeopt.errors import UsageError
from eeopt.program import load_manifest, write_file

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to the ``eeopt`` sub-command parsers."""
    be = sub.add_parser(
        "bench",
        help="accuracy and latency of a program against the plain network, and the frontier",
        description="Measure a program on labelled data against the plain network (its source "
        "model cut to the final output), interleaved in one process: accuracy, exit fractions, "
        "batch-1 mean/median/p99 latency (mean is the headline), throughput at larger batches, "
        "the ideal speedup (the cost of the bare stage calls, timed in the same blocks, times "
        "the measured exit distribution), efficiency = measured over ideal, and the "
        "accuracy-latency frontier across planner budgets.",
    )
    be.add_argument("program", metavar="DIR", help="compiled program directory")
    be.add_argument("--data", required=True, metavar="DATA",
                    help="labelled test data: fashion-mnist:test or an .npz with inputs + 'y'")
    be.add_argument("--batch", default="1,64", metavar="B1,B2,...",
                    help="batch sizes (default 1,64)")
    be.add_argument("--model", metavar="MODEL.onnx",
                    help="the source model (default: the path recorded at compile time)")
    be.add_argument("--calib", metavar="DATA",
                    help="calibration data for the frontier (default: the program's own)")
    be.add_argument("--budgets", default="0,0.25,0.5,1,2,4", metavar="PP,...",
                    help="planner budgets for the frontier (default 0,0.25,0.5,1,2,4)")
    be.add_argument("--no-frontier", action="store_true", help="skip the frontier")
    be.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    be.add_argument("--allow-native", action="store_true",
                    help="also bench programs whose stages hold native code (aoti, tensorrt), "
                    "which loading runs: only programs you trust")
    be.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    be.add_argument("--passes", type=int, default=3,
                    help="timed passes per batch size; the one with the median speedup is "
                    "reported (default 3)")
    be.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    be.add_argument("--plot", metavar="OUT.png", help="plot the accuracy-latency frontier")

    return be  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt bench``; returns the exit status."""
    batches = int_list(args.batch, "--batch")
    try:
        budgets = tuple(float(t) for t in args.budgets.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--budgets takes comma-separated numbers, got {args.budgets!r}"
                         ) from None
    calib = args.calib
    if calib is None and not args.no_frontier:
        plan = load_manifest(args.program).plan
        calib = plan.calibration if plan and plan.calibration not in ("", "arrays") else None
    res = run_bench(args.program, args.data, batches=batches, model=args.model,
                    calib=None if args.no_frontier else calib, budgets=budgets,
                    threads=args.threads, limit=args.limit, passes=args.passes,
                    allow_native=args.allow_native)
    print(format_bench(res))
    if args.json:
        write_file(args.json, json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        if not res["frontier"]:
            raise UsageError("--plot needs the frontier: pass --calib DATA")
        plot_frontier(res, args.plot)
        print(f"wrote {args.plot}")
    return 0
