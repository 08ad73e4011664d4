"""Where to split a program between a device and an edge server, per link bandwidth: the
expected end-to-end latency of one row for every split point, from the stages' costs, the share
of rows that reach each stage (the plan's exit mix), the bytes that cross at each point (the
codec's), and a link model (bandwidth, RTT).

Split ``s`` runs stages ``0..s-1`` on the device and ``s..K-1`` on the edge; ``s = 0`` sends
the raw input, ``s = K`` never uses the link. A row that exits on the device never crosses:

    L(s) = sum_{k<s} reach_k * dev_k
           + reach_s * (rtt + 8 * bytes_s / bandwidth)          (s < K)
           + sum_{k>=s} reach_k * dev_k / edge_speedup

``edge_speedup`` is how much faster the edge runs a stage than the device (this project has one
machine: the edge is this machine scaled by a stated factor). The boundaries in bandwidth where
the best split changes are what a link-adaptive device watches (``boundaries``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eeopt.errors import ManifestError, UsageError

__all__ = ["OBJECTIVES", "SplitChoice", "SplitCosts", "SplitPlan", "boundaries", "expected_ms",
           "latency_ms", "plan_split", "row_latencies"]


@dataclass(frozen=True)
class SplitCosts:
    """What the choice needs, per stage ``k`` of ``K``: ``device_ms[k]`` (per row, on the
    device), ``reach[k]`` (share of rows that run stage k), and per split ``s`` in ``0..K``:
    ``bytes[s]`` crossing per row (``bytes[K]`` is 0)."""

    device_ms: tuple[float, ...]
    reach: tuple[float, ...]
    bytes: tuple[float, ...]
    edge_speedup: float = 1.0

    def __post_init__(self) -> None:
        k = len(self.device_ms)
        if k < 1 or len(self.reach) != k or len(self.bytes) != k + 1:
            raise UsageError(f"split costs need K stage costs and reaches and K + 1 byte "
                             f"counts, got {len(self.device_ms)}, {len(self.reach)}, "
                             f"{len(self.bytes)}")
        if not self.edge_speedup > 0:
            raise UsageError(f"the edge speed-up must be > 0, got {self.edge_speedup}")
        if any(not 0.0 <= r <= 1.0 for r in self.reach) or any(b < 0 for b in self.bytes):
            raise UsageError("reach shares must be in [0, 1] and byte counts >= 0")

    @classmethod
    def from_exit_fractions(cls, device_ms: Sequence[float], exit_fractions: Sequence[float],
                            bytes_: Sequence[float], edge_speedup: float = 1.0) -> SplitCosts:
        """``reach[k] = 1 - sum_{j<k} exit_fractions[j]``."""
        reach, left = [], 1.0
        for f in exit_fractions:
            reach.append(max(0.0, min(1.0, left)))
            left -= f
        return cls(tuple(device_ms), tuple(reach), tuple(bytes_), edge_speedup)


def expected_ms(c: SplitCosts, split: int, bandwidth_bps: float, rtt_ms: float) -> float:
    """``L(split)``: a row's expected end-to-end latency, ms."""
    k = len(c.device_ms)
    if not 0 <= split <= k:
        raise UsageError(f"split {split} is not in 0..{k}")
    total = sum(c.reach[j] * c.device_ms[j] for j in range(split))
    if split < k:
        total += c.reach[split] * (rtt_ms + 8e3 * c.bytes[split] / bandwidth_bps)
        total += sum(c.reach[j] * c.device_ms[j] / c.edge_speedup for j in range(split, k))
    return float(total)


#: what a split choice may minimise: the mean latency of a row, or a percentile of it
OBJECTIVES = ("mean", "p50", "p90", "p99")


