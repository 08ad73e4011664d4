"""Latency measurement: the plain network against the program, interleaved in one process.

Interleaving (plain, program, program, plain, ...) exposes both to the same machine state, so
their ratio is meaningful even on a noisy machine. At batch 1 the mean latency is the expected
cost per input and the headline; median and p99 come beside it. At larger batches the headline is
throughput.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

__all__ = ["LatencyStats", "Comparison", "compare_batch1", "compare_throughput"]

Runner = Callable[[Mapping[str, np.ndarray]], object]


@dataclass(frozen=True)
class LatencyStats:
    mean_ms: float
    median_ms: float
    p99_ms: float
    calls: int

    @classmethod
    def of(cls, seconds: np.ndarray) -> LatencyStats:
        ms = np.asarray(seconds) * 1e3
        return cls(float(ms.mean()), float(np.median(ms)), float(np.percentile(ms, 99)),
                   int(ms.size))


@dataclass(frozen=True)
class Comparison:
    batch: int
    plain: LatencyStats
    program: LatencyStats
    rows: int

    @property
    def speedup_mean(self) -> float:
        return self.plain.mean_ms / self.program.mean_ms

    @property
    def plain_throughput(self) -> float:
        return self.batch * 1e3 / self.plain.mean_ms

    @property
    def program_throughput(self) -> float:
        return self.batch * 1e3 / self.program.mean_ms

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(speedup_mean=self.speedup_mean, plain_rows_per_s=self.plain_throughput,
                 program_rows_per_s=self.program_throughput)
        return d


def _slice(feeds: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[start:stop]) for k, v in feeds.items()}


def _interleaved(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], batch: int,
                 warmup: int, desc: str) -> Comparison:
    n = next(iter(feeds.values())).shape[0]
    chunks = [_slice(feeds, s, s + batch) for s in range(0, n - batch + 1, batch)]
    for c in chunks[:warmup]:
        plain(c)
        program(c)
    tp = np.empty(len(chunks))
    tq = np.empty(len(chunks))
    clock = time.perf_counter
    for i, c in enumerate(tqdm(chunks, desc=desc, unit="call", leave=False, disable=None)):
        if i % 2 == 0:
            t0 = clock()
            plain(c)
            t1 = clock()
            program(c)
            t2 = clock()
            tp[i], tq[i] = t1 - t0, t2 - t1
        else:
            t0 = clock()
            program(c)
            t1 = clock()
            plain(c)
            t2 = clock()
            tq[i], tp[i] = t1 - t0, t2 - t1
    return Comparison(batch, LatencyStats.of(tp), LatencyStats.of(tq), len(chunks) * batch)


def compare_batch1(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], *,
                   warmup: int = 100) -> Comparison:
    """Every row as its own call, alternating which of the two goes first."""
    return _interleaved(plain, program, feeds, 1, warmup, "latency @1")


def compare_throughput(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray],
                       batch: int, *, warmup: int = 5) -> Comparison:
    """Consecutive batches of ``batch`` rows (a remainder is dropped), interleaved."""
    return _interleaved(plain, program, feeds, batch, warmup, f"throughput @{batch}")
