"""TrtProgram: runs a TensorRT program (``backend="tensorrt"``), one engine per stage, on CUDA.

NOT YET RUN: TensorRT cannot be installed on the machines this was written on. The code
follows TensorRT 10's documented Python API (the tensor-address API and ``execute_async_v3``),
with torch tensors as device buffers; the tests that exercise it skip unless ``tensorrt``
imports. The engines are built by ``eeopt.build.tensorrt``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, UnsupportedModelError
from eeopt.kernels.reference import NEVER
from eeopt.program import Manifest, resolve_in_dir
from eeopt.runtime.base import Program, Result

__all__ = ["TrtEngine", "TrtProgram", "available", "import_cuda_torch", "import_trt",
           "load_tensorrt"]

logger = logging.getLogger(__name__)

_MISSING = ("backend 'tensorrt' needs TensorRT 10 and a CUDA GPU: install NVIDIA's wheel with "
            "`pip install \"tensorrt>=10,<11\"` on a machine with a GPU (it has not been run by "
            "eeopt yet)")


def import_trt():  # type: ignore[no-untyped-def]
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


def import_cuda_torch():  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'tensorrt' uses torch for CUDA buffers; install torch") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailableError("backend 'tensorrt' needs a CUDA GPU; none is visible")
    return torch


def available() -> bool:
    """Whether TensorRT 10 and a CUDA device are both here."""
    try:
        import_trt()
        import_cuda_torch()
    except BackendUnavailableError:
        return False
    return True


class TrtEngine:
    """One stage engine: named CUDA tensors in, named CUDA tensors out."""

    def __init__(self, engine_bytes: bytes, output_names: tuple[str, ...]) -> None:
        trt = import_trt()
        torch = import_cuda_torch()
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
    engine: TrtEngine
    inputs: tuple[str, ...]
    produces: tuple[str, ...]
    logits: str
    decision: str | None
    threshold: str | None
    compact: tuple[tuple[str, int | None], ...]


class TrtProgram(Program):
    """A TensorRT program: one engine per stage on CUDA.
    Per-sample exits with device tensors; one host sync per stage (the rows that leave)."""

    backend = "tensorrt"

    def __init__(self, path: Path, manifest: Manifest, threads: int | None = None) -> None:
        super().__init__(path, manifest)
        torch = import_cuda_torch()
        self._torch = torch
        axes = manifest.batch_axes()
        self._tstages: list[_Stage] = []
        for st in manifest.stages:
            made = tuple(t.name for t in st.produces if t.name != st.logits)
            outs = (st.logits, *([st.decision] if st.decision else []), *made)
            eng = TrtEngine(resolve_in_dir(path, st.file).read_bytes(), outs)
            produces = tuple(t.name for t in st.produces)  # the logits too, if carried
            self._tstages.append(_Stage(eng, tuple(t.name for t in st.inputs), produces,
                                        st.logits, st.decision, st.threshold_input,
                                        tuple((t, axes.get(t, 0)) for t in st.carry_after)))

    def _feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        feeds, n = super()._feeds(x)  # checked on the host arrays
        return {k: self._torch.as_tensor(v).cuda() for k, v in feeds.items()}, n

    def _run(self, feeds: dict[str, Any], n: int,
             thresholds: float | Sequence[float] | None) -> Result:
        torch = self._torch
        thr = torch.as_tensor(self.resolve_thresholds(thresholds), device="cuda")
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
        torch = self._torch
        live, _ = self._feeds(x)
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


def load_tensorrt(path: Path, manifest: Manifest, threads: int | None = None) -> TrtProgram:
    """The runtime's loader for ``tensorrt`` programs (``eeopt.load`` calls it)."""
    return TrtProgram(path, manifest, threads)
