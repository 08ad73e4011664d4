"""``eeopt serve``: a program behind Ray Serve (``eeopt.serve``)."""

from __future__ import annotations

import argparse
from typing import Any

from eeopt.cli.common import in_flags
from eeopt.errors import UsageError
from eeopt.program import load_manifest
from eeopt.serve import run_server

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` command to the ``eeopt`` sub-command parsers."""
    s = sub.add_parser(
        "serve", help="serve a program over HTTP on Ray Serve (dynamic batching)",
        description="Serve a compiled program on Ray Serve: POST / with JSON "
        '{"inputs": array} or {"inputs": {name: array}}, or a binary .npy/.npz body; the '
        'answer is {"logits", "exit", "exit_name"}. Requests that arrive together are grouped '
        "(@serve.batch) into one Program.run, whose early exits and compaction then work across "
        "them. GET /healthz and /metrics (Prometheus text). Bad requests get a 4xx with one "
        "line and never fail the others. Runs on a local Ray instance, or on an existing "
        "cluster with --address or RAY_ADDRESS (ray start --head). Ctrl-C or SIGTERM drains "
        "and stops.")
    s.add_argument("program", metavar="DIR", help="compiled program directory")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    s.add_argument("--replicas", type=int, default=1, help="replicas, each loading the "
                   "program once (default 1)")
    s.add_argument("--max-batch", type=int, default=32, metavar="N",
                   help="requests grouped into one Program.run at most (default 32)")
    s.add_argument("--batch-wait-ms", type=float, default=2.0, metavar="MS",
                   help="how long a group waits to fill (default 2 ms)")
    s.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per replica "
                   "(default 1)")
    s.add_argument("--max-body-mb", type=float, default=64.0, metavar="MB",
                   help="larger request bodies are refused with 413 (default 64)")
    s.add_argument("--max-rows", type=int, default=4096, help="rows per request at most "
                   "(default 4096)")
    s.add_argument("--adapt", action="store_true", help="thresholds that adapt online to "
                   "hold --budget (eeopt.adapt): a --shadow share of early-exited rows also "
                   "runs to the final exit, off the response path; state in /metrics")
    s.add_argument("--budget", type=float, default=None, metavar="PP",
                   help="--adapt: the points of accuracy against the final exit to hold "
                   "(default: the program's planned budget)")
    s.add_argument("--shadow", type=float, default=0.02, metavar="F",
                   help="--adapt: share of early-exited rows shadowed (default 0.02)")
    s.add_argument("--plain", default=None, metavar="MODEL.onnx",
                   help="serve this plain model's last output instead (the model the program "
                   "was compiled from), through the same front end: the comparison without "
                   "exits")
    s.add_argument("--address", default=None, help="an existing Ray cluster (default: "
                   "RAY_ADDRESS, else a local Ray instance)")
    s.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance "
                   "(default: all)")
    return s  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt serve``; returns the exit status."""
    adapt = None
    if args.adapt:
        budget = args.budget
        if budget is None:
            plan = load_manifest(args.program).plan
            if plan is None:
                raise UsageError("--adapt needs --budget PP: the program was compiled with "
                                 "fixed thresholds, not planned for a budget")
            budget = plan.budget_pp
        adapt = {"budget": float(budget), "shadow": float(args.shadow)}
    elif args.budget is not None or args.shadow != 0.02:
        raise UsageError("--budget and --shadow apply to --adapt")
    run_server(args.program, host=args.host, port=args.port, replicas=args.replicas,
               threads=args.threads, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
               max_body_mb=args.max_body_mb, max_rows=args.max_rows, adapt=adapt,
               address=args.address, num_cpus=args.num_cpus, plain_onnx=args.plain)
    return 0
