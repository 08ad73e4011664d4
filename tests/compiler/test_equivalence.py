"""Compiled programs against the torch models they came from, per row, per exit.

Models are built fresh from seeds (the compiler never saw them), for each topology family:
an exit inside a residual block, a long skip across exits, and a two-input model whose mask
every layer reads. Thresholds are forced to always-exit and never-exit, and drawn at random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import eeopt
from eeopt.kernels.reference import gate_features

import topologies as T

SEEDS = (0, 1)
BATCHES = (1, 7, 64)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], tuple]:
    out = {}
    for name in T.TOPOLOGIES:
        for seed in SEEDS:
            model = T.make(name, seed)
            d = tmp_path_factory.mktemp(f"{name}{seed}") / "program"
            prog = eeopt.compile(model, d, example_inputs=T.example(name, 4, seed),
                                 threshold=0.5)
            out[(name, seed)] = (model, prog)
    return out


def _reference(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        return [o.numpy() for o in model(*inputs)]


def _expected_exit(ref: list[np.ndarray], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gate semantics from the torch logits: first exit k with max prob >= threshold k; also a
    mask of rows whose max prob sits within float noise of a threshold (ambiguous)."""
    n = ref[0].shape[0]
    exit_ = np.full(n, len(ref) - 1)
    ambiguous = np.zeros(n, dtype=bool)
    decided = np.zeros(n, dtype=bool)
    for k, thr in enumerate(thresholds):
        p = gate_features(ref[k])[:, 0]
        ambiguous |= ~decided & (np.abs(p - thr) < 1e-5)
        fire = ~decided & (p >= thr)
        exit_[fire] = k
        decided |= fire
    return exit_, ambiguous


def _feeds(prog: eeopt.Program, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {s.name: t.numpy() for s, t in zip(prog.input_specs, inputs, strict=True)}


def _check(prog, model, name: str, seed: int, batch: int, thresholds: np.ndarray) -> np.ndarray:
    inputs = T.example(name, batch, 100 + seed * 10 + batch)
    ref = _reference(model, inputs)
    res = prog.run(_feeds(prog, inputs), thresholds=thresholds)
    want_exit, ambiguous = _expected_exit(ref, thresholds)
    assert res.logits.shape == (batch, ref[0].shape[1]) and res.logits.dtype == np.float32
    assert res.exit.shape == (batch,) and res.exit.dtype == np.int64
    np.testing.assert_array_equal(res.exit[~ambiguous], want_exit[~ambiguous])
    for i in range(batch):
        np.testing.assert_allclose(res.logits[i], ref[res.exit[i]][i], rtol=1e-4, atol=1e-5)
    return res.exit


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(T.TOPOLOGIES))
def test_never_exit_matches_final_exit(compiled, name: str, seed: int, batch: int) -> None:
    model, prog = compiled[(name, seed)]
    never = np.full(prog.num_exits - 1, 2.0, dtype=np.float32)
    exits = _check(prog, model, name, seed, batch, never)
    assert (exits == prog.num_exits - 1).all()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(T.TOPOLOGIES))
def test_always_exit_leaves_at_exit_zero(compiled, name: str, seed: int, batch: int) -> None:
    model, prog = compiled[(name, seed)]
    always = np.full(prog.num_exits - 1, 1e-6, dtype=np.float32)
    exits = _check(prog, model, name, seed, batch, always)
    assert (exits == 0).all()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(T.TOPOLOGIES))
def test_random_thresholds_match_per_row(compiled, name: str, seed: int, batch: int) -> None:
    model, prog = compiled[(name, seed)]
    rng = np.random.default_rng(seed * 1000 + batch)
    # thresholds at random quantiles of each exit's confidence, so rows really split
    probe = _reference(model, T.example(name, 256, 7))
    thr = np.array([np.quantile(gate_features(p)[:, 0], rng.uniform(0.2, 0.8))
                    for p in probe[:-1]], dtype=np.float32)
    exits = _check(prog, model, name, seed, batch, thr)
    if batch == 64:  # a real mix of exits, so compaction and reordering were exercised
        assert len(np.unique(exits)) >= 2


def test_all_exits_reproduced_by_run_all(compiled) -> None:
    for (name, _seed), (model, prog) in compiled.items():
        inputs = T.example(name, 9, 5)
        ref = _reference(model, inputs)
        got = prog.run_all(_feeds(prog, inputs))
        assert len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_compiled_thresholds_are_the_default(compiled, tmp_path: Path) -> None:
    model, _ = compiled[("longskip", 0)]
    prog = eeopt.compile(model, tmp_path / "p", example_inputs=T.example("longskip", 3, 0),
                         thresholds=[0.3, 0.6, 0.9])
    assert prog.thresholds == pytest.approx((0.3, 0.6, 0.9))
    inputs = T.example("longskip", 32, 4)
    a = prog.run(_feeds(prog, inputs))
    b = prog.run(_feeds(prog, inputs), thresholds=[0.3, 0.6, 0.9])
    np.testing.assert_array_equal(a.exit, b.exit)
    reloaded = eeopt.load(tmp_path / "p")
    np.testing.assert_array_equal(reloaded.run(_feeds(prog, inputs)).exit, a.exit)
