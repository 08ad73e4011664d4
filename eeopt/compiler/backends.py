"""The compile backends, registered by name: ``compile(model, out, settings, example)`` for
``onnxruntime`` (the default: planner, learned gates), ``aoti`` (AOTInductor, a torch module)
and ``tensorrt`` (one engine per onnxruntime stage). ``register_backend`` adds one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eeopt.build import analyse_model, check_device, compile_aoti, emit_onnx, emit_tensorrt
from eeopt.compiler.learned import compile_learned
from eeopt.compiler.planner import plan_program
from eeopt.compiler.settings import CompileSettings
from eeopt.errors import EEOptError, UsageError
from eeopt.program import sha256_file
from eeopt.runtime import OrtProgram, Program, configure_threads
from eeopt.runtime import tensorrt as trt_runtime

__all__ = ["BACKENDS", "Backend", "compile_onnx", "get_backend", "register_backend"]

Compile = Callable[[Any, Path, CompileSettings, Any], Program]


@dataclass(frozen=True)
class Backend:
    """A compile backend: its name, whether it can run here, and its compile."""

    name: str
    compile: Compile
    available: Callable[[], bool]


#: backend name -> Backend
BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``eeopt.compile(..., backend=backend.name)`` compile with ``backend``."""
    BACKENDS[backend.name] = backend


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def _source(model: Any, outputs: list[str]) -> dict[str, Any]:
    """What the manifest records of the source model (`eeopt bench` finds it by its path)."""
    source: dict[str, Any] = {"outputs": outputs}
    if isinstance(model, (str, os.PathLike)):
        source["file"] = os.fspath(model)
        source["sha256"] = sha256_file(Path(model))
    return source


def compile_onnx(model: Any, out: Path, settings: CompileSettings,
                 example_inputs: Any) -> OrtProgram:
    """The onnxruntime backend: analyse, plan or fix thresholds, emit, verify."""
    configure_threads(settings.threads)
    analysed = analyse_model(model, example_inputs=example_inputs,
                             dynamic_shapes=settings.dynamic_shapes)
    source = _source(model, analysed.graph.output_names)
    if settings.learned:
        return compile_learned(analysed, out, settings, source)
    plan = None
    if settings.planning:
        planned = plan_program(analysed, settings)
        analysed, thresholds, plan = planned.model, planned.thresholds, planned.record
    else:
        thresholds = settings.thresholds_for(analysed.num_exits - 1)
    return emit_onnx(analysed, out, thresholds, settings.policy, threads=settings.threads,
                     verify=settings.verify, force=settings.force, plan=plan, source=source)


def _compile_aoti(model: Any, out: Path, settings: CompileSettings,
                  example_inputs: Any) -> Program:
    return compile_aoti(model, out, example_inputs=example_inputs,
                        thresholds=settings.thresholds_for, policy=settings.policy,
                        device=settings.device, gate=settings.gate, verify=settings.verify,
                        force=settings.force, threads=settings.threads,
                        progress=settings.progress)


def _compile_tensorrt(model: Any, out: Path, settings: CompileSettings,
                      example_inputs: Any) -> Program:
    trt_runtime.import_trt()  # fail before any expensive work
    trt_runtime.import_cuda_torch()
    with tempfile.TemporaryDirectory() as work:
        ort = compile_onnx(model, Path(work) / "ort",
                           replace(settings, backend="onnxruntime", force=False),
                           example_inputs)
        return emit_tensorrt(ort, out, fp16=settings.fp16, force=settings.force,
                             threads=settings.threads, verify=settings.verify)


def _aoti_available() -> bool:
    try:
        check_device("cpu")
    except EEOptError:
        return False
    return True


register_backend(Backend("onnxruntime", compile_onnx, lambda: True))
register_backend(Backend("aoti", _compile_aoti, _aoti_available))
register_backend(Backend("tensorrt", _compile_tensorrt, trt_runtime.available))
