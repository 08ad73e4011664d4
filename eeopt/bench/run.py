"""``eeopt bench``: a program against the plain network on labelled data, in one process.

Accuracy, exit fractions, batch-1 latency (mean, median, p99) and throughput at larger batches
against the plain network, interleaved (``eeopt.measure.timing``); the ideal speedup from the
bare stage calls timed in the same blocks; the latency the plan's cost model predicts; and the
accuracy-latency frontier across planner budgets.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.compiler import compile as compile_model
from eeopt.data import load_labelled
from eeopt.errors import DataError, EEOptError, UsageError
from eeopt.frontend import capture
from eeopt.measure import (
    Comparison,
    Runner,
    calibrate,
    compare_batch1,
    compare_throughput,
    profile_model,
)
from eeopt.passes import cut_to_outputs
from eeopt.planning import PlannedCosts, Promise, ideal_and_predicted, loss_interval
from eeopt.program import Manifest, sha256_file
from eeopt.runtime import Program, configure_threads, fast_run, load, make_session
from eeopt.runtime.base import trim_to_longest

__all__ = ["bare_stages", "plain_model_path", "run_bench"]


def plain_model_path(manifest: Manifest, model: str | None) -> str:
    """The multi-exit model a program was compiled from: ``model``, else the path its manifest
    records (checked against the sha256 recorded with it)."""
    src = manifest.source or {}
    path = model or src.get("file")
    if not path:
        raise DataError("the program records no source model; pass {model MODEL.onnx} (the "
                        "multi-exit model it was compiled from)")
    if not Path(path).is_file():
        raise DataError(f"source model {path} is gone; pass {{model MODEL.onnx}}")
    if model is None and src.get("sha256") and sha256_file(Path(path)) != src["sha256"]:
        raise DataError(f"source model {path} changed since the compile; recompile, or pass "
                        "{model} explicitly")
    return str(path)


def _call_stage(call: Any, own_rows: bool, chunk: Mapping[str, np.ndarray]) -> object:
    return call(chunk) if own_rows else call()


def bare_stages(program: Program, feeds: Mapping[str, np.ndarray], fractions: np.ndarray,
                batch: int) -> dict[str, tuple[float, Runner]]:
    """The ideal's parts, to time beside the two models: per kept stage that any row reaches,
    ``(weight, runner)``, where the runner makes that stage's bare call (``Program.stage_calls``:
    no gate firing, no bookkeeping) and ``weight`` times its mean ms gives its expected
    ms per row. A later stage runs once per call of ``batch`` rows if any row reaches it
    (probability ``called``), on ``batch * reach / called`` rows on average; the cost is linear
    in rows, so timing it at that many rows and weighting by ``called / batch`` is exact. Empty
    for a runtime without them (``Program.supports_stage_calls``)."""
    if not program.supports_stage_calls:
        return {}
    n = next(iter(feeds.values())).shape[0]
    out: dict[str, tuple[float, Runner]] = {}
    for g in range(len(program.manifest.stages)):
        reach = float(np.sum(fractions[g:])) if g else 1.0
        if reach <= 0.0:
            break
        called = 1.0 - (1.0 - reach) ** batch
        rows = min(n, max(1, round(batch * reach / called)))
        call = program.stage_calls({k: v[:rows] for k, v in feeds.items()})[g]
        # the first stage reads the chunk's own rows, as the program and the plain network do;
        # a later stage's cost does not depend on its (carried) values
        out[f"stage{g}"] = (called / batch, partial(_call_stage, call, g == 0))
    return out


def run_bench(
    program_dir: str,
    data: str,
    *,
    batches: tuple[int, ...] = (1, 64),
    model: str | None = None,
    calib: str | None = None,
    budgets: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    threads: int = 1,
    limit: int | None = None,
    frontier_limit: int = 3000,
    progress: bool = True,
    passes: int = 3,
    allow_native: bool = False,
) -> dict[str, Any]:
    """Accuracy, exit fractions, latency against the plain network (interleaved, same
    process), ideal and predicted latency from the profile, and the accuracy-latency frontier
    across budgets (each budget planned on ``calib`` under the same promise as the program's
    own plan, and measured on ``data``). Every accuracy loss comes with its 95% interval,
    paired row by row against the plain network on ``data``.

    Each batch size is timed in ``passes`` passes over the data; the one with the median
    speedup is reported (every pass's speedup and efficiency are listed beside it), so that
    a phase in which a shared machine runs slow does not decide the result. ``allow_native``:
    as for ``eeopt.load``."""
    if passes < 1:
        raise UsageError(f"{{passes}} must be >= 1, got {passes}")
    configure_threads(threads)
    program = load(program_dir, threads=threads, allow_native=allow_native)
    src = plain_model_path(program.manifest, model)
    graph = capture(src)
    plain = make_session(cut_to_outputs(graph, [graph.output_names[-1]]).model
                         .SerializeToString())
    plain_out = plain.get_outputs()[0].name
    feeds, labels = load_labelled(data, program.input_specs)
    if limit:
        feeds = {k: v[:limit] for k, v in feeds.items()}
        labels = labels[:limit]
    n = labels.shape[0]

    plain_run = fast_run(plain)  # called as the program calls its stages
    plain_fetch = [plain_out]

    seq = program.manifest.sequence if program.trim_padding else None

    def run_plain(f: Mapping[str, np.ndarray]) -> object:
        if seq is not None:  # text: the plain network on the batch cut to its longest row,
            f, _ = trim_to_longest(f, seq.mask, seq.axes)  # as anyone would
        return plain_run(plain_fetch, dict(f), None)[0]

    def run_program(f: Mapping[str, np.ndarray]) -> object:
        return program.run(f)

    chunks = range(0, n, 256)
    plain_pred = np.concatenate([np.asarray(run_plain({k: v[i:i + 256] for k, v in
                                                       feeds.items()})).argmax(1)
                                 for i in chunks])
    res = [program.run({k: v[i:i + 256] for k, v in feeds.items()}) for i in chunks]
    pred = np.concatenate([r.prediction for r in res])
    exits = np.concatenate([r.exit for r in res])
    fractions = np.bincount(exits, minlength=program.num_exits) / n
    plain_right = plain_pred == labels
    loss, loss_lo, loss_hi = loss_interval(plain_right.astype(float)
                                           - (pred == labels).astype(float))

    # priced like deployment: on the data's own rows (their shapes), at the bench's threads
    profile = profile_model(src, threads=threads, progress=progress,
                            example_inputs={k: v[:64] for k, v in feeds.items()})
    plan = program.manifest.plan
    promise = None if plan is None else Promise.of(plan.promise)
    outputs = graph.output_names
    kept = [outputs.index(s.exit_output) for s in program.manifest.stages]
    # predicted: the cost model the plan was priced with, when the manifest has it (a fresh
    # profile re-measures every stage, and its noise would not match the plan's corrections)
    predict_with: Any = PlannedCosts.of(None if plan is None else plan.cost_model, kept)
    plain_model = predict_with.plain if predict_with is not None else profile.plain
    if predict_with is None:
        corr = [] if plan is None else plan.cost_corrections_ms
        predict_with = (replace(profile, corrections_ms=tuple(corr))
                        if len(corr) == profile.num_exits else profile)
    comps = {}
    bare: dict[int, dict[str, tuple[float, Runner]]] = {}
    every: dict[int, list[Comparison]] = {}
    # text: batches of rows of similar length (what `eeopt run` does), for both models
    batched = feeds
    if seq is not None:
        order = np.argsort(np.count_nonzero(feeds[seq.mask], axis=1), kind="stable")
        batched = {k: np.ascontiguousarray(v[order]) for k, v in feeds.items()}
    for b in batches:
        bare[b] = bare_stages(program, feeds, fractions, b)
        others = {name: fn for name, (_, fn) in bare[b].items()}
        every[b] = [compare_batch1(run_plain, run_program, feeds, others=others) if b == 1 else
                    compare_throughput(run_plain, run_program, batched, b, others=others)
                    for _ in range(passes)]
        comps[b] = sorted(every[b], key=lambda c: c.speedup_mean)[(passes - 1) // 2]

    def ideal_of(c: Comparison, b: int) -> float | None:
        if not bare[b]:
            return None
        ms = sum(w * c.others[name].mean_ms for name, (w, _) in bare[b].items())
        return (c.plain.mean_ms / b) / ms

    latency = {}
    for b, c in comps.items():
        ideal_prof_ms, pred_ms = ideal_and_predicted(profile, kept, fractions, b, predict_with)
        plain_prof = profile.plain.per_row(b)
        measured_row_ms = c.program.mean_ms / b
        # the cost model was measured minutes earlier, and this machine's speed drifts by ~10%
        # over that: the prediction is scaled by how fast the plain network (in the cost model
        # too) runs now
        speed = (c.plain.mean_ms / b) / plain_model.per_row(b)
        # the bare stage calls, timed in the same blocks as the two models; for a runtime
        # without them, the profile's
        ideal = ideal_of(c, b) or plain_prof / ideal_prof_ms
        latency[str(b)] = {
            **c.to_dict(),
            "predicted_program_ms_per_row": pred_ms * speed,
            "measured_program_ms_per_row": measured_row_ms,
            "prediction_error": pred_ms * speed / measured_row_ms - 1.0,
            "machine_speed_factor": speed,
            "prediction_error_unscaled": pred_ms / measured_row_ms - 1.0,
            "ideal_speedup": ideal,
            "ideal_speedup_profile": plain_prof / ideal_prof_ms,
            "efficiency": c.speedup_mean / ideal,
            "passes": [{"speedup_mean": q.speedup_mean,
                        "efficiency": q.speedup_mean / (ideal_of(q, b) or ideal)}
                       for q in every[b]],
        }

    frontier: list[dict[str, object]] = []
    if calib:
        cal_feeds, cal_labels = load_labelled(calib, program.input_specs)
        cal = calibrate(graph, cal_feeds, cal_labels, progress=progress)
        sub = {k: v[:frontier_limit] for k, v in feeds.items()}
        with tempfile.TemporaryDirectory() as tmp:
            for budget in budgets:
                try:  # the same promise as the program's own plan
                    p = compile_model(
                        src, Path(tmp) / f"b{budget}", calib=cal, budget=budget,
                        profile=profile, threads=threads, verify=False,
                        policy=program.manifest.settings.get("policy", "maxprob"),
                        guarantee=None if plan is None else plan.guarantee,
                        margin=promise.margin_z if promise is not None and promise.margin_z
                        else 2.0)
                except EEOptError as exc:  # e.g. no exit pays off at budget 0
                    frontier.append({"budget_pp": budget, "skipped": str(exc)})
                    continue

                def run_p(f: Mapping[str, np.ndarray], _p: object = p) -> object:
                    return _p.run(f)  # type: ignore[attr-defined]

                c1 = compare_batch1(run_plain, run_p, sub, warmup=50)
                right = np.concatenate([  # accuracy on every row; latency on sub
                    p.run({k: v[i:i + 256] for k, v in feeds.items()}).prediction
                    for i in range(0, n, 256)]) == labels
                f_loss, f_lo, f_hi = loss_interval(plain_right.astype(float)
                                                   - right.astype(float))
                frontier.append({"budget_pp": budget, "accuracy": float(right.mean()),
                                 "loss_pp": f_loss, "loss_interval_pp": [f_lo, f_hi],
                                 "within_budget": f_loss <= budget,
                                 "plain_mean_ms": c1.plain.mean_ms,
                                 "program_mean_ms": c1.program.mean_ms,
                                 "speedup": c1.speedup_mean,
                                 "kept": list(p.manifest.plan.kept_outputs
                                              if p.manifest.plan else []),
                                 "thresholds": list(p.thresholds)})
    return {
        "program": str(program_dir),
        "data": data,
        "rows": int(n),
        "threads": threads,
        "accuracy": {"plain": float((plain_pred == labels).mean()),
                     "program": float((pred == labels).mean())},
        "loss_pp": loss,
        "loss_interval_pp": [loss_lo, loss_hi],
        "budget_pp": None if plan is None else plan.budget_pp,
        "promise": None if plan is None else dict(plan.promise) or None,
        "promise_text": None if promise is None or plan is None
        else promise.describe(plan.budget_pp),
        "exit_fractions": fractions.tolist(),
        "kept_outputs": [outputs[k] for k in kept],
        "latency": latency,
        "frontier": frontier,
        "frontier_rows": int(min(frontier_limit, n)) if calib else 0,
        "text": None if seq is None else {
            "mask": seq.mask, "batches": "rows of similar length (sorted by length)",
            "plain": "each batch cut to its longest row"},
        "profile": {"plain_ms_at_1": profile.plain.at(1),
                    "stage_ms_at_1": [e.stage.at(1) for e in profile.exits],
                    "runtime_ms_per_stage_at_1": profile.runtime.at(1)},
    }
