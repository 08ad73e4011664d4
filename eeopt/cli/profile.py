"""``eeopt profile``: per-node, per-exit and per-stage cost of a model on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eeopt.bench import format_table, plain_model_path
from eeopt.cli.common import in_flags, int_list, load_arrays
from eeopt.measure import profile_model
from eeopt.program import load_manifest, write_file

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``profile`` command to the ``eeopt`` sub-command parsers."""
    pr = sub.add_parser(
        "profile",
        help="measure per-node, per-exit and per-stage cost on this machine",
        description="Profile a multi-exit model (or the source model of a program directory) "
        "on ONNX Runtime: per-node latency from ORT's profiler, each exit's stage, head + gate "
        "and backbone segment at several batch sizes (median of repeats, fitted as fixed + "
        "per-row), the plain network, the runtime's own per-stage cost, and MACs.",
    )
    pr.add_argument("model", metavar="MODEL.onnx|DIR", help="multi-exit ONNX model or program")
    pr.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    pr.add_argument("--batches", default="1,8,64", metavar="B1,B2,...",
                    help="batch sizes to measure (default 1,8,64)")
    pr.add_argument("--json", metavar="OUT.json", help="also write the full report as JSON")
    pr.add_argument("--top", type=int, default=10, help="slowest nodes to list (default 10)")
    pr.add_argument("--example-inputs", metavar="X.npz|X.npy",
                    help="inputs to time the model on (one array per input name; their rows "
                    "are tiled to each batch size): the deployment's own shapes, e.g. a text "
                    "model's sequence length. Default: random inputs of the model's declared "
                    "shapes, symbolic dimensions set to 8")

    return pr  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt profile``; returns the exit status."""
    model = args.model
    if Path(model).is_dir():
        model = plain_model_path(load_manifest(model), None)
    batches = int_list(args.batches, "--batches")
    example = None
    if args.example_inputs:
        ex = load_arrays(args.example_inputs)
        example = ex if isinstance(ex, dict) else (ex,)
    r = profile_model(model, threads=args.threads, batches=batches, progress=True,
                      example_inputs=example)
    b_hdr = [f"stage @{b}" for b in batches]
    rows = []
    for e in r.exits:
        rows.append([str(e.exit), e.output, *(f"{e.stage.samples[b]:.3f}" for b in batches),
                     f"{e.backbone.at(batches[0]):.3f}", f"{e.head_gate.at(batches[0]):.3f}",
                     f"{e.gate_us:.1f}", f"{e.macs / 1e6:.2f}"])
    print(f"profile of {model}: ONNX Runtime CPU, {r.threads or 'default'} thread(s); "
          "milliseconds per call (median), fits are fixed + per-row * batch")
    print(format_table(["exit", "output", *b_hdr, f"backbone @{batches[0]}",
                  f"head+gate @{batches[0]}", "gate us*",
                  "MMACs"], rows))
    print("plain network: " + ", ".join(f"{r.plain.samples[b]:.3f} ms @{b}" for b in batches)
          + f"; {r.plain_macs / 1e6:.2f} MMACs")
    print("runtime's own cost per stage: " + ", ".join(
        f"{r.runtime.samples[b]:.3f} ms @{b}" for b in batches))
    kept = list(range(r.num_exits))
    print("a row leaving at exit k pays (batch 1, every exit kept): " + ", ".join(
        f"{k}: {c:.3f} ms" for k, c in zip(kept, r.cumulative_ms(kept), strict=True)))
    slow = sorted(r.nodes, key=lambda n: -n.us)[: args.top]
    print("\nslowest nodes as ONNX Runtime ran them (* per-node times include the "
          "profiler's own overhead):")
    print(format_table(["stage", "node", "op", "us @1"],
                 [[str(n.stage), n.name, n.op, f"{n.us:.1f}"] for n in slow]))
    if args.json:
        write_file(args.json, json.dumps(r.to_dict(), indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
