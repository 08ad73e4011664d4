"""The plan's record in the manifest (``manifest.json``'s ``plan``): which exits the planner kept,
their thresholds, what it predicted on calibration data, and the cost model it priced them with.

Typed records, read and checked like the rest of the manifest (``ManifestError`` naming the
field), and written back as the same JSON. Fields older programs did not record have defaults;
keys this version does not know are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from eeopt.errors import ManifestError

__all__ = ["CostModelRecord", "CostRecord", "PlanRecord"]


def _num(d: dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ManifestError(f"manifest: {where}.{key} must be a number; recompile")
    return float(v)


@dataclass(frozen=True)
class CostRecord:
    """One call's latency as ``fixed_ms + per_row_ms * batch``, and the mean ms measured at each
    batch size it was fitted to."""

    fixed_ms: float
    per_row_ms: float
    samples: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fixed_ms": self.fixed_ms, "per_row_ms": self.per_row_ms,
                "samples": {str(b): t for b, t in self.samples.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CostRecord:
        if not isinstance(d, dict) or not isinstance(d.get("samples", {}), dict):
            raise ManifestError(f"manifest: {where} must be a cost record; recompile")
        try:
            samples = {int(b): float(t) for b, t in d.get("samples", {}).items()}
        except (TypeError, ValueError):
            raise ManifestError(f"manifest: {where}.samples holds a non-number; recompile"
                                ) from None
        return cls(_num(d, "fixed_ms", where), _num(d, "per_row_ms", where), samples)


@dataclass(frozen=True)
class CostModelRecord:
    """The cost model a plan was priced with: the plain network, and each kept stage (profile
    plus closed-loop corrections), in stage order."""

    plain: CostRecord
    stages: tuple[CostRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"plain": self.plain.to_dict(), "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CostModelRecord:
        if not isinstance(d, dict) or not isinstance(d.get("stages"), list):
            raise ManifestError(f"manifest: {where} must hold plain and stages; recompile")
        return cls(CostRecord.from_dict(d.get("plain"), f"{where}.plain"),
                   tuple(CostRecord.from_dict(s, f"{where}.stages[{i}]")
                         for i, s in enumerate(d["stages"])))


@dataclass(frozen=True, kw_only=True)
class PlanRecord:
    """What the planner chose and why (see ``eeopt.planning.ExitPlan``), as the manifest keeps
    it, its fields in the manifest's order. Latencies are ms per row; accuracies are
    fractions; ``*_pp`` are percentage points."""

    policy: str
    kept: tuple[int, ...]
    """Kept exits, as indices into the source model's outputs; the final exit is last."""
    thresholds: tuple[float, ...]
    budget_pp: float
    batch: int
    """The batch size the latency was priced at."""
    predicted_accuracy: float
    final_accuracy: float
    predicted_latency_ms: float
    plain_latency_ms: float
    exit_fractions: tuple[float, ...]
    search_rows: int
    holdout: dict[str, float] = field(default_factory=dict)
    """The plan on calibration rows the search never saw: rows, accuracy, loss_pp, ..."""
    guarantee: float | None = None
    exact: bool = True
    margin_pp: float = 0.0
    promise: dict[str, Any] = field(default_factory=dict)
    """What the plan promises about its loss on fresh data (``eeopt.planning.Promise``): kind
    ("best-effort" or "guarantee"), probability, fresh_rows, the held-out loss and its
    interval; empty for plans made before it was recorded."""
    predicted_loss_pp: float
    predicted_speedup: float
    kept_outputs: tuple[str, ...]
    """The kept exits' output names in the source model."""
    calibration: str = ""
    """The calibration data's name or path ("arrays" when it was given as arrays)."""
    profile_threads: int = 0
    cost_corrections_ms: tuple[float, ...] = ()
    cost_model: CostModelRecord | None = None
    exit_benefit: tuple[dict[str, float], ...] | None = None
    """Per early exit, its cross-validated benefit alone with the final exit."""
    gate_train_rows: int | None = None
    """Learned policies: the calibration rows the gates trained on."""
    plan_rows: int | None = None
    """Learned policies: the rows the planner saw."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object (optional fields only when set)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (v is None and f.name in _OMITTED_WHEN_NONE) or (
                    f.name == "promise" and not v):  # older plans did not record one
                continue
            if f.name == "cost_model":
                out[f.name] = None if v is None else v.to_dict()
            elif isinstance(v, tuple):
                out[f.name] = [dict(x) if isinstance(x, dict) else x for x in v]
            elif isinstance(v, dict):
                out[f.name] = dict(v)
            else:
                out[f.name] = v
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> PlanRecord:
        """Read and check a manifest's ``plan`` object."""
        where = "plan"
        if not isinstance(d, dict):
            raise ManifestError("manifest: plan must be an object or null; recompile")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra" or f.name not in d:
                continue
            values[f.name] = _read(f.name, d[f.name], where)
        missing = [f.name for f in fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ManifestError(f"manifest: {where} is missing the field {missing[0]!r}; "
                                "recompile")
        values["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**values)


_OMITTED_WHEN_NONE = frozenset({"exit_benefit", "gate_train_rows", "plan_rows"})


def _read(name: str, v: Any, where: str) -> Any:
    """One field of the plan, checked and converted to its type."""
    here = f"{where}.{name}"
    bad = ManifestError(f"manifest: {here} has the wrong type; recompile")
    if name in ("policy", "calibration"):
        if not isinstance(v, str):
            raise bad
        return v
    if name in ("batch", "search_rows", "profile_threads", "gate_train_rows", "plan_rows"):
        if v is None and name in _OMITTED_WHEN_NONE:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad
        return v
    if name == "exact":
        if not isinstance(v, bool):
            raise bad
        return v
    if name == "guarantee":
        return None if v is None else _num({name: v}, name, where)
    if name == "kept":
        if not isinstance(v, (list, tuple)) or not all(
                isinstance(k, int) and not isinstance(k, bool) for k in v):
            raise bad
        return tuple(v)
    if name == "kept_outputs":
        if not isinstance(v, (list, tuple)) or not all(isinstance(k, str) for k in v):
            raise bad
        return tuple(v)
    if name in ("thresholds", "exit_fractions", "cost_corrections_ms"):
        if not isinstance(v, (list, tuple)):
            raise bad
        return tuple(_num({name: x}, name, where) for x in v)
    if name == "promise":
        if not isinstance(v, dict):
            raise bad
        return dict(v)
    if name == "holdout":
        if not isinstance(v, dict):
            raise bad
        return {str(k): (float(x) if isinstance(x, (int, float)) and not isinstance(x, bool)
                         else x) for k, x in v.items()}
    if name == "cost_model":
        return None if v is None else CostModelRecord.from_dict(v, here)
    if name == "exit_benefit":
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, dict) for x in v):
            raise bad
        return tuple(dict(x) for x in v)
    return _num({name: v}, name, where)  # the other fields are numbers
