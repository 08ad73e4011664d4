"""backend="aoti": the AOTInductor program matches the ORT program and the torch model.

Each compile takes tens of seconds on CPU (a C++ build per stage), so each program is compiled
once per module and every test below runs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eeopt  # noqa: E402
from eeopt.errors import UnsupportedModelError, UsageError  # noqa: E402
from eeopt.kernels.reference import gate_features  # noqa: E402

import topologies  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The residual topology (a skip and the exit's branch point cross cut 0) compiled for both
    backends with thresholds at the median max-probability of each exit, so rows leave at
    every exit."""
    torch.set_num_threads(1)
    model = topologies.make("residual", seed=11)
    ex = topologies.example("residual", 4, seed=12)
    x = topologies.example("residual", 64, seed=13)[0]
    with torch.no_grad():
        outs = [o.numpy() for o in model(x)]
    thr = [float(np.median(gate_features(o)[:, 0])) for o in outs[:-1]]
    root = tmp_path_factory.mktemp("aoti")
    aoti = eeopt.compile(model, root / "aoti", example_inputs=ex, thresholds=thr,
                         backend="aoti", threads=1)
    ort = eeopt.compile(model, root / "ort", example_inputs=ex, thresholds=thr, threads=1)
    return {"model": model, "aoti": aoti, "ort": ort, "thr": thr, "x": x.numpy(),
            "dir": root / "aoti"}


def _seeds_batches() -> list[tuple[int, int]]:
    return [(0, 1), (1, 2), (2, 7), (3, 64)]


