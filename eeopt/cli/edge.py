"""``eeopt edge``: the edge half of a split run (``eeopt.split.EdgeServer``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from eeopt.cli.common import in_flags, positive_int
from eeopt.split import serve_edge

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``edge`` command to the ``eeopt`` sub-command parsers."""
    e = sub.add_parser(
        "edge", help="serve the later stages of a program to devices (split computing)",
        description="The edge half of a split run, on gRPC: a device runs a program's first "
        "stages (`eeopt run DIR --edge HOST:PORT`, or Program.run(x, edge=...)) and sends "
        "only the rows that did not exit, with their row ids and carried tensors (coded: "
        "lossless for sparse maps, int8 for dense ones); this server runs the rest and "
        "answers with their exits and logits. It refuses requests for another program (the "
        "sha256 of its manifest.json), requests over --max-request-mb, and tensors that are "
        "not what the program carries at the split. Ctrl-C or SIGTERM drains and stops.")
    e.add_argument("program", metavar="DIR", help="compiled program directory (the device's)")
    e.add_argument("--listen", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:50051; port 0 picks one)")
    e.add_argument("--max-request-mb", type=float, default=64.0, metavar="MB",
                   help="larger requests are refused (default 64)")
    e.add_argument("--workers", type=positive_int, default=4,
                   help="requests served at once (default 4)")
    e.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: the program's)")
    return e  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt edge``; returns the exit status."""
    # gRPC's core logs a failed bind itself, a second line beside eeopt's; quiet unless asked
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

    def ready(server: Any) -> None:
        print(f"eeopt edge: serving {args.program} (program {server.hash[:12]}, "
              f"{server.program.num_exits} stages) on {server.address}; Ctrl-C stops",
              flush=True)

    stats = serve_edge(args.program, args.listen,
                       max_request_bytes=int(args.max_request_mb * (1 << 20)),
                       workers=args.workers, threads=args.threads, ready=ready)
    refused = ", ".join(f"{k} {v}" for k, v in sorted(stats.refused.items())) or "none"
    print(f"eeopt edge: stopped after {stats.requests} requests ({stats.rows} rows); "
          f"refused: {refused}")
    return 0
