"""TorchProgram: runs an AOTInductor program (``backend="aoti"``) on CPU or CUDA.

The same per-sample exit as ``runtime.Program``, with the tensors kept on the program's
device: each gated stage returns, besides its logits and carried tensors, the gate's decision
and its compaction indices (``order``, ``count``: see ``kernels/torch_gate.py``). The runtime
reads ``count`` (the one host sync per stage), writes the leaving rows' logits and exit into the
result with device-side scatters, and gathers the staying rows of every carried tensor with
``index_select`` along its batch axis. Nothing is copied when no row leaves, and the run stops
once no row remains. On CPU and CUDA it is the same code.

``cuda_graphs=True`` (CUDA only) replays each stage from a CUDA graph captured per
power-of-two batch bucket (``_GraphedStage``): the live rows are padded up to the bucket, and
the compaction indices are recomputed from the live rows' decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.backends.base import InputChecker
from eeopt.errors import BackendUnavailableError, DataError, ManifestError
from eeopt.kernels.reference import NEVER
from eeopt.manifest import Manifest, resolve_in_dir
from eeopt.runtime import Program, Result

__all__ = ["TorchProgram", "load_torch"]


def args_rows(rows: Any, n: int) -> int:
    """How many rows are live: all ``n`` until the first compaction."""
    return n if rows is None else int(rows.shape[0])

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TorchStage:
    runner: Any
    inputs: tuple[str, ...]
    produces: tuple[str, ...]
    gated: bool
    compact: tuple[tuple[str, int | None], ...]
    in_axes: tuple[int | None, ...]
    """Batch axis of each runner argument (the threshold last, None)."""
    out_axes: tuple[int | None, ...]
    """Batch axis of each runner output (``count`` None)."""


def _bucket(m: int) -> int:
    return 1 << max(m - 1, 0).bit_length()


class _GraphedStage:
    """One stage replayed from CUDA graphs, one graph per power-of-two batch bucket.

    The live rows are copied into the bucket's static input buffers (rows past them hold
    whatever the last call left there: the stages are row-independent, so they cannot affect
    the live rows), the graph replays, and the outputs are the first ``m`` rows of its static
    outputs. Each graph has its own memory pool, so a carried tensor from one stage is never
    overwritten by another stage's replay. The gate's compaction indices covered the padded
    batch, so the caller recomputes them from the live rows' decisions."""

    def __init__(self, stage: _TorchStage, max_batch: int) -> None:
        self.stage = stage
        self.max_batch = max_batch
        self._graphs: dict[int, tuple[Any, list[Any], list[Any]]] = {}
        self.error: str | None = None
        """Why capturing failed (the stage then runs eagerly), or None."""

    def _static(self, args: list[Any], b: int) -> list[Any]:
        """Static input buffers for bucket ``b``, the live rows copied in."""
        import torch

        static = []
        for a, ax in zip(args, self.stage.in_axes, strict=True):
            if ax is None:
                static.append(a.clone())
                continue
            shape = list(a.shape)
            shape[ax] = b
            buf = torch.zeros(shape, dtype=a.dtype, device=a.device)
            buf.narrow(ax, 0, a.shape[ax]).copy_(a)
            static.append(buf)
        return static

    def _capture(self, args: list[Any], b: int) -> tuple[Any, list[Any], list[Any]]:
        """``(graph, static inputs, static outputs)`` for bucket ``b``."""
        import torch

        static = self._static(args, b)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up outside the capture, as torch.cuda.graphs asks
                self.stage.runner(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = list(self.stage.runner(static))
        return graph, static, outs

    def __call__(self, args: list[Any], m: int) -> list[Any] | None:
        """The stage's outputs for ``m`` live rows, or None when ``m`` is above every bucket."""
        b = _bucket(m)
        if b > self.max_batch or self.error is not None:
            return None
        entry = self._graphs.get(b)
        if entry is None:
            try:
                entry = self._graphs[b] = self._capture(args, b)
            except Exception as exc:  # e.g. a stage that synchronises: run it eagerly
                self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}" \
                    if str(exc).strip() else type(exc).__name__
                logger.warning("CUDA graph capture failed for a stage (%s); it runs eagerly",
                               self.error)
                return None
        else:
            for buf, a, ax in zip(entry[1], args, self.stage.in_axes, strict=True):
                (buf if ax is None else buf.narrow(ax, 0, m)).copy_(a)
        entry[0].replay()
        return [o if ax is None else o.narrow(ax, 0, m)
                for o, ax in zip(entry[2], self.stage.out_axes, strict=True)]