@pytest.mark.parametrize(("seed", "batch"), _seeds_batches())
def test_aoti_matches_ort_and_torch(residual: dict, seed: int, batch: int) -> None:
    x = topologies.example("residual", batch, seed=100 + seed)[0]
    got = residual["aoti"].run(x.numpy())
    want = residual["ort"].run(x.numpy())
    np.testing.assert_array_equal(got.exit, want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        exits = [o.numpy() for o in residual["model"](x)]
    for i, k in enumerate(got.exit):
        np.testing.assert_allclose(got.logits[i], exits[k][i], rtol=1e-4, atol=1e-4)


def test_rows_leave_at_every_exit(residual: dict) -> None:
    res = residual["aoti"].run(residual["x"])
    counts = np.bincount(res.exit, minlength=3)
    assert (counts > 0).all(), counts  # the median thresholds really exercise compaction


@pytest.mark.parametrize("override", ["always", "never", "random"])
def test_threshold_overrides_match_ort(residual: dict, override: str) -> None:
    x = residual["x"]
    thr = {"always": [0.0, 0.0], "never": [2.0, 2.0],
           "random": list(np.random.default_rng(5).uniform(0.2, 0.9, 2))}[override]
    if override == "always":
        thr = [1e-9, 1e-9]  # maxprob >= tiny: every row leaves at exit 0
    got = residual["aoti"].run(x, thresholds=thr)
    want = residual["ort"].run(x, thresholds=thr)
    np.testing.assert_array_equal(got.exit, want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    if override == "always":
        assert (got.exit == 0).all()
    if override == "never":
        assert (got.exit == 2).all()


def test_run_all_matches_the_module(residual: dict) -> None:
    x = residual["x"][:9]
    with torch.no_grad():
        want = [o.numpy() for o in residual["model"](torch.from_numpy(x))]
    for got, w in zip(residual["aoti"].run_all(x), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)


def test_load_returns_the_torch_program_and_device_results(residual: dict) -> None:
    prog = eeopt.load(residual["dir"], threads=1, allow_native=True)
    assert type(prog).__name__ == "TorchProgram"
    assert prog.manifest.backend == "aoti"
    assert [s.file for s in prog.manifest.stages] == ["stage0.pt2", "stage1.pt2", "stage2.pt2"]
    x = torch.from_numpy(residual["x"][:5])
    logits, exits = prog.run_torch(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (5, 5)
    np.testing.assert_array_equal(exits.numpy(), residual["ort"].run(x.numpy()).exit)


def test_no_bare_stage_calls_and_bench_asks_the_interface(residual: dict) -> None:
    """An AOTInductor program has no bare stage calls: it says so through the Program
    interface, asking for them is a one-line error, and eeopt bench's ideal leaves it out
    instead of failing (it once looked for the method with hasattr, found the onnxruntime
    program's, and that read fields this runtime never sets)."""
    from eeopt.bench import bare_stages

    prog = residual["aoti"]
    assert isinstance(prog, eeopt.Program) and prog.supports_stage_calls is False
    assert residual["ort"].supports_stage_calls is True
    x = {"x": residual["x"][:8]}
    with pytest.raises(UsageError, match="no bare stage calls") as info:
        prog.stage_calls(x)
    assert "\n" not in str(info.value)
    assert bare_stages(prog, x, np.array([0.5, 0.3, 0.2]), 1) == {}
    assert len(bare_stages(residual["ort"], x, np.array([0.5, 0.3, 0.2]), 1)) == 3


def test_tampered_stage_is_refused(residual: dict, tmp_path: Path) -> None:
    import shutil

    from eeopt.errors import ManifestError

    copy = tmp_path / "p"
    shutil.copytree(residual["dir"], copy)
    with open(copy / "stage1.pt2", "ab") as f:
        f.write(b"x")
    with pytest.raises(ManifestError, match="sha256"):
        eeopt.load(copy)


def test_wrong_inputs_are_one_line_errors(residual: dict) -> None:
    from eeopt.errors import DataError

    with pytest.raises(DataError, match="dtype"):
        residual["aoti"].run(residual["x"].astype(np.float64))
    with pytest.raises(UsageError, match="2 gated exits"):
        residual["aoti"].run(residual["x"], thresholds=[0.5])


def test_aoti_needs_a_torch_module(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="torch.nn.Module"):
        eeopt.compile("model.onnx", tmp_path / "p", threshold=0.9, backend="aoti")
    assert not (tmp_path / "p").exists()


def test_aoti_refuses_planner_and_patience(tmp_path: Path) -> None:
    model = topologies.make("longskip", seed=1)
    ex = topologies.example("longskip", 2, seed=1)
    with pytest.raises(UsageError, match="planner"):
        eeopt.compile(model, tmp_path / "p", example_inputs=ex, calib="fashion-mnist:val",
                      budget=0.5, backend="aoti")
    with pytest.raises(UsageError, match="patience"):
        eeopt.compile(model, tmp_path / "p", example_inputs=ex, threshold=2, policy="patience",
                      backend="aoti")
    with pytest.raises(UsageError, match="unknown backend"):
        eeopt.compile(model, tmp_path / "p", example_inputs=ex, threshold=0.5, backend="tvm")


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from eeopt.errors import BackendUnavailableError

    model = topologies.make("longskip", seed=1)
    ex = topologies.example("longskip", 2, seed=1)
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        eeopt.compile(model, tmp_path / "p", example_inputs=ex, threshold=0.5, backend="aoti",
                      device="cuda")


def test_custom_op_gate_compiles_into_the_stage(tmp_path: Path) -> None:
    """gate="op": the eeopt::gate custom op (its fake impl at export, its CPU impl at run
    time) inside AOTInductor stages, on a two-input model whose mask crosses every cut."""
    torch.manual_seed(3)
    model = topologies.MaskedTwoInput(layers=2).eval()  # two stages: a shorter compile
    ex = topologies.example("masked", 4, seed=4)
    x, mask = topologies.example("masked", 33, seed=5)
    feeds = {"x": x.numpy(), "mask": mask.numpy()}
    with torch.no_grad():
        outs = [o.numpy() for o in model(x, mask)]
    # between two rows' margins, never on one: a row whose margin equals its threshold
    # exits or not by the last bit of float rounding, which differs between the backends
    thr = [float(np.mean(np.sort(gate_features(o)[:, 2])[15:17])) for o in outs[:-1]]
    prog = eeopt.compile(model, tmp_path / "op", example_inputs=ex, thresholds=thr,
                         policy="margin", backend="aoti", gate="op", threads=1)
    assert prog.manifest.settings["gate"] == "op"
    ort = eeopt.compile(model, tmp_path / "ort", example_inputs=ex, thresholds=thr,
                        policy="margin", threads=1)
    got, want = prog.run(feeds), ort.run(feeds)
    assert len(set(got.exit.tolist())) > 1
    np.testing.assert_array_equal(got.exit, want.exit)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)


def test_graph_bucket_logic_on_cpu(residual: dict) -> None:
    """The CUDA-graph path's padding, slicing and recomputed compaction, with the capture
    replaced by a stand-in that re-runs the stage on the static buffers (no GPU here)."""
    from eeopt.runtime.aoti import GraphedStage, graph_bucket

    assert [graph_bucket(m) for m in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]

    class _Replay:
        def __init__(self, runner, static, outs) -> None:  # type: ignore[no-untyped-def]
            self.runner, self.static, self.outs = runner, static, outs

        def replay(self) -> None:
            for o, new in zip(self.outs, self.runner(self.static), strict=True):
                o.copy_(new)

    class _CpuGraphed(GraphedStage):
        def capture(self, args, b):  # type: ignore[no-untyped-def]
            static = self.static_inputs(args, b)
            outs = list(self.stage.runner(static))
            return _Replay(self.stage.runner, static, outs), static, outs

    prog = eeopt.load(residual["dir"], threads=1, allow_native=True)
    plain = [prog.run(residual["x"][:m]) for m in (1, 3, 37, 64)]
    prog.replay_from_graphs(32, _CpuGraphed)  # type: ignore[attr-defined] # 64 rows: eager
    for _ in range(2):  # the second round replays the buckets captured in the first
        for m, want in zip((1, 3, 37, 64), plain, strict=True):
            got = prog.run(residual["x"][:m])
            np.testing.assert_array_equal(got.exit, want.exit)
            np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
    assert any(g.buckets for g in prog.graphed_stages)  # type: ignore[attr-defined]


@pytest.mark.gpu
def test_aoti_cuda_program_matches_ort(residual: dict, tmp_path: Path) -> None:
    """On CUDA: the Triton gate inside AOTInductor stages, eager and from CUDA graphs."""
    from eeopt.runtime import load_torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = topologies.make("residual", seed=11)
    ex = tuple(t.cuda() for t in topologies.example("residual", 4, seed=12))
    prog = eeopt.compile(model, tmp_path / "cuda", example_inputs=ex,
                         thresholds=residual["thr"], backend="aoti", device="cuda")
    graphed = load_torch(tmp_path / "cuda", cuda_graphs=True, allow_native=True)
    for seed, batch in _seeds_batches():
        x = topologies.example("residual", batch, seed=100 + seed)[0].numpy()
        want = residual["ort"].run(x)
        for p in (prog, graphed, graphed):  # graphed twice: capture, then replay
            got = p.run(x)
            np.testing.assert_array_equal(got.exit, want.exit)
            np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
