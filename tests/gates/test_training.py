"""Each policy's training learns what it is meant to, and bad options give one clear error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gates.conftest import gate_data, path_of

import eeopt
from eeopt.errors import EEOptError, UsageError
from eeopt.gates import (
    GateData,
    earliest_correct,
    jei_paper_exits,
    oracle_exit,
    train_gates,
)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative."""
    pos, neg = score[label], score[~label]
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(1, order.size + 1)
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2)
                 / (pos.size * neg.size))


def _synthetic(n: int, seed: int) -> GateData:
    """Three exits. Exit 0 is right exactly when the head's input feature 0 is positive, and
    its logits say nothing about it (same confidence either way); exits 1 and 2 are right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = rng.standard_normal((n, 5)).astype(np.float32)
    z0 = rng.standard_normal((n, 4)).astype(np.float32)
    ok = t[:, 0] > 0
    pred0 = np.where(ok, y, (y + 1) % 4)
    z0[np.arange(n), pred0] += 4.0
    z1 = rng.standard_normal((n, 4)).astype(np.float32)
    z1[np.arange(n), y] += 4.0
    return GateData(logits=(z0, z1, z1.copy()), labels=y, tensors=(t, t[:, ::-1].copy()),
                    tensor_names=("t0", "t1"), tensor_ranks=(2, 2), route_x=t,
                    route_input="x", route_pool=0, route_rank=2,
                    macs=np.array([0.2, 0.6, 1.0]))


def test_gate_unit_learns_from_the_backbone_feature() -> None:
    train, test = _synthetic(600, 0), _synthetic(400, 1)
    gates = train_gates("gate-unit", train, progress=False)
    assert gates.sources == ("tensor+logits", "tensor+logits")
    s = gates.scores(test)
    label = earliest_correct(test.correct()) <= 0
    assert _auc(s[0], label) > 0.95
    # the logits alone carry no signal here: the JEI gate (logit statistics only) cannot tell
    jei = train_gates("jei", train, lam=0.0, progress=False)
    assert _auc(jei.scores(test)[0], label) < 0.7


def test_twin_learns_the_target_exit() -> None:
    train, test = _synthetic(600, 2), _synthetic(400, 3)
    gates = train_gates("twin", train, progress=False)
    route = gates.scores(test)  # P(target <= k)
    first = earliest_correct(test.correct())
    assert _auc(route[0], first == 0) > 0.95
    assert (np.diff(route, axis=0) >= -1e-6).all()


def test_jei_and_cost_sensitive_on_real_exits(demo: dict[str, object]) -> None:
    data = gate_data(demo)
    test = demo["test_data"]
    assert isinstance(test, GateData)
    jei = train_gates("jei", data, lam=0.3, progress=False)
    star = oracle_exit(test, 0.3)
    s = jei.scores(test)
    for k in range(2):  # the gate separates rows whose oracle exit is <= k
        lab = star <= k
        if 0 < lab.sum() < lab.size:
            assert _auc(s[k], lab) > 0.75
    # a higher price of time makes the cost-sensitive policy exit earlier
    lo = train_gates("cost-sensitive", data, tau=0.0, progress=False).scores(test)
    hi = train_gates("cost-sensitive", data, tau=3.0, progress=False).scores(test)
    assert (hi[0] >= 0.5).mean() > (lo[0] >= 0.5).mean()
    assert (hi[0] >= 0.5).mean() > 0.95


def test_oracle_and_paper_rule() -> None:
    data = _synthetic(50, 4)
    data = replace(data, macs=np.array([0.0, 0.5, 1.0]))
    star = oracle_exit(data, 0.0)  # no price: the most confident right exit
    assert ((star == 0) <= data.correct()[0]).all()
    g = np.array([[0.6, 0.2, 0.1], [0.9, 0.7, 0.2]])
    # P0 = g0; exit when P0 >= .5. Row 1: P1 = min(.7, .8) = .7, .7 / .8 >= .5 -> exit 1.
    # Row 2: P1 = .2, .2 / .9 < .5 -> final.
    np.testing.assert_array_equal(jei_paper_exits(g), [0, 1, 2])


def test_bad_options(demo: dict[str, object], tmp_path: Path) -> None:
    from e2e.test_cli import _one_line_error, eeopt_cli

    model = path_of(demo)
    _one_line_error(eeopt_cli("compile", model, "--out", tmp_path / "a", "--policy", "jei"), 2,
                    "--policy jei learns its gates from labelled data: pass --calib")
    _one_line_error(eeopt_cli("compile", model, "--out", tmp_path / "a", "--policy", "twin",
                              "--calib", "fashion-mnist:val", "--tau", "0.1"), 2,
                    "--tau applies to --policy cost-sensitive")
    _one_line_error(eeopt_cli("compile", model, "--out", tmp_path / "a", "--lambda", "0.1",
                              "--threshold", "0.9"), 2, "--lambda applies to the learned")
    gates = train_gates("jei", gate_data(demo), steps=10, progress=False)
    with pytest.raises(UsageError, match="out of range for policy jei"):
        eeopt.compile(model, tmp_path / "b", policy="jei", gates=gates, threshold=1.5)
    with pytest.raises(UsageError, match="trained for policy jei, not twin"):
        eeopt.compile(model, tmp_path / "b", policy="twin", gates=gates)
    unit = train_gates("gate-unit", gate_data(demo), steps=10, progress=False)
    bogus = replace(unit, tensor_names=("nope",) + unit.tensor_names[1:])
    with pytest.raises(EEOptError, match="reads 'nope', which this stage neither computes"):
        eeopt.compile(model, tmp_path / "b", policy="gate-unit", gates=bogus)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
