"""TensorRT: one engine per stage, built from the stage ONNX of the onnxruntime path.

NOT YET RUN: TensorRT cannot be installed on the machines this was written on. The code
follows TensorRT 10's documented Python API (``Builder``/``OnnxParser``, explicit batch, one
optimization profile over batch sizes, ``BuilderFlag.FP16``; at run time the tensor-address API
and ``execute_async_v3``), and the tests that exercise it skip unless ``tensorrt`` imports.

Pipeline (``compile_tensorrt``): the onnxruntime compile (capture, cuts, fused gate, verified
against the model) -> per stage ONNX: parse, profile ``min/opt/max`` over the batch axis of
every input, build a serialized engine -> ``stage<k>.engine`` + manifest (backend
``tensorrt``) -> ``TrtProgram``, which runs the engines on CUDA with torch tensors as device
buffers. The gate is the same ONNX subgraph as on onnxruntime (Softmax, LogSoftmax, TopK,
Gather, ReduceSum, comparisons: standard TensorRT layers); the threshold stays a 0-d input.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, UnsupportedModelError
from eeopt.manifest import Manifest
from eeopt.runtime import Program, Result

__all__ = [
    "TensorRTBackend",
    "TrtProgram",
    "build_engine",
    "compile_tensorrt",
    "BATCH_PROFILE",
]

logger = logging.getLogger(__name__)

#: the optimization profile over the batch axis: (min, opt, max)
BATCH_PROFILE = (1, 64, 1024)

_MISSING = ("backend 'tensorrt' needs TensorRT 10 and a CUDA GPU: install NVIDIA's wheel with "
            "`pip install \"tensorrt>=10,<11\"` on a machine with a GPU (it has not been run by "
            "eeopt yet)")


def _import_trt():  # type: ignore[no-untyped-def]
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(_MISSING) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendUnavailableError(
            f"backend 'tensorrt' needs TensorRT >= 10 (its tensor-address API); found "
            f"{trt.__version__}")
    return trt


def _import_cuda_torch():  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'tensorrt' uses torch for CUDA buffers; install torch") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailableError("backend 'tensorrt' needs a CUDA GPU; none is visible")
    return torch


class TensorRTBackend:
    """``Backend``: ``compile`` deserializes a stage engine into an execution context."""

    name = "tensorrt"

    def available(self) -> bool:
        try:
            _import_trt()
            _import_cuda_torch()
        except BackendUnavailableError:
            return False
        return True

    def version(self) -> str:
        return str(_import_trt().__version__)

    def compile(self, model: bytes, input_specs: Sequence[Any],
                output_names: Sequence[str]) -> _TrtEngine:
        return _TrtEngine(model, tuple(output_names))


def build_engine(onnx_bytes: bytes, *, fp16: bool = False,
                 profile: tuple[int, int, int] = BATCH_PROFILE,
                 batch_axes: dict[str, int | None] | None = None,
                 workspace: int = 1 << 30) -> bytes:
    """A serialized engine for one stage ONNX: explicit batch, one optimization profile
    ``(min, opt, max)`` over the batch axis of every input (axis 0 unless ``batch_axes`` says
    otherwise; inputs without a dynamic dimension get no profile entry)."""
    trt = _import_trt()
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
                f"--fp16 uses BuilderFlag.FP16, which TensorRT {trt.__version__} removed; "
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


class _TrtEngine:
    """One stage engine: named CUDA tensors in, named CUDA tensors out."""

    def __init__(self, engine_bytes: bytes, output_names: tuple[str, ...]) -> None:
        trt = _import_trt()
        torch = _import_cuda_torch()
        self._trt = trt
        self._torch = torch
        self._log = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._log)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailableError(
                "TensorRT could not deserialize the engine (built by another TensorRT "
                "version or GPU?); recompile the program on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = tuple(n for n in names
                            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = output_names
        self._dtype = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

    def _torch_dtype(self, dt: Any) -> Any:
        torch = self._torch
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8}
        if dt not in table:
            raise UnsupportedModelError(f"TensorRT tensor type {dt} has no torch dtype")
        return table[dt]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch = self._torch
        ctx = self.context
        keep = []
        for name in self.inputs:
            t = feeds[name].to(device="cuda", dtype=self._dtype[name]).contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs: dict[str, Any] = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=self._dtype[name], device="cuda")
            outs[name] = buf
            ctx.set_tensor_address(name, buf.data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise UnsupportedModelError("TensorRT failed to run the stage")
        return outs


@dataclass(frozen=True)
class _Stage:
    engine: _TrtEngine
    inputs: tuple[str, ...]
    produces: tuple[str, ...]
    logits: str
    decision: str | None
    threshold: str | None
    compact: tuple[tuple[str, int | None], ...]


class TrtProgram(Program):
    """A TensorRT program: one engine per stage on CUDA; ``Program``'s public interface.
    Per-sample exits with device tensors; one host sync per stage (the rows that leave)."""

    def __init__(self, path: Path, manifest: Manifest,
                 threads: int | None = None) -> None:  # noqa: D107 - Program.__init__ not called
        from eeopt.backends.base import InputChecker
        from eeopt.manifest import resolve_in_dir

        torch = _import_cuda_torch()
        self._torch = torch
        self.path = path
        self.manifest = manifest
        axes = manifest.batch_axes()
        self._tstages: list[_Stage] = []
        for st in manifest.stages:
            produces = tuple(t.name for t in st.produces if t.name != st.logits)
            outs = (st.logits, *([st.decision] if st.decision else []), *produces)
            eng = _TrtEngine(resolve_in_dir(path, st.file).read_bytes(), outs)
            self._tstages.append(_Stage(eng, tuple(t.name for t in st.inputs), produces,
                                        st.logits, st.decision, st.threshold_input,
                                        tuple((t, axes.get(t, 0)) for t in st.carry_after)))
        self._thresholds = np.array(manifest.thresholds, dtype=np.float32)
        self._check = InputChecker(manifest.inputs)
        self._single = manifest.inputs[0].name if len(manifest.inputs) == 1 else None
        self._policies = [st.gate.policy for st in manifest.stages if st.gate is not None]

    def _cuda_feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        feeds, n = self._feeds(x)  # Program's checks, on host arrays
        return {k: self._torch.as_tensor(v).cuda() for k, v in feeds.items()}, n

    def run(self, x: Any, *, thresholds: float | Sequence[float] | None = None) -> Result:
        torch = self._torch
        feeds, n = self._cuda_feeds(x)
        thr = torch.as_tensor(self._resolve_thresholds(thresholds), device="cuda")
        logits = torch.empty((n, self.num_classes), dtype=torch.float32, device="cuda")
        exits = torch.empty((n,), dtype=torch.int64, device="cuda")
        live: dict[str, Any] = feeds
        rows = torch.arange(n, device="cuda")
        for k, st in enumerate(self._tstages):
            if n == 0:
                break
            sfeeds = {t: live[t] for t in st.inputs}
            if st.threshold is not None:
                sfeeds[st.threshold] = thr[k]
            outs = st.engine.run(sfeeds)
            out = outs[st.logits].float()
            if st.decision is None:
                logits.index_copy_(0, rows, out)
                exits.index_fill_(0, rows, k)
                break
            live.update({t: outs[t] for t in st.produces})
            decision = outs[st.decision].bool()
            leave = torch.nonzero(decision).flatten()  # the one host sync of the stage
            if leave.numel():
                logits.index_copy_(0, rows.index_select(0, leave), out.index_select(0, leave))
                exits.index_fill_(0, rows.index_select(0, leave), k)
                keep = torch.nonzero(~decision).flatten()
                rows = rows.index_select(0, keep)
                live = {t: live[t] if ax is None else live[t].index_select(ax, keep)
                        for t, ax in st.compact}
                if rows.numel() == 0:
                    break
            else:
                live = {t: live[t] for t, _ in st.compact}
        return Result(logits.cpu().numpy(), exits.cpu().numpy())

    def run_all(self, x: Any) -> list[np.ndarray]:
        from eeopt.kernels.reference import NEVER

        torch = self._torch
        live, _ = self._cuda_feeds(x)
        out: list[np.ndarray] = []
        for k, st in enumerate(self._tstages):
            sfeeds = {t: live[t] for t in st.inputs}
            if st.threshold is not None:
                sfeeds[st.threshold] = torch.tensor(NEVER[self._policies[k]],
                                                    dtype=torch.float32, device="cuda")
            outs = st.engine.run(sfeeds)
            out.append(outs[st.logits].float().cpu().numpy())
            live.update({t: outs[t] for t in st.produces})
            live = {t: live[t] for t, _ in st.compact}
        return out


def compile_tensorrt(model: Any, out: str | os.PathLike[str], *, example_inputs: Any = None,
                     threshold: float | None = None, thresholds: Sequence[float] | None = None,
                     policy: str = "maxprob", fp16: bool = False, force: bool = False,
                     threads: int | None = None, verify: bool = True,
                     profile: tuple[int, int, int] = BATCH_PROFILE) -> TrtProgram:
    """Compile with the onnxruntime path (verified there), then build one TensorRT engine per
    stage ONNX into ``out``; return the loaded ``TrtProgram``."""
    _import_trt()  # fail before any expensive work
    _import_cuda_torch()
    import eeopt
    from eeopt.compiler import VerificationError
    from eeopt.manifest import (
        MANIFEST_NAME,
        load_manifest,
        save_manifest,
        sha256_file,
        write_program_dir,
    )

    trt = _import_trt()
    with tempfile.TemporaryDirectory() as work:
        ort_dir = Path(work) / "ort"
        ort_prog = eeopt.compile(model, ort_dir, example_inputs=example_inputs,
                                 threshold=threshold, thresholds=thresholds, policy=policy,
                                 threads=threads, verify=verify)
        manifest = load_manifest(ort_dir)

        def fill(tmp: Path) -> None:
            stages = []
            axes = manifest.batch_axes()
            for st in manifest.stages:
                onnx_bytes = (ort_dir / st.file).read_bytes()
                engine = build_engine(onnx_bytes, fp16=fp16, profile=profile,
                                      batch_axes=axes)
                file = f"stage{st.index}.engine"
                (tmp / file).write_bytes(engine)
                shutil.copy(ort_dir / st.file, tmp / st.file)  # kept for inspection
                stages.append(replace(st, file=file, sha256=sha256_file(tmp / file)))
            trt_manifest = replace(
                manifest, backend="tensorrt", backend_version=str(trt.__version__),
                stages=tuple(stages),
                settings={**manifest.settings, "fp16": fp16, "batch_profile": list(profile),
                          "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                              timespec="seconds")})
            save_manifest(trt_manifest, tmp)
            assert (tmp / MANIFEST_NAME).exists()
            if verify:
                prog = TrtProgram(tmp, trt_manifest)
                x = ort_prog.input_specs
                from eeopt.capture import random_inputs

                feeds = random_inputs(x, 3, seed=7)
                tol = 5e-2 if fp16 else 1e-3
                for k, (g, w) in enumerate(zip(prog.run_all(feeds), ort_prog.run_all(feeds),
                                               strict=True)):
                    if not np.allclose(g, w, rtol=tol, atol=tol):
                        raise VerificationError(
                            f"TensorRT stage {k} does not reproduce the onnxruntime stage "
                            f"(max abs error {float(np.max(np.abs(g - w))):.3g})")

        write_program_dir(out, fill, force=force)
    return TrtProgram(Path(out), load_manifest(Path(out)))
