"""The device half of a split run: stages ``0..s-1`` here, the rows that did not exit sent to
an edge server (``eeopt.split.edge``) with their row ids and carried tensors, coded
(``eeopt.split.codec``), and their exits merged back in the original row order.

The link is measured as it goes (``LinkMonitor``: the RTT of ``Hello`` exchanges, the
bandwidth of every request and of a periodic background probe), and the split follows it
(``SplitChooser``): among the planned choices (``SplitPlan``), the one with the lowest
expected latency at the measured bandwidth, moved only after ``patience`` estimates past a
boundary by more than ``hysteresis`` (no flapping).

Calls are bounded: each has ``timeout_s``; an edge that does not answer is retried
``retries`` times with a short backoff. Then, with ``fallback="local"``, the device runs the
rest itself (the same result), and keeps doing so for a pause that doubles from 1 s to 30 s
before it tries the edge again; else one ``BackendUnavailableError`` line.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, DataError, ManifestError, UsageError
from eeopt.runtime import Program, Result
from eeopt.split._wire import (
    DEFAULT_MAX_REQUEST,
    EDGE_MS,
    HELLO,
    PROGRAM,
    ROWS,
    RUN,
    START,
    THRESHOLDS,
    grpc_module,
    program_hash,
)
from eeopt.split.codec import choose, decode, encode
from eeopt.split.plan import SplitPlan

__all__ = ["EdgeClient", "LinkMonitor", "SplitChooser", "connect_edge"]

logger = logging.getLogger(__name__)

CODECS = ("auto", "lossless", "lossy", "raw")


class LinkMonitor:
    """The link as recent exchanges saw it: ``rtt_ms`` is the fastest of the last ``window``
    small exchanges; ``bandwidth_bps`` the median of the last ``window`` transfers, each
    ``8 * bytes / (seconds - rtt)`` (the edge's own compute time taken out first).

    A transfer under ``min_bytes``, or whose wire time is under a quarter of the RTT, is too
    short to measure (its time is mostly fixed costs, and a shaper lets a small burst through
    unshaped): it only says the link is at least ``8 * bytes / (rtt / 4)`` fast when its wire
    time is that short, which counts when it is above the current estimate (the estimate was
    too low); otherwise it is dropped (and always before the first real estimate)."""

    def __init__(self, window: int = 5, min_bytes: int = 4096) -> None:
        self.min_bytes = int(min_bytes)
        self._rtt: deque[float] = deque(maxlen=window)
        self._bw: deque[float] = deque(maxlen=window)
        self.samples = 0
        self.last_bps: float | None = None

    def add_rtt(self, seconds: float) -> None:
        self._rtt.append(seconds)

    def add_transfer(self, nbytes: int, seconds: float) -> float | None:
        """Record a transfer; returns its bandwidth sample (None before any RTT is known, or
        when it is too short to say more than the estimate already does)."""
        if not self._rtt:
            return None
        rtt = min(self._rtt)
        wire, floor = seconds - rtt, max(0.25 * rtt, 1e-4)
        if wire < floor:
            bw = 8.0 * nbytes / floor
            current = self.bandwidth_bps
            if current is None or bw <= current:  # a bound is no first estimate
                return None
        elif nbytes < self.min_bytes:
            return None
        else:
            bw = 8.0 * nbytes / wire
        self._bw.append(bw)
        self.samples += 1
        self.last_bps = bw
        return bw

    @property
    def ready(self) -> bool:
        """Whether the estimate rests on a majority of a full window (the first samples of a
        new connection are the least reliable)."""
        return len(self._bw) > (self._bw.maxlen or 1) // 2

    @property
    def rtt_ms(self) -> float | None:
        return 1e3 * min(self._rtt) if self._rtt else None

    @property
    def bandwidth_bps(self) -> float | None:
        return statistics.median(self._bw) if self._bw else None


class SplitChooser:
    """Which of ``plan``'s choices to run: the best at the measured bandwidth, switched only
    after ``patience`` estimates in a row favour another choice by more than ``hysteresis``
    in bandwidth (the best choice at ``bw / (1 + h)`` and at ``bw * (1 + h)`` agree)."""

    def __init__(self, plan: SplitPlan, initial: int, *, hysteresis: float = 0.25,
                 patience: int = 3) -> None:
        if hysteresis < 0 or patience < 1:
            raise UsageError("the hysteresis must be >= 0 and the patience >= 1")
        self.plan = plan
        self.current = initial
        self.hysteresis = hysteresis
        self.patience = patience
        self._votes = 0
        self._candidate = initial
        self.moves: list[tuple[float, int, int]] = []
        """(time, from choice, to choice) of every move."""

    def update(self, bandwidth_bps: float) -> int:
        h = 1.0 + self.hysteresis
        lo, hi = self.plan.best(bandwidth_bps / h), self.plan.best(bandwidth_bps * h)
        want = lo if lo == hi else self.current
        if want == self.current:
            self._votes = 0
            return self.current
        if want != self._candidate:
            self._candidate, self._votes = want, 0
        self._votes += 1
        if self._votes >= self.patience:
            self.moves.append((time.time(), self.current, want))
            logger.info("link at %.3g bit/s: split moves from choice %d to %d",
                        bandwidth_bps, self.current, want)
            self.current, self._votes = want, 0
        return self.current


@dataclass
class _Call:
    response: bytes
    seconds: float
    edge_ms: float


class EdgeClient:
    """The device half of ``program`` against the edge at ``edge`` (``host:port``).

    ``split``: a fixed split stage (0 = send the input; ``num_exits`` = never use the edge)
    with ``thresholds``; default: the program's split plan (``eeopt plan-split``), moved with
    the measured link unless ``adapt`` is off. ``codec``: ``auto`` (each tensor by its
    entropy against the plan's calibrated threshold; lossless without a plan), ``lossless``,
    ``lossy``, or ``raw`` (no coder: plain offloading's baseline). ``added_rtt_ms``: a delay
    added to every exchange, to emulate a link's RTT where the kernel has no netem
    (benchmarks; the monitor measures it as link time)."""

    def __init__(self, program: Program, edge: str, *, split: int | None = None,
                 thresholds: Sequence[float] | None = None, codec: str = "auto",
                 timeout_s: float = 5.0, retries: int = 2, fallback: str | None = None,
                 adapt: bool = True, hysteresis: float = 0.25, patience: int = 3,
                 probe_every_s: float = 1.0, probe_bytes: int = 64 << 10,
                 added_rtt_ms: float = 0.0, max_request_bytes: int = DEFAULT_MAX_REQUEST
                 ) -> None:
        if ":" not in edge:
            raise UsageError(f"{{edge}} must be host:port, got {edge!r}")
        if codec not in CODECS:
            raise UsageError(f"{{codec}} must be one of {', '.join(CODECS)}, got {codec!r}")
        if fallback not in (None, "local"):
            raise UsageError(f"{{fallback}} must be 'local' or unset, got {fallback!r}")
        if timeout_s <= 0 or retries < 0:
            raise UsageError("the edge timeout must be > 0 and the retries >= 0")
        self.grpc = grpc_module()
        self.program = program
        self.edge = edge
        self.hash = program_hash(program.path)
        self.codec = codec
        self.timeout_s, self.retries, self.fallback = float(timeout_s), int(retries), fallback
        self.added_rtt_s = max(float(added_rtt_ms), 0.0) / 1e3
        self.probe_every_s, self.probe_bytes = float(probe_every_s), int(probe_bytes)
        k = program.num_exits
        # the recorded plan: its choices (unless the split is fixed) and its codec thresholds
        self.plan: SplitPlan | None = SplitPlan.of_manifest(program.manifest)
        self.chooser: SplitChooser | None = None
        if split is None:
            if self.plan is None:
                raise UsageError(f"{program.path} has no split plan: run `eeopt plan-split "
                                 f"{program.path}`, or give the split stage ({{split}})")
            if adapt:
                self.chooser = SplitChooser(self.plan, self.plan.default, hysteresis=hysteresis,
                                            patience=patience)
            self._fixed: tuple[int, list[float]] | None = None
        else:
            if not 0 <= split <= k:
                raise UsageError(f"{{split}} must be in 0..{k}, got {split}")
            self._fixed = (int(split),
                           [float(t) for t in program.resolve_thresholds(thresholds)])
        self.monitor = LinkMonitor()
        self.stats = {"requests": 0, "rows_sent": 0, "bytes_sent": 0, "bytes_received": 0,
                      "local_fallbacks": 0, "probes": 0}
        self._seen = 0
        self._down_for, self._retry_at = 0.0, 0.0
        self._lock = threading.Lock()
        self._link_lock = threading.Lock()
        self._closing = threading.Event()
        self._channel = self.grpc.insecure_channel(
            edge, options=[("grpc.max_send_message_length", max_request_bytes),
                           ("grpc.max_receive_message_length", 1 << 30)])
        self._hello = self._channel.unary_unary(HELLO)
        self._run = self._channel.unary_unary(RUN)
        try:
            self.hello()
        except BackendUnavailableError:
            if fallback != "local":
                self.close()
                raise
        self._prober: threading.Thread | None = None
        if self.chooser is not None and probe_every_s > 0:
            self._prober = threading.Thread(target=self._probe_loop, name="eeopt-edge-probe",
                                            daemon=True)
            self._prober.start()

    # ------------------------------------------------------------------ choice
    @property
    def choice(self) -> tuple[int, list[float]]:
        """The split stage and thresholds the next run uses."""
        if self._fixed is not None:
            return self._fixed
        assert self.plan is not None
        c = self.plan.choices[self.chooser.current if self.chooser else self.plan.default]
        return c.split, list(c.thresholds)

    # ------------------------------------------------------------------ exchanges
    def _exchange(self, stub: Any, payload: bytes, metadata: tuple[tuple[str, str], ...]
                  ) -> _Call:
        g = self.grpc
        retryable = (g.StatusCode.UNAVAILABLE, g.StatusCode.DEADLINE_EXCEEDED)
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                if self.added_rtt_s:  # propagation: it does not hold the link
                    time.sleep(self.added_rtt_s)
                # one transfer on the link at a time: a probe that overlapped a request would
                # make both measure half the link
                with self._link_lock:
                    t0 = time.perf_counter()
                    resp, call = stub.with_call(payload, timeout=self.timeout_s,
                                                metadata=metadata)
                    seconds = time.perf_counter() - t0 + self.added_rtt_s
                edge_ms = float(dict(call.trailing_metadata() or ()).get(EDGE_MS, 0.0))
                return _Call(resp, seconds, edge_ms)
            except g.RpcError as exc:
                code = exc.code()
                if code in retryable and attempt < self.retries:
                    time.sleep(min(0.05 * 2 ** attempt, 0.5))
                    continue
                if code in retryable:
                    raise BackendUnavailableError(
                        f"the edge at {self.edge} did not answer ({code.name}) after "
                        f"{attempt + 1} tries in {time.monotonic() - started:.1f} s: start it "
                        f"with `eeopt edge PROGRAM_DIR --listen {self.edge}`, or run with "
                        "{fallback local} to finish on the device") from None
                details = exc.details() or code.name
                if code == g.StatusCode.FAILED_PRECONDITION:
                    raise ManifestError(f"the edge at {self.edge} refused: {details}") from None
                if code == g.StatusCode.RESOURCE_EXHAUSTED:
                    raise DataError(
                        f"the edge at {self.edge} refused a request of {len(payload):,} bytes "
                        f"({details}): send fewer rows per call, or raise the edge's "
                        "{max_request}") from None
                raise DataError(f"the edge at {self.edge} refused the request: {details}"
                                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def hello(self, probe: int = 0) -> dict[str, Any]:
        """Check the edge serves this program and time the exchange (``probe`` bytes of
        padding also measure the bandwidth)."""
        payload = self.hash.encode() + (b"\n" + bytes(probe) if probe else b"")
        call = self._exchange(self._hello, payload, ())
        info = json.loads(call.response)
        if info.get("program") != self.hash:  # pragma: no cover - the edge refuses first
            raise ManifestError(f"the edge at {self.edge} serves another program")
        if probe:
            self.monitor.add_transfer(len(payload), call.seconds - call.edge_ms / 1e3)
            self.stats["probes"] += 1
        else:
            self.monitor.add_rtt(call.seconds - call.edge_ms / 1e3)
        return info  # type: ignore[no-any-return]

    def _probe_loop(self) -> None:
        """The background prober: every ``probe_every_s``, time a ``Hello`` (the RTT) and a
        padded one (the bandwidth), sized to take about an RTT at the last sample (4 KB up to
        ``probe_bytes``), so that a slow link is not flooded. Requests measure the link too,
        but a small one may pass a shaper's burst untouched: the probe keeps the estimate
        honest (at 1 Mbit/s and a 20 ms RTT it takes about 3% of the link)."""
        while not self._closing.wait(self.probe_every_s):
            bw = self.monitor.last_bps or 8.0 * self.probe_bytes / 0.02
            rtt = (self.monitor.rtt_ms or 20.0) / 1e3
            size = int(min(max(bw * rtt / 8.0, 4096), self.probe_bytes))
            try:
                self.hello()
                self.hello(probe=size)
            except Exception:  # noqa: BLE001 - an edge that is down is retried next time
                continue

    def _adapt(self) -> None:
        """Let the chooser move on each new link estimate, once the monitor is ready."""
        if (self.chooser is None or self.monitor.samples == self._seen
                or not self.monitor.ready):
            return
        self._seen = self.monitor.samples
        bw = self.monitor.bandwidth_bps
        if bw is not None:
            self.chooser.update(bw)

    # ------------------------------------------------------------------ running
    def run(self, x: Any) -> Result:
        """``x``'s rows with per-sample exits, the stages after the split on the edge."""
        with self._lock:
            self._adapt()
            split, thr = self.choice
            program = self.program
            k = program.num_exits
            if split == k:
                return program.run(x, thresholds=thr)
            logits, exits, rows, carried = program.run_stages(x, 0, split, thresholds=thr)
            if rows.size == 0:
                return Result(logits, exits)
            tail_logits, tail_exit = self._remote(carried, rows, split, thr)
            logits[rows] = tail_logits
            exits[rows] = tail_exit
            return Result(logits, exits)

    def _methods(self, split: int, carried: dict[str, np.ndarray]) -> dict[str, str]:
        if self.codec != "auto":
            return dict.fromkeys(carried, self.codec)
        bits = self.plan.codec_threshold(split) if self.plan is not None else None
        if bits is None:
            return dict.fromkeys(carried, "lossless")
        return {n: choose(t, bits) for n, t in carried.items()}

    def _remote(self, carried: dict[str, np.ndarray], rows: np.ndarray, split: int,
                thr: list[float]) -> tuple[np.ndarray, np.ndarray]:
        frame = encode({**carried, ROWS: rows.astype(np.int64)},
                       {**self._methods(split, carried), ROWS: "lossless"})
        meta = ((PROGRAM, self.hash), (START, str(split)),
                (THRESHOLDS, json.dumps(thr)))
        local = self.fallback == "local" and time.monotonic() < self._retry_at
        if not local:
            try:
                call = self._exchange(self._run, frame, meta)
                self._down_for = 0.0
            except BackendUnavailableError:
                if self.fallback != "local":
                    raise
                # an edge that is down is tried again after a pause that doubles (1 s to
                # 30 s): the rows meanwhile do not wait out its timeouts
                self._down_for = min(max(1.0, 2.0 * self._down_for), 30.0)
                self._retry_at = time.monotonic() + self._down_for
                local = True
        if local:
            self.stats["local_fallbacks"] += 1
            part = self.program.run_stages(carried, split, thresholds=thr)
            return part.logits, part.exit
        out = decode(call.response)
        got = out.get(ROWS)
        if got is None or not np.array_equal(got, rows):
            raise DataError(f"the edge at {self.edge} answered for other rows")
        self.stats["requests"] += 1
        self.stats["rows_sent"] += int(rows.size)
        self.stats["bytes_sent"] += len(frame)
        self.stats["bytes_received"] += len(call.response)
        self.monitor.add_transfer(len(frame) + len(call.response),
                                  call.seconds - call.edge_ms / 1e3)
        return out["logits"], out["exit"]

    def close(self) -> None:
        self._closing.set()
        if getattr(self, "_prober", None) is not None:
            self._prober.join(timeout=5)  # type: ignore[union-attr]
        self._channel.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_edge(program: Program, edge: str, **options: Any) -> EdgeClient:
    """``EdgeClient(program, edge, **options)``: ``Program.connect_edge`` calls it."""
    return EdgeClient(program, edge, **options)
