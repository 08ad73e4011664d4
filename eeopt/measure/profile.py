"""Cost of a model and of each candidate stage, measured on the target backend.

``profile_model`` measures per-node latency from ONNX Runtime's profiler, and wall-clock latency
of every stage, every exit head + gate on its own, the plain network, and the runtime's own
per-stage cost, each at a few batch sizes (mean of repeats after warm-up, the functions
interleaved) and fitted as ``fixed + per_row * batch``: a ``ProfileReport``
(``eeopt.planning.cost``), from which the planner prices any choice of kept exits. The
analytic view, multiply-accumulates per node, is ``eeopt.analysis.macs``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from eeopt.analysis import model_macs
from eeopt.build import analyse_model, emit_onnx
from eeopt.kernels.reference import NEVER
from eeopt.measure.timing import measure_stats
from eeopt.passes import (
    ExposeTensors,
    ExtractHead,
    FuseGate,
    PassManager,
    RemoveDeadNodes,
    cut_to_outputs,
)
from eeopt.planning.cost import ZERO, CostFit, NodeTime, ProfileReport, StageProfile
from eeopt.program import THRESHOLD_INPUT
from eeopt.runtime import configure_threads, fast_run, make_session

__all__ = ["profile_model"]

logger = logging.getLogger(__name__)


def _profile_nodes(model: bytes, feeds: dict[str, np.ndarray], stage: int,
                   reps: int = 30) -> list[NodeTime]:
    """ONNX Runtime's own per-node timings, median over ``reps`` runs after warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = make_session(model, profile_prefix=os.path.join(tmp, "ortprof"))
        for _ in range(5 + reps):
            sess.run(None, feeds)
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    per: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    order: dict[str, int] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        per.setdefault(name, []).append(float(ev["dur"]))
        ops[name] = ev.get("args", {}).get("op_name", "?")
        order.setdefault(name, len(order))
    out = []
    for name in sorted(per, key=order.__getitem__):
        durs = per[name][5:] or per[name]  # drop warm-up runs
        out.append(NodeTime(stage, name, ops[name], float(np.median(durs))))
    return out


def profile_model(
    model: object,
    *,
    threads: int | None = 1,
    batches: tuple[int, ...] = (1, 8, 64),
    example_inputs: object = None,
    min_time_s: float = 0.3,
    progress: bool = True,
) -> ProfileReport:
    """Measure every exit's stage, head + gate, the plain network, and the runtime's per-stage
    cost on ONNX Runtime (CPU) at ``threads`` threads."""
    configure_threads(threads)
    am = analyse_model(model, example_inputs=example_inputs)
    graph = am.graph
    k_exits = am.num_exits
    never = np.array(np.inf, dtype=np.float32)

    # one session that exposes every tensor a head reads
    tap = ExposeTensors(sorted({t for h in am.heads.heads for t in h.reads}))(graph).graph
    tap_sess = make_session(tap.model.SerializeToString())
    tap_names = tap.output_names

    def tensors(batch: int) -> dict[str, np.ndarray]:
        feeds = am.feeds(batch, seed=batch)
        outs = tap_sess.run(tap_names, feeds)
        return {**feeds, **dict(zip(tap_names, outs, strict=True))}

    head_models = []
    for h in am.heads.heads[:-1]:
        hg = PassManager([ExtractHead(h, am.specs), FuseGate(h.output, stage=h.index),
                          RemoveDeadNodes()])(graph).graph
        head_models.append(hg.model)
    head_sess = [make_session(m.SerializeToString()) for m in head_models]
    plain_model = cut_to_outputs(graph, [graph.output_names[-1]]).model
    plain_sess = make_session(plain_model.SerializeToString())
    # every session is called the way the runtime calls its stages (fast_run), so that the
    # plain network, heads and stages pay the same per-call cost
    head_out = [[o.name for o in s.get_outputs()] for s in head_sess]
    plain_out = [o.name for o in plain_sess.get_outputs()]

    def head_feeds(k: int, vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [i.name for i in head_models[k].graph.input]
        return {n: (never if n == THRESHOLD_INPUT else vals[n]) for n in names}

    stage_s: list[dict[int, float]] = [{} for _ in range(k_exits)]
    head_s: list[dict[int, float]] = [{} for _ in range(k_exits - 1)]
    plain_s: dict[int, float] = {}
    runtime_s: dict[int, float] = {}
    noise: list[float] = []
    nodes: list[NodeTime] = []
    macs: list[int] = []
    bar = tqdm(total=len(batches), desc="eeopt profile", unit="batch size",
               disable=not progress or None)
    with tempfile.TemporaryDirectory() as tmp:
        # the stages are timed as the runtime calls them: its own sessions and fetch lists
        program = emit_onnx(am, Path(tmp) / "p", [0.5] * (k_exits - 1), "maxprob",
                            threads=None, verify=False)
        # no row leaves, so every stage runs: the runtime's own cost per stage, measured
        program.set_thresholds([NEVER["maxprob"]] * (k_exits - 1))
        for b in batches:
            vals = tensors(b)
            x = {s.name: vals[s.name] for s in am.inputs}
            fns: dict[str, Callable[[], object]] = {}
            for k, call in enumerate(program.stage_calls(x)):
                fns[f"s{k}"] = partial(call.run, call.fetch, call.feeds, None)
            for k in range(k_exits - 1):
                fns[f"h{k}"] = partial(fast_run(head_sess[k]), head_out[k], head_feeds(k, vals),
                                       None)
            fns["plain"] = partial(fast_run(plain_sess), plain_out, x, None)
            fns["program"] = partial(program.run, x)
            stats = measure_stats(fns, min_time_s * (len(fns) / 2))
            med = {k: m for k, (m, _) in stats.items()}
            # the stage calls and the plain network: what a plan's cost is made of (the heads
            # alone are short calls, noisier, and priced only inside their stage)
            noise += [stats[k][1] for k in fns if k.startswith("s") or k == "plain"]
            for k in range(k_exits):
                stage_s[k][b] = med[f"s{k}"]
            for k in range(k_exits - 1):
                head_s[k][b] = med[f"h{k}"]
            plain_s[b] = med["plain"]
            runtime_s[b] = max(med["program"] - sum(stage_s[k][b] for k in range(k_exits)),
                               0.0) / k_exits
            bar.update()
        bar.close()
        for k, (spec, call) in enumerate(zip(program.manifest.stages,
                                             program.stage_calls(am.feeds(1, seed=1)),
                                             strict=True)):
            stage_bytes = (program.path / spec.file).read_bytes()
            nodes += _profile_nodes(stage_bytes, call.feeds, k)
            macs.append(model_macs(onnx.load_from_string(stage_bytes)))
    exits = []
    for k in range(k_exits):
        stage = CostFit.fit(stage_s[k])
        hg = CostFit.fit(head_s[k]) if k < k_exits - 1 else ZERO
        backbone = stage - hg if k < k_exits - 1 else stage
        mine = [n for n in nodes if n.stage == k]
        exits.append(StageProfile(
            exit=k, output=graph.output_names[k], stage=stage, head_gate=hg, backbone=backbone,
            node_us=float(sum(n.us for n in mine)),
            gate_us=float(sum(n.us for n in mine if "eeopt_gate" in n.name)), macs=macs[k]))
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    return ProfileReport(
        model=name, threads=int(threads or 0), batches=tuple(batches), exits=tuple(exits),
        plain=CostFit.fit(plain_s), runtime=CostFit.fit(runtime_s),
        plain_macs=model_macs(plain_model), nodes=tuple(nodes),
        noise=float(np.median(noise)) if noise else 0.0)
