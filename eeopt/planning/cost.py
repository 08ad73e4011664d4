"""The cost model: measured latency of each stage, head + gate, the plain network and the
runtime's own per-stage cost, each fitted as ``fixed + per_row * batch`` (``CostFit``), and what
a choice of kept exits costs by it. Pure: the measuring is ``eeopt.measure.profile``'s.

A stage from kept exit i to kept exit j costs the backbone segments between them, exit j's
head + gate, and one stage call (``ProfileReport.stage_cost``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eeopt.program import CostModelRecord, CostRecord

__all__ = ["ZERO", "CostFit", "NodeTime", "PlannedCosts", "ProfileReport", "StageProfile",
           "ideal_and_predicted"]


@dataclass(frozen=True)
class CostFit:
    """Latency of one call as ``fixed_ms + per_row_ms * batch``, fitted to means."""

    fixed_ms: float
    per_row_ms: float
    samples: dict[int, float]
    """Measured mean ms per call, by batch size."""

    def at(self, batch: float) -> float:
        """ms per call at ``batch``: the measured mean where there is one, else the fit."""
        if batch in self.samples:
            return self.samples[int(batch)]
        return self.fixed_ms + self.per_row_ms * batch

    def per_row(self, batch: float) -> float:
        """ms per row when calls carry ``batch`` rows."""
        return self.at(batch) / batch

    def record(self) -> CostRecord:
        """As the manifest records it."""
        return CostRecord(self.fixed_ms, self.per_row_ms, dict(self.samples))

    @classmethod
    def of(cls, record: CostRecord) -> CostFit:
        """From the manifest's record."""
        return cls(record.fixed_ms, record.per_row_ms, dict(record.samples))

    @classmethod
    def fit(cls, samples: dict[int, float]) -> CostFit:
        bs = np.array(sorted(samples), dtype=float)
        ts = np.array([samples[int(b)] for b in bs])
        if len(bs) == 1:
            return cls(0.0, float(ts[0] / bs[0]), dict(samples))
        slope, icpt = np.polyfit(bs, ts, 1)
        slope, icpt = max(float(slope), 0.0), max(float(icpt), 0.0)
        return cls(icpt, slope, {int(b): float(t) for b, t in zip(bs, ts, strict=True)})

    def _keys(self, other: CostFit) -> set[int]:
        """Batch sizes to combine at: the common measured ones, or (when one side is a pure
        fit with no samples, such as ZERO) the other side's."""
        if not self.samples or not other.samples:
            return set(self.samples) | set(other.samples)
        return set(self.samples) & set(other.samples)

    def __add__(self, other: CostFit) -> CostFit:
        return CostFit(self.fixed_ms + other.fixed_ms, self.per_row_ms + other.per_row_ms,
                       {b: self.at(b) + other.at(b) for b in self._keys(other)})

    def __sub__(self, other: CostFit) -> CostFit:
        return CostFit.fit({b: max(self.at(b) - other.at(b), 0.0) for b in self._keys(other)})


ZERO = CostFit(0.0, 0.0, {})


@dataclass(frozen=True)
class NodeTime:
    stage: int
    name: str
    """The node as ONNX Runtime ran it (after its graph optimizations and fusions)."""
    op: str
    us: float
    """Median microseconds per call at batch 1."""


@dataclass(frozen=True)
class StageProfile:
    """One exit's share of the cost, measured with every exit kept."""

    exit: int
    output: str
    stage: CostFit
    """The whole stage call: backbone segment + head + gate + call overhead."""
    head_gate: CostFit
    """The exit head and its gate, run on their own (one call included); ZERO for the final."""
    backbone: CostFit
    """stage - head_gate: the backbone segment from the previous exit to this one."""
    node_us: float
    """Sum of ONNX Runtime's per-node times at batch 1."""
    gate_us: float
    """The fused gate's nodes, from the same profile."""
    macs: int


