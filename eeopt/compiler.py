"""compile(): multi-exit model -> graph passes -> one ONNX Runtime stage per exit -> program dir.

Pipeline:
  capture -> [NameNodes, RemoveDeadNodes, CheckModel]                  whole model
          -> find_exit_heads -> compute_cuts -> probe_tensors          analyses
          -> extract_stages -> per stage [FuseGate?, RemoveDeadNodes, CheckModel]
          -> write stage files + manifest into a temporary directory
          -> verify: chained stages reproduce the original on random inputs, else fail
          -> rename into place
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eeopt import __version__
from eeopt.capture import BATCH, capture, input_specs, random_inputs, tile_inputs
from eeopt.errors import EEOptError, UnsupportedModelError, UsageError
from eeopt.graph import ModelGraph
from eeopt.kernels.reference import GATE_FEATURES, POLICIES, check_threshold
from eeopt.manifest import (
    GateSpec,
    Manifest,
    StageSpec,
    TensorSpec,
    save_manifest,
    sha256_file,
    write_program_dir,
)
from eeopt.passes import (
    THRESHOLD_INPUT,
    CheckModel,
    CutPlan,
    ExitHeads,
    FuseGate,
    NameNodes,
    PassManager,
    RemoveDeadNodes,
    compute_cuts,
    extract_stages,
    find_exit_heads,
    gate_prefix,
    probe_tensors,
    stage_logits_name,
)

__all__ = [
    "compile",
    "VerificationError",
    "prepare",
    "Prepared",
    "check_threshold_values",
    "resolve_thresholds",
    "verify_program",
]

logger = logging.getLogger(__name__)


class VerificationError(EEOptError):
    """The compiled stages do not reproduce the original model."""


@dataclass(frozen=True)
class Prepared:
    """The analysed model, before stage files are written."""

    graph: ModelGraph
    heads: ExitHeads
    plan: CutPlan
    inputs: tuple[TensorSpec, ...]
    specs: dict[str, TensorSpec]
    num_classes: int
    example: dict[str, np.ndarray] | None


def _example_feeds(
    example_inputs: Any, specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray] | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, Mapping):
        items = dict(example_inputs)
    else:
        seq = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if len(seq) != len(specs):
            raise UsageError(f"got {len(seq)} example inputs; the model has {len(specs)}")
        items = {s.name: v for s, v in zip(specs, seq, strict=True)}
    out: dict[str, np.ndarray] = {}
    for k, v in items.items():
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def prepare(model: Any, *, example_inputs: Any = None) -> Prepared:
    """Capture and analyse ``model``: passes, exit heads, cuts and carried-tensor specs."""
    graph = capture(model, example_inputs=example_inputs)
    graph = PassManager([NameNodes(), RemoveDeadNodes(), CheckModel("the input model")])(
        graph
    ).graph
    heads = find_exit_heads(graph)
    plan = compute_cuts(graph, heads)
    inputs = input_specs(graph)
    example = _example_feeds(example_inputs, inputs)

    def feeds(batch: int) -> dict[str, np.ndarray]:
        if example is not None:
            return tile_inputs(example, batch)
        return random_inputs(inputs, batch, seed=batch)

    wanted = list(plan.carried) + [h.output for h in heads.heads]
    wanted += [t for h in heads.heads for t in h.reads if t not in graph.input_names]
    try:
        specs = probe_tensors(graph, wanted, feeds)
    except EEOptError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"running the model on sample inputs failed ({first}); if its inputs need "
            "particular values or sizes, pass example_inputs (--example-inputs)"
        ) from exc
    for s in inputs:
        specs[s.name] = s
    classes = set()
    for h in heads.heads:
        sp = specs[h.output]
        if len(sp.shape) != 2 or sp.batch_axis != 0 or not isinstance(sp.shape[1], int):
            raise UnsupportedModelError(
                f"exit output {h.output!r} has shape {list(sp.shape)}; every exit must return "
                "[batch, classes] logits"
            )
        if np.dtype(sp.dtype).kind != "f":
            raise UnsupportedModelError(f"exit output {h.output!r} is {sp.dtype}, not floats")
        classes.add(sp.shape[1])
    if len(classes) != 1:
        raise UnsupportedModelError(
            f"the exits disagree on the number of classes: {sorted(classes)}"  # type: ignore[type-var]
        )
    num_classes = int(classes.pop())  # type: ignore[arg-type]
    if num_classes < 2:
        raise UnsupportedModelError("the exits have 1 class; a gate needs at least 2")
    return Prepared(graph, heads, plan, inputs, specs, num_classes, example)


def check_threshold_values(
    threshold: float | None, thresholds: Sequence[float] | None, policy: str = "maxprob"
) -> None:
    """Usage checks that need no model: exactly one of the two, each value valid for the policy."""
    if policy not in POLICIES:
        raise UsageError(f"unknown --policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if threshold is not None and thresholds is not None:
        raise UsageError("pass either --threshold or --thresholds, not both")
    if threshold is None and thresholds is None:
        raise UsageError(
            "no thresholds: pass --threshold T (one for every exit) or --thresholds t0,t1,... "
            "(one per early exit), or --calib DATA --budget PP to let the planner choose"
        )
    vals = [threshold] if threshold is not None else list(thresholds or [])
    for v in vals:
        rule = "is not a number" if not isinstance(v, (int, float)) else check_threshold(
            policy, float(v))
        if rule:
            raise UsageError(f"--threshold {v} is out of range for policy {policy}: {rule}")


def resolve_thresholds(
    num_gated: int,
    threshold: float | None,
    thresholds: Sequence[float] | None,
    policy: str = "maxprob",
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


def _build_stages(
    prep: Prepared, thresholds: Sequence[float], policy: str,
    gates: Sequence[Any] | None = None,
) -> list[tuple[onnx.ModelProto, StageSpec]]:
    """``gates``: one learned gate (``eeopt.kernels.onnx_learned_gate.LearnedGate``) per early
    exit, for the learned policies; None for the fixed ones."""
    stage_graphs = extract_stages(prep.graph, prep.plan, prep.specs)
    last = len(stage_graphs) - 1
    built = []
    prev_state: tuple[str, str] | None = None
    for cut, sg in zip(prep.plan.stages, stage_graphs, strict=True):
        logits = stage_logits_name(cut)
        fuse = None if cut.index == last else FuseGate(
            logits, policy, stage=cut.index, prev_state=prev_state,
            learned=None if gates is None else gates[cut.index])
        passes = [] if fuse is None else [fuse]
        passes += [RemoveDeadNodes(), CheckModel(f"stage {cut.index}")]
        sg = PassManager(passes)(sg).graph
        gate = None
        state_in: tuple[TensorSpec, ...] = ()
        state_out: tuple[TensorSpec, ...] = ()
        if fuse is not None:
            assert fuse.gate is not None
            gate = GateSpec(policy, float(thresholds[cut.index]),
                            GATE_FEATURES if fuse.gate.features else ())
            def state_spec(n: str, gate: Any = fuse.gate) -> TensorSpec:
                dtype, shape = gate.state_type(n)  # patience: int64; the twin's route: float
                return TensorSpec(n, dtype, tuple(BATCH if d == "batch" else d for d in shape),
                                  0)

            state_in = tuple(state_spec(n) for n in fuse.gate.state_inputs)
            if cut.index + 1 < last:  # the final stage has no gate to pass state to
                state_out = tuple(state_spec(n) for n in fuse.gate.state_outputs)
            prev_state = ((state_out[0].name, state_out[1].name) if len(state_out) == 2
                          else None)
        prefix = gate_prefix(cut.index)
        spec = StageSpec(
            index=cut.index,
            file=f"stage{cut.index}.onnx",
            sha256="",
            exit_output=cut.output,
            inputs=tuple(prep.specs[t] for t in cut.inputs) + state_in,
            produces=tuple(prep.specs[t] for t in cut.produces) + state_out,
            carry_after=cut.carry_after + tuple(t.name for t in state_out),
            logits=logits,
            decision=None if gate is None else f"{prefix}/decision",
            features=None if fuse is None or fuse.gate is None else fuse.gate.features,
            threshold_input=None if gate is None else THRESHOLD_INPUT,
            gate=gate,
            nodes=len(sg.graph.node),
        )
        built.append((sg.model, spec))
    return built


def verify_program(
    program: Any,
    graph: ModelGraph,
    prep: Prepared,
    *,
    batches: Sequence[int] = (3, 1),
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Chained stages must reproduce every exit of the original model; returns the max error."""
    from eeopt.backends.ort import make_session

    session = make_session(graph.model.SerializeToString())
    worst = 0.0
    for i, b in enumerate(batches):
        feeds = (
            tile_inputs(prep.example, b)
            if prep.example is not None
            else random_inputs(prep.inputs, b, seed=1000 + i)
        )
        want = session.run(graph.output_names, feeds)
        got = program.run_all(feeds)
        for k, (w, g) in enumerate(zip(want, got, strict=True)):
            w = np.asarray(w, dtype=np.float32)
            err = float(np.max(np.abs(w - g))) if w.size else 0.0
            worst = max(worst, err)
            if not np.allclose(g, w, rtol=rtol, atol=atol):
                raise VerificationError(
                    f"stage {k} does not reproduce exit {graph.output_names[k]!r} at batch {b} "
                    f"(max abs error {err:.3g}); please report this model to eeopt"
                )
    return worst


