"""backend="tensorrt": the unavailable path always; real engines only where tensorrt imports
(never so far: TensorRT cannot be installed on the machines eeopt is developed on)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.build import build_engine
from eeopt.compiler import get_backend
from eeopt.errors import BackendUnavailableError, UsageError

import topologies

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_error_says_what_to_install(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    assert not get_backend("tensorrt").available()
    with pytest.raises(BackendUnavailableError, match="pip install"):
        build_engine(b"")
    model = topologies.make("longskip", seed=0)
    with pytest.raises(BackendUnavailableError, match="TensorRT 10") as info:
        eeopt.compile(model, tmp_path / "p", example_inputs=torch.randn(2, 12),
                      threshold=0.5, backend="tensorrt")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p").exists()


def test_tensorrt_refuses_the_planner(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="planner"):
        eeopt.compile("m.onnx", tmp_path / "p", calib="fashion-mnist:val", budget=0.5,
                      backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_program_matches_onnxruntime(tmp_path: Path, fp16: bool) -> None:
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    model = topologies.make("residual", seed=2)
    ex = topologies.example("residual", 4, seed=3)
    x = topologies.example("residual", 50, seed=4)[0].numpy()
    ort = eeopt.compile(model, tmp_path / "ort", example_inputs=ex, threshold=0.3)
    trt = eeopt.compile(model, tmp_path / "trt", example_inputs=ex, threshold=0.3,
                        backend="tensorrt", fp16=fp16)
    assert type(eeopt.load(tmp_path / "trt", allow_native=True)).__name__ == "TrtProgram"
    got, want = trt.run(x), ort.run(x)
    tol = 5e-2 if fp16 else 1e-4
    if not fp16:
        np.testing.assert_array_equal(got.exit, want.exit)
    same = got.exit == want.exit
    np.testing.assert_allclose(got.logits[same], want.logits[same], rtol=tol, atol=tol)
    assert torch.cuda.is_available()


# ------------------------------------------------------------------ the builder, against a fake
# A stand-in for the few TensorRT 10 calls build_engine makes: it checks eeopt's side (the
# optimization profile over the batch axis, FP16, parser errors), not TensorRT.


class _FakeInput:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


def _fake_trt(version: str = "10.3.0", fp16: bool = True, parse_ok: bool = True):  # type: ignore[no-untyped-def]
    import types

    rec: dict = {"flags": [], "shapes": {}}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Network:
        num_inputs = 2

        def get_input(self, i: int) -> _FakeInput:
            return [_FakeInput("x", (-1, 1, 12, 12)), _FakeInput("eeopt_threshold", ())][i]

    class Profile:
        def set_shape(self, name, lo, opt, hi):  # type: ignore[no-untyped-def]
            rec["shapes"][name] = (lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, pool, size):  # type: ignore[no-untyped-def]
            rec["workspace"] = size

        def set_flag(self, flag):  # type: ignore[no-untyped-def]
            rec["flags"].append(flag)

        def add_optimization_profile(self, prof):  # type: ignore[no-untyped-def]
            rec["profiles"] = rec.get("profiles", 0) + 1

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, log) -> None:  # type: ignore[no-untyped-def]
            pass

        def create_network(self, flags: int) -> Network:
            rec["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config):  # type: ignore[no-untyped-def]
            return b"ENGINE"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, log) -> None:  # type: ignore[no-untyped-def]
            pass

        def parse(self, data: bytes) -> bool:
            return parse_ok

        def get_error(self, i: int) -> str:
            return "node TopK: unsupported"

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")  # type: ignore[attr-defined]
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "fp16"} if fp16 else {}))  # type: ignore[attr-defined]
    return trt, rec


def test_build_engine_profiles_the_batch_axis_and_sets_fp16(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import sys

    trt, rec = _fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    assert build_engine(b"onnx", fp16=True, profile=(1, 64, 512)) == b"ENGINE"
    assert rec["network_flags"] == 0  # explicit batch is TensorRT 10's only mode
    assert rec["shapes"] == {"x": ((1, 1, 12, 12), (64, 1, 12, 12), (512, 1, 12, 12))}
    assert rec["flags"] == ["fp16"] and rec["profiles"] == 1
    rec["flags"].clear()
    build_engine(b"onnx")
    assert rec["flags"] == []


def test_build_engine_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from eeopt.errors import UnsupportedModelError

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(parse_ok=False)[0])
    with pytest.raises(UnsupportedModelError, match="TopK"):
        build_engine(b"onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(version="11.0.0", fp16=False)[0])
    with pytest.raises(BackendUnavailableError, match="removed"):
        build_engine(b"onnx", fp16=True)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(version="8.6.1")[0])
    with pytest.raises(BackendUnavailableError, match=">= 10"):
        build_engine(b"onnx")
