"""Latency measurement: the plain network against the program, interleaved in one process.

Interleaving (a block of plain calls, a block of program calls, and blocks of the bare stage
calls the ideal is made of, in a new random order each time) exposes all to the same machine
state over time, so their ratios are meaningful even on a noisy machine; within a block each
keeps its own weights warm in cache, as a deployment would. At batch 1 the mean latency is the
expected cost per input and the headline; median and p99 come beside it. At larger batches the
headline is throughput.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from tqdm import tqdm

__all__ = [
    "LatencyStats",
    "Comparison",
    "compare_batch1",
    "compare_throughput",
    "time_interleaved",
    "ece",
    "run_bench",
    "plot_frontier",
]

Runner = Callable[[Mapping[str, np.ndarray]], object]


@dataclass(frozen=True)
class LatencyStats:
    mean_ms: float
    median_ms: float
    p99_ms: float
    calls: int

    @classmethod
    def of(cls, seconds: np.ndarray) -> LatencyStats:
        ms = np.asarray(seconds) * 1e3
        return cls(float(ms.mean()), float(np.median(ms)), float(np.percentile(ms, 99)),
                   int(ms.size))


@dataclass(frozen=True)
class Comparison:
    batch: int
    plain: LatencyStats
    program: LatencyStats
    rows: int
    others: dict[str, LatencyStats] = field(default_factory=dict)
    """Any further runners timed in the same blocks (``eeopt bench``: each bare stage call)."""

    @property
    def speedup_mean(self) -> float:
        return self.plain.mean_ms / self.program.mean_ms

    @property
    def plain_throughput(self) -> float:
        return self.batch * 1e3 / self.plain.mean_ms

    @property
    def program_throughput(self) -> float:
        return self.batch * 1e3 / self.program.mean_ms

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(speedup_mean=self.speedup_mean, plain_rows_per_s=self.plain_throughput,
                 program_rows_per_s=self.program_throughput)
        return d


def _slice(feeds: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[start:stop]) for k, v in feeds.items()}


def time_interleaved(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray],
                     batch: int, *, warmup: int, block: int, desc: str = "timing",
                     ) -> dict[str, LatencyStats]:
    """Time every call of every runner on the same consecutive chunks of ``batch`` rows (a
    remainder is dropped). Calls go in blocks of ``block`` chunks that take turns, one block
    per runner, in a new random order each time, so all see the same machine over time and
    each follows every other equally often (a block's first calls pay for what the previous
    block evicted from the cache: about 1% of a 200-call block at batch 1), while each runs
    with its own weights warm in cache, as a deployment that runs one model would."""
    n = next(iter(feeds.values())).shape[0]
    chunks = [_slice(feeds, s, s + batch) for s in range(0, n - batch + 1, batch)]
    fns = list(runners.values())
    for c in chunks[:warmup]:
        for fn in fns:
            fn(c)
    times = [np.empty(len(chunks)) for _ in fns]
    clock = time.perf_counter
    order_rng = np.random.default_rng(0)
    blocks = range(0, len(chunks), block)
    for start in tqdm(blocks, desc=desc, unit="block", leave=False, disable=None):
        idx = range(start, min(start + block, len(chunks)))
        for j in order_rng.permutation(len(fns)):
            fn, out = fns[j], times[j]
            for i in idx:
                t0 = clock()
                fn(chunks[i])
                out[i] = clock() - t0
    return {name: LatencyStats.of(t) for name, t in zip(runners, times, strict=True)}


def _interleaved(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], batch: int,
                 warmup: int, desc: str, block: int,
                 others: Mapping[str, Runner] | None = None) -> Comparison:
    """The plain network against the program (and any ``others``), by ``time_interleaved``."""
    others = dict(others or {})
    if {"plain", "program"} & set(others):
        raise ValueError("'plain' and 'program' name the two models; give others other names")
    st = time_interleaved({"plain": plain, "program": program, **others}, feeds, batch,
                          warmup=warmup, block=block, desc=desc)
    return Comparison(batch, st["plain"], st["program"], st["plain"].calls * batch,
                      {name: st[name] for name in others})


def compare_batch1(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray], *,
                   warmup: int = 100, block: int = 200,
                   others: Mapping[str, Runner] | None = None) -> Comparison:
    """Every row as its own call, in alternating blocks of ``block`` calls.

    The first call of a block runs after the other model has evicted this one's weights from
    the cache and costs about 2.5x a warm call (measured on the demo at batch 1, both for the
    plain network and the program); blocks of 200 keep that switching cost, which a deployment
    running one model never pays, under 1% of the mean while still alternating every few tens
    of milliseconds."""
    return _interleaved(plain, program, feeds, 1, warmup, "latency @1", block, others)


def compare_throughput(plain: Runner, program: Runner, feeds: Mapping[str, np.ndarray],
                       batch: int, *, warmup: int = 5, block: int = 4,
                       others: Mapping[str, Runner] | None = None) -> Comparison:
    """Consecutive batches of ``batch`` rows (a remainder is dropped), in alternating blocks."""
    return _interleaved(plain, program, feeds, batch, warmup, f"throughput @{batch}", block,
                        others)


def ece(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the softmax max probability, ``bins`` equal-width bins
    (each ``(lo, hi]``), weighted by the rows in each."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(float(right[m].mean()) - float(conf[m].mean()))
    return float(total)


# ---------------------------------------------------------------------------- eeopt bench


def _plain_model_path(manifest: object, model: str | None) -> str:
    from pathlib import Path

    from eeopt.errors import DataError
    from eeopt.manifest import sha256_file

    src = getattr(manifest, "source", {}) or {}
    path = model or src.get("file")
    if not path:
        raise DataError("the program records no source model; pass --model MODEL.onnx (the "
                        "multi-exit model it was compiled from)")
    if not Path(path).is_file():
        raise DataError(f"source model {path} is gone; pass --model MODEL.onnx")
    if model is None and src.get("sha256") and sha256_file(Path(path)) != src["sha256"]:
        raise DataError(f"source model {path} changed since the compile; recompile, or pass "
                        "--model explicitly")
    return str(path)


@dataclass(frozen=True)
class _PlannedCosts:
    """The plan's own cost model (manifest ``plan.cost_model``), as ``stage_cost``."""

    plain: Any
    stages: dict[tuple[int, int], Any]

    @classmethod
    def of(cls, plan: dict[str, Any], kept: list[int]) -> _PlannedCosts | None:
        from eeopt.profile import CostFit

        cm = plan.get("cost_model")
        if not cm or len(cm.get("stages", [])) != len(kept):
            return None
        prevs = [-1, *kept[:-1]]
        return cls(CostFit.from_dict(cm["plain"]),
                   {(p, k): CostFit.from_dict(d)
                    for p, k, d in zip(prevs, kept, cm["stages"], strict=True)})

    def stage_cost(self, prev: int, exit: int) -> Any:
        return self.stages[(prev, exit)]