def _measure_corrections(prep: Prepared, sub: Prepared, plan: Any, report: Any,
                         feeds: dict[str, np.ndarray], policy: str, threads: int | None,
                         max_rows: int = 5000, min_rows: int = 20,
                         gates: Sequence[Any] | None = None) -> tuple[float, ...]:
    """Per exit, measured minus modelled cost of its stage, from running ``plan``'s program
    row by row on calibration inputs (0 where too few rows reach it to tell). ``sub`` is the
    analysis of the model cut to the plan's kept exits."""
    import tempfile
    import time

    from eeopt.backends.ort import fast_run, make_session
    from eeopt.capture import cut_to_outputs

    outputs = prep.graph.output_names
    kept = list(plan.kept)
    n = min(next(iter(feeds.values())).shape[0], max_rows)
    rows = [{k: np.ascontiguousarray(v[i:i + 1]) for k, v in feeds.items()} for i in range(n)]
    plain_sess = make_session(cut_to_outputs(prep.graph, [outputs[-1]]).model
                              .SerializeToString())
    plain_run, plain_fetch = fast_run(plain_sess), [outputs[-1]]  # as the profile calls it
    with tempfile.TemporaryDirectory() as tmp:
        prog = _emit(sub, Path(tmp) / "p", list(plan.thresholds), policy, threads=threads,
                     verify=False, gates=gates)
        for r in rows[: min(200, n)]:
            prog.run(r)
            plain_run(plain_fetch, r, None)
        # every row twice (calls = 2n): this machine's speed moves in phases of a second or
        # so, and a phase slows small stage calls more than the plain network
        times = np.zeros(n)
        plain_times = np.zeros(n)
        exits = np.empty(n, dtype=np.int64)
        clock = time.perf_counter
        # blocks of program calls alternate with blocks of plain-network calls on the same
        # rows: the plain network, also in the profile, tells how fast the machine is now
        sides = ((prog.run, times), (lambda r: plain_run(plain_fetch, r, None), plain_times))
        for rep in range(2):
            for b, start in enumerate(range(0, n, 200)):  # long blocks: a block's first
                block = range(start, min(start + 200, n))  # call pays a cold cache
                for fn, out in (sides if (b + rep) % 2 == 0 else sides[::-1]):
                    for i in block:
                        t0 = clock()
                        res = fn(rows[i])
                        out[i] += clock() - t0
                        if out is times:
                            exits[i] = res.exit[0]
        times /= 2
        plain_times /= 2
    speed = report.plain.at(1) / float(plain_times.mean() * 1e3)
    logger.info("closed loop: plain %.1f us a call (profile %.1f); program %.1f us, by exit %s",
                plain_times.mean() * 1e6, report.plain.at(1) * 1e3, times.mean() * 1e6,
                [round(float(times[exits == g].mean()) * 1e6, 1) if (exits == g).any() else None
                 for g in range(len(kept))])
    times *= speed  # in the profile's time units, so machine drift is not taken for cost
    corr = [0.0] * len(outputs)
    prev_mean = 0.0
    prev = -1
    for g, k in enumerate(kept):
        mask = exits == g
        model = report.stage_cost(prev, k).at(1)
        if mask.sum() < min_rows:
            break  # later groups would be measured against an unknown baseline
        mean = float(times[mask].mean() * 1e3)
        corr[k] = max(mean - prev_mean - model, -0.5 * model)
        prev_mean, prev = mean, k
    logger.info("closed-loop cost corrections (ms): %s (machine speed factor %.2f)",
                [round(c, 4) for c in corr], speed)
    return tuple(corr)


