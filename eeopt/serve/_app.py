"""The Ray Serve application behind ``eeopt serve``: one deployment, each replica loading the
program once; ``@serve.batch`` groups requests and one ``Program.run`` answers each group."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from eeopt.errors import EEOptError
from eeopt.online import AdaptiveProgram
from eeopt.runtime import Result, load, make_session
from eeopt.runtime.base import trim_to_longest
from eeopt.serve._request import (
    RequestError,
    check_feeds,
    concat_requests,
    parse_request,
    result_json,
)

__all__ = ["EEOptServer", "build_app"]

logger = logging.getLogger(__name__)

#: latencies kept for the quantiles in /metrics
_LATENCY_WINDOW = 10_000


class _Metrics:
    """The replica's counters, rendered in Prometheus' text format."""

    def __init__(self, exit_names: tuple[str, ...]) -> None:
        self.exit_names = exit_names
        self.requests = 0
        self.bad_requests: dict[int, int] = {}
        self.rows = 0
        self.batches = 0
        self.batch_rows: deque[int] = deque(maxlen=_LATENCY_WINDOW)
        self.exits = np.zeros(len(exit_names), dtype=np.int64)
        self.latency_s: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.lock = threading.Lock()

    def render(self, replica: str, adapt: dict[str, Any] | None) -> str:
        with self.lock:
            lat = np.array(self.latency_s) if self.latency_s else np.zeros(1)
            sizes = np.array(self.batch_rows) if self.batch_rows else np.zeros(1)
            lines = [
                "# HELP eeopt_requests_total Requests answered (2xx).",
                "# TYPE eeopt_requests_total counter",
                f'eeopt_requests_total{{replica="{replica}"}} {self.requests}',
                "# HELP eeopt_bad_requests_total Requests refused, by HTTP status.",
                "# TYPE eeopt_bad_requests_total counter",
                *(f'eeopt_bad_requests_total{{replica="{replica}",status="{s}"}} {n}'
                  for s, n in sorted(self.bad_requests.items())),
                "# HELP eeopt_rows_total Rows answered.",
                "# TYPE eeopt_rows_total counter",
                f'eeopt_rows_total{{replica="{replica}"}} {self.rows}',
                "# HELP eeopt_batches_total Program.run calls (one per group of requests).",
                "# TYPE eeopt_batches_total counter",
                f'eeopt_batches_total{{replica="{replica}"}} {self.batches}',
                "# HELP eeopt_batch_rows Rows per Program.run call (recent calls).",
                "# TYPE eeopt_batch_rows summary",
                *(f'eeopt_batch_rows{{replica="{replica}",quantile="{q}"}} '
                  f"{float(np.quantile(sizes, q)):g}" for q in (0.5, 0.9, 0.99)),
                "# HELP eeopt_exit_rows_total Rows that left at each exit.",
                "# TYPE eeopt_exit_rows_total counter",
                *(f'eeopt_exit_rows_total{{replica="{replica}",exit="{k}",name="{n}"}} '
                  f"{int(self.exits[k])}" for k, n in enumerate(self.exit_names)),
                "# HELP eeopt_request_latency_seconds Time from a request's arrival to its "
                "answer (recent requests).",
                "# TYPE eeopt_request_latency_seconds summary",
                *(f'eeopt_request_latency_seconds{{replica="{replica}",quantile="{q}"}} '
                  f"{float(np.quantile(lat, q)):.6f}" for q in (0.5, 0.9, 0.99)),
            ]
        if adapt is not None:
            lines += [
                "# HELP eeopt_adapt_level The adaptive thresholds' level (0: as compiled).",
                "# TYPE eeopt_adapt_level gauge",
                f'eeopt_adapt_level{{replica="{replica}"}} {adapt["level"]}',
                "# HELP eeopt_adapt_threshold The threshold in force, per gated exit.",
                "# TYPE eeopt_adapt_threshold gauge",
                *(f'eeopt_adapt_threshold{{replica="{replica}",exit="{k}"}} {t:g}'
                  for k, t in enumerate(adapt["thresholds"])),
                "# HELP eeopt_adapt_loss_pp Live loss against the final exit (window), points.",
                "# TYPE eeopt_adapt_loss_pp gauge",
                f'eeopt_adapt_loss_pp{{replica="{replica}"}} {adapt["loss_pp"]:.4f}',
                f'eeopt_adapt_loss_upper_pp{{replica="{replica}"}} '
                f'{adapt["loss_upper_pp"]:.4f}',
                f'eeopt_adapt_budget_pp{{replica="{replica}"}} {adapt["budget_pp"]:g}',
                f'eeopt_adapt_shadow_rows_total{{replica="{replica}"}} {adapt["shadow_rows"]}',
                f'eeopt_adapt_shadow_seconds_total{{replica="{replica}"}} '
                f'{adapt["shadow_seconds"]:.4f}',
                f'eeopt_adapt_decisions_total{{replica="{replica}"}} {len(adapt["decisions"])}',
            ]
        return "\n".join(lines) + "\n"


class _Plain:
    """The plain network as one ONNX Runtime session (``eeopt serve --plain MODEL.onnx``, the
    comparison the same server makes without exits): the model's last output for every row,
    a text batch cut to its longest row first, reported as the program's final exit."""

    def __init__(self, onnx_path: str, program: Any, threads: int) -> None:
        self.session = make_session(Path(onnx_path).read_bytes(), threads)
        self.fetch = [self.session.get_outputs()[-1].name]
        self.final = program.num_exits - 1
        seq = program.manifest.sequence
        self.seq = (seq.mask, dict(seq.axes)) if seq is not None else None
        wanted = {s.name for s in program.input_specs}
        got = {i.name for i in self.session.get_inputs()}
        if got != wanted:
            raise EEOptError(f"--plain {onnx_path} reads {sorted(got)}, the program "
                             f"{sorted(wanted)}: give the model the program was compiled from")

    def run(self, feeds: dict[str, np.ndarray]) -> Result:
        if self.seq is not None:
            feeds, _ = trim_to_longest(feeds, *self.seq)
        z = np.asarray(self.session.run(self.fetch, feeds)[0], dtype=np.float32)
        return Result(z, np.full(z.shape[0], self.final, dtype=np.int64))