@dataclass(frozen=True)
class ProfileReport:
    model: str
    threads: int
    batches: tuple[int, ...]
    exits: tuple[StageProfile, ...]
    plain: CostFit
    """The plain network: the model cut to its final output, one call."""
    runtime: CostFit
    """The runtime's own cost per stage (Python, output handling), beyond the stage call."""
    plain_macs: int
    nodes: tuple[NodeTime, ...] = ()
    corrections_ms: tuple[float, ...] = ()
    """Per exit, a per-call correction measured by running a planned program on calibration
    data (closed loop): what isolated, warm measurements miss, mostly the cold caches of
    stages that few rows reach. Added to every stage that runs that exit's segment."""
    noise: float = 0.0
    """How far one stretch of measuring differs from another on this machine: the median
    relative standard deviation of the per-round means of the stage calls and the plain
    network. Costs closer than this are not told apart by the profile."""

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def stage_cost(self, prev: int, exit: int) -> CostFit:
        """A stage that runs from kept exit ``prev`` (-1: the input) to kept exit ``exit``,
        dropping any exit between them."""
        cost = self.runtime
        for m in range(prev + 1, exit + 1):
            cost = cost + (self.exits[m].backbone if m < exit else ZERO)
        e = self.exits[exit]
        cost = cost + (e.stage if exit == prev + 1 else (e.backbone + e.head_gate))
        if self.corrections_ms:
            extra = sum(self.corrections_ms[m] for m in range(prev + 1, exit + 1))
            cost = cost + CostFit(extra, 0.0, {})
        return cost

    def cumulative_ms(self, kept: list[int], batch: float = 1.0) -> list[float]:
        """Per kept exit: what a row leaving there has paid, at ``batch`` rows per call
        (fixed costs shared across the batch)."""
        out, total, prev = [], 0.0, -1
        for k in kept:
            total += self.stage_cost(prev, k).per_row(batch)
            out.append(total)
            prev = k
        return out

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PlannedCosts:
    """The plan's own cost model (manifest ``plan.cost_model``), as ``stage_cost``."""

    plain: CostFit
    stages: dict[tuple[int, int], CostFit]

    @classmethod
    def of(cls, cost_model: CostModelRecord | None, kept: list[int]) -> PlannedCosts | None:
        """The plan's cost model for the program's ``kept`` exits (None without one, or
        with one priced for other exits)."""
        if cost_model is None or len(cost_model.stages) != len(kept):
            return None
        prevs = [-1, *kept[:-1]]
        return cls(CostFit.of(cost_model.plain),
                   {(p, k): CostFit.of(r)
                    for p, k, r in zip(prevs, kept, cost_model.stages, strict=True)})

    def stage_cost(self, prev: int, exit: int) -> CostFit:
        return self.stages[(prev, exit)]


def ideal_and_predicted(profile: Any, kept: list[int], fractions: np.ndarray,
                         batch: int, predict_with: Any = None) -> tuple[float, float]:
    """Expected ms per row from the profile and a measured exit distribution: ideal (bare,
    warm stage calls) and predicted (with the runtime's own cost, and the plan's closed-loop
    corrections when ``predict_with`` carries them).

    A call of ``batch`` rows runs the first stage on every row; a later stage runs once, on the
    rows still there, if any is: with ``reach`` the fraction of rows that get that far, it
    costs ``fixed * P(any row reaches it) + per_row * batch * reach`` per batch. (At batch 1
    that is ``reach * cost(1)``.)"""
    predict_with = predict_with or profile
    rt = profile.runtime

    def expected(cost: Any, reach: float) -> float:
        if batch == 1:
            return reach * cost.at(1)
        if reach >= 1.0:
            return cost.at(batch) / batch
        called = 1.0 - (1.0 - reach) ** batch
        return (cost.fixed_ms * called + cost.per_row_ms * batch * reach) / batch

    pred = ideal = 0.0
    prev = -1
    for g, k in enumerate(kept):
        reach = float(np.sum(fractions[g:])) if g else 1.0
        pred += expected(predict_with.stage_cost(prev, k), reach)
        ideal += expected(profile.stage_cost(prev, k) - rt, reach)
        prev = k
    return ideal, pred
