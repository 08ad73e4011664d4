"""Each learned policy: trained on a small real subset, compiled, and run against its pure-torch
reference (exits equal, logits within 1e-4) and the numpy reference of its scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gates.conftest import gate_data, path_of

import eeopt
from eeopt.gates import LEARNED_POLICIES, GateSet, reference_run, reference_scores, train_gates

STEPS = 120


@pytest.fixture(scope="module")
def trained(demo: dict[str, object]) -> dict[tuple[str, int], GateSet]:
    data = gate_data(demo)
    return {(p, s): train_gates(p, data, seed=s, steps=STEPS, progress=False)
            for p in LEARNED_POLICIES for s in (0, 1)}


def _split_thresholds(scores: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Per exit, a threshold at a random quantile of its scores, so that rows really split."""
    return [float(np.quantile(s, rng.uniform(0.3, 0.7))) for s in scores]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("policy", LEARNED_POLICIES)
def test_compiled_matches_torch_reference(policy: str, seed: int, demo: dict[str, object],
                                          trained: dict[tuple[str, int], GateSet],
                                          tmp_path: Path) -> None:
    gates = trained[(policy, seed)]
    test = demo["test"]
    assert isinstance(test, dict)
    _, ref_scores = reference_scores(path_of(demo), gates, test)
    # the numpy reference (what the planner uses) agrees with the torch one
    np.testing.assert_allclose(gates.scores(demo["test_data"]), ref_scores,  # type: ignore[arg-type]
                               rtol=1e-4, atol=1e-5)
    thr = _split_thresholds(ref_scores, np.random.default_rng(seed))
    prog = eeopt.compile(path_of(demo), tmp_path / "p", policy=policy, gates=gates,
                         thresholds=thr)
    assert {s.gate.policy for s in prog.manifest.stages if s.gate} == {policy}
    assert eeopt.load(tmp_path / "p").manifest.settings["gates"]["policy"] == policy
    want_exits, want_logits = reference_run(path_of(demo), gates, test, thr)
    assert len(np.unique(want_exits)) >= 2  # the thresholds really split the rows
    name = str(demo["name"])
    x = test[name]
    for batch in (1, 7, 64):
        got_e, got_l = [], []
        for i in range(0, x.shape[0], batch):
            r = prog.run({name: x[i:i + batch]})
            got_e.append(r.exit)
            got_l.append(r.logits)
        np.testing.assert_array_equal(np.concatenate(got_e), want_exits)
        np.testing.assert_allclose(np.concatenate(got_l), want_logits, rtol=1e-4, atol=1e-5)
    # always exit at the first gate, and never exit early (runtime overrides)
    k = prog.num_exits - 1
    assert (prog.run({name: x}, thresholds=[0.0] * k).exit == 0).all()
    never = prog.run({name: x}, thresholds=[1.01] * k)
    assert (never.exit == k).all()
    e_all, l_all = reference_run(path_of(demo), gates, test, [1.01] * k)
    np.testing.assert_allclose(never.logits, l_all, rtol=1e-4, atol=1e-5)


def test_default_threshold_and_cli(demo: dict[str, object], tmp_path: Path) -> None:
    """Without --budget the gates train on all of --calib and fire at 0.5."""
    from e2e.test_cli import eeopt_cli

    name = str(demo["name"])
    feeds = demo["feeds"]
    assert isinstance(feeds, dict)
    npz = tmp_path / "calib.npz"
    np.savez(npz, **{name: feeds[name][:300]}, y=np.asarray(demo["labels"])[:300])
    out = tmp_path / "prog"
    p = eeopt_cli("compile", path_of(demo), "--out", out, "--policy", "cost-sensitive",
                  "--calib", npz, "--tau", "0.3")
    assert p.returncode == 0, p.stderr
    prog = eeopt.load(out)
    assert prog.thresholds == (0.5,) * (prog.num_exits - 1)
    assert prog.manifest.settings["gates"]["tau"] == 0.3
    xn = tmp_path / "x.npy"
    np.save(xn, feeds[name][:50])
    r = eeopt_cli("run", out, "--input", xn, "--output", tmp_path / "o.npz")
    assert r.returncode == 0, r.stderr
