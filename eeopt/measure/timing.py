"""Timing primitives: the plain network against the program, interleaved in one process.

Interleaving (a block of plain calls, a block of program calls, and blocks of the bare stage
calls the ideal is made of, in a new random order each time) exposes all to the same machine
state over time, so their ratios are meaningful even on a noisy machine; within a block each
keeps its own weights warm in cache, as a deployment would. At batch 1 the mean latency is the
expected cost per input and the headline; median and p99 come beside it. At larger batches the
headline is throughput.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

__all__ = [
    "Comparison",
    "LatencyStats",
    "Runner",
    "compare_batch1",
    "compare_throughput",
    "measure_means",
    "measure_stats",
    "time_interleaved",
]

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
    others: dict[str, LatencyStats] = field(default_factory=dict)
    """Any further runners timed in the same blocks (``eeopt bench``: each bare stage call)."""

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


def time_interleaved(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray],
                     batch: int, *, warmup: int, block: int, desc: str = "timing",
                     ) -> dict[str, LatencyStats]:
    """Time every call of every runner on the same consecutive chunks of ``batch`` rows (a
    remainder is dropped). Calls go in blocks of ``block`` chunks that take turns, one block
    per runner, in a new random order each time, so all see the same machine over time and
    each follows every other equally often (a block's first calls pay for what the previous
    block evicted from the cache: about 1% of a 200-call block at batch 1), while each runs
    with its own weights warm in cache, as a deployment that runs one model would."""
    n = next(iter(feeds.values())).shape[0]
    chunks = [_slice(feeds, s, s + batch) for s in range(0, n - batch + 1, batch)]
    fns = list(runners.values())
    for c in chunks[:warmup]:
        for fn in fns:
            fn(c)
    times = [np.empty(len(chunks)) for _ in fns]
    clock = time.perf_counter
    order_rng = np.random.default_rng(0)
    blocks = range(0, len(chunks), block)
    for start in tqdm(blocks, desc=desc, unit="block", leave=False, disable=None):
        idx = range(start, min(start + block, len(chunks)))
        for j in order_rng.permutation(len(fns)):
            fn, out = fns[j], times[j]
            for i in idx:
                t0 = clock()
                fn(chunks[i])
                out[i] = clock() - t0
    return {name: LatencyStats.of(t) for name, t in zip(runners, times, strict=True)}


def _interleaved(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], batch: int,
                 warmup: int, desc: str, block: int,
                 others: Mapping[str, Runner] | None = None) -> Comparison:
    """The plain network against the program (and any ``others``), by ``time_interleaved``."""
    others = dict(others or {})
    if {"plain", "program"} & set(others):
        raise ValueError("'plain' and 'program' name the two models; give others other names")
    st = time_interleaved({"plain": plain, "program": program, **others}, feeds, batch,
                          warmup=warmup, block=block, desc=desc)
    return Comparison(batch, st["plain"], st["program"], st["plain"].calls * batch,
                      {name: st[name] for name in others})


def compare_batch1(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], *,
                   warmup: int = 100, block: int = 200,
                   others: Mapping[str, Runner] | None = None) -> Comparison:
    """Every row as its own call, in alternating blocks of ``block`` calls.

    The first call of a block runs after the other model has evicted this one's weights from
    the cache and costs about 2.5x a warm call (measured on the demo at batch 1, both for the
    plain network and the program); blocks of 200 keep that switching cost, which a deployment
    running one model never pays, under 1% of the mean while still alternating every few tens
    of milliseconds."""
    return _interleaved(plain, program, feeds, 1, warmup, "latency @1", block, others)


def compare_throughput(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray],
                       batch: int, *, warmup: int = 5, block: int = 4,
                       others: Mapping[str, Runner] | None = None) -> Comparison:
    """Consecutive batches of ``batch`` rows (a remainder is dropped), in alternating blocks."""
    return _interleaved(plain, program, feeds, batch, warmup, f"throughput @{batch}", block,
                        others)


def measure_means(fns: dict[str, Callable[[], object]], min_time_s: float,
                  max_reps: int = 2000, rounds: int = 20) -> dict[str, float]:
    """Mean ms per call of each function, measured in interleaved rounds after a warm-up,
    so that a machine whose speed drifts skews every function alike. The mean, not the median:
    it is the expected cost the planner minimises and the benchmark's headline measures."""
    return {k: m for k, (m, _) in measure_stats(fns, min_time_s, max_reps, rounds).items()}


def measure_stats(fns: dict[str, Callable[[], object]], min_time_s: float,
                  max_reps: int = 2000, rounds: int = 20) -> dict[str, tuple[float, float]]:
    """``measure_means``, with each function's noise beside its mean: the relative standard
    deviation of its per-round means, how far one stretch of measuring differs from another
    on this machine (0 with fewer than two rounds)."""
    clock = time.perf_counter
    for fn in fns.values():  # warm-up: first calls allocate arenas and fill caches
        t_end = clock() + min(0.05, min_time_s)
        for i in range(max_reps):
            fn()
            if i >= 10 and clock() > t_end:
                break
    times: dict[str, list[float]] = {k: [] for k in fns}
    round_means: dict[str, list[float]] = {k: [] for k in fns}
    per_round = min_time_s / rounds
    for _ in range(rounds):
        for k, fn in fns.items():
            t_end = clock() + per_round
            reps = 0
            start = len(times[k])
            while (reps < 3 or clock() < t_end) and reps < max_reps // rounds:
                t0 = clock()
                fn()
                times[k].append(clock() - t0)
                reps += 1
            round_means[k].append(float(np.mean(times[k][start:])))
    out = {}
    for k, v in times.items():
        mean = float(np.mean(v))
        rm = np.asarray(round_means[k])
        noise = float(rm.std(ddof=1) / mean) if rm.size > 1 and mean > 0 else 0.0
        out[k] = (mean * 1e3, noise)
    return out
