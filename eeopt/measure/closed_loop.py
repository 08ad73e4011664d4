"""The closed loop: run a planned program row by row on calibration inputs and measure what
the profile's warm, isolated timings missed (mostly the cold caches of stages that few rows
reach), as a per-exit cost correction the planner then prices in."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eeopt.build import AnalysedModel, emit_onnx
from eeopt.kernels.onnx_learned_gate import LearnedGate
from eeopt.passes import cut_to_outputs
from eeopt.planning import ExitPlan, ProfileReport
from eeopt.runtime import fast_run, make_session

__all__ = ["measure_corrections"]

logger = logging.getLogger(__name__)


def measure_corrections(model: AnalysedModel, sub: AnalysedModel, plan: ExitPlan,
                        report: ProfileReport,
                        feeds: dict[str, np.ndarray], policy: str, threads: int | None,
                        max_rows: int = 5000, min_rows: int = 20,
                        gates: Sequence[LearnedGate] | None = None) -> tuple[float, ...]:
    """Per exit, measured minus modelled cost of its stage, from running ``plan``'s program
    row by row on calibration inputs (0 where too few rows reach it to tell). ``sub`` is the
    analysis of the model cut to the plan's kept exits."""
    outputs = model.graph.output_names
    kept = list(plan.kept)
    n = min(next(iter(feeds.values())).shape[0], max_rows)
    rows = [{k: np.ascontiguousarray(v[i:i + 1]) for k, v in feeds.items()} for i in range(n)]
    plain_sess = make_session(cut_to_outputs(model.graph, [outputs[-1]]).model
                              .SerializeToString())
    plain_run, plain_fetch = fast_run(plain_sess), [outputs[-1]]  # as the profile calls it
    with tempfile.TemporaryDirectory() as tmp:
        prog = emit_onnx(sub, Path(tmp) / "p", list(plan.thresholds), policy, threads=threads,
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
        modelled = report.stage_cost(prev, k).at(1)
        if mask.sum() < min_rows:
            break  # later groups would be measured against an unknown baseline
        mean = float(times[mask].mean() * 1e3)
        corr[k] = max(mean - prev_mean - modelled, -0.5 * modelled)
        prev_mean, prev = mean, k
    logger.info("closed-loop cost corrections (ms): %s (machine speed factor %.2f)",
                [round(c, 4) for c in corr], speed)
    return tuple(corr)
