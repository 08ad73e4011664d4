"""Emit a TensorRT program: one engine per stage, built from the stage ONNX of an onnxruntime
program (``backend="tensorrt"``).

NOT YET RUN: TensorRT cannot be installed on the machines this was written on. The code
follows TensorRT 10's documented Python API (``Builder``/``OnnxParser``, explicit batch, one
optimization profile over batch sizes, ``BuilderFlag.FP16``), and the tests that exercise it
skip unless ``tensorrt`` imports.

Pipeline (``emit_tensorrt``): a verified onnxruntime program (capture, cuts, fused gate) ->
per stage ONNX: parse, profile ``min/opt/max`` over the batch axis of every input, build a
serialized engine -> ``stage<k>.engine`` + manifest (backend ``tensorrt``) -> verify against
the onnxruntime program -> ``TrtProgram``. The gate is the same ONNX subgraph as on
onnxruntime (Softmax, LogSoftmax, TopK, Gather, ReduceSum, comparisons: standard TensorRT
layers); the threshold stays a 0-d input.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from eeopt.build.verify import verify_exits
from eeopt.errors import BackendUnavailableError, UnsupportedModelError
from eeopt.export import check_file_output, one_graph
from eeopt.frontend import random_inputs
from eeopt.program import load_manifest, save_manifest, sha256_file, write_dir, write_file
from eeopt.runtime import OrtProgram, TrtProgram
from eeopt.runtime.tensorrt import import_cuda_torch, import_trt

__all__ = ["BATCH_PROFILE", "build_engine", "build_one_engine", "emit_tensorrt"]

logger = logging.getLogger(__name__)

#: the optimization profile over the batch axis: (min, opt, max)
BATCH_PROFILE = (1, 64, 1024)


def build_engine(onnx_bytes: bytes, *, fp16: bool = False,
                 profile: tuple[int, int, int] = BATCH_PROFILE,
                 batch_axes: dict[str, int | None] | None = None,
                 workspace: int = 1 << 30) -> bytes:
    """A serialized engine for one stage ONNX: explicit batch, one optimization profile
    ``(min, opt, max)`` over the batch axis of every input (axis 0 unless ``batch_axes`` says
    otherwise; inputs without a dynamic dimension get no profile entry)."""
    trt = import_trt()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch
    parser = trt.OnnxParser(network, log)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedModelError(f"TensorRT's ONNX parser rejected the stage: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BackendUnavailableError(
                f"{{fp16}} uses BuilderFlag.FP16, which TensorRT {trt.__version__} removed; "
                "install TensorRT 10 (`pip install \"tensorrt>=10,<11\"`) or build in FP32")
        if not getattr(builder, "platform_has_fast_fp16", True):
            logger.warning("this GPU has no fast FP16; building the engine in FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    lo, opt, hi = profile
    axes = batch_axes or {}
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if -1 not in shape:
            continue  # e.g. the 0-d threshold
        axis = axes.get(inp.name, 0)
        dims = []
        for which in (lo, opt, hi):
            d = [which if (ax == axis or s == -1) else s for ax, s in enumerate(shape)]
            if any(s == -1 for ax, s in enumerate(shape) if ax != axis):
                raise UnsupportedModelError(
                    f"stage input {inp.name!r} has shape {shape}: only the batch axis may be "
                    "dynamic for TensorRT")
            dims.append(tuple(d))
        prof.set_shape(inp.name, *dims)
    config.add_optimization_profile(prof)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UnsupportedModelError("TensorRT failed to build an engine for the stage (see its "
                                    "log above)")
    return bytes(engine)


def emit_tensorrt(ort: OrtProgram, out: str | os.PathLike[str], *, fp16: bool = False,
                  force: bool = False, threads: int | None = None, verify: bool = True,
                  profile: tuple[int, int, int] = BATCH_PROFILE) -> TrtProgram:
    """One TensorRT engine per stage of the (verified) onnxruntime program ``ort``, written to
    ``out``; returns the loaded ``TrtProgram``."""
    trt = import_trt()
    import_cuda_torch()
    manifest = ort.manifest

    def fill(tmp: Path) -> None:
        stages = []
        axes = manifest.batch_axes()
        for st in manifest.stages:
            onnx_bytes = (ort.path / st.file).read_bytes()
            engine = build_engine(onnx_bytes, fp16=fp16, profile=profile, batch_axes=axes)
            file = f"stage{st.index}.engine"
            (tmp / file).write_bytes(engine)
            shutil.copy(ort.path / st.file, tmp / st.file)  # kept for inspection
            stages.append(replace(st, file=file, sha256=sha256_file(tmp / file)))
        trt_manifest = replace(
            manifest, backend=TrtProgram.backend, backend_version=str(trt.__version__),
            stages=tuple(stages),
            settings={**manifest.settings, "fp16": fp16, "batch_profile": list(profile),
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                          timespec="seconds")})
        save_manifest(trt_manifest, tmp)
        if verify:
            tol = 5e-2 if fp16 else 1e-3
            verify_exits(TrtProgram(tmp, trt_manifest).run_all, ort.run_all,
                         [(3, random_inputs(ort.input_specs, 3, seed=7))],
                         exits=[f"{k} (the onnxruntime stage's)"
                                for k in range(ort.num_exits)],
                         what="TensorRT stage", rtol=tol, atol=tol)

    write_dir(out, fill, force=force)
    return TrtProgram(Path(out), load_manifest(Path(out)), threads)


def build_one_engine(program_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                     fp16: bool = False, profile: tuple[int, int, int] = BATCH_PROFILE,
                     force: bool = False) -> Path:
    """ONE TensorRT engine for a whole onnxruntime program: its one-graph export
    (``eeopt.export.one_graph``: If, NonZero, Gather and ScatterND, which TensorRT 10's ONNX
    parser takes; the rows that stay are data-dependent shapes inside the engine), written to
    ``out`` whole or not at all. Inputs: the model's plus ``thresholds`` [K]; outputs
    ``logits`` and ``exit``. NOT YET RUN, like the rest of this backend: written against the
    TensorRT 10 API, never built on a GPU."""
    path = check_file_output(out, force=force)
    import_trt()  # one clear line without TensorRT, before the export's work
    manifest = load_manifest(Path(program_dir))
    if manifest.sequence is not None:
        raise UnsupportedModelError("a program that trims a sequence axis has dynamic "
                                    "non-batch axes, which this backend's one batch profile "
                                    "cannot express; serve its one-graph ONNX instead")
    engine = build_engine(one_graph(program_dir).SerializeToString(), fp16=fp16,
                          profile=profile, batch_axes=manifest.batch_axes())
    return write_file(path, engine)
