"""Choosing the exits, their thresholds and the split stage together (``eeopt plan-split``).

``measure_split`` measures what the choice needs on calibration data:

- every exit's logits (a ``Calibration`` of the program's exits);
- the device's cost of each stage: the program's own stage calls on one row, timed on this
  machine (median), or costs the caller measured on the real device (``device_ms``);
- per split stage, the carried tensors' entropy, sparsity and sizes, each tensor's accuracy
  cost when coded lossily (the rest of the network run on the decoded tensors, every row to
  the final exit), the entropy threshold ``calibrate_threshold`` places for the codec's share
  of the budget, the cost of the tensors it then codes lossily, and the bytes one row sends
  (one-row frames, as a batch-1 device sends them; split 0 sends the input, losslessly).

``plan_split_program`` then runs the exit planner (``planning.plan_exits``) once per split
stage and link bandwidth, with each stage priced where it runs (on the device, or on the edge
at ``device_ms / edge_speedup``) and the link's cost (RTT + bytes / bandwidth) on the stage
where rows cross, within what the budget leaves after that split's codec cost. At each
bandwidth the plan with the lowest expected latency wins (or, with ``objective``, the lowest
percentile of the rows' latencies); every plan is kept as a choice a link-adaptive device can
move to (``SplitPlan``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import UsageError
from eeopt.planning import Calibration, plan_exits
from eeopt.program import load_manifest, write_file
from eeopt.runtime import Program
from eeopt.runtime.base import take_rows, trim_to_longest
from eeopt.split._wire import ROWS
from eeopt.split.codec import (
    CodecStats,
    calibrate_threshold,
    choose,
    decode,
    encode,
    tensor_stats,
)
from eeopt.split.plan import OBJECTIVES, SplitChoice, SplitCosts, SplitPlan, expected_ms

__all__ = ["SplitMeasurement", "measure_split", "plan_split_program", "record_split"]

logger = logging.getLogger(__name__)

#: a threshold that never fires, per policy the split planner supports
OFF = {"maxprob": 2.0, "margin": 2.0, "entropy": -1.0}


@dataclass(frozen=True)
class SplitMeasurement:
    calib: Calibration
    device_ms: tuple[float, ...]
    """Per stage, ms per one-row call on the device."""
    bytes_per_row: tuple[float, ...]
    """Per split 0..K: bytes one row sends (K: 0)."""
    codec_bits: tuple[float | None, ...]
    """Per split 0..K-1: the codec's entropy threshold (None at 0: the input, lossless)."""
    lossy_cost_pp: tuple[float, ...]
    """Per split 0..K: the accuracy the codec's lossy tensors cost there (>= 0)."""
    stats: tuple[tuple[CodecStats, ...], ...]
    """Per split 0..K-1: each carried tensor's entropy, sizes and own lossy cost."""
    device_source: str


def _policy(program: Program) -> str:
    policies = {s.gate.policy for s in program.manifest.stages if s.gate is not None}
    if len(policies) != 1 or next(iter(policies)) not in OFF:
        raise UsageError(f"split planning tunes maxprob, entropy or margin thresholds; this "
                         f"program's gates are {', '.join(sorted(policies))}: compile it "
                         "with one of those policies")
    return next(iter(policies))


