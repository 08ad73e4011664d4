"""Cost of a model and of each candidate stage, measured on the target backend.

Two views:
- analytic: multiply-accumulates counted per node from the shapes ONNX shape inference derives
  (Conv, ConvTranspose, Gemm, MatMul; other ops count 0);
- measured (``profile_model``): per-node latency from ONNX Runtime's profiler, and wall-clock
  latency of every stage, every exit head + gate on its own, the plain network, and the
  runtime's own per-stage cost, each at a few batch sizes (mean of repeats after warm-up) and
  fitted as ``fixed + per_row * batch``. The planner prices any choice of kept exits from these:
  a stage from kept exit i to kept exit j costs the backbone segments between them, exit j's
  head + gate, and one stage call.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx

__all__ = [
    "count_macs",
    "model_macs",
    "CostFit",
    "StageProfile",
    "NodeTime",
    "ProfileReport",
    "profile_model",
]

logger = logging.getLogger(__name__)


def _fix_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = batch  # eeopt's inputs have their batch (their only free dim) here
                break
    return m


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
        inferred.graph.output
    ):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in inferred.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def count_macs(model: onnx.ModelProto, batch: int = 1) -> dict[str, int]:
    """Node name -> multiply-accumulates at ``batch`` (nodes whose shapes are unknown count 0)."""
    shapes = _shapes(_fix_batch(model, batch))
    macs: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        ins = [shapes.get(t) for t in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        n = 0
        try:
            if node.op_type == "Conv" and out and ins[1]:
                n = int(np.prod(out)) * int(np.prod(ins[1][1:]))
            elif node.op_type == "ConvTranspose" and ins[0] and ins[1]:
                n = int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))
            elif node.op_type in ("Gemm", "MatMul") and out and ins[0]:
                k = ins[0][-1]
                if node.op_type == "Gemm" and any(
                    a.name == "transA" and a.i for a in node.attribute
                ):
                    k = ins[0][0]
                n = int(np.prod(out)) * int(k)
        except (IndexError, TypeError):
            n = 0
        macs[name] = n
    return macs


def model_macs(model: onnx.ModelProto | str | os.PathLike[str], batch: int = 1) -> int:
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    return sum(count_macs(m, batch).values())


# ---------------------------------------------------------------------------- measured


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

    def to_dict(self) -> dict[str, object]:
        return {"fixed_ms": self.fixed_ms, "per_row_ms": self.per_row_ms,
                "samples": {str(b): t for b, t in self.samples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostFit:
        return cls(float(d["fixed_ms"]), float(d["per_row_ms"]),
                   {int(b): float(t) for b, t in d.get("samples", {}).items()})

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
        from dataclasses import asdict

        return asdict(self)


def _measure(fns: dict[str, Callable[[], object]], min_time_s: float,
             max_reps: int = 2000, rounds: int = 20) -> dict[str, float]:
    """Mean ms per call of each function, measured in interleaved rounds after a warm-up,
    so that a machine whose speed drifts skews every function alike. The mean, not the median:
    it is the expected cost the planner minimises and the benchmark's headline measures."""
    import time

    clock = time.perf_counter
    for fn in fns.values():  # warm-up: first calls allocate arenas and fill caches
        t_end = clock() + min(0.05, min_time_s)
        for i in range(max_reps):
            fn()
            if i >= 10 and clock() > t_end:
                break
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_round = min_time_s / rounds
    for _ in range(rounds):
        for k, fn in fns.items():
            t_end = clock() + per_round
            reps = 0
            while (reps < 3 or clock() < t_end) and reps < max_reps // rounds:
                t0 = clock()
                fn()
                times[k].append(clock() - t0)
                reps += 1
    return {k: float(np.mean(v) * 1e3) for k, v in times.items()}