class EEOptServer:
    """One replica: the program (loaded once), its request checks and its counters."""

    def __init__(self, program_dir: str, threads: int = 1, max_batch: int = 32,
                 batch_wait_ms: float = 2.0, max_body_bytes: int = 64 << 20,
                 max_rows: int = 4096, adapt: dict[str, Any] | None = None,
                 plain_onnx: str | None = None) -> None:
        self.program = load(program_dir, threads=threads)
        self.specs = self.program.input_specs
        seq = self.program.manifest.sequence
        self.pad_axes = ({n: ax for n, ax in seq.axes.items() if n in {s.name for s in
                                                                         self.specs}}
                         if seq is not None else {})
        self.max_body_bytes, self.max_rows = int(max_body_bytes), int(max_rows)
        self.metrics = _Metrics(self.program.exit_names)
        self.replica = f"{os.getpid()}"
        self.adaptive: AdaptiveProgram | None = None
        if adapt:
            self.adaptive = AdaptiveProgram(self.program, **adapt)
            threading.Thread(target=self._shadow_loop, daemon=True,
                             name="eeopt-shadow").start()
        self._run: Any = self.adaptive.run if self.adaptive is not None else self.program.run
        if plain_onnx is not None:
            self._run = _Plain(plain_onnx, self.program, threads).run
        self.answer.set_max_batch_size(int(max_batch))  # type: ignore[attr-defined]
        self.answer.set_batch_wait_timeout_s(float(batch_wait_ms) / 1e3)  # type: ignore[attr-defined]

    def _shadow_loop(self) -> None:
        """Runs for the replica's life (a daemon thread, gone with the actor)."""
        while True:
            time.sleep(0.05)
            try:
                assert self.adaptive is not None
                self.adaptive.process_shadow()
            except Exception:  # noqa: BLE001 - off the response path: log, keep serving
                logger.exception("eeopt serve: the shadow run failed")

    def _group_key(self, feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple(tuple(d for ax, d in enumerate(feeds[s.name].shape)
                           if ax != 0 and ax != self.pad_axes.get(s.name)) for s in self.specs)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Every request of the group in one ``Program.run`` (per shape, when shapes differ
        beyond the batch and sequence axes), split back per request."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self._group_key(r), []).append(i)
        out: list[dict[str, Any]] = [{} for _ in requests]
        for members in groups.values():
            feeds, sizes = concat_requests([requests[i] for i in members], self.specs,
                                           self.pad_axes)
            try:
                res = await asyncio.to_thread(self._run, feeds)
            except EEOptError as exc:  # the group's rows were each valid alone
                for i in members:
                    out[i] = {"error": str(exc).splitlines()[0], "status": 400}
                continue
            with self.metrics.lock:
                self.metrics.batches += 1
                self.metrics.batch_rows.append(int(res.exit.shape[0]))
                self.metrics.exits += np.bincount(res.exit, minlength=len(self.metrics.exits))
            start = 0
            for i, n in zip(members, sizes, strict=True):
                part = type(res)(res.logits[start:start + n], res.exit[start:start + n])
                out[i] = result_json(part, self.program.exit_names)
                start += n
        return out

    async def predict(self, inputs: Any) -> dict[str, Any]:
        """The DeploymentHandle path: ``inputs`` an array or ``{name: array}``; a bad request
        raises ``RequestError``."""
        raw = inputs if isinstance(inputs, dict) else {self.specs[0].name: inputs}
        result = await self._answer(lambda: check_feeds(raw, self.specs, max_rows=self.max_rows))
        if "error" in result:
            raise RequestError(int(result["status"]), str(result["error"]))
        return result

    async def _answer(self, parse: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            feeds = parse()
        except RequestError as exc:
            with self.metrics.lock:
                self.metrics.bad_requests[exc.status] = (
                    self.metrics.bad_requests.get(exc.status, 0) + 1)
            return {"error": exc.message, "status": exc.status}
        result: dict[str, Any] = await self.answer(feeds)
        if "error" not in result:
            with self.metrics.lock:
                self.metrics.requests += 1
                self.metrics.rows += len(result["exit"])
                self.metrics.latency_s.append(time.perf_counter() - t0)
        return result

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path.endswith("/healthz"):
            return JSONResponse({"status": "ok", "program": str(self.program.path),
                                 "exits": list(self.program.exit_names),
                                 "replica": self.replica})
        if path.endswith("/metrics"):
            state = self.adaptive.state() if self.adaptive is not None else None
            return PlainTextResponse(self.metrics.render(self.replica, state),
                                     media_type="text/plain; version=0.0.4")
        if request.method != "POST":
            return JSONResponse({"error": "POST the inputs to /; GET /healthz or /metrics"},
                                status_code=405)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            with self.metrics.lock:
                self.metrics.bad_requests[413] = self.metrics.bad_requests.get(413, 0) + 1
            return JSONResponse({"error": f"the body is {int(length):,} bytes, over the "
                                          f"server's limit of {self.max_body_bytes:,}: send "
                                          "fewer rows per request"}, status_code=413)
        body = await request.body()
        kind = request.headers.get("content-type", "")
        result = await self._answer(lambda: parse_request(
            body, kind, self.specs, max_bytes=self.max_body_bytes, max_rows=self.max_rows))
        if "error" in result:
            return JSONResponse({"error": result["error"]}, status_code=int(result["status"]))
        return JSONResponse(result)


def build_app(program_dir: str | os.PathLike[str], *, replicas: int = 1, threads: int = 1,
              max_batch: int = 32, batch_wait_ms: float = 2.0, max_body_mb: float = 64.0,
              max_rows: int = 4096, adapt: dict[str, Any] | None = None,
              cpus_per_replica: float = 1.0, plain_onnx: str | os.PathLike[str] | None = None,
              name: str = "eeopt") -> Any:
    """The bound Ray Serve application for ``program_dir`` (``serve.run(build_app(...))``).
    ``plain_onnx``: serve that model's last output instead, through the same front end (the
    comparison without exits)."""
    path = str(Path(program_dir).resolve())
    deployment = serve.deployment(name=name, num_replicas=int(replicas),
                                  ray_actor_options={"num_cpus": float(cpus_per_replica)},
                                  max_ongoing_requests=max(8, 4 * int(max_batch)))(EEOptServer)
    plain = None if plain_onnx is None else str(Path(plain_onnx).resolve())
    return deployment.bind(path, threads, max_batch, batch_wait_ms,
                           int(max_body_mb * (1 << 20)), max_rows, adapt, plain)