def row_latencies(c: SplitCosts, split: int, bandwidth_bps: float, rtt_ms: float
                  ) -> list[tuple[float, float]]:
    """Per exit ``j``: ``(ms, share)``, the end-to-end latency of a row that leaves there
    and the share of rows that do (``reach[j] - reach[j + 1]``). Their weighted mean is
    ``expected_ms``."""
    k = len(c.device_ms)
    if not 0 <= split <= k:
        raise UsageError(f"split {split} is not in 0..{k}")
    out, total = [], 0.0
    for j in range(k):
        if j == split:
            total += rtt_ms + 8e3 * c.bytes[split] / bandwidth_bps
        total += c.device_ms[j] if j < split else c.device_ms[j] / c.edge_speedup
        out.append((total, c.reach[j] - (c.reach[j + 1] if j + 1 < k else 0.0)))
    return out


def latency_ms(c: SplitCosts, split: int, bandwidth_bps: float, rtt_ms: float,
               objective: str = "mean") -> float:
    """A row's latency at ``split`` by ``objective`` (``OBJECTIVES``): the mean
    (``expected_ms``) or a percentile of the rows' latencies (``p50``: the latency the median
    row sees)."""
    if objective == "mean":
        return expected_ms(c, split, bandwidth_bps, rtt_ms)
    if objective not in OBJECTIVES:
        raise UsageError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got "
                         f"{objective!r}")
    q = float(objective[1:]) / 100.0
    rows = sorted(row_latencies(c, split, bandwidth_bps, rtt_ms))
    total = sum(w for _, w in rows)
    seen = 0.0
    for ms, w in rows:
        seen += w
        if seen >= q * total - 1e-12:
            return ms
    return rows[-1][0]


def plan_split(c: SplitCosts, bandwidth_bps: float, rtt_ms: float) -> tuple[int, list[float]]:
    """The split with the lowest expected latency (the later one on a tie: fewer bytes sent),
    and every split's latency."""
    if not bandwidth_bps > 0 or rtt_ms < 0:
        raise UsageError("the bandwidth must be > 0 and the RTT >= 0")
    lat = [expected_ms(c, s, bandwidth_bps, rtt_ms) for s in range(len(c.device_ms) + 1)]
    best = min(range(len(lat)), key=lambda s: (lat[s], -s))
    return best, lat


def boundaries(c: SplitCosts, rtt_ms: float, lo_bps: float = 1e5, hi_bps: float = 1e10,
               steps: int = 400) -> list[tuple[float, int]]:
    """``(bandwidth, split)`` where the best split changes, scanning ``lo..hi`` on a log grid
    (then bisected to 0.1%): the link-adaptive device's switching points."""
    return _switches(lambda bw: plan_split(c, bw, rtt_ms)[0], lo_bps, hi_bps, steps)


def _switches(best: Callable[[float], int], lo_bps: float, hi_bps: float, steps: int
              ) -> list[tuple[float, int]]:
    """``(bandwidth, best(bandwidth))`` where ``best`` changes: a log grid, then bisection."""
    grid = [lo_bps * (hi_bps / lo_bps) ** (i / steps) for i in range(steps + 1)]
    out: list[tuple[float, int]] = []
    prev = best(grid[0])
    for a, b in zip(grid, grid[1:], strict=False):
        cur = best(b)
        if cur != prev:
            x, y = a, b
            while y / x > 1.001:
                m = math.sqrt(x * y)
                if best(m) == prev:
                    x = m
                else:
                    y = m
            out.append((y, cur))
            prev = cur
    return out


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


@dataclass(frozen=True)
class SplitChoice:
    """One way to run split: the split stage, the thresholds of every gated exit (an exit
    the plan drops has its policy's never-fire value) and what it costs (``costs``)."""

    split: int
    thresholds: tuple[float, ...]
    costs: SplitCosts
    lossy_cost_pp: float = 0.0
    """The codec's measured accuracy cost at this split, inside the budget."""

    def expected_ms(self, bandwidth_bps: float, rtt_ms: float) -> float:
        return expected_ms(self.costs, self.split, bandwidth_bps, rtt_ms)

    def latency_ms(self, bandwidth_bps: float, rtt_ms: float, objective: str = "mean"
                   ) -> float:
        return latency_ms(self.costs, self.split, bandwidth_bps, rtt_ms, objective)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "thresholds": list(self.thresholds),
                "device_ms": list(self.costs.device_ms), "reach": list(self.costs.reach),
                "bytes": list(self.costs.bytes), "edge_speedup": self.costs.edge_speedup,
                "lossy_cost_pp": self.lossy_cost_pp}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitChoice:
        return cls(int(d["split"]), tuple(float(t) for t in d["thresholds"]),
                   SplitCosts(tuple(map(float, d["device_ms"])), tuple(map(float, d["reach"])),
                              tuple(map(float, d["bytes"])), float(d["edge_speedup"])),
                   float(d.get("lossy_cost_pp", 0.0)))


