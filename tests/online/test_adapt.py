"""The online threshold controller on synthetic streams (its logic) and on a compiled program
(its plumbing)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import eeopt
from eeopt.errors import UsageError
from eeopt.online import AdaptiveProgram, ladder_thresholds, wilson_upper
from eeopt.runtime import Result

import topologies as T


class Stream:
    """A one-gate program over synthetic rows ``[p, wrong]``: the early exit's top softmax
    probability is ``p`` (in [0.5, 1)), on class ``wrong``; the final exit always says class 0.
    A row leaves early when ``p`` reaches the threshold, and its early answer then disagrees
    with the final one exactly when ``wrong`` is 1. The true loss is known in closed form."""

    def __init__(self, threshold: float = 0.6) -> None:
        self.manifest = SimpleNamespace(stages=[SimpleNamespace(gate=SimpleNamespace(
            policy="maxprob")), SimpleNamespace(gate=None)])
        self.thresholds = (threshold,)
        self.num_exits = 2
        self.input_specs = [SimpleNamespace(name="x")]

    def run_all(self, x: Any) -> list[np.ndarray]:
        x = x["x"] if isinstance(x, dict) else x
        p, wrong = x[:, 0], x[:, 1].astype(np.int64)
        early = np.empty((x.shape[0], 2), dtype=np.float32)
        early[np.arange(len(p)), wrong] = np.log(p)
        early[np.arange(len(p)), 1 - wrong] = np.log1p(-p)
        final = np.tile(np.array([[8.0, 0.0]], dtype=np.float32), (x.shape[0], 1))
        return [early, final]

    def run(self, x: Any, thresholds: Any = None) -> Result:
        t = float(np.asarray(thresholds if thresholds is not None else self.thresholds)[0])
        early_z, final_z = self.run_all(x)
        x = x["x"] if isinstance(x, dict) else x
        leave = x[:, 0] >= t
        logits = np.where(leave[:, None], early_z, final_z).astype(np.float32)
        return Result(logits, np.where(leave, 0, 1).astype(np.int64))


def rows(n: int, wrong_rate: float, rng: np.random.Generator, safe: float = 0.97) -> np.ndarray:
    p = 0.5 + 0.5 * rng.random(n)
    wrong = (rng.random(n) < wrong_rate) & (p < safe)
    return np.stack([p, wrong.astype(np.float64)], axis=1)


def true_loss_pp(t: float, wrong_rate: float, safe: float = 0.97) -> float:
    return 100.0 * max(0.0, safe - max(t, 0.5)) / 0.5 * wrong_rate


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 30, 0.95) == pytest.approx(0.0827, abs=5e-4)
    assert wilson_upper(5, 100, 0.95) > 0.05 > 0.0
    assert wilson_upper(50, 100, 0.95) < wilson_upper(50, 100, 0.99)
    assert wilson_upper(3, 0, 0.95) == 1.0
    rng = np.random.default_rng(0)  # covers the true rate about 95% of the time
    hits = sum(wilson_upper(int(rng.binomial(200, 0.1)), 200, 0.95) >= 0.1 for _ in range(2000))
    assert 0.92 < hits / 2000 < 0.99


def test_the_ladder_moves_every_policy_toward_no_early_exit() -> None:
    pol = ["maxprob", "entropy", "patience", "jei", "margin"]
    t0 = [0.7, 0.5, 2.0, 0.4, 0.3]
    levels = [ladder_thresholds(pol, t0, k, top=6) for k in range(-2, 7)]
    assert levels[2] == pytest.approx(t0)
    for lo, hi in zip(levels, levels[1:], strict=False):
        assert hi[0] >= lo[0] and hi[1] <= lo[1] and hi[2] >= lo[2] and hi[3] >= lo[3]
    assert levels[-1] == [np.inf, -np.inf, np.inf, np.inf, np.inf]  # top: none leaves early
    assert min(levels[0][0], levels[0][3]) >= 0.01 and levels[0][2] >= 1.0
    with pytest.raises(UsageError, match="does not know"):
        ladder_thresholds(["weird"], [0.5], 1, top=4)


def _serve(ctl: AdaptiveProgram, data: np.ndarray, batch: int = 100) -> list[tuple[int, float]]:
    """Serve ``data`` in batches, processing the shadow queue after each; returns the
    thresholds in force per batch."""
    seen = []
    for i in range(0, data.shape[0], batch):
        seen.append((ctl.level, ctl.thresholds[0]))
        ctl.run(data[i:i + batch])
        ctl.process_shadow()
    return seen


def _shifted(seed: int) -> tuple[AdaptiveProgram, list[tuple[int, float]],
                                 list[tuple[int, float]]]:
    rng = np.random.default_rng(seed + 10)
    ctl = AdaptiveProgram(Stream(0.6), 1.0, shadow=0.05, window=2000, min_shadow=30, seed=seed)
    before = _serve(ctl, rows(10_000, 0.005, rng))
    return ctl, before, _serve(ctl, rows(30_000, 0.15, rng))


def test_after_a_shift_the_controller_holds_the_budget_where_fixed_thresholds_do_not() -> None:
    budget, wrong_after = 1.0, 0.15
    assert true_loss_pp(0.6, wrong_after) > 10 * budget  # fixed thresholds overshoot
    transients = []
    for seed in range(6):
        ctl, before, after = _shifted(seed)
        assert all(true_loss_pp(t, 0.005) <= budget for _, t in before)  # calm: within
        losses = [true_loss_pp(t, wrong_after) for _, t in after]
        first_ok = next((i for i, v in enumerate(losses) if v <= budget), len(losses))
        transients.append(first_ok * 100)  # rows after the shift until within the budget
        tail = losses[first_ok:]
        # once within, it stays (raising only lowers the loss; lowering needs proof)
        assert not tail or max(tail) <= budget, (seed, max(tail))
        st = ctl.state()
        assert st["decisions"][-1]["action"] == "raise" and st["queued"] == 0
        assert st["rows"] == 40_000 and 0 < st["shadow_rows"] < 0.05 * 40_000
    # the transient: evidence for the first raise comes within a few hundred rows, and the
    # replayed levels let the controller jump to one that fits; a small leftover excess
    # (1.1 pp at one level) takes longer to prove
    assert sorted(transients)[len(transients) // 2] <= 5_000, transients
    assert max(transients) <= 25_000, transients


def test_slack_lowers_the_thresholds_and_a_calm_stream_stays_within_the_budget() -> None:
    rng = np.random.default_rng(3)
    ctl = AdaptiveProgram(Stream(0.9), 1.0, shadow=0.3, window=2000, min_shadow=30,
                          levels_below=3, seed=4)
    seen = _serve(ctl, rows(20_000, 0.0, rng))  # early answers never disagree: lower
    assert ctl.level < 0 and ctl.thresholds[0] < 0.9
    assert [d["action"] for d in ctl.state()["decisions"]] == ["lower"] * -ctl.level
    assert min(lvl for lvl, _ in seen) >= -3


def test_rows_served_under_old_thresholds_do_not_count(tmp_path: Path) -> None:
    ctl = AdaptiveProgram(Stream(0.5), 1.0, shadow=1.0, window=100, min_shadow=5, seed=0)
    rng = np.random.default_rng(0)
    ctl.run(rows(50, 1.0, rng))  # queued at level 0
    ctl.level, ctl.thresholds = 1, [0.8]  # as if a decision happened meanwhile
    ctl.process_shadow()
    assert ctl.estimate()["shadowed"] == 0 and ctl.state()["shadow_rows"] > 0


def test_options_are_checked() -> None:
    for kw in ({"budget": 0.0}, {"budget": 1.0, "shadow": 0.0}, {"budget": 1.0, "slack": 1.0},
               {"budget": 1.0, "confidence": 1.0}, {"budget": 1.0, "window": 0}):
        with pytest.raises(UsageError):
            AdaptiveProgram(Stream(), **kw)  # type: ignore[arg-type]


def test_adapt_runs_a_compiled_program_and_shadows_to_its_final_exit(tmp_path: Path) -> None:
    import torch

    model = T.make("longskip", 4)
    with torch.no_grad():
        outs = [o.numpy() for o in model(*T.example("longskip", 64, 21))]
    from eeopt.kernels.reference import gate_features

    thr = [float(np.median(gate_features(z)[:, 0])) for z in outs[:-1]]
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=T.example("longskip", 4, 0),
                         thresholds=thr)
    served = eeopt.adapt(prog, budget=100.0, shadow=1.0, min_shadow=5, window=64, slack=0.0)
    x = T.example("longskip", 64, 3)[0].numpy()
    res = served.run(x)
    want = prog.run(x)
    np.testing.assert_array_equal(res.exit, want.exit)
    early = int((want.exit < prog.num_exits - 1).sum())
    assert early > 0 and served.process_shadow() == early
    final = prog.run(x, thresholds=[np.inf] * len(thr)).logits.argmax(1)
    est = served.estimate()
    k = int((want.logits.argmax(1) != final)[want.exit < prog.num_exits - 1].sum())
    assert est["shadowed"] == early and est["disagreed"] == k
    assert est["loss_pp"] == pytest.approx(100.0 * k / 64)