def _cuts(prep: Prepared) -> Callable[[tuple[int, ...]], Prepared]:
    """``prepared(kept)``: the analysis of the model cut to the exits ``kept``, made once per
    kept set."""
    from eeopt.capture import cut_to_outputs

    outputs = prep.graph.output_names
    memo: dict[tuple[int, ...], Prepared] = {tuple(range(len(outputs))): prep}

    def prepared(kept: tuple[int, ...]) -> Prepared:
        if kept not in memo:
            sub = cut_to_outputs(prep.graph, [outputs[k] for k in kept])
            memo[kept] = prepare(sub.model, example_inputs=prep.example)
        return memo[kept]

    return prepared


def _closed_loop(prep: Prepared, prepared: Callable[[tuple[int, ...]], Prepared], plan: Any,
                 report: Any, feeds: dict[str, np.ndarray], policy: str, threads: int | None,
                 replan: Callable[[Any], Any],
                 gates: Callable[[tuple[int, ...]], Sequence[Any]] | None = None,
                 ) -> tuple[Any, Any, tuple[float, ...]]:
    """Run the planned program on calibration rows, one at a time, correct the cost model by
    what isolated warm measurements missed (cold caches of stages few rows reach), and plan
    again with ``replan(report)``. Returns the new plan, the corrected report and the
    corrections. ``gates(kept)`` gives learned gates for the kept exits."""
    corrections = _measure_corrections(prep, prepared(plan.kept), plan, report, feeds, policy,
                                       threads,
                                       gates=None if gates is None else gates(plan.kept))
    report = replace(report, corrections_ms=corrections)
    return replan(report), report, corrections


