"""compile() for the learned policies: train the gates on part of the calibration data, plan
exits and thresholds on the learned scores of the rest, and emit stages with the gates fused."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import UnsupportedModelError, UsageError
from eeopt.gates._data import GateData, collect_gate_data
from eeopt.gates._policies import GateSet, train_gates
from eeopt.kernels.reference import LEARNED_POLICIES
from eeopt.plan import DEFAULT_GRID, Calibration

__all__ = ["compile_learned", "LearnedCalibration", "learned_grid", "load_gate_data",
           "TRAIN_FRACTION"]

logger = logging.getLogger(__name__)

#: share of the calibration rows the gates train on; the planner sees only the rest
TRAIN_FRACTION = 0.5


@dataclass(frozen=True)
class LearnedCalibration(Calibration):
    """A Calibration whose gate scores are a learned policy's (``[K-1, N]``), whatever policy
    name the planner asks for: the planner's search then runs unchanged on them."""

    learned: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def scores(self, policy: str) -> np.ndarray:
        return self.learned

    def subset(self, idx: np.ndarray) -> LearnedCalibration:
        return LearnedCalibration(tuple(z[idx] for z in self.logits), self.labels[idx],
                                  self.learned[:, idx])


def learned_grid(scores: np.ndarray) -> np.ndarray:
    """Thresholds for scores in [0, 1]: an even grid, the max-prob grid (dense near 1) and the
    data's own quantiles."""
    q = np.quantile(scores, np.linspace(0.02, 0.98, 49)) if scores.size else np.zeros(0)
    return np.unique(np.concatenate([np.linspace(0.02, 0.98, 49), DEFAULT_GRID, q]))


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fraction * n))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def load_gate_data(prep: Any, calib: Any, *, progress: bool) -> tuple[GateData,
                                                                     dict[str, np.ndarray]]:
    from eeopt.calibrate import load_labelled

    if isinstance(calib, Calibration):
        raise UsageError("learned policies need the calibration inputs, not only the exits' "
                         "logits: pass a data set name, an .npz or a (feeds, labels) pair")
    feeds, labels = calib if isinstance(calib, tuple) else load_labelled(str(calib),
                                                                          prep.inputs)
    return collect_gate_data(prep, feeds, labels, progress=progress), feeds


def _check(policy: str, *, calib: Any, budget: float | None, threshold: float | None,
           thresholds: Sequence[float] | None, guarantee: float | None, gates: Any,
           tau: float | None, lam: float | None) -> None:
    if policy not in LEARNED_POLICIES:
        what = "--tau" if tau is not None else "--lambda" if lam is not None else "gates"
        raise UsageError(f"{what} applies to the learned policies ({', '.join(LEARNED_POLICIES)})"
                         f", not --policy {policy}")
    if tau is not None and policy != "cost-sensitive":
        raise UsageError(f"--tau applies to --policy cost-sensitive, not {policy}")
    if lam is not None and policy != "jei":
        raise UsageError(f"--lambda applies to --policy jei, not {policy}")
    if tau is not None and not (math.isfinite(tau) and tau >= 0):
        raise UsageError(f"--tau {tau} must be >= 0")
    if lam is not None and not (math.isfinite(lam) and lam >= 0):
        raise UsageError(f"--lambda {lam} must be >= 0")
    if gates is not None and not isinstance(gates, GateSet):
        raise UsageError("gates must be an eeopt.gates.GateSet (from eeopt.gates.train_gates)")
    if gates is not None and gates.policy != policy:
        raise UsageError(f"the gates were trained for policy {gates.policy}, not {policy}")
    if gates is None and calib is None:
        raise UsageError(
            f"--policy {policy} learns its gates from labelled data: pass --calib DATA (and "
            "--budget PP to plan the thresholds, or --threshold T to fix them)")
    if budget is not None:
        if threshold is not None or thresholds is not None:
            raise UsageError("pass either --threshold/--thresholds or --budget, not both")
        if calib is None:
            raise UsageError("the planner needs --calib DATA with --budget PP")
        if not (math.isfinite(budget) and budget >= 0):
            raise UsageError(f"--budget {budget} must be >= 0 (accuracy points)")
        if guarantee is not None and not 0.0 < guarantee < 1.0:
            raise UsageError(f"--guarantee {guarantee} must be a probability in (0, 1)")
    elif guarantee is not None:
        raise UsageError("--guarantee needs the planner (--calib and --budget)")
    if threshold is not None and thresholds is not None:
        raise UsageError("pass either --threshold or --thresholds, not both")
    for v in [threshold] if threshold is not None else list(thresholds or []):
        if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
            raise UsageError(f"--threshold {v} is out of range for policy {policy}: a learned "
                             "gate's score is a probability, so 0 <= T <= 1")