def _typical_row(program: Program, feeds: Mapping[str, np.ndarray], axes: Mapping[str, Any]
                 ) -> dict[str, np.ndarray]:
    """The first row, or for a program that trims padding, the row of median length cut to
    its tokens (as the runtime runs it)."""
    seq = program.manifest.sequence
    if seq is None or not program.trim_padding:
        return take_rows(feeds, np.arange(1), axes)
    lengths = np.count_nonzero(feeds[seq.mask], axis=1)
    i = int(np.argsort(lengths, kind="stable")[lengths.size // 2])
    return trim_to_longest(take_rows(feeds, np.array([i]), axes), seq.mask, seq.axes)[0]


def _time_stages(program: Program, row: Mapping[str, np.ndarray], min_s: float) -> list[float]:
    calls = program.stage_calls(dict(row))
    out = []
    for call in calls:
        for _ in range(3):
            call()
        times: list[float] = []
        t_end = time.perf_counter() + min_s
        while time.perf_counter() < t_end or len(times) < 20:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out.append(1e3 * float(np.median(times)))
    return out


def measure_split(program: Program, feeds: Mapping[str, np.ndarray], labels: np.ndarray, *,
                  codec_budget_pp: float, device_ms: Sequence[float] | None = None,
                  frame_rows: int = 64, time_s: float = 0.3, chunk_rows: int = 256,
                  progress: Callable[[str], None] | None = None) -> SplitMeasurement:
    """What ``plan_split_program`` needs, measured on ``feeds``/``labels`` (see the module
    docstring)."""
    say = progress or (lambda _m: None)
    policy = _policy(program)
    k = program.num_exits
    if device_ms is not None and len(device_ms) != k:
        raise UsageError(f"{{device_ms}} needs one cost per stage ({k}), got {len(device_ms)}")
    n = int(labels.shape[0])
    axes = program.manifest.batch_axes()
    # in chunks: a whole calibration set in one call grows every session's memory arena
    chunks = [np.arange(i, min(i + chunk_rows, n)) for i in range(0, n, chunk_rows)]
    say(f"running every exit on {n} calibration rows")
    parts = [program.run_all(take_rows(feeds, idx, axes)) for idx in chunks]
    calib = Calibration(tuple(np.concatenate([np.asarray(p[e], np.float32) for p in parts])
                              for e in range(k)), labels)
    off = [OFF[policy]] * (k - 1)
    if device_ms is None:
        say("timing each stage on one row (this machine is the device)")
        device = tuple(_time_stages(program, _typical_row(program, feeds, axes), time_s))
        source = "each stage's call on one row, timed on this machine (median)"
    else:
        device, source = tuple(float(v) for v in device_ms), "given"
    sample = np.linspace(0, n - 1, min(frame_rows, n)).astype(np.int64)

    def frame_bytes(split: int, methods: Callable[[dict[str, np.ndarray]], dict[str, str]]
                    ) -> float:
        sizes = []
        for i in sample:
            row = take_rows(feeds, np.array([i]), axes)
            carried = row if split == 0 else program.run_stages(row, 0, split,
                                                                thresholds=off).carried
            sizes.append(len(encode({**carried, ROWS: np.array([i], np.int64)},
                                    {**methods(carried), ROWS: "lossless"})))
        return float(np.mean(sizes))

    sizes = [frame_bytes(0, lambda t: dict.fromkeys(t, "lossless"))]
    bits: list[float | None] = [None]
    costs = [0.0]
    all_stats: list[tuple[CodecStats, ...]] = [()]
    base = float(calib.correct()[-1].mean())
    for split in range(1, k):
        say(f"split {split}: measuring the codec's accuracy cost on the carried tensors")
        carried = [program.run_stages(take_rows(feeds, idx, axes), 0, split,
                                      thresholds=off).carried for idx in chunks]

        def accuracy(methods: Callable[[dict[str, np.ndarray]], dict[str, str]],
                     _s: int = split, _c: list[dict[str, np.ndarray]] = carried) -> float:
            right = 0
            for idx, c in zip(chunks, _c, strict=True):
                tail = program.run_stages(decode(encode(c, methods(c))), _s, thresholds=off)
                right += int((tail.logits.argmax(1) == labels[idx]).sum())
            return right / n

        names = [m for m, t in carried[0].items() if t.dtype.kind == "f"]
        stats = tuple(_stats(name, [c[name] for c in carried],
                             100.0 * (base - accuracy(_only_lossy(name)))) for name in names)
        threshold = calibrate_threshold(stats, codec_budget_pp) if stats else float("inf")
        lossy = any(s.entropy_bits >= threshold for s in stats)
        cost = 100.0 * (base - accuracy(_by_entropy(threshold))) if lossy else 0.0
        bits.append(threshold if np.isfinite(threshold) else None)
        costs.append(max(cost, 0.0))
        all_stats.append(stats)
        sizes.append(frame_bytes(split, _by_entropy(threshold)))
    sizes.append(0.0)
    costs.append(0.0)
    return SplitMeasurement(calib, device, tuple(sizes), tuple(bits), tuple(costs),
                            tuple(all_stats), source)


def _stats(name: str, parts: Sequence[np.ndarray], cost_pp: float) -> CodecStats:
    """``tensor_stats`` over the chunks of one tensor, weighted by their rows."""
    each = [tensor_stats(name, p) for p in parts]
    w = np.array([p.shape[0] for p in parts], dtype=np.float64)
    w /= w.sum()

    def avg(field: str) -> float:
        return float(sum(wi * getattr(s, field) for wi, s in zip(w, each, strict=True)))

    return CodecStats(name, avg("entropy_bits"), avg("zero_share"), avg("raw_bytes"),
                      avg("lossless_bytes"), avg("lossy_bytes"), cost_pp)


def _only_lossy(name: str) -> Callable[[dict[str, np.ndarray]], dict[str, str]]:
    def methods(tensors: dict[str, np.ndarray]) -> dict[str, str]:
        return {m: "lossy" if m == name else "lossless" for m in tensors}
    return methods


def _by_entropy(threshold: float) -> Callable[[dict[str, np.ndarray]], dict[str, str]]:
    def methods(tensors: dict[str, np.ndarray]) -> dict[str, str]:
        return {name: choose(t, threshold) for name, t in tensors.items()}
    return methods


class _Fit:
    """A fixed cost, as the exit planner's profile hands them out (``per_row``)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def per_row(self, batch: float) -> float:
        return self.ms


class _SplitProfile:
    """The exit planner's profile for one split and link: stage j costs ``device_ms[j]`` on
    the device (j < split) or ``/ edge_speedup`` on the edge, and the stage where rows cross
    also pays the link."""

    def __init__(self, device_ms: Sequence[float], split: int, speedup: float,
                 link_ms: float) -> None:
        self.stage_ms = [ms if j < split else ms / speedup for j, ms in enumerate(device_ms)]
        self.split, self.link_ms = split, link_ms
        self.plain = _Fit(sum(self.stage_ms) + (link_ms if split < len(device_ms) else 0.0))

    def stage_cost(self, prev: int, exit: int) -> _Fit:
        ms = sum(self.stage_ms[prev + 1:exit + 1])
        if prev + 1 <= self.split <= exit:
            ms += self.link_ms
        return _Fit(ms)


def plan_split_program(m: SplitMeasurement, *, policy: str, budget_pp: float,
                       edge_speedup: float, rtt_ms: float, bandwidths_bps: Sequence[float],
                       progress: Callable[[str], None] | None = None,
                       info: dict[str, Any] | None = None, objective: str = "mean"
                       ) -> SplitPlan:
    """The joint plan (see the module docstring); ``table`` has one row per bandwidth.
    ``objective``: what the choice among the plans minimises, the mean latency of a row or a
    percentile (``p50``, ``p90``, ``p99``); each split's exits and thresholds are planned for
    the mean either way (the exit planner's cost)."""
    say = progress or (lambda _m: None)
    if objective not in OBJECTIVES:
        raise UsageError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got "
                         f"{objective!r}")
    if edge_speedup <= 0 or rtt_ms < 0 or not bandwidths_bps or min(bandwidths_bps) <= 0:
        raise UsageError("the edge speed-up and bandwidths must be > 0 and the RTT >= 0")
    k = len(m.device_ms)
    choices: list[SplitChoice] = []
    table: list[dict[str, Any]] = []

    def add(c: SplitChoice) -> int:
        for i, old in enumerate(choices):
            if old.split == c.split and old.thresholds == c.thresholds:
                return i
        choices.append(c)
        return len(choices) - 1

    for bw in bandwidths_bps:
        say(f"planning exits for every split at {bw / 1e6:g} Mbit/s")
        row: dict[str, Any] = {"bandwidth_bps": float(bw), "per_split_ms": [],
                               "per_split_mean_ms": []}
        for split in range(k + 1):
            left = budget_pp - m.lossy_cost_pp[split]
            if left < 0:
                row["per_split_ms"].append(None)
                row["per_split_mean_ms"].append(None)
                continue
            link = rtt_ms + 8e3 * m.bytes_per_row[split] / bw if split < k else 0.0
            ep = plan_exits(m.calib, _SplitProfile(m.device_ms, split, edge_speedup, link),
                            budget_pp=left, policy=policy, batch=1)
            thr = [OFF[policy]] * (k - 1)
            fractions = [0.0] * k
            for i, e in enumerate(ep.kept):
                if e < k - 1:
                    thr[e] = float(ep.thresholds[i])
                fractions[e] = float(ep.exit_fractions[i])
            c = SplitChoice(split, tuple(thr), SplitCosts.from_exit_fractions(
                m.device_ms, fractions, m.bytes_per_row, edge_speedup),
                m.lossy_cost_pp[split])
            i = add(c)
            row["per_split_ms"].append(c.latency_ms(bw, rtt_ms, objective))
            row["per_split_mean_ms"].append(expected_ms(c.costs, split, bw, rtt_ms))
            row.setdefault("plans", []).append({"split": split, "choice": i,
                                                "loss_pp": ep.predicted_loss_pp,
                                                "holdout_loss_pp": ep.holdout.get("loss_pp")})
        table.append(row)
    plan = SplitPlan(tuple(choices), float(rtt_ms), (*m.codec_bits, None), 0,
                     float(budget_pp), (), info, objective)
    rows = []
    for row in table:
        best = plan.best(row["bandwidth_bps"])
        c = plan.choices[best]
        rows.append({**row, "choice": best, "split": c.split,
                     "expected_ms": c.expected_ms(row["bandwidth_bps"], rtt_ms),
                     "objective_ms": c.latency_ms(row["bandwidth_bps"], rtt_ms, objective),
                     "thresholds": list(c.thresholds), "lossy_cost_pp": c.lossy_cost_pp,
                     "bytes_per_crossing_row": m.bytes_per_row[c.split]})
    mid = float(np.exp(np.mean(np.log(np.asarray(bandwidths_bps, dtype=float)))))
    return replace(plan, default=plan.best(mid), table=tuple(rows))


def record_split(program_dir: str | Path, plan: SplitPlan) -> Path:
    """Keep ``plan`` in the program's manifest (``split``), written atomically. The manifest's
    sha256, the program hash an edge checks, changes with it."""
    d = Path(program_dir)
    manifest = replace(load_manifest(d), split=plan.to_record())
    return write_file(d / "manifest.json", manifest.to_json())