def _plan_record(plan: Any, report: Any, kept_names: list[str], calib: Any,
                 corrections: Sequence[float]) -> dict[str, Any]:
    """The plan's manifest record: the plan, what it was calibrated on, and the cost model it
    was priced with (profile + closed-loop corrections, per kept stage), which `eeopt bench`
    compares its measurements against."""
    record = plan.to_dict()
    record["kept_outputs"] = kept_names
    record["calibration"] = str(calib) if isinstance(calib, (str, os.PathLike)) else "arrays"
    record["profile_threads"] = report.threads
    record["cost_corrections_ms"] = list(corrections)
    stage_costs, prev = [], -1
    for k in plan.kept:
        stage_costs.append(report.stage_cost(prev, k).to_dict())
        prev = k
    record["cost_model"] = {"plain": report.plain.to_dict(), "stages": stage_costs}
    return record


def _plan(
    prep: Prepared, calib: Any, budget: float, policy: str, guarantee: float | None,
    threads: int | None, batch: int, progress: bool, report: Any = None,
    margin: float = 2.0,
) -> tuple[Prepared, list[float], dict[str, Any]]:
    """Profile, calibrate and plan; return the analysis of the model cut to the kept exits,
    the kept exits' thresholds and the plan's manifest record."""
    from eeopt.calibrate import calibrate, load_labelled
    from eeopt.plan import Calibration, exit_benefit, plan_exits
    from eeopt.profile import profile_model

    feeds: dict[str, np.ndarray] | None = None
    if not isinstance(calib, Calibration):  # read (and check) the data before profiling
        feeds, labels = calib if isinstance(calib, tuple) else load_labelled(str(calib),
                                                                             prep.inputs)
    if report is None:
        report = profile_model(prep.graph.model, threads=threads, example_inputs=prep.example,
                               progress=progress)
    if isinstance(calib, Calibration):
        cal = calib
    else:
        assert feeds is not None
        cal = calibrate(prep.graph, feeds, labels, progress=progress)

    def replan(rep: Any) -> Any:
        return plan_exits(cal, rep, budget_pp=budget, policy=policy, batch=batch,
                          guarantee=guarantee, margin_z=margin)

    plan = replan(report)
    outputs = prep.graph.output_names
    prepared = _cuts(prep)
    corrections: tuple[float, ...] = ()
    if feeds is not None and batch == 1 and len(plan.kept) > 1:
        plan, report, corrections = _closed_loop(prep, prepared, plan, report, feeds, policy,
                                                 threads, replan)
    kept = [outputs[k] for k in plan.kept]
    logger.info("plan: keep %s, thresholds %s, predicted %.2fx", kept, plan.thresholds,
                plan.predicted_speedup)
    record = _plan_record(plan, report, kept, calib, corrections)
    if policy != "patience":
        record["exit_benefit"] = exit_benefit(cal, report, budget_pp=budget, policy=policy,
                                              batch=batch)
    if len(kept) == 1:
        raise UnsupportedModelError(
            f"no early exit pays off within a {budget} pp budget on this data: the plan keeps "
            "only the final classifier; raise --budget or improve the exits"
        )
    return prepared(plan.kept), list(plan.thresholds), record


