"""The planner's orchestration: profile -> calibrate -> plan -> closed loop -> plan again ->
the plan's manifest record. The searching itself is ``eeopt.planning``'s (pure); the measuring
is ``eeopt.measure``'s. Both the fixed policies (``plan_program``) and the learned ones
(``eeopt.compiler.learned``) go through ``closed_loop`` and ``plan_record``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from eeopt.build import AnalysedModel, SubModels
from eeopt.compiler.settings import CompileSettings
from eeopt.data import load_labelled
from eeopt.errors import UnsupportedModelError
from eeopt.kernels.onnx_learned_gate import LearnedGate
from eeopt.measure import calibrate, measure_corrections, profile_model
from eeopt.planning import Calibration, ExitPlan, ProfileReport, exit_benefit, plan_exits
from eeopt.program import CostModelRecord, PlanRecord

__all__ = ["NOISE_SIGMAS", "PROFILE_ROWS", "PlannedProgram", "closed_loop", "cost_tolerance",
           "plan_program", "plan_record", "profile_for", "refuse_final_only"]

logger = logging.getLogger(__name__)


#: how many times the profile's measured noise two costs must differ by to count as different
NOISE_SIGMAS = 2.0
#: the calibration rows the profile runs on (tiled to each batch size it times)
PROFILE_ROWS = 64


def profile_for(model: AnalysedModel, settings: CompileSettings,
                feeds: dict[str, np.ndarray] | None = None) -> ProfileReport:
    """The settings' ready profile, else a fresh one of ``model`` on this machine, at the
    settings' thread count, on the first rows of the calibration ``feeds`` when given (the
    deployment's own shapes: a text model's sequence length, say), else on the model's
    example inputs."""
    if settings.profile is not None:
        return settings.profile  # type: ignore[no-any-return]
    example = ({k: v[:PROFILE_ROWS] for k, v in feeds.items()} if feeds is not None
               else model.example)
    return profile_model(model.graph.model, threads=settings.threads,
                         example_inputs=example, progress=settings.progress)


def cost_tolerance(report: ProfileReport) -> float:
    """Relative cost differences the search counts as equal: ``NOISE_SIGMAS`` times the
    profile's measured noise."""
    return NOISE_SIGMAS * report.noise


def refuse_final_only(plan: ExitPlan, budget: float, what: str = "") -> None:
    """A plan that keeps only the final classifier is no program to compile: one line saying
    why (the promise's note, when the promise forced it) and what to change."""
    if len(plan.kept) > 1:
        return
    why = plan.promise.note if plan.promise is not None and plan.promise.note else (
        "the plan keeps only the final classifier")
    raise UnsupportedModelError(
        f"no early exit pays off within a {budget:g} pp budget on this data{what}: {why}; "
        "raise {budget}, or calibrate on more rows")


def closed_loop(model: AnalysedModel, sub: SubModels, plan: ExitPlan, report: ProfileReport,
                feeds: dict[str, np.ndarray], policy: str, threads: int | None,
                replan: Callable[[ProfileReport], ExitPlan],
                gates: Callable[[Sequence[int]], Sequence[LearnedGate]] | None = None,
                ) -> tuple[ExitPlan, ProfileReport, tuple[float, ...]]:
    """Run the planned program on calibration rows, one at a time, correct the cost model by
    what isolated warm measurements missed (cold caches of stages few rows reach), and plan
    again with ``replan(report)``. Returns the new plan, the corrected report and the
    corrections. ``gates(kept)`` gives learned gates for the kept exits."""
    corrections = measure_corrections(model, sub(plan.kept), plan, report, feeds, policy,
                                      threads,
                                      gates=None if gates is None else gates(plan.kept))
    report = replace(report, corrections_ms=corrections)
    return replan(report), report, corrections


def plan_record(plan: ExitPlan, report: ProfileReport, kept_names: list[str], calib: Any,
                corrections: Sequence[float]) -> PlanRecord:
    """The plan's manifest record: the plan, what it was calibrated on, and the cost model it
    was priced with (profile + closed-loop corrections, per kept stage), which `eeopt bench`
    compares its measurements against."""
    stage_costs, prev = [], -1
    for k in plan.kept:
        stage_costs.append(report.stage_cost(prev, k).record())
        prev = k
    cost_model = CostModelRecord(report.plain.record(), tuple(stage_costs))
    return PlanRecord.from_dict({
        **plan.to_dict(), "kept_outputs": kept_names,
        "calibration": str(calib) if isinstance(calib, (str, os.PathLike)) else "arrays",
        "profile_threads": report.threads, "cost_corrections_ms": list(corrections),
        "cost_model": cost_model.to_dict()})


@dataclass(frozen=True)
class PlannedProgram:
    """What the planner chose: the model cut to the kept exits, their thresholds, and the plan's
    manifest record."""

    model: AnalysedModel
    thresholds: list[float]
    record: PlanRecord


def plan_program(model: AnalysedModel, settings: CompileSettings) -> PlannedProgram:
    """Profile, calibrate and plan a fixed policy (``settings.calib``, ``settings.budget``)."""
    calib, policy, batch = settings.calib, settings.policy, settings.plan_batch
    budget = float(settings.budget or 0.0)
    feeds: dict[str, np.ndarray] | None = None
    if not isinstance(calib, Calibration):  # read (and check) the data before profiling
        feeds, labels = calib if isinstance(calib, tuple) else load_labelled(str(calib),
                                                                             model.inputs)
    report = profile_for(model, settings, feeds)
    if isinstance(calib, Calibration):
        cal = calib
    else:
        assert feeds is not None
        cal = calibrate(model.graph, feeds, labels, progress=settings.progress)

    def replan(rep: ProfileReport) -> ExitPlan:
        return plan_exits(cal, rep, budget_pp=budget, policy=policy, batch=batch,
                          guarantee=settings.guarantee, margin_z=settings.margin,
                          cost_tolerance=cost_tolerance(rep))

    plan = replan(report)
    outputs = model.graph.output_names
    sub = SubModels(model)
    corrections: tuple[float, ...] = ()
    if feeds is not None and batch == 1 and len(plan.kept) > 1:
        plan, report, corrections = closed_loop(model, sub, plan, report, feeds, policy,
                                                settings.threads, replan)
    kept = [outputs[k] for k in plan.kept]
    logger.info("plan: keep %s, thresholds %s, predicted %.2fx", kept, plan.thresholds,
                plan.predicted_speedup)
    record = plan_record(plan, report, kept, calib, corrections)
    if policy != "patience":
        record = replace(record, exit_benefit=tuple(exit_benefit(
            cal, report, budget_pp=budget, policy=policy, batch=batch)))
    refuse_final_only(plan, budget)
    return PlannedProgram(sub(plan.kept), list(plan.thresholds), record)
