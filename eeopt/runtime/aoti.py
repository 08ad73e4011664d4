"""TorchProgram: runs an AOTInductor program (``backend="aoti"``) on CPU or CUDA.

The same per-sample exit as ``OrtProgram``, with the tensors kept on the program's
device: each gated stage returns, besides its logits and carried tensors, the gate's decision
and its compaction indices (``order``, ``count``: see ``kernels/torch_gate.py``). The runtime
reads ``count`` (the one host sync per stage), writes the leaving rows' logits and exit into the
result with device-side scatters, and gathers the staying rows of every carried tensor with
``index_select`` along its batch axis. Nothing is copied when no row leaves, and the run stops
once no row remains. On CPU and CUDA it is the same code.

``cuda_graphs=True`` (CUDA only) replays each stage from a CUDA graph captured per
power-of-two batch bucket (``GraphedStage``): the live rows are padded up to the bucket, and
the compaction indices are recomputed from the live rows' decisions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, DataError, ManifestError, first_line
from eeopt.kernels.reference import NEVER
from eeopt.program import Manifest, load_manifest, resolve_in_dir
from eeopt.runtime.base import Program, Result

__all__ = ["GraphedStage", "TorchProgram", "graph_bucket", "import_torch", "load_aoti",
           "load_package", "load_torch"]

logger = logging.getLogger(__name__)


def import_torch():  # type: ignore[no-untyped-def]
    """torch with its Inductor, or one line saying how to install it."""
    try:
        import torch
        import torch._inductor  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'aoti' needs torch; install it with `pip install torch==2.13.0`"
        ) from exc
    return torch


def load_package(path: Path, device: Any, *, single_threaded: bool = False) -> Any:
    """An AOTInductor package's runner on ``device``: a callable from a list of tensors to the
    list of its outputs. ``single_threaded`` drops AOTInductor's run-to-run synchronisation
    (what CUDA graph capture needs; calls must then not overlap)."""
    torch = import_torch()
    dev = torch.device(device)
    kwargs: dict[str, Any] = {"run_single_threaded": single_threaded}
    if dev.type == "cuda":
        kwargs["device_index"] = dev.index if dev.index is not None else -1
    try:
        compiled = torch._inductor.aoti_load_package(os.fspath(path), **kwargs)
    except Exception as exc:
        first = first_line(exc)
        raise BackendUnavailableError(f"cannot load AOTInductor package {path}: {first}") from exc
    loader = getattr(compiled, "loader", None)
    if loader is None or not hasattr(loader, "boxed_run"):
        return lambda args: list(compiled(list(args)))

    def run(args: Sequence[Any]) -> list[Any]:
        # the stages take and return flat tensor lists: skip the pytree round trip of
        # AOTICompiledModel.__call__ (boxed_run consumes its list, so pass a fresh one)
        return list(loader.boxed_run(list(args)))

    return run


def _live_rows(rows: Any, n: int) -> int:
    """How many rows are live: all ``n`` until the first compaction."""
    return n if rows is None else int(rows.shape[0])


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


def graph_bucket(m: int) -> int:
    """The CUDA-graph batch bucket of ``m`` live rows: the next power of two."""
    return 1 << max(m - 1, 0).bit_length()


class GraphedStage:
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

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch buckets captured so far."""
        return tuple(sorted(self._graphs))

    def static_inputs(self, args: list[Any], b: int) -> list[Any]:
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

    def capture(self, args: list[Any], b: int) -> tuple[Any, list[Any], list[Any]]:
        """``(graph, static inputs, static outputs)`` for bucket ``b``: the graph's
        ``replay()`` recomputes the outputs from the inputs in place. A subclass may capture
        otherwise (the CPU tests replay the stage itself on the static buffers)."""
        import torch

        static = self.static_inputs(args, b)
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
        b = graph_bucket(m)
        if b > self.max_batch or self.error is not None:
            return None
        entry = self._graphs.get(b)
        if entry is None:
            try:
                entry = self._graphs[b] = self.capture(args, b)
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
    """An AOTInductor program: one ``.pt2`` package per stage, run on ``device``."""

    backend = "aoti"

    def __init__(self, path: Path, manifest: Manifest, threads: int | None = None,
                 device: str | None = None, *, cuda_graphs: bool = False,
                 graph_max_batch: int = 256) -> None:
        super().__init__(path, manifest)
        torch = import_torch()
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
        self._graphed: list[GraphedStage] | None = None
        if cuda_graphs:
            self.replay_from_graphs(graph_max_batch)
        self._thresholds_changed()

    def _thresholds_changed(self) -> None:
        import torch

        self._thr_dev = torch.as_tensor(self._thresholds, device=self.device)

    def replay_from_graphs(self, max_batch: int,
                           stage_class: type[GraphedStage] = GraphedStage) -> None:
        """Replay each stage from a graph per power-of-two batch bucket up to ``max_batch``
        rows (what ``cuda_graphs=True`` sets up at load). ``stage_class`` captures and replays
        them: ``GraphedStage`` with CUDA graphs, or a subclass that stands in for them."""
        self._graphed = [stage_class(st, max_batch) for st in self._tstages]

    @property
    def graphed_stages(self) -> list[GraphedStage] | None:
        """The stages replayed from graphs, or None (every stage runs eagerly)."""
        return self._graphed

    @property
    def graph_errors(self) -> list[str | None]:
        """Per stage, why its CUDA graph capture failed (None: fine or not tried)."""
        return [g.error for g in self._graphed] if self._graphed is not None else []

    def __repr__(self) -> str:
        return (f"TorchProgram({str(self.path)!r}, device={self.device}, exits={self.num_exits}, "
                f"thresholds={list(self.thresholds)})")

    # ------------------------------------------------------------------ inputs
    def _feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        """Checked feeds on the program's device: arrays or tensors (host tensors and arrays
        are checked by value, device tensors by their metadata)."""
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
        return torch.as_tensor(self.resolve_thresholds(thresholds), device=self.device)

    # ------------------------------------------------------------------ running
    def run_torch(self, x: Any, *, thresholds: float | Sequence[float] | None = None
                  ) -> tuple[Any, Any]:
        """Per-sample exits, results left on the device: ``(logits [N, C] float32 tensor,
        exit [N] int64 tensor)``. One host sync per stage (how many rows stay)."""
        feeds, n = self._feeds(x)
        return self._run_device(feeds, n, thresholds)

    def _run_device(self, feeds: dict[str, Any], n: int,
                    thresholds: float | Sequence[float] | None) -> tuple[Any, Any]:
        import torch

        from eeopt.kernels.torch_gate import compaction_order_torch

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
                    g_outs = None if graphed is None else graphed[k](args, _live_rows(rows, n))
                    out = (st.runner(args) if g_outs is None else g_outs)[0].to(torch.float32)
                    if rows is None:
                        logits.copy_(out)
                        exits.fill_(k)
                    else:
                        logits.index_copy_(0, rows, out)
                        exits.index_fill_(0, rows, k)
                    break
                g_outs = None if graphed is None else graphed[k]([*args, thr[k]],
                                                                  _live_rows(rows, n))
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

    def _run(self, feeds: dict[str, Any], n: int,
             thresholds: float | Sequence[float] | None) -> Result:
        logits, exits = self._run_device(feeds, n, thresholds)
        return Result(logits.cpu().numpy(), exits.cpu().numpy())

    def run_all(self, x: Any) -> list[np.ndarray]:
        """Every exit's logits for every row, with no early exit."""
        import torch

        feeds, _ = self._feeds(x)
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
               cuda_graphs: bool = False, graph_max_batch: int = 256,
               allow_native: bool = False) -> TorchProgram:
    """Load and verify an ``aoti`` program directory. Its ``.pt2`` packages hold native code
    that loading runs: ``allow_native=True`` says you trust it (refused otherwise).
    ``cuda_graphs`` (CUDA only): replay each stage from a CUDA graph per power-of-two batch
    bucket up to ``graph_max_batch`` rows."""
    p = Path(path)
    manifest = load_manifest(p)
    if not allow_native:
        raise ManifestError(
            f"{p} is an 'aoti' program: its stage files hold native code that loading runs, "
            "and eeopt cannot tell who built them (the sha256 checks integrity, not origin); "
            "load it only if you trust it, with {allow_native=True}")
    return TorchProgram(p, manifest, threads, device, cuda_graphs=cuda_graphs,
                        graph_max_batch=graph_max_batch)


def load_aoti(path: Path, manifest: Manifest, threads: int | None = None) -> TorchProgram:
    """The runtime's loader for ``aoti`` programs (``eeopt.load`` calls it)."""
    return TorchProgram(path, manifest, threads)
