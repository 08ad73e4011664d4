"""``eeopt plan-split``: where to split a program between a device and an edge server, per
link bandwidth, with its exits and thresholds chosen for each (``eeopt.split.joint``)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from eeopt.bench import format_table
from eeopt.cli.common import in_flags, positive_int
from eeopt.data import load_labelled
from eeopt.errors import UsageError
from eeopt.runtime import load
from eeopt.split import OBJECTIVES, measure_split, plan_split_program, record_split

__all__ = ["add_parser", "run"]


def _floats(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return vals


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``plan-split`` command to the ``eeopt`` sub-command parsers."""
    p = sub.add_parser(
        "plan-split", help="choose the split stage, exits and thresholds per link bandwidth",
        description="Plan split computing for a compiled program: the first stages on a "
        "device, the rest on an edge server (`eeopt edge`), only the rows that did not exit "
        "crossing, coded (lossless for sparse maps, int8 for dense ones, by an entropy "
        "threshold calibrated on --calib). For each bandwidth it chooses the split stage, "
        "the kept exits and their thresholds together, for the lowest expected end-to-end "
        "latency within --budget (the codec's measured accuracy cost counted inside it), "
        "prints the choice per bandwidth, and records the plan in the program's manifest, "
        "where `eeopt run --edge` and Program.run(x, edge=...) find it and move between its "
        "choices as the measured link changes. The device's costs are this machine's, unless "
        "--device-ms gives the real device's; the edge is the device sped up by "
        "--edge-speedup (stated, not measured).")
    p.add_argument("program", metavar="DIR", help="compiled program directory (maxprob, "
                   "entropy or margin gates)")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="labelled calibration data: a built-in name (fashion-mnist:calib) or "
                   "an .npz with one array per input plus y")
    p.add_argument("--limit", type=positive_int, default=2000, metavar="N",
                   help="calibration rows used (default 2000)")
    p.add_argument("--budget", type=float, default=0.5, metavar="PP",
                   help="points of accuracy the plan may lose against the final exit, codec "
                   "included (default 0.5)")
    p.add_argument("--codec-budget", type=float, default=None, metavar="PP",
                   help="the codec's share of --budget (default: half of it)")
    p.add_argument("--edge-speedup", type=float, default=4.0, metavar="F",
                   help="how many times faster the edge runs a stage than the device "
                   "(default 4)")
    p.add_argument("--rtt-ms", type=float, default=20.0, metavar="MS",
                   help="the link's round-trip time (default 20)")
    p.add_argument("--bandwidths", type=_floats, default=[1.0, 10.0, 100.0],
                   metavar="MBIT,...", help="link bandwidths to plan for, Mbit/s (default "
                   "1,10,100)")
    p.add_argument("--device-ms", type=_floats, default=None, metavar="MS,...",
                   help="the device's cost of each stage at batch 1 (e.g. from `eeopt bench` "
                   "on the device); default: this machine's, timed now")
    p.add_argument("--objective", choices=list(OBJECTIVES), default="mean",
                   help="what the choice of split minimises: the mean latency of a row "
                   "(default), or a percentile of the rows' latencies (p50, p90, p99: a "
                   "latency target; with early exits the rows' latencies have several modes, "
                   "so the best split by mean and by p50 can differ)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan without recording it in the manifest")
    return p  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt plan-split``; returns the exit status."""
    if args.budget < 0 or (args.codec_budget is not None
                           and not 0 <= args.codec_budget <= args.budget):
        raise UsageError("--budget must be >= 0 and --codec-budget in 0..--budget")
    program = load(args.program, threads=1)
    feeds, labels = load_labelled(args.calib, program.input_specs)
    n = min(args.limit, labels.shape[0])
    feeds = {k: np.ascontiguousarray(v[:n]) for k, v in feeds.items()}
    codec_budget = args.budget / 2 if args.codec_budget is None else args.codec_budget

    def say(msg: str) -> None:
        print(f"  {msg}", flush=True)

    print(f"plan-split {args.program}: {n} rows of {args.calib}")
    m = measure_split(program, feeds, labels[:n], codec_budget_pp=codec_budget,
                      device_ms=args.device_ms, progress=say)
    policy = next(s.gate.policy for s in program.manifest.stages if s.gate is not None)
    info = {"calibration": args.calib, "rows": n, "edge_speedup": args.edge_speedup,
            "device": m.device_source, "device_ms": list(m.device_ms),
            "codec_budget_pp": codec_budget, "bytes_per_row": list(m.bytes_per_row),
            "lossy_cost_pp": list(m.lossy_cost_pp)}
    plan = plan_split_program(m, policy=policy, budget_pp=args.budget,
                              edge_speedup=args.edge_speedup, rtt_ms=args.rtt_ms,
                              bandwidths_bps=[b * 1e6 for b in args.bandwidths],
                              progress=say, info=info, objective=args.objective)
    k = program.num_exits
    rows = []
    for r in plan.table:
        per = r["per_split_ms"]
        rows.append([f"{r['bandwidth_bps'] / 1e6:g}", str(r["split"]),
                     ", ".join(f"{t:.3g}" for t in r["thresholds"]),
                     f"{r['expected_ms']:.2f}", f"{r['objective_ms']:.2f}",
                     "-" if per[0] is None else f"{per[0]:.2f}",
                     "-" if per[k] is None else f"{per[k]:.2f}",
                     f"{r['bytes_per_crossing_row']:,.0f}", f"{r['lossy_cost_pp']:.2f}"])
    print(f"\ndevice ms per stage: {', '.join(f'{v:.3f}' for v in m.device_ms)} "
          f"({m.device_source}); edge = device / {args.edge_speedup:g}; RTT "
          f"{args.rtt_ms:g} ms; codec thresholds (bits) per split: "
          + ", ".join("-" if b is None else f"{b:.2f}" for b in m.codec_bits))
    print(format_table(["Mbit/s", "split", "thresholds", "mean ms", f"{args.objective} ms",
                        f"all on edge ({args.objective})", f"all on device ({args.objective})",
                        "B/crossing row", "codec pp"], rows))
    print("split s: stages 0..s-1 on the device; 0 sends the input, "
          f"{k} never uses the edge. Switching points: " + (", ".join(
              f"{bw / 1e6:.3g} Mbit/s -> split {plan.choices[c].split}"
              for bw, c in plan.boundaries()) or "none"))
    if args.dry_run:
        print("dry run: the manifest is unchanged")
        return 0
    record_split(args.program, plan)
    print(f"recorded in {args.program}/manifest.json: its hash changed, so restart any "
          "`eeopt edge` serving it")
    return 0
