"""CompileSettings: every option of a compile, checked once, in one object passed down.

``eeopt.compile(model, out, **options)`` makes one from its keyword arguments; the planner, the
learned-gate compile and every backend read it instead of threading two dozen keyword
arguments by hand. Checking happens here, before any expensive work, and the messages name the
settings as ``eeopt.errors`` marks them (the command line shows its own flags instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eeopt.errors import UsageError
from eeopt.gates import LEARNED_POLICIES, GateSet
from eeopt.kernels.reference import POLICIES, check_threshold

__all__ = ["CompileSettings", "check_threshold_values", "resolve_thresholds"]

#: other names of backends
_ALIASES = {"ort": "onnxruntime"}


def check_threshold_values(threshold: float | None, thresholds: Sequence[float] | None,
                           policy: str = "maxprob") -> None:
    """Usage checks that need no model: exactly one of the two, each value valid for the
    policy."""
    if policy not in POLICIES:
        raise UsageError(f"unknown {{policy}} {policy!r}; choose one of {', '.join(POLICIES)}")
    if threshold is not None and thresholds is not None:
        raise UsageError("pass either {threshold} or {thresholds}, not both")
    if threshold is None and thresholds is None:
        raise UsageError(
            "no thresholds: pass {threshold T} (one for every exit) or {thresholds t0,t1,...} "
            "(one per early exit), or {calib DATA} {budget PP} to let the planner choose"
        )
    vals = [threshold] if threshold is not None else list(thresholds or [])
    for v in vals:
        rule = "is not a number" if not isinstance(v, (int, float)) else check_threshold(
            policy, float(v))
        if rule:
            raise UsageError(f"{{threshold}} {v} is out of range for policy {policy}: {rule}")


def resolve_thresholds(num_gated: int, threshold: float | None,
                       thresholds: Sequence[float] | None, policy: str = "maxprob"
                       ) -> list[float]:
    """One threshold per early exit, checked."""
    check_threshold_values(threshold, thresholds, policy)
    if threshold is not None:
        return [float(threshold)] * num_gated
    vals = [float(t) for t in thresholds or []]
    if len(vals) != num_gated:
        raise UsageError(
            f"got {len(vals)} thresholds; the model has {num_gated} early exits, so pass "
            f"{num_gated} values (the final classifier has no gate)"
        )
    return vals


@dataclass(frozen=True, eq=False)
class CompileSettings:
    """The options of one compile (``eeopt.compile``'s keyword arguments), checked on
    construction. ``calib``, ``profile`` and ``gates`` may hold data (arrays, a
    ``Calibration``, a ``ProfileReport``, a ``GateSet``) rather than names."""

    threshold: float | None = None
    thresholds: Sequence[float] | None = None
    policy: str = "maxprob"
    calib: Any = None
    """The planner's labelled data: a data set name, an ``.npz`` path, ``(feeds, labels)``, or
    a ready ``Calibration``."""
    budget: float | None = None
    guarantee: float | None = None
    margin: float = 2.0
    plan_batch: int = 1
    profile: Any = None
    """A ``ProfileReport`` of this model to plan with instead of profiling it again."""
    gates: GateSet | None = None
    tau: float | None = None
    lam: float | None = None
    backend: str = "onnxruntime"
    device: str = "cpu"
    gate: str = "auto"
    fp16: bool = False
    threads: int | None = 1
    """ONNX Runtime intra-op threads, for profiling and for the program (recorded: ``eeopt.load``
    runs it at this count by default); None: ONNX Runtime's default (all cores)."""
    verify: bool = True
    force: bool = False
    progress: bool = False
    dynamic_shapes: Any = None
    """A torch module's axes beyond the batch that stay dynamic (``{axis: name}`` per input,
    as ``torch.export``; see ``eeopt.frontend.export_torch``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", _ALIASES.get(self.backend, self.backend))
        if self.backend != "onnxruntime":
            self._check_other_backend()
        elif self.learned:
            self._check_learned()
        elif self.planning:
            self._check_planner()
        else:
            if self.guarantee is not None:
                raise UsageError("{guarantee} needs the planner ({calib} and {budget})")
            check_threshold_values(self.threshold, self.thresholds, self.policy)

    # ------------------------------------------------------------------ what kind of compile
    @property
    def planning(self) -> bool:
        """The planner chooses the exits and thresholds (``calib`` and ``budget``)."""
        return self.calib is not None or self.budget is not None

    @property
    def learned(self) -> bool:
        """A learned exit policy (``eeopt.gates``), trained here or given as ``gates``."""
        return (self.policy in LEARNED_POLICIES or self.gates is not None
                or self.tau is not None or self.lam is not None)

    def thresholds_for(self, num_gated: int) -> list[float]:
        """The fixed thresholds, one per early exit of a model with ``num_gated`` of them."""
        return resolve_thresholds(num_gated, self.threshold, self.thresholds, self.policy)

    # ------------------------------------------------------------------ checks
    def _check_other_backend(self) -> None:
        if self.backend == "aoti" and self.dynamic_shapes is not None:
            raise UsageError("backend 'aoti' keeps only the batch dynamic (each stage is one "
                             "AOTInductor library); for {dynamic_shapes} use backend "
                             "onnxruntime or tensorrt")
        if self.planning or self.gates is not None:
            raise UsageError(
                f"the planner ({{calib}}/{{budget}}) and learned gates run on backend "
                f"onnxruntime; for backend {self.backend!r} pass {{threshold}}/{{thresholds}} "
                "(e.g. the thresholds an onnxruntime plan chose)")
        check_threshold_values(self.threshold, self.thresholds, self.policy)

    def _check_planner(self) -> None:
        if self.calib is None or self.budget is None:
            raise UsageError("the planner needs both {calib DATA} and {budget PP}")
        if self.threshold is not None or self.thresholds is not None:
            raise UsageError("pass either {threshold}/{thresholds} or {calib}/{budget}, not both")
        self._check_budget()
        if self.policy not in POLICIES:
            raise UsageError(f"unknown {{policy}} {self.policy!r}; choose one of "
                             f"{', '.join(POLICIES)}")

    def _check_budget(self) -> None:
        assert self.budget is not None
        if not (math.isfinite(self.budget) and self.budget >= 0):
            raise UsageError(f"{{budget}} {self.budget} must be >= 0 (accuracy points)")
        if self.guarantee is not None and not 0.0 < self.guarantee < 1.0:
            raise UsageError(f"{{guarantee}} {self.guarantee} must be a probability in (0, 1)")

    def _check_learned(self) -> None:
        policy, tau, lam, gates = self.policy, self.tau, self.lam, self.gates
        if policy not in LEARNED_POLICIES:
            what = "{tau}" if tau is not None else "{lam}" if lam is not None else "{gates}"
            raise UsageError(f"{what} applies to the learned policies "
                             f"({', '.join(LEARNED_POLICIES)}), not {{policy}} {policy}")
        if tau is not None and policy != "cost-sensitive":
            raise UsageError(f"{{tau}} applies to {{policy}} cost-sensitive, not {policy}")
        if lam is not None and policy != "jei":
            raise UsageError(f"{{lam}} applies to {{policy}} jei, not {policy}")
        if tau is not None and not (math.isfinite(tau) and tau >= 0):
            raise UsageError(f"{{tau}} {tau} must be >= 0")
        if lam is not None and not (math.isfinite(lam) and lam >= 0):
            raise UsageError(f"{{lam}} {lam} must be >= 0")
        if gates is not None and not isinstance(gates, GateSet):
            raise UsageError("gates must be an eeopt.gates.GateSet (from "
                             "eeopt.gates.train_gates)")
        if gates is not None and gates.policy != policy:
            raise UsageError(f"the gates were trained for policy {gates.policy}, not {policy}")
        if gates is None and self.calib is None:
            raise UsageError(
                f"{{policy}} {policy} learns its gates from labelled data: pass {{calib DATA}} "
                "(and {budget PP} to plan the thresholds, or {threshold T} to fix them)")
        if self.budget is not None:
            if self.threshold is not None or self.thresholds is not None:
                raise UsageError("pass either {threshold}/{thresholds} or {budget}, not both")
            if self.calib is None:
                raise UsageError("the planner needs {calib DATA} with {budget PP}")
            self._check_budget()
        elif self.guarantee is not None:
            raise UsageError("{guarantee} needs the planner ({calib} and {budget})")
        if self.threshold is not None and self.thresholds is not None:
            raise UsageError("pass either {threshold} or {thresholds}, not both")
        for v in [self.threshold] if self.threshold is not None else list(self.thresholds or []):
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise UsageError(f"{{threshold}} {v} is out of range for policy {policy}: a "
                                 "learned gate's score is a probability, so 0 <= T <= 1")
