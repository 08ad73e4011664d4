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

from collections.abc import Sequence
from dataclasses import dataclass

from eeopt.errors import UsageError

__all__ = ["SplitCosts", "boundaries", "expected_ms", "plan_split"]


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
    import math

    grid = [lo_bps * (hi_bps / lo_bps) ** (i / steps) for i in range(steps + 1)]
    out: list[tuple[float, int]] = []
    prev = plan_split(c, grid[0], rtt_ms)[0]
    for a, b in zip(grid, grid[1:], strict=False):
        cur = plan_split(c, b, rtt_ms)[0]
        if cur != prev:
            x, y = a, b
            while y / x > 1.001:
                m = math.sqrt(x * y)
                if plan_split(c, m, rtt_ms)[0] == prev:
                    x = m
                else:
                    y = m
            out.append((y, cur))
            prev = cur
    return out