def _profile_nodes(model: bytes, feeds: dict[str, np.ndarray], stage: int,
                   reps: int = 30) -> list[NodeTime]:
    """ONNX Runtime's own per-node timings, median over ``reps`` runs after warm-up."""
    import json

    from eeopt.backends.ort import make_session

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
    from tqdm import tqdm

    from eeopt.backends.ort import configure_threads, fast_run, make_session
    from eeopt.capture import cut_to_outputs, random_inputs, tile_inputs
    from eeopt.compiler import _build_stages, _emit, prepare
    from eeopt.kernels.reference import NEVER
    from eeopt.passes import FuseGate, PassManager, RemoveDeadNodes, extract_head

    configure_threads(threads)
    prep = prepare(model, example_inputs=example_inputs)
    graph = prep.graph
    k_exits = len(prep.plan.stages)
    built = _build_stages(prep, [0.5] * (k_exits - 1), "maxprob")
    never = np.array(np.inf, dtype=np.float32)

    # one session that exposes every tensor any stage or head reads
    tap = onnx.ModelProto()
    tap.CopyFrom(graph.model)
    wanted = set(prep.plan.carried) | {t for h in prep.heads.heads for t in h.reads}
    for t in sorted(wanted - {o.name for o in tap.graph.output} - set(graph.input_names)):
        tap.graph.output.append(onnx.ValueInfoProto(name=t))
    tap_sess = make_session(tap.SerializeToString())
    tap_names = [o.name for o in tap.graph.output]

    def tensors(batch: int) -> dict[str, np.ndarray]:
        feeds = (tile_inputs(prep.example, batch) if prep.example is not None
                 else random_inputs(prep.inputs, batch, seed=batch))
        outs = tap_sess.run(tap_names, feeds)
        return {**feeds, **dict(zip(tap_names, outs, strict=True))}

    head_models = []
    for h in prep.heads.heads[:-1]:
        hg = extract_head(graph, h, prep.specs)
        hg = PassManager([FuseGate(h.output, stage=h.index), RemoveDeadNodes()])(hg).graph
        head_models.append(hg.model)
    head_sess = [make_session(m.SerializeToString()) for m in head_models]
    plain_model = cut_to_outputs(graph, [graph.output_names[-1]]).model
    plain_sess = make_session(plain_model.SerializeToString())
    # every session is called the way the runtime calls its stages (fast_run), so that the
    # plain network, heads and stages pay the same per-call cost
    head_out = [[o.name for o in s.get_outputs()] for s in head_sess]
    plain_out = [o.name for o in plain_sess.get_outputs()]

    def stage_feeds(k: int, vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = built[k][1]
        f = {t.name: vals[t.name] for t in spec.inputs}
        if spec.threshold_input:
            f[spec.threshold_input] = never
        return f

    def head_feeds(k: int, vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [i.name for i in head_models[k].graph.input]
        return {n: (never if n == "eeopt_threshold" else vals[n]) for n in names}

    stage_s: list[dict[int, float]] = [{} for _ in range(k_exits)]
    head_s: list[dict[int, float]] = [{} for _ in range(k_exits - 1)]
    plain_s: dict[int, float] = {}
    runtime_s: dict[int, float] = {}
    bar = tqdm(total=len(batches), desc="eeopt profile", unit="batch size",
               disable=not progress or None)
    with tempfile.TemporaryDirectory() as tmp:
        # the stages are timed as the runtime calls them: its own sessions and fetch lists
        program = _emit(prep, Path(tmp) / "p", [0.5] * (k_exits - 1), "maxprob",
                        threads=None, verify=False)
        hot = program._hot
        # no row leaves, so every stage runs: the runtime's own cost per stage, measured
        program._thr0 = [np.array(NEVER["maxprob"], dtype=np.float32)] * (k_exits - 1)
        for b in batches:
            vals = tensors(b)
            fns: dict[str, Callable[[], object]] = {}
            for k in range(k_exits):
                f = stage_feeds(k, vals)
                fns[f"s{k}"] = partial(hot[k].run, hot[k].fetch, f, None)
            for k in range(k_exits - 1):
                fns[f"h{k}"] = partial(fast_run(head_sess[k]), head_out[k], head_feeds(k, vals),
                                       None)
            x = {s.name: vals[s.name] for s in prep.inputs}
            fns["plain"] = partial(fast_run(plain_sess), plain_out, x, None)
            fns["program"] = partial(program.run, x)
            med = _measure(fns, min_time_s * (len(fns) / 2))
            for k in range(k_exits):
                stage_s[k][b] = med[f"s{k}"]
            for k in range(k_exits - 1):
                head_s[k][b] = med[f"h{k}"]
            plain_s[b] = med["plain"]
            runtime_s[b] = max(med["program"] - sum(stage_s[k][b] for k in range(k_exits)),
                               0.0) / k_exits
            bar.update()
    bar.close()

    vals1 = tensors(1)
    nodes: list[NodeTime] = []
    for k, (m, _) in enumerate(built):
        nodes += _profile_nodes(m.SerializeToString(), stage_feeds(k, vals1), k)
    macs = [model_macs(m) for m, _ in built]
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
        plain_macs=model_macs(plain_model), nodes=tuple(nodes))