def compile(  # noqa: A001 - mirrors the CLI verb
    model: Any,
    out: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    threshold: float | None = None,
    thresholds: Sequence[float] | None = None,
    force: bool = False,
    threads: int | None = None,
    verify: bool = True,
    policy: str = "maxprob",
    calib: Any = None,
    budget: float | None = None,
    guarantee: float | None = None,
    plan_batch: int = 1,
    progress: bool = False,
    profile: Any = None,
    margin: float = 2.0,
    gates: Any = None,
    tau: float | None = None,
    lam: float | None = None,
    backend: str = "onnxruntime",
    device: str = "cpu",
    gate: str = "auto",
    fp16: bool = False,
) -> Any:
    """Compile a multi-exit model (ONNX path, ``onnx.ModelProto`` or torch module) into a
    program directory at ``out`` and return the loaded ``Program``.

    Thresholds come either from ``threshold``/``thresholds``, or from the planner: with
    ``calib`` (a data set name such as ``"fashion-mnist:val"``, an ``.npz`` path, or a
    ``(feeds, labels)`` pair) and ``budget`` (accuracy points), it profiles every candidate exit
    on this machine, keeps the exits and thresholds that minimise expected latency within the
    budget, and records the plan in the manifest. ``profile`` reuses a ``ProfileReport`` of
    this model, and ``calib`` may be a ready ``Calibration``.

    Learned policies (``jei``, ``gate-unit``, ``cost-sensitive``, ``twin``) train their gates
    on ``calib`` (or take trained ``gates``, an ``eeopt.gates.GateSet``); ``tau`` (cost-sensitive)
    and ``lam`` (jei) set their cost trade-off. See ``eeopt.gates.compile_learned``.

    ``backend``: ``"onnxruntime"`` (default), ``"aoti"`` (a torch module compiled per stage by
    AOTInductor for ``device`` "cpu" or "cuda"; ``gate`` "auto", "torch" or "op") or
    ``"tensorrt"`` (one engine per stage ONNX; ``fp16``). See ``eeopt.backends.aoti`` and
    ``eeopt.backends.tensorrt``.
    """
    if backend not in ("onnxruntime", "ort"):
        return _compile_other_backend(
            backend, model, out, example_inputs=example_inputs, threshold=threshold,
            thresholds=thresholds, force=force, threads=threads, verify=verify, policy=policy,
            planning=calib is not None or budget is not None or gates is not None,
            progress=progress, device=device, gate=gate, fp16=fp16)
    from eeopt.backends.ort import configure_threads
    from eeopt.kernels.reference import LEARNED_POLICIES

    if policy in LEARNED_POLICIES or gates is not None or tau is not None or lam is not None:
        from eeopt.gates import compile_learned

        return compile_learned(
            model, out, example_inputs=example_inputs, threshold=threshold,
            thresholds=thresholds, force=force, threads=threads, verify=verify, policy=policy,
            calib=calib, budget=budget, guarantee=guarantee, plan_batch=plan_batch,
            progress=progress, profile=profile, margin=margin, gates=gates, tau=tau, lam=lam)

    planning = calib is not None or budget is not None
    if planning:
        if calib is None or budget is None:
            raise UsageError("the planner needs both --calib DATA and --budget PP")
        if threshold is not None or thresholds is not None:
            raise UsageError("pass either --threshold/--thresholds or --calib/--budget, not both")
        if not (math.isfinite(budget) and budget >= 0):
            raise UsageError(f"--budget {budget} must be >= 0 (accuracy points)")
        if guarantee is not None and not 0.0 < guarantee < 1.0:
            raise UsageError(f"--guarantee {guarantee} must be a probability in (0, 1)")
        if policy not in POLICIES:
            raise UsageError(f"unknown --policy {policy!r}; choose one of {', '.join(POLICIES)}")
    else:
        if guarantee is not None:
            raise UsageError("--guarantee needs the planner (--calib and --budget)")
        check_threshold_values(threshold, thresholds, policy)  # before any expensive work
    dest = Path(out)
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists; pass --force (force=True) to replace it")
    configure_threads(threads)
    prep = prepare(model, example_inputs=example_inputs)
    plan_record: dict[str, Any] | None = None
    if planning:
        prep, thresholds, plan_record = _plan(
            prep, calib, float(budget or 0.0), policy, guarantee, threads, plan_batch, progress,
            profile, margin)
    num_exits = len(prep.plan.stages)
    thr = resolve_thresholds(num_exits - 1, threshold, thresholds, policy)
    source: dict[str, Any] = {"outputs": prep.graph.output_names}
    if isinstance(model, (str, os.PathLike)):
        source["file"] = os.fspath(model)
        source["sha256"] = sha256_file(Path(model))
    return _emit(prep, dest, thr, policy, threads=threads, verify=verify, force=force,
                 plan_record=plan_record, source=source)


