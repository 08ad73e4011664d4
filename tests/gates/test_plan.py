"""Learned gates under the planner: kept-exit subsets and a planned compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gates.conftest import gate_data, path_of

import eeopt
from eeopt.build import analyse_model, emit_onnx
from eeopt.gates import LEARNED_POLICIES, train_gates
from eeopt.passes import cut_to_outputs


@pytest.mark.parametrize("policy", LEARNED_POLICIES)
def test_dropped_exit_is_a_never_firing_gate(policy: str, demo: dict[str, object],
                                             tmp_path: Path) -> None:
    """A program cut to exits (0, 2, 3) behaves like the full program with exit 1 never
    firing: each kept gate reads only its own exit's tensors (the twin: its own column)."""
    gates = train_gates(policy, gate_data(demo), steps=80, progress=False)
    full = eeopt.compile(path_of(demo), tmp_path / "full", policy=policy, gates=gates,
                         threshold=0.5)
    prep = demo["prep"]
    outs = prep.graph.output_names  # type: ignore[attr-defined]
    kept = (0, 2, 3)
    sub = analyse_model(cut_to_outputs(prep.graph, [outs[k] for k in kept]).model)  # type: ignore[attr-defined]
    cut = emit_onnx(sub, tmp_path / "cut", [0.5, 0.5], policy, threads=None, verify=True,
                gates=gates.learned_gates(kept))
    test = demo["test"]
    assert isinstance(test, dict)
    want = full.run(test, thresholds=[0.5, 1.01, 0.5])
    got = cut.run(test)
    np.testing.assert_array_equal(np.asarray(kept)[got.exit], want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-5)


def test_planned_compile(demo: dict[str, object], tmp_path: Path) -> None:
    from eeopt.measure import profile_model

    report = profile_model(str(path_of(demo)), threads=1, batches=(1, 8), min_time_s=0.05,
                           progress=False)
    feeds, labels = demo["feeds"], demo["labels"]
    # 400 rows, 280 of them searched: one row is 0.36 pp, and the best-effort promise (the
    # loss plus two of its standard errors within the budget) needs a few points of budget
    prog = eeopt.compile(path_of(demo), tmp_path / "p", policy="gate-unit",
                         calib=(feeds, labels), budget=3.0, profile=report, threads=1)
    plan = prog.manifest.plan
    assert plan is not None and plan.policy == "gate-unit"
    assert plan.gate_train_rows is not None and plan.plan_rows is not None
    assert plan.gate_train_rows + plan.plan_rows == 800
    assert plan.gate_train_rows == 400
    assert all(0.0 <= t <= 1.0 for t in prog.thresholds)
    assert plan.kept_outputs[-1] == prep_last(demo)
    # the cost model the plan was priced with, per kept stage, for `eeopt bench` to check
    assert plan.cost_model is not None
    assert len(plan.cost_model.stages) == len(plan.kept_outputs)
    test = demo["test"]
    assert isinstance(test, dict)
    res = prog.run(test)
    assert (res.exit < prog.num_exits - 1).mean() > 0.5  # most rows leave early


def prep_last(demo: dict[str, object]) -> str:
    return str(demo["prep"].graph.output_names[-1])  # type: ignore[attr-defined]


@pytest.mark.slow
def test_cli_planner_on_fashion_mnist(demo: dict[str, object], tmp_path: Path) -> None:
    """As a user would type it: a learned policy planned on the shipped validation split."""
    from e2e.test_cli import eeopt_cli

    out = tmp_path / "prog"
    p = eeopt_cli("compile", path_of(demo), "--out", out, "--policy", "jei", "--lambda", "0.5",
                  "--calib", "fashion-mnist:val", "--budget", "0.5", "--threads", "1")
    assert p.returncode == 0, p.stderr
    assert "plan (jei, budget 0.5 pp" in p.stdout
    prog = eeopt.load(out)
    assert prog.manifest.settings["gates"]["lam"] == 0.5
    assert prog.manifest.plan is not None and prog.manifest.plan.plan_rows == 2500
    i = eeopt_cli("inspect", out)
    assert i.returncode == 0 and "jei" in i.stdout
