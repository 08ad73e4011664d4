"""compile() for the learned policies: train the gates on part of the calibration data, plan
exits and thresholds on the learned scores of the rest, and emit stages with the gates fused.

Without ``budget`` the gates train on all of ``calib`` and fire at ``threshold`` (default 0.5);
with it they train on ``TRAIN_FRACTION`` of the rows and the planner chooses exits and
thresholds on the rest. Ready ``gates`` (trained elsewhere, on other rows) skip training: the
planner then uses every row of ``calib``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from eeopt.build import AnalysedModel, SubModels, emit_onnx
from eeopt.compiler.planner import (
    closed_loop,
    cost_tolerance,
    plan_record,
    profile_for,
    refuse_final_only,
)
from eeopt.compiler.settings import CompileSettings
from eeopt.errors import UsageError
from eeopt.gates import (
    TRAIN_FRACTION,
    GateData,
    LearnedCalibration,
    learned_grid,
    load_gate_data,
    split_rows,
    train_gates,
)
from eeopt.planning import ExitPlan, ProfileReport, plan_exits
from eeopt.runtime import OrtProgram

__all__ = ["compile_learned"]

logger = logging.getLogger(__name__)


def compile_learned(model: AnalysedModel, out: Any, settings: CompileSettings,
                    source: dict[str, Any], *, seed: int = 0) -> OrtProgram:
    """Compile ``model`` with the learned policy of ``settings`` into ``out``."""
    policy, gates, budget = settings.policy, settings.gates, settings.budget
    outputs = model.graph.output_names
    k = len(outputs)
    if gates is not None and gates.num_exits != k:
        raise UsageError(f"the gates were trained for {gates.num_exits} exits; the model has {k}")
    data: GateData | None = None
    feeds: dict[str, np.ndarray] | None = None
    if settings.calib is not None:
        data, feeds = load_gate_data(model, settings.calib, progress=settings.progress)
    if budget is None:
        if gates is None:
            assert data is not None
            gates = train_gates(policy, data, lam=settings.lam, tau=settings.tau, seed=seed,
                                progress=settings.progress)
        if gates.num_exits != k:
            raise UsageError(f"the gates were trained for {gates.num_exits} exits; the model "
                             f"has {k}")
        thr = ([float(settings.threshold)] * (k - 1) if settings.threshold is not None else
               [float(t) for t in settings.thresholds] if settings.thresholds is not None
               else [0.5] * (k - 1))
        if len(thr) != k - 1:
            raise UsageError(f"got {len(thr)} thresholds; the model has {k - 1} early exits")
        return emit_onnx(model, out, thr, policy, threads=settings.threads,
                         verify=settings.verify, force=settings.force, source=source,
                         gates=gates.learned_gates(range(k)),
                         settings_extra={"gates": gates.describe()})

    assert data is not None and feeds is not None
    report = profile_for(model, settings, feeds)
    train_idx, plan_idx = split_rows(data.rows, TRAIN_FRACTION, seed)
    if gates is None:
        cum = report.cumulative_ms(list(range(k)))
        time_frac = np.asarray(cum) / cum[-1]
        gates = train_gates(policy, data.subset(train_idx), lam=settings.lam, tau=settings.tau,
                            time_frac=time_frac, seed=seed, progress=settings.progress)
    else:
        plan_idx = np.arange(data.rows)  # trained elsewhere: plan on every row
    plan_data = data.subset(plan_idx)
    scores = gates.scores(plan_data)
    cal = LearnedCalibration(plan_data.logits, plan_data.labels, scores)
    grid = learned_grid(scores)

    def do_plan(rep: ProfileReport) -> ExitPlan:
        p = plan_exits(cal, rep, budget_pp=float(budget), policy="maxprob",
                       batch=settings.plan_batch, guarantee=settings.guarantee,
                       margin_z=settings.margin, grid=grid,
                       cost_tolerance=cost_tolerance(rep))
        return replace(p, policy=policy)

    plan = do_plan(report)
    sub = SubModels(model)
    corrections: tuple[float, ...] = ()
    if settings.plan_batch == 1 and len(plan.kept) > 1:
        plan, report, corrections = closed_loop(model, sub, plan, report, feeds, policy,
                                                settings.threads, do_plan,
                                                gates=gates.learned_gates)
    kept_names = [outputs[i] for i in plan.kept]
    logger.info("plan (%s): keep %s, thresholds %s, predicted %.2fx", policy, kept_names,
                plan.thresholds, plan.predicted_speedup)
    refuse_final_only(plan, float(budget), f" with {{policy}} {policy}")
    record = replace(plan_record(plan, report, kept_names, settings.calib, corrections),
                     gate_train_rows=int(gates.info.get("train_rows", 0)),
                     plan_rows=int(plan_data.rows))
    return emit_onnx(sub(plan.kept), out, list(plan.thresholds), policy,
                     threads=settings.threads, verify=settings.verify, force=settings.force,
                     source=source, plan=record, gates=gates.learned_gates(plan.kept),
                     settings_extra={"gates": gates.describe()})
