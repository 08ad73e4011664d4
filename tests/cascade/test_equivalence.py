"""The compiled cascade against its reference: every original model run on its own with ONNX
Runtime and the same gate rule applied (exits equal, logits within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cascade._models import mlp

import eeopt
from eeopt.cascade import compile_cascade, reference_run
from eeopt.kernels.reference import gate_features

CHAINS = {
    "two": lambda: [mlp(0), mlp(1, hidden=16)],
    "three_multi_exit": lambda: [mlp(0), mlp(1, hidden=10), mlp(2, exits=2, hidden=24)],
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, object]]:
    d = tmp_path_factory.mktemp("cascade")
    out = {}
    for name, make in CHAINS.items():
        models = make()
        out[name] = (models, compile_cascade(models, d / name, threshold=0.6, threads=1))
    return out


def _random_thresholds(models: list[onnx.ModelProto], x: np.ndarray,
                       rng: np.random.Generator) -> list[float]:
    """Per early exit, a quantile of its own max probabilities: some rows leave, some go on."""
    from eeopt.runtime import make_session

    logits = [o for m in models for o in make_session(m.SerializeToString()).run(None, {"x": x})]
    return [float(np.quantile(gate_features(z)[:, 0], rng.uniform(0.2, 0.8)))
            for z in logits[:-1]]


def _exits(models: list[onnx.ModelProto]) -> int:
    return sum(len(m.graph.output) for m in models)


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("batch", [1, 9, 64])
@pytest.mark.parametrize("mode", ["always", "never", "random"])
def test_program_matches_reference(compiled: dict, chain: str, batch: int, mode: str) -> None:
    models, program = compiled[chain]
    for seed in range(3):
        rng = np.random.default_rng(seed * 100 + batch)
        x = rng.random((batch, 6), dtype=np.float32)
        k = _exits(models) - 1
        thr = {"always": [1e-6] * k, "never": [1.5] * k}.get(mode)
        if thr is None:
            thr = _random_thresholds(models, rng.random((256, 6), dtype=np.float32), rng)
        res = program.run(x, thresholds=thr)
        want_logits, want_exit = reference_run(models, {"x": x}, thr)
        np.testing.assert_array_equal(res.exit, want_exit)
        np.testing.assert_allclose(res.logits, want_logits, rtol=1e-4, atol=1e-4)
        if mode == "always":
            assert (res.exit == 0).all()
        if mode == "never":
            assert (res.exit == k).all()


def test_random_thresholds_use_every_exit(compiled: dict) -> None:
    """The random case is not degenerate: over a large batch, rows leave at every exit."""
    models, program = compiled["three_multi_exit"]
    rng = np.random.default_rng(7)
    x = rng.random((400, 6), dtype=np.float32)
    thr = _random_thresholds(models, x, rng)
    res = program.run(x, thresholds=thr)
    assert set(np.unique(res.exit)) == {0, 1, 2, 3}
    _, want = reference_run(models, {"x": x}, thr)
    np.testing.assert_array_equal(res.exit, want)


def test_compiled_thresholds_and_a_reload(compiled: dict, tmp_path: Path) -> None:
    """Thresholds baked in at compile time (no override), through a fresh load, with the
    entropy policy."""
    models = CHAINS["two"]()
    compile_cascade(models, tmp_path / "p", threshold=0.8, policy="entropy", threads=1)
    program = eeopt.load(tmp_path / "p", threads=1)
    x = np.random.default_rng(3).random((50, 6), dtype=np.float32)
    res = program.run(x)
    want_logits, want_exit = reference_run(models, {"x": x}, [0.8], policy="entropy")
    assert 0 < (want_exit == 0).sum() < 50
    np.testing.assert_array_equal(res.exit, want_exit)
    np.testing.assert_allclose(res.logits, want_logits, rtol=1e-4, atol=1e-4)


def test_each_model_is_its_own_stage(compiled: dict) -> None:
    """Model k's nodes all run in its stage(s); later stages re-read the shared input."""
    _, program = compiled["three_multi_exit"]
    stages = program.manifest.stages
    assert [s.exit_output for s in stages] == ["m0/exit0", "m1/exit0", "m2/exit0", "m2/exit1"]
    assert "x" in stages[0].carry_after and "x" in stages[1].carry_after
    for s in stages[:3]:
        assert [t.name for t in s.inputs] == ["x"]  # each model reads only the input
        assert all(t.name.startswith(f"m{s.index}/") for t in s.produces)
    model_of_stage = [0, 1, 2, 2]
    for s, m in zip(stages, model_of_stage, strict=True):
        nodes = onnx.load(program.path / s.file).graph.node
        owners = {n.name.split("/", 1)[0] for n in nodes if n.name.startswith("m")}
        assert owners == {f"m{m}"}, (s.index, owners)  # no node of another model
    assert stages[2].carry_after == ("m2/h0",)  # model 2's exit 1 continues from its exit 0
    assert [t.name for t in stages[3].inputs] == ["m2/h0"]


@pytest.mark.parametrize("batch", [1, 9])
def test_multi_exit_model_first(tmp_path: Path, batch: int) -> None:
    """A multi-exit model may stand anywhere in the chain: the later model reads only the graph
    inputs, so it branches off nothing and the exit-order check lets it stand after them."""
    models = [mlp(0, exits=2), mlp(1)]
    thr = [0.6, 0.5]
    program = compile_cascade(models, tmp_path / "p", thresholds=thr)
    assert program.num_exits == 3
    x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
    res = program.run({"x": x})
    want_logits, want_exit = reference_run(models, {"x": x}, thr)
    np.testing.assert_array_equal(res.exit, want_exit)
    np.testing.assert_allclose(res.logits, want_logits, rtol=1e-4, atol=1e-4)


def test_torch_exported_cnns(tmp_path: Path) -> None:
    """Real exports: two TinyCNNs (random weights) from torch.onnx.export."""
    torch = pytest.importorskip("torch")
    from eeopt.frontend import export_torch
    from eeopt.models.tiny_cnn import TinyCNN

    torch.manual_seed(0)
    models = [export_torch(TinyCNN(w).eval(), torch.rand(2, 1, 28, 28))
              for w in ((4, 8), (8, 16))]
    program = compile_cascade(models, tmp_path / "p", threshold=0.3, threads=1)
    x = np.random.default_rng(4).random((33, 1, 28, 28), dtype=np.float32)
    res = program.run(x)
    want_logits, want_exit = reference_run(models, {"x": x}, [0.3])
    np.testing.assert_array_equal(res.exit, want_exit)
    np.testing.assert_allclose(res.logits, want_logits, rtol=1e-4, atol=1e-4)


def test_failed_compile_leaves_nothing(tmp_path: Path) -> None:
    from eeopt.errors import UsageError

    with pytest.raises(UsageError, match="out of range"):
        compile_cascade(CHAINS["two"](), tmp_path / "p", save_merged=tmp_path / "m.onnx",
                        threshold=5.0)
    assert not (tmp_path / "p").exists() and not (tmp_path / "m.onnx").exists()
