"""DemoCNN: shapes, the shipped weights, their accuracy, cost per exit and ONNX export."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eeopt.data import fashion_mnist as fm  # noqa: E402
from eeopt.errors import DataError  # noqa: E402
from eeopt.models import DemoCNN, count_exit_macs, load_demo_cnn  # noqa: E402
from eeopt.models.demo_cnn import DEFAULT_WEIGHTS, NUM_EXITS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> DemoCNN:
    return load_demo_cnn()


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_returns_four_exits(model: DemoCNN, batch: int) -> None:
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        outputs = model(x)
    assert isinstance(outputs, tuple)
    assert len(outputs) == NUM_EXITS == 4
    for logits in outputs:
        assert logits.shape == (batch, 10)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()


def test_weights_load_in_eval_mode(model: DemoCNN) -> None:
    assert not model.training
    assert DEFAULT_WEIGHTS.stat().st_size < 10 * 2**20
    fresh = DemoCNN().state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == fresh.keys()
    # Trained, not the initialization.
    assert any(not torch.equal(loaded[k], fresh[k]) for k in fresh if k.endswith("weight"))


def test_missing_or_wrong_weights_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train_demo_cnn.py"):
        load_demo_cnn(tmp_path / "absent.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(10, 3)}, wrong)
    with pytest.raises(DataError, match="do not match"):
        load_demo_cnn(wrong)


@pytest.mark.skipif(
    not (fm.data_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_shipped_weights_are_accurate(model: DemoCNN) -> None:
    images, labels = fm.load_fashion_mnist("test")
    x = torch.from_numpy(np.array(images[:2000]))
    with torch.no_grad():
        outputs = model(x)
    acc = [float((o.argmax(1).numpy() == labels[:2000]).mean()) for o in outputs]
    assert acc[-1] >= 0.91, acc
    assert acc[0] >= 0.87, acc  # the early exit must be good enough to take most samples


def test_exit_costs_match_the_design_and_the_recorded_metrics() -> None:
    macs = count_exit_macs(DemoCNN())
    cumulative = macs["cumulative"]
    assert all(a < b for a, b in itertools.pairwise(cumulative))
    assert 5e6 <= cumulative[-1] <= 15e6
    fractions = [c / cumulative[-1] for c in cumulative]
    assert 0.15 <= fractions[0] <= 0.25
    assert 0.35 <= fractions[1] <= 0.50
    assert 0.60 <= fractions[2] <= 0.75
    recorded = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert recorded["macs_cumulative"] == cumulative
    assert recorded["parameters"] == sum(p.numel() for p in DemoCNN().parameters())


def test_import_does_not_need_torch() -> None:
    code = "import sys, eeopt.data, eeopt.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
def test_onnx_export_matches_torch(model: DemoCNN, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from eeopt.runtime import make_session

    program = torch.onnx.export(
        model.eval(),
        (torch.randn(2, 1, 28, 28),),
        None,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        input_names=["x"],
        output_names=["exit0", "exit1", "exit2", "exit3"],
        verbose=False,
    )
    path = tmp_path / "demo_cnn.onnx"
    program.save(str(path))
    # eeopt's sessions share one global thread pool; once it exists in the process, ONNX
    # Runtime refuses sessions with pools of their own, so go through make_session
    session = make_session(str(path))
    assert [o.name for o in session.get_outputs()] == ["exit0", "exit1", "exit2", "exit3"]
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = [o.numpy() for o in model(torch.from_numpy(x))]
        for got, want in zip(session.run(None, {"x": x}), expected, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