def _tensor(v: Any) -> Any:
    """A tensor sharing ``v``'s memory; read-only arrays (the data sets') without torch's
    warning, since the runtime never writes into its inputs."""
    import torch

    if isinstance(v, np.ndarray) and not v.flags.writeable:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(v)
    return torch.as_tensor(v)


class TorchProgram(Program):
    """An AOTInductor program: one ``.pt2`` package per stage, run on ``device``.

    It shares ``Program``'s public interface (``run``, ``run_all``, ``thresholds``, ...) so
    ``eeopt.load`` can return either; it does not use ``Program``'s ONNX Runtime sessions."""

    def __init__(self, path: Path, manifest: Manifest, threads: int | None = None,
                 device: str | None = None, *, cuda_graphs: bool = False,
                 graph_max_batch: int = 256) -> None:  # noqa: D107 - Program.__init__ not called
        if manifest.backend != "aoti":
            raise ManifestError(
                f"{path} was compiled for backend {manifest.backend!r}; TorchProgram runs "
                "'aoti' programs (use eeopt.load)")
        import torch

        from eeopt.backends.aoti import load_package

        self.path = path
        self.manifest = manifest
        self.device = torch.device(device or manifest.settings.get("device", "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"{path} was compiled for CUDA and no CUDA device is available here; recompile "
                "it with device='cpu'")
        if threads:
            torch.set_num_threads(int(threads))
        if manifest.settings.get("gate") == "op":
            import eeopt.kernels.torch_gate  # noqa: F401 - registers torch.ops.eeopt.gate
        axes = manifest.batch_axes()
        self._tstages: list[_TorchStage] = []
        for st in manifest.stages:
            runner = load_package(resolve_in_dir(path, st.file), self.device,
                                  single_threaded=cuda_graphs)
            gated = st.gate is not None
            in_axes = tuple(t.batch_axis for t in st.inputs) + ((None,) if gated else ())
            out_axes: tuple[int | None, ...] = (0, 0, 0, 0, None) if gated else (0,)
            out_axes += tuple(t.batch_axis for t in st.produces)
            self._tstages.append(_TorchStage(
                runner=runner,
                inputs=tuple(t.name for t in st.inputs),
                produces=tuple(t.name for t in st.produces),
                gated=gated,
                compact=tuple((t, axes.get(t, 0)) for t in st.carry_after),
                in_axes=in_axes,
                out_axes=out_axes,
            ))
        if cuda_graphs and self.device.type != "cuda":
            raise BackendUnavailableError("cuda_graphs=True needs a program on a CUDA device")
        self._graphed = [_GraphedStage(st, graph_max_batch) for st in self._tstages] \
            if cuda_graphs else None
        self._thresholds = np.array(manifest.thresholds, dtype=np.float32)
        self._thr_dev = torch.as_tensor(self._thresholds, device=self.device)
        self._check = InputChecker(manifest.inputs)
        self._single = manifest.inputs[0].name if len(manifest.inputs) == 1 else None
        self._policies = [st.gate.policy for st in manifest.stages if st.gate is not None]

    @property
    def graph_errors(self) -> list[str | None]:
        """Per stage, why its CUDA graph capture failed (None: fine or not tried)."""
        return [g.error for g in self._graphed] if self._graphed is not None else []

    def __repr__(self) -> str:
        return (f"TorchProgram({str(self.path)!r}, device={self.device}, exits={self.num_exits}, "
                f"thresholds={list(self.thresholds)})")

    # ------------------------------------------------------------------ inputs
    def _device_feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        import torch

        if isinstance(x, Mapping):
            items = dict(x)
        elif isinstance(x, (np.ndarray, torch.Tensor)):
            if self._single is None:
                names = ", ".join(s.name for s in self.input_specs)
                raise DataError(f"the program has {len(self.input_specs)} inputs ({names}); "
                                "pass a dict from input name to array")
            items = {self._single: x}
        else:
            raise DataError(f"inputs must be an array, a tensor or a dict of them, got "
                            f"{type(x).__name__}")
        # the checks run on numpy views of host data; device tensors are checked by metadata
        host = {k: v for k, v in items.items() if isinstance(v, np.ndarray)}
        if len(host) == len(items):
            n = self._check(host)
        else:
            n = self._check({k: np.empty(tuple(v.shape), dtype=str(v.dtype).removeprefix(
                "torch.")) if isinstance(v, torch.Tensor) else v for k, v in items.items()})
        feeds = {k: _tensor(v).to(self.device, non_blocking=True) for k, v in items.items()}
        return feeds, n

    def _thr(self, thresholds: float | Sequence[float] | None) -> Any:
        import torch

        if thresholds is None:
            return self._thr_dev
        return torch.as_tensor(self._resolve_thresholds(thresholds), device=self.device)

    # ------------------------------------------------------------------ running
    def run_torch(self, x: Any, *, thresholds: float | Sequence[float] | None = None
                  ) -> tuple[Any, Any]:
        """Per-sample exits, results left on the device: ``(logits [N, C] float32 tensor,
        exit [N] int64 tensor)``. One host sync per stage (how many rows stay)."""
        import torch

        from eeopt.kernels.torch_gate import compaction_order_torch

        feeds, n = self._device_feeds(x)
        thr = self._thr(thresholds)
        logits = torch.empty((n, self.num_classes), dtype=torch.float32, device=self.device)
        exits = torch.empty((n,), dtype=torch.int64, device=self.device)
        if n == 0:
            return logits, exits
        live: dict[str, Any] = feeds
        rows: Any = None  # original row of each remaining row; None = identity
        graphed = self._graphed
        with torch.inference_mode():
            for k, st in enumerate(self._tstages):
                args = [live[t] for t in st.inputs]
                if not st.gated:
                    g_outs = None if graphed is None else graphed[k](args, args_rows(rows, n))
                    out = (st.runner(args) if g_outs is None else g_outs)[0].to(torch.float32)
                    if rows is None:
                        logits.copy_(out)
                        exits.fill_(k)
                    else:
                        logits.index_copy_(0, rows, out)
                        exits.index_fill_(0, rows, k)
                    break
                g_outs = None if graphed is None else graphed[k]([*args, thr[k]],
                                                                  args_rows(rows, n))
                if g_outs is None:
                    outs = st.runner([*args, thr[k]])
                    out, order, count = outs[0], outs[3], outs[4]
                else:  # the graph's compaction covered the padded bucket: redo it on the rows
                    outs = g_outs
                    out = outs[0]
                    order, count = compaction_order_torch(outs[2])
                live.update(zip(st.produces, outs[5:], strict=True))
                m = out.shape[0]
                stay = int(count)  # the one host sync of the stage
                if stay == m:  # no row leaves: no copy
                    live = {t: live[t] for t, _ in st.compact}
                    continue
                leave = order[stay:]
                dest = leave if rows is None else rows.index_select(0, leave)
                logits.index_copy_(0, dest, out.index_select(0, leave).to(torch.float32))
                exits.index_fill_(0, dest, k)
                if stay == 0:
                    break
                keep = order[:stay]
                rows = keep if rows is None else rows.index_select(0, keep)
                live = {t: live[t] if ax is None else live[t].index_select(ax, keep)
                        for t, ax in st.compact}
        return logits, exits

    def run(self, x: Any, *, thresholds: float | Sequence[float] | None = None) -> Result:
        """Run with per-sample exits; numpy results, as ``Program.run``."""
        logits, exits = self.run_torch(x, thresholds=thresholds)
        return Result(logits.cpu().numpy(), exits.cpu().numpy())

    def run_all(self, x: Any) -> list[np.ndarray]:
        """Every exit's logits for every row, with no early exit."""
        import torch

        feeds, _ = self._device_feeds(x)
        never = torch.as_tensor([NEVER[p] for p in self._policies], dtype=torch.float32,
                                device=self.device)
        live: dict[str, Any] = feeds
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for k, st in enumerate(self._tstages):
                args = [live[t] for t in st.inputs]
                outs = st.runner([*args, never[k]] if st.gated else args)
                out.append(outs[0].to(torch.float32).cpu().numpy())
                if st.gated:
                    live.update(zip(st.produces, outs[5:], strict=True))
                live = {t: live[t] for t, _ in st.compact}
        return out


def load_torch(path: str | Path, threads: int | None = None, device: str | None = None, *,
               cuda_graphs: bool = False, graph_max_batch: int = 256) -> TorchProgram:
    """Load and verify an ``aoti`` program directory. ``cuda_graphs`` (CUDA only): replay each
    stage from a CUDA graph per power-of-two batch bucket up to ``graph_max_batch`` rows."""
    from eeopt.manifest import load_manifest

    p = Path(path)
    return TorchProgram(p, load_manifest(p), threads, device, cuda_graphs=cuda_graphs,
                        graph_max_batch=graph_max_batch)