def _ideal_and_predicted(profile: Any, kept: list[int], fractions: np.ndarray,
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


def _call_stage(call: Any, own_rows: bool, chunk: Mapping[str, np.ndarray]) -> object:
    return call(chunk) if own_rows else call()


def _bare_stages(program: Any, feeds: Mapping[str, np.ndarray], fractions: np.ndarray,
                 batch: int) -> dict[str, tuple[float, Runner]]:
    """The ideal's parts, to time beside the two models: per kept stage that any row reaches,
    ``(weight, runner)``, where the runner makes that stage's bare call (``Program.stage_calls``:
    no gate firing, no bookkeeping) and ``weight`` times its mean ms gives its expected
    ms per row. A later stage runs once per call of ``batch`` rows if any row reaches it
    (probability ``called``), on ``batch * reach / called`` rows on average; the cost is linear
    in rows, so timing it at that many rows and weighting by ``called / batch`` is exact. Empty
    for a runtime without ``stage_calls``."""
    if not hasattr(program, "stage_calls"):
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
) -> dict[str, Any]:
    """Accuracy, exit fractions, latency against the plain network (interleaved, same
    process), ideal and predicted latency from the profile, and the accuracy-latency frontier
    across budgets (each budget planned on ``calib`` and measured on ``data``).

    Each batch size is timed in ``passes`` passes over the data; the one with the median
    speedup is reported (every pass's speedup and efficiency are listed beside it), so that
    a phase in which a shared machine runs slow does not decide the result."""
    if passes < 1:
        from eeopt.errors import UsageError

        raise UsageError(f"passes must be >= 1, got {passes}")
    import tempfile
    from pathlib import Path

    from eeopt.backends.ort import configure_threads, fast_run, make_session

    configure_threads(threads)
    import eeopt
    from eeopt.calibrate import calibrate, load_labelled
    from eeopt.capture import capture, cut_to_outputs
    from eeopt.errors import EEOptError
    from eeopt.profile import profile_model

    program = eeopt.load(program_dir, threads=threads)
    src = _plain_model_path(program.manifest, model)
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

    def run_plain(f: Mapping[str, np.ndarray]) -> object:
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

    profile = profile_model(src, threads=threads, progress=progress)
    plan = program.manifest.plan or {}
    outputs = graph.output_names
    kept = [outputs.index(s.exit_output) for s in program.manifest.stages]
    # predicted: the cost model the plan was priced with, when the manifest has it (a fresh
    # profile re-measures every stage, and its noise would not match the plan's corrections)
    predict_with: Any = _PlannedCosts.of(plan, kept)
    plain_model = predict_with.plain if predict_with is not None else profile.plain
    if predict_with is None:
        corr = plan.get("cost_corrections_ms") or []
        predict_with = (replace(profile, corrections_ms=tuple(corr))
                        if len(corr) == profile.num_exits else profile)
    comps = {}
    bare: dict[int, dict[str, tuple[float, Runner]]] = {}
    every: dict[int, list[Comparison]] = {}
    for b in batches:
        bare[b] = _bare_stages(program, feeds, fractions, b)
        others = {name: fn for name, (_, fn) in bare[b].items()}
        every[b] = [compare_batch1(run_plain, run_program, feeds, others=others) if b == 1 else
                    compare_throughput(run_plain, run_program, feeds, b, others=others)
                    for _ in range(passes)]
        comps[b] = sorted(every[b], key=lambda c: c.speedup_mean)[(passes - 1) // 2]

    def ideal_of(c: Comparison, b: int) -> float | None:
        if not bare[b]:
            return None
        ms = sum(w * c.others[name].mean_ms for name, (w, _) in bare[b].items())
        return (c.plain.mean_ms / b) / ms

    latency = {}
    for b, c in comps.items():
        ideal_prof_ms, pred_ms = _ideal_and_predicted(profile, kept, fractions, b, predict_with)
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
                try:
                    p = eeopt.compile(src, Path(tmp) / f"b{budget}", calib=cal, budget=budget,
                                      profile=profile, threads=threads, verify=False,
                                      policy=program.manifest.settings.get("policy",
                                                                           "maxprob"))
                except EEOptError as exc:  # e.g. no exit pays off at budget 0
                    frontier.append({"budget_pp": budget, "skipped": str(exc)})
                    continue

                def run_p(f: Mapping[str, np.ndarray], _p: object = p) -> object:
                    return _p.run(f)  # type: ignore[attr-defined]

                c1 = compare_batch1(run_plain, run_p, sub, warmup=50)
                acc = float(np.mean(np.concatenate([  # accuracy on every row; latency on sub
                    p.run({k: v[i:i + 256] for k, v in feeds.items()}).prediction
                    for i in range(0, n, 256)]) == labels))
                frontier.append({"budget_pp": budget, "accuracy": acc,
                                 "plain_mean_ms": c1.plain.mean_ms,
                                 "program_mean_ms": c1.program.mean_ms,
                                 "speedup": c1.speedup_mean,
                                 "kept": p.manifest.plan["kept_outputs"],
                                 "thresholds": list(p.thresholds)})
    return {
        "program": str(program_dir),
        "data": data,
        "rows": int(n),
        "threads": threads,
        "accuracy": {"plain": float((plain_pred == labels).mean()),
                     "program": float((pred == labels).mean())},
        "loss_pp": 100.0 * float((plain_pred == labels).mean() - (pred == labels).mean()),
        "exit_fractions": fractions.tolist(),
        "kept_outputs": [outputs[k] for k in kept],
        "latency": latency,
        "frontier": frontier,
        "frontier_rows": int(min(frontier_limit, n)) if calib else 0,
        "profile": {"plain_ms_at_1": profile.plain.at(1),
                    "stage_ms_at_1": [e.stage.at(1) for e in profile.exits],
                    "runtime_ms_per_stage_at_1": profile.runtime.at(1)},
    }


def plot_frontier(results: dict[str, Any], path: str) -> None:
    """Accuracy against mean batch-1 latency, per budget, with the plain network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [f for f in results["frontier"] if "accuracy" in f]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if pts:
        xs = [f["program_mean_ms"] for f in pts]
        ys = [100 * f["accuracy"] for f in pts]
        ax.plot(xs, ys, "o-", color="tab:blue", label="eeopt program (planned per budget)")
        for f, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(f"{f['budget_pp']:g} pp", (x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
        plain_ms = float(np.median([f["plain_mean_ms"] for f in pts]))
        plain_acc = 100 * results["accuracy"]["plain"]  # type: ignore[index]
        ax.plot([plain_ms], [plain_acc], "s", color="tab:red", label="plain network")
    lat1 = results["latency"].get("1")
    if lat1:
        ax.plot([lat1["program"]["mean_ms"]], [100 * results["accuracy"]["program"]],  # type: ignore[index]
                "*", ms=14, color="tab:green", label="this program")
    ax.set_xlabel("mean latency per input at batch 1 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs latency, {results['data']}, {results['threads']} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