def compile_learned(
    model: Any, out: str | os.PathLike[str], *, example_inputs: Any = None,
    threshold: float | None = None, thresholds: Sequence[float] | None = None,
    force: bool = False, threads: int | None = None, verify: bool = True,
    policy: str = "jei", calib: Any = None, budget: float | None = None,
    guarantee: float | None = None, plan_batch: int = 1, progress: bool = False,
    profile: Any = None, margin: float = 2.0, gates: GateSet | None = None,
    tau: float | None = None, lam: float | None = None,
    train_fraction: float = TRAIN_FRACTION, seed: int = 0,
) -> Any:
    """Compile with a learned policy (see ``eeopt.compile``). Without ``budget`` the gates
    train on all of ``calib`` and fire at ``threshold`` (default 0.5); with it they train on
    ``train_fraction`` of the rows and the planner chooses exits and thresholds on the rest.
    Ready ``gates`` (trained elsewhere, on other rows) skip training: the planner then uses
    every row of ``calib``."""
    from eeopt.backends.ort import configure_threads
    from eeopt.compiler import _closed_loop, _cuts, _emit, _plan_record, prepare
    from eeopt.manifest import sha256_file
    from eeopt.plan import plan_exits

    _check(policy, calib=calib, budget=budget, threshold=threshold, thresholds=thresholds,
           guarantee=guarantee, gates=gates, tau=tau, lam=lam)
    dest = Path(out)
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists; pass --force (force=True) to replace it")
    configure_threads(threads)
    prep = prepare(model, example_inputs=example_inputs)
    outputs = prep.graph.output_names
    k = len(outputs)
    if gates is not None and gates.num_exits != k:
        raise UsageError(f"the gates were trained for {gates.num_exits} exits; the model has {k}")
    source: dict[str, Any] = {"outputs": outputs}
    if isinstance(model, (str, os.PathLike)):
        source["file"] = os.fspath(model)
        source["sha256"] = sha256_file(Path(model))
    data: GateData | None = None
    feeds: dict[str, np.ndarray] | None = None
    if calib is not None:
        data, feeds = load_gate_data(prep, calib, progress=progress)
    report = None
    if budget is not None:
        from eeopt.profile import profile_model

        report = profile if profile is not None else profile_model(
            prep.graph.model, threads=threads, example_inputs=prep.example, progress=progress)
    if budget is None:
        if gates is None:
            assert data is not None
            gates = train_gates(policy, data, lam=lam, tau=tau, seed=seed, progress=progress)
        if gates.num_exits != k:
            raise UsageError(f"the gates were trained for {gates.num_exits} exits; the model "
                             f"has {k}")
        thr = ([float(threshold)] * (k - 1) if threshold is not None else
               [float(t) for t in thresholds] if thresholds is not None else [0.5] * (k - 1))
        if len(thr) != k - 1:
            raise UsageError(f"got {len(thr)} thresholds; the model has {k - 1} early exits")
        return _emit(prep, dest, thr, policy, threads=threads, verify=verify, force=force,
                     source=source, gates=gates.learned_gates(range(k)),
                     settings_extra={"gates": gates.describe()})

    assert data is not None and feeds is not None and report is not None
    train_idx, plan_idx = _split(data.rows, train_fraction, seed)
    if gates is None:
        cum = report.cumulative_ms(list(range(k)))
        time_frac = np.asarray(cum) / cum[-1]
        gates = train_gates(policy, data.subset(train_idx), lam=lam, tau=tau,
                            time_frac=time_frac, seed=seed, progress=progress)
    else:
        plan_idx = np.arange(data.rows)  # trained elsewhere: plan on every row
    plan_data = data.subset(plan_idx)
    scores = gates.scores(plan_data)
    cal = LearnedCalibration(plan_data.logits, plan_data.labels, scores)
    grid = learned_grid(scores)

    def do_plan(rep: Any) -> Any:
        p = plan_exits(cal, rep, budget_pp=float(budget), policy="maxprob", batch=plan_batch,
                       guarantee=guarantee, margin_z=margin, grid=grid)
        return replace(p, policy=policy)

    plan = do_plan(report)
    prepared = _cuts(prep)
    corrections: tuple[float, ...] = ()
    if plan_batch == 1 and len(plan.kept) > 1:
        plan, report, corrections = _closed_loop(prep, prepared, plan, report, feeds, policy,
                                                 threads, do_plan, gates=gates.learned_gates)
    kept_names = [outputs[i] for i in plan.kept]
    logger.info("plan (%s): keep %s, thresholds %s, predicted %.2fx", policy, kept_names,
                plan.thresholds, plan.predicted_speedup)
    if len(plan.kept) == 1:
        raise UnsupportedModelError(
            f"no early exit pays off within a {budget} pp budget on this data with --policy "
            f"{policy}: the plan keeps only the final classifier; raise --budget")
    record = _plan_record(plan, report, kept_names, calib, corrections)
    record.update(gate_train_rows=int(gates.info.get("train_rows", 0)),
                  plan_rows=int(plan_data.rows))
    return _emit(prepared(plan.kept), dest, list(plan.thresholds), policy, threads=threads,
                 verify=verify, force=force, plan_record=record, source=source,
                 gates=gates.learned_gates(plan.kept),
                 settings_extra={"gates": gates.describe()})