def _compile_other_backend(backend: str, model: Any, out: str | os.PathLike[str], *,
                           example_inputs: Any, threshold: float | None,
                           thresholds: Sequence[float] | None, force: bool,
                           threads: int | None, verify: bool, policy: str, planning: bool,
                           progress: bool, device: str, gate: str, fp16: bool) -> Any:
    """``compile`` for ``backend="aoti"`` or ``"tensorrt"``: fixed thresholds only."""
    if planning:
        raise UsageError(
            f"the planner (--calib/--budget) and learned gates run on backend onnxruntime; "
            f"for backend {backend!r} pass --threshold/--thresholds (e.g. the thresholds an "
            "onnxruntime plan chose)")
    check_threshold_values(threshold, thresholds, policy)
    dest = Path(out)
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists; pass --force (force=True) to replace it")
    if backend == "aoti":
        from eeopt.backends.aoti import compile_aoti

        return compile_aoti(model, dest, example_inputs=example_inputs, threshold=threshold,
                            thresholds=thresholds, policy=policy, device=device, gate=gate,
                            verify=verify, force=force, threads=threads, progress=progress)
    if backend == "tensorrt":
        from eeopt.backends.tensorrt import compile_tensorrt

        return compile_tensorrt(model, dest, example_inputs=example_inputs, threshold=threshold,
                                thresholds=thresholds, policy=policy, fp16=fp16, force=force,
                                threads=threads, verify=verify)
    raise UsageError(f"unknown backend {backend!r}; choose onnxruntime, aoti or tensorrt")


def _emit(
    prep: Prepared,
    dest: Path,
    thr: Sequence[float],
    policy: str,
    *,
    threads: int | None,
    verify: bool,
    force: bool = False,
    plan_record: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    gates: Sequence[Any] | None = None,
    settings_extra: dict[str, Any] | None = None,
) -> Any:
    """Write an analysed model's program directory (checked thresholds) and load it.
    ``gates``: learned gates, one per early exit (learned policies only)."""
    from eeopt.backends.ort import OrtBackend
    from eeopt.runtime import Program, load

    built = _build_stages(prep, thr, policy, gates)
    backend = OrtBackend(threads)
    source = source if source is not None else {"outputs": prep.graph.output_names}
    def fill(tmp: Path) -> None:
        stages = []
        for stage_model, spec in built:
            path = tmp / spec.file
            onnx.save(stage_model, os.fspath(path))
            stages.append(StageSpec(**{**spec.__dict__, "sha256": sha256_file(path)}))
        manifest = Manifest(
            eeopt_version=__version__,
            backend=backend.name,
            backend_version=backend.version(),
            onnx_opset=prep.graph.opset,
            inputs=prep.inputs,
            num_classes=prep.num_classes,
            stages=tuple(stages),
            source=source,
            plan=plan_record,
            settings={
                "policy": policy,
                "thresholds": list(thr),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "onnx_version": onnx.__version__,
                **(settings_extra or {}),
            },
        )
        save_manifest(manifest, tmp)
        if verify:
            worst = verify_program(Program(tmp, manifest, threads), prep.graph, prep)
            logger.info("verified: stages reproduce every exit (max abs error %.2e)", worst)

    write_program_dir(dest, fill, force=force)
    return load(dest, threads)
