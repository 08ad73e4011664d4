"""compile(): a multi-exit model -> a verified program directory.

    settings = CompileSettings(...)            every option checked, before any work
    -> the backend registered under settings.backend (eeopt.compiler.backends):
       onnxruntime: analyse (eeopt.build) -> plan (eeopt.compiler.planner) or fixed thresholds
                    or learned gates (eeopt.compiler.learned) -> emit + verify
       aoti:        torch.export -> FX cuts -> one AOTInductor package per stage
       tensorrt:    the onnxruntime program -> one engine per stage
    -> written to a temporary directory, verified, renamed into place
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eeopt.compiler.backends import get_backend
from eeopt.compiler.settings import CompileSettings
from eeopt.errors import UsageError
from eeopt.program import check_new_output
from eeopt.runtime import Program

__all__ = ["compile", "compile_with"]


def compile_with(model: Any, out: str | os.PathLike[str], settings: CompileSettings, *,
                 example_inputs: Any = None) -> Program:
    """``compile`` with its options as one ``CompileSettings``."""
    backend = get_backend(settings.backend)
    dest = check_new_output(out, force=settings.force)  # before any expensive work
    if isinstance(model, (str, os.PathLike)) and dest.exists() \
            and dest.resolve() in Path(model).resolve().parents:
        raise UsageError(f"the model {model} is inside {{out}} {dest}, which the compile "
                         "would replace; write the program elsewhere")
    return backend.compile(model, dest, settings, example_inputs)


def compile(  # noqa: A001 - mirrors the CLI verb
    model: Any,
    out: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    threshold: float | None = None,
    thresholds: Sequence[float] | None = None,
    force: bool = False,
    threads: int | None = 1,
    verify: bool = True,
    policy: str = "maxprob",
    calib: Any = None,
    budget: float | None = None,
    guarantee: float | None = None,
    plan_batch: int = 1,
    progress: bool = False,
    profile: Any = None,
    margin: float = 2.0,
    gates: Any = None,
    tau: float | None = None,
    lam: float | None = None,
    backend: str = "onnxruntime",
    device: str = "cpu",
    gate: str = "auto",
    fp16: bool = False,
    dynamic_shapes: Any = None,
) -> Program:
    """Compile a multi-exit model (ONNX path, ``onnx.ModelProto`` or torch module) into a
    program directory at ``out`` and return the loaded ``Program``.

    Thresholds come either from ``threshold``/``thresholds``, or from the planner: with
    ``calib`` (a data set name such as ``"fashion-mnist:val"``, an ``.npz`` path, or a
    ``(feeds, labels)`` pair) and ``budget`` (accuracy points), it profiles every candidate exit
    on this machine, keeps the exits and thresholds that minimise expected latency within the
    budget, and records the plan in the manifest. ``profile`` reuses a ``ProfileReport`` of
    this model, and ``calib`` may be a ready ``Calibration``.

    Learned policies (``jei``, ``gate-unit``, ``cost-sensitive``, ``twin``) train their gates
    on ``calib`` (or take trained ``gates``, an ``eeopt.gates.GateSet``); ``tau`` (cost-sensitive)
    and ``lam`` (jei) set their cost trade-off. See ``eeopt.compiler.learned``.

    ``backend``: ``"onnxruntime"`` (default), ``"aoti"`` (a torch module compiled per stage by
    AOTInductor for ``device`` "cpu" or "cuda"; ``gate`` "auto", "torch" or "op") or
    ``"tensorrt"`` (one engine per stage ONNX; ``fp16``). See ``eeopt.build.aoti`` and
    ``eeopt.build.tensorrt``. Every option is checked first (``CompileSettings``).

    A torch module is exported with ``example_inputs`` and a dynamic batch; ``dynamic_shapes``
    keeps more axes dynamic, as ``torch.export`` does: ``{"input_ids": {1: "seq"},
    "attention_mask": {1: "seq"}}`` (or a tuple in argument order) compiles a text model once
    for every sequence length.
    """
    settings = CompileSettings(
        threshold=threshold, thresholds=thresholds, policy=policy, calib=calib, budget=budget,
        guarantee=guarantee, margin=margin, plan_batch=plan_batch, profile=profile,
        gates=gates, tau=tau, lam=lam, backend=backend, device=device, gate=gate, fp16=fp16,
        threads=threads, verify=verify, force=force, progress=progress,
        dynamic_shapes=dynamic_shapes)
    return compile_with(model, out, settings, example_inputs=example_inputs)