@dataclass(frozen=True)
class SplitPlan:
    """What ``eeopt plan-split`` chose and the manifest keeps (``split``): the candidate
    choices, the link's RTT they were priced at, the codec's entropy threshold per split
    stage (None: lossless), the choice to start with (``default``) and the table printed per
    bandwidth. ``best(bw)`` is the choice with the lowest latency at ``bw`` by ``objective``
    (the mean, or a percentile: ``OBJECTIVES``); a tie goes to the later split (fewer bytes
    sent)."""

    choices: tuple[SplitChoice, ...]
    rtt_ms: float
    codec_bits: tuple[float | None, ...]
    default: int = 0
    budget_pp: float = 0.0
    table: tuple[dict[str, Any], ...] = ()
    info: dict[str, Any] | None = None
    objective: str = "mean"

    def best(self, bandwidth_bps: float) -> int:
        lat = [c.latency_ms(bandwidth_bps, self.rtt_ms, self.objective) for c in self.choices]
        return min(range(len(lat)), key=lambda i: (lat[i], -self.choices[i].split))

    def codec_threshold(self, split: int) -> float | None:
        return self.codec_bits[split] if 0 <= split < len(self.codec_bits) else None

    def boundaries(self, lo_bps: float = 1e5, hi_bps: float = 1e10, steps: int = 400
                   ) -> list[tuple[float, int]]:
        """``(bandwidth, choice)`` where the best choice changes (log grid, bisected)."""
        return _switches(self.best, lo_bps, hi_bps, steps)

    def to_record(self) -> dict[str, Any]:
        """The manifest's ``split`` (strict JSON: a non-finite number becomes null)."""
        return _finite({"rtt_ms": self.rtt_ms, "budget_pp": self.budget_pp,
                        "objective": self.objective, "default": self.default,
                        "codec_bits": list(self.codec_bits),
                        "choices": [c.to_dict() for c in self.choices],
                        "boundaries": [[bw, c] for bw, c in self.boundaries()],
                        "table": list(self.table), "info": self.info or {}})

    @classmethod
    def from_record(cls, d: Any, num_stages: int, num_gated: int) -> SplitPlan:
        """The manifest's ``split`` record, checked against the program (``ManifestError``
        naming what is wrong)."""
        try:
            plan = cls(tuple(SplitChoice.from_dict(c) for c in d["choices"]),
                       float(d["rtt_ms"]),
                       tuple(None if b is None else float(b) for b in d["codec_bits"]),
                       int(d.get("default", 0)), float(d.get("budget_pp", 0.0)),
                       tuple(d.get("table", ())), dict(d.get("info") or {}),
                       str(d.get("objective", "mean")))
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise ManifestError(f"manifest: the split plan is malformed ({exc}); run eeopt "
                                "plan-split again") from None
        bad = [c for c in plan.choices if not 0 <= c.split <= num_stages
               or len(c.thresholds) != num_gated or len(c.costs.device_ms) != num_stages]
        if (not plan.choices or bad or not 0 <= plan.default < len(plan.choices)
                or plan.objective not in OBJECTIVES):
            raise ManifestError("manifest: the split plan does not fit this program's stages; "
                                "run eeopt plan-split again")
        return plan

    @classmethod
    def of_manifest(cls, manifest: Any) -> SplitPlan | None:
        record = getattr(manifest, "split", None)
        if not record:
            return None
        return cls.from_record(record, manifest.num_exits, manifest.num_exits - 1)
