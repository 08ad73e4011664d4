"""The edge half of a split run: a gRPC server (``eeopt.split._wire``) that runs the stages
after the split on the rows a device sends, and answers with their exits and logits.

It refuses, each with one line in the gRPC status: a request for another program (its hash),
a request larger than ``max_request_bytes`` (gRPC's own receive limit, before any decoding),
a frame whose tensors would decode larger than that bound, a split point outside the program,
and tensors that are not what the program carries there (names, dtypes, shapes).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import DataError, EEOptError, UsageError
from eeopt.runtime import Program, load
from eeopt.split._wire import (
    DEFAULT_MAX_REQUEST,
    EDGE_MS,
    PROGRAM,
    ROWS,
    SERVICE,
    START,
    THRESHOLDS,
    grpc_module,
    program_hash,
)
from eeopt.split.codec import decode, encode

__all__ = ["EdgeServer", "serve_edge"]

logger = logging.getLogger(__name__)


@dataclass
class EdgeStats:
    requests: int = 0
    rows: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class EdgeServer:
    """``program_dir``'s later stages behind gRPC at ``listen`` (``host:port``; port 0 picks a
    free one: see ``port``). ``start()`` returns at once; ``stop()`` drains."""

    def __init__(self, program_dir: str | Path, listen: str = "127.0.0.1:50051", *,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST, workers: int = 4,
                 threads: int | None = None) -> None:
        if max_request_bytes < 1024:
            raise UsageError(f"{{max_request}} must be at least 1024 bytes, got "
                             f"{max_request_bytes}")
        if ":" not in listen:
            raise UsageError(f"{{listen}} must be host:port, got {listen!r}")
        self.grpc = grpc_module()
        self.program: Program = load(program_dir, threads=threads)
        self.hash = program_hash(program_dir)
        self.max_request_bytes = int(max_request_bytes)
        self.stats = EdgeStats()
        self._lock = threading.Lock()
        g = self.grpc
        self._server = g.server(
            ThreadPoolExecutor(max_workers=workers),
            options=[("grpc.max_receive_message_length", self.max_request_bytes),
                     ("grpc.max_send_message_length", 1 << 30),
                     # a port another process serves is an error, not a shared port
                     ("grpc.so_reuseport", 0)])
        handlers = {"Hello": g.unary_unary_rpc_method_handler(self._hello),
                    "Run": g.unary_unary_rpc_method_handler(self._run)}
        self._server.add_generic_rpc_handlers(
            (g.method_handlers_generic_handler(SERVICE, handlers),))
        try:
            self.port = self._server.add_insecure_port(listen)
        except RuntimeError as exc:
            raise UsageError(f"cannot listen on {listen}: {exc}; choose another {{listen}} "
                             "address") from None
        if not self.port:
            raise UsageError(f"cannot listen on {listen}; choose another {{listen}} address")
        self.address = f"{listen.rsplit(':', 1)[0]}:{self.port}"

    def start(self) -> EdgeServer:
        self._server.start()
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        self._server.stop(grace_s).wait()

    # ------------------------------------------------------------------ handlers
    def _refuse(self, context: Any, code: Any, why: str, reason: str) -> None:
        with self._lock:
            self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
        logger.info("refused a request: %s", why)
        context.abort(code, why)

    def _check_program(self, context: Any, presented: str | None) -> None:
        if presented != self.hash:
            self._refuse(
                context, self.grpc.StatusCode.FAILED_PRECONDITION,
                f"the edge serves program {self.hash[:12]} ({self.program.path.name}), not "
                f"{(presented or 'none')[:12]}: start the edge with the device's program "
                "directory", "program")

    def _hello(self, request: bytes, context: Any) -> bytes:
        # the device's program hash, then (a probe) padding that only measures the link
        self._check_program(context, request.split(b"\n", 1)[0].decode("ascii", "replace"))
        return json.dumps({"program": self.hash, "stages": self.program.num_exits}).encode()

    def _run(self, request: bytes, context: Any) -> bytes:
        t0 = time.perf_counter()
        meta = dict(context.invocation_metadata())
        self._check_program(context, meta.get(PROGRAM))
        bad = self.grpc.StatusCode.INVALID_ARGUMENT
        try:
            start = int(meta.get(START, ""))
            thr = json.loads(meta.get(THRESHOLDS, "null"))
            tensors = decode(request, max_bytes=self.max_request_bytes)
            rows = tensors.pop(ROWS, None)
            if rows is None or rows.dtype != np.int64 or rows.ndim != 1:
                raise DataError(f"the request carries no {ROWS} int64 row ids")
            part = self.program.run_stages(tensors, start, thresholds=thr)
            if part.exit.shape[0] != rows.shape[0]:
                raise DataError(f"the request has {rows.shape[0]} row ids for "
                                f"{part.exit.shape[0]} rows")
        except ValueError:
            self._refuse(context, bad, f"bad {START} or {THRESHOLDS} metadata", "metadata")
            raise  # pragma: no cover - abort raises
        except EEOptError as exc:
            self._refuse(context, bad, str(exc), "data")
            raise  # pragma: no cover
        with self._lock:
            self.stats.requests += 1
            self.stats.rows += int(rows.shape[0])
        out = encode({"logits": part.logits, "exit": part.exit, ROWS: rows},
                     dict.fromkeys(("logits", "exit", ROWS), "lossless"))
        context.set_trailing_metadata(((EDGE_MS, f"{1e3 * (time.perf_counter() - t0):.3f}"),))
        return out


def serve_edge(program_dir: str | Path, listen: str, *, max_request_bytes: int =
               DEFAULT_MAX_REQUEST, workers: int = 4, threads: int | None = None,
               ready: Callable[[EdgeServer], None] | None = None) -> EdgeStats:
    """Serve until SIGINT or SIGTERM, then drain and return the counts."""
    server = EdgeServer(program_dir, listen, max_request_bytes=max_request_bytes,
                        workers=workers, threads=threads).start()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        if ready is not None:
            ready(server)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, h in previous.items():
            signal.signal(sig, h)
    return server.stats
