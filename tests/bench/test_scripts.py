"""The benchmark scripts still run against the library.

``benchmarks/cpp_vs_python.py`` times the Python runtime's stage calls through
``OrtProgram.instrument``; when it reached into a private field instead, a change to that field
broke it once without any test noticing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import eeopt

import topologies as T

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" /
                                                  f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpp_vs_python_times_the_python_runtimes_stage_calls(tmp_path: Path) -> None:
    bench = _load("cpp_vs_python")
    d = tmp_path / "p"
    x = T.example("residual", 16, 3)[0].numpy()
    eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                  threshold=0.5)
    py = bench.PythonBench(d, x, 1)
    got = py.run(8, 2)
    assert len(got["total_us"]) == len(got["session_us"]) == 8
    assert all(k >= 1 for k in got["stages_run"])  # every call ran at least one stage
    # the time inside the session calls is part of each call's total
    assert all(0 < s <= t for s, t in zip(got["session_us"], got["total_us"], strict=True))
    # the wrapped runtime still gives the unwrapped one's answers
    want = eeopt.load(d).run(x)
    np.testing.assert_array_equal(py.prog.run(x).exit, want.exit)


@pytest.mark.parametrize("name", ["demo_fashion_mnist", "gating", "cascade", "cpp_vs_python",
                                  "planner_promise", "plan_stability"])
def test_benchmark_scripts_import(name: str) -> None:
    assert _load(name) is not None


def test_planner_promise_plans_and_scores_a_split() -> None:
    """One split of the promise benchmark on synthetic calibration data: every budget and
    mode planned on one half and scored on the other, then summarised."""
    from planning.test_search import _confident_calibration, _profile

    bench = _load("planner_promise")
    bench._WORLD["syn"] = (_confident_calibration(4000, np.random.default_rng(0)), _profile(3))
    rows = bench._split(("syn", 0))
    assert len(rows) == len(bench.BUDGETS) * len(bench.MODES)
    for r in rows:
        assert r["held"] == (r["loss_pp"] <= r["budget_pp"] + 1e-9)
        assert r["speedup"] > 0 and 0.0 <= r["probability"] <= 1.0
    s = bench._summary(rows[:2])
    assert s["splits"] == 2 and 0.0 <= s["hit_interval"][0] <= s["hit_rate"] <= 1.0
    assert bench._binom_cdf(45, 50, 0.9) == pytest.approx(0.5688, abs=1e-3)
