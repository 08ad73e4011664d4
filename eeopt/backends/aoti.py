"""AOTInductor: one ahead-of-time compiled ``.pt2`` package per stage (``backend="aoti"``).

Pipeline (``compile_aoti``):
  torch.export (dynamic batch) -> FX view -> the shared cut analysis (``cuts_from_view``)
  -> per stage: the stage's FX nodes + the fused gate (``kernels/torch_gate.py``) as one module
     -> torch.export (batch dynamic, threshold a 0-d input) -> aoti_compile_and_package
  -> manifest (backend "aoti") -> verify: chained stages reproduce every exit of the module
  -> rename into place; ``eeopt.load`` returns a ``runtime_torch.TorchProgram``.

A gated stage returns ``(logits, features, decision, order, count, *carried)``; the final stage
``(logits,)``. ``gate="torch"`` inlines the gate as aten ops (Inductor fuses them into the
stage); ``gate="op"`` calls the ``eeopt::gate`` custom op, which runs the Triton kernel on CUDA.
The default is ``"op"`` on CUDA when Triton is installed, ``"torch"`` otherwise.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import BackendUnavailableError, EEOptError, UsageError
from eeopt.manifest import GateSpec, Manifest, StageSpec, TensorSpec

__all__ = ["AotiBackend", "AotiSegment", "compile_aoti", "load_package", "GATE_CHOICES"]

logger = logging.getLogger(__name__)

GATE_CHOICES = ("auto", "torch", "op")
THRESHOLD_INPUT = "eeopt_threshold"
GATE_OUTPUTS = ("features", "decision", "order", "count")


def _import_torch():  # type: ignore[no-untyped-def]
    try:
        import torch
        import torch._inductor  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'aoti' needs torch; install it with `pip install torch==2.13.0`"
        ) from exc
    return torch


def _check_device(device: str) -> None:
    torch = _import_torch()
    if device not in ("cpu", "cuda"):
        raise UsageError(f"device {device!r} is not supported; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "device='cuda' needs a CUDA build of torch and a visible GPU; none is here "
            "(compile with device='cpu')")


def load_package(path: Path, device: Any, *, single_threaded: bool = False) -> Any:
    """An AOTInductor package's runner on ``device``: a callable from a list of tensors to the
    list of its outputs. ``single_threaded`` drops AOTInductor's run-to-run synchronisation
    (what CUDA graph capture needs; calls must then not overlap)."""
    torch = _import_torch()
    dev = torch.device(device)
    kwargs: dict[str, Any] = {"run_single_threaded": single_threaded}
    if dev.type == "cuda":
        kwargs["device_index"] = dev.index if dev.index is not None else -1
    try:
        compiled = torch._inductor.aoti_load_package(os.fspath(path), **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailableError(f"cannot load AOTInductor package {path}: {first}") from exc
    loader = getattr(compiled, "loader", None)
    if loader is None or not hasattr(loader, "boxed_run"):
        return lambda args: list(compiled(list(args)))

    def run(args: Sequence[Any]) -> list[Any]:
        # the stages take and return flat tensor lists: skip the pytree round trip of
        # AOTICompiledModel.__call__ (boxed_run consumes its list, so pass a fresh one)
        return list(loader.boxed_run(list(args)))

    return run


class AotiSegment:
    """One compiled stage: named inputs -> named outputs (``CompiledSegment``)."""

    def __init__(self, runner: Any, input_specs: Sequence[TensorSpec],
                 output_names: Sequence[str], extra_inputs: Sequence[str] = ()) -> None:
        self.runner = runner
        self.input_specs = tuple(input_specs)
        self.output_names = tuple(output_names)
        self._extra = tuple(extra_inputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from eeopt.backends.base import check_inputs

        torch = _import_torch()
        check_inputs(self.input_specs, {k: v for k, v in inputs.items() if k not in self._extra},
                     what="stage")
        args = [torch.as_tensor(inputs[s.name]) for s in self.input_specs]
        args += [torch.as_tensor(inputs[e]) for e in self._extra]
        outs = self.runner(args)
        return {n: o.cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}


class AotiBackend:
    """``Backend``: ``compile`` loads a stage's ``.pt2`` package (built by ``compile_aoti``)."""

    name = "aoti"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def available(self) -> bool:
        try:
            _check_device(self.device)
        except EEOptError:
            return False
        return True

    def version(self) -> str:
        return str(_import_torch().__version__)

    def compile(self, model: bytes | str | os.PathLike[str], input_specs: Sequence[TensorSpec],
                output_names: Sequence[str], extra_inputs: Sequence[str] = ()) -> AotiSegment:
        if isinstance(model, bytes):
            raise UsageError("the aoti backend loads .pt2 packages by path, not bytes")
        return AotiSegment(load_package(Path(model), self.device), input_specs, output_names,
                           extra_inputs)


def _stage_wrapper(body: Any, gated: bool, policy: str, gate: str) -> Any:
    _import_torch()
    import torch

    from eeopt.kernels.torch_gate import gate_torch

    class _Stage(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, *args: Any) -> tuple[Any, ...]:
            if not gated:
                outs = self.body(*args)
                return tuple(outs)
            outs = self.body(*args[:-1])
            logits, thr = outs[0], args[-1]
            if gate == "op":
                g = torch.ops.eeopt.gate(logits, thr, policy)
            else:
                g = gate_torch(logits, thr, policy)
            return (logits, *g, *outs[1:])

    return _Stage().eval()


def _build_stage(module: Any, args: Sequence[Any], specs: Sequence[TensorSpec], gated: bool,
                 path: Path) -> None:
    torch = _import_torch()
    from eeopt.capture import _quiet_torch_export
    from eeopt.capture_torch import MAX_BATCH

    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    dyn: list[Any] = [None if s.batch_axis is None else {s.batch_axis: batch} for s in specs]
    if gated:
        dyn.append(None)
    from eeopt.errors import UnsupportedModelError

    def first(exc: BaseException) -> str:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    with _quiet_torch_export():
        try:
            ep = torch.export.export(module, tuple(args), dynamic_shapes=(tuple(dyn),))
        except Exception as exc:
            raise UnsupportedModelError(
                f"torch.export cannot capture {path.stem} with a dynamic batch ({first(exc)})"
            ) from exc
        try:
            torch._inductor.aoti_compile_and_package(ep, package_path=os.fspath(path))
        except Exception as exc:
            raise BackendUnavailableError(
                f"AOTInductor could not compile {path.name} ({first(exc)}); on CPU it needs a "
                "C++ compiler (g++); --debug shows the traceback") from exc


def compile_aoti(
    model: Any,
    out: str | os.PathLike[str],
    *,
    example_inputs: Any,
    threshold: float | None = None,
    thresholds: Sequence[float] | None = None,
    policy: str = "maxprob",
    device: str = "cpu",
    gate: str = "auto",
    verify: bool = True,
    force: bool = False,
    threads: int | None = None,
    progress: bool = False,
) -> Any:
    """Compile a multi-exit torch module into an ``aoti`` program directory; return the loaded
    ``TorchProgram``. ``threshold`` (every early exit) or ``thresholds`` (one per early exit)."""
    torch = _import_torch()
    from eeopt import __version__
    from eeopt.capture_torch import _tile, capture_torch
    from eeopt.compiler import check_threshold_values, resolve_thresholds
    from eeopt.kernels.reference import GATE_FEATURES
    from eeopt.kernels.torch_gate import GATE_POLICIES
    from eeopt.manifest import save_manifest, sha256_file, write_program_dir
    from eeopt.passes import gate_prefix
    from eeopt.runtime_torch import TorchProgram, load_torch

    if gate not in GATE_CHOICES:
        raise UsageError(f"gate {gate!r} is not one of {', '.join(GATE_CHOICES)}")
    if policy not in GATE_POLICIES:
        raise UsageError(f"--policy {policy} is not supported by backend 'aoti'; choose one of "
                         f"{', '.join(GATE_POLICIES)} (patience runs on onnxruntime)")
    check_threshold_values(threshold, thresholds, policy)
    _check_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    if gate == "auto":
        from eeopt.kernels.torch_gate import triton_enabled

        gate = "op" if device == "cuda" and triton_enabled() else "torch"
    if gate == "op":
        import eeopt.kernels.torch_gate  # noqa: F401 - registers torch.ops.eeopt.gate
    dev = torch.device(device)
    module = model
    if isinstance(model, torch.nn.Module):
        on_dev = all(t.device.type == dev.type for t in [*model.parameters(), *model.buffers()])
        module = (model if on_dev else copy.deepcopy(model).to(dev)).eval()  # leave the caller's
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = example_inputs.to(dev)
    elif isinstance(example_inputs, (tuple, list)):
        example_inputs = tuple(a.to(dev) if isinstance(a, torch.Tensor) else a
                               for a in example_inputs)
    tg = capture_torch(module, example_inputs)
    last = len(tg.plan.stages) - 1
    thr = resolve_thresholds(last, threshold, thresholds, policy)

    from eeopt.capture_torch import stage_module

    def fill(tmp: Path) -> None:
        stages = []
        iterator: Any = tg.plan.stages
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="aoti stages", unit="stage")
        for cut in iterator:
            gated = cut.index != last
            body = stage_module(tg, cut)
            wrapper = _stage_wrapper(body, gated, policy, gate)
            in_specs = tuple(tg.specs[t] for t in cut.inputs)
            args: list[Any] = [tg.values[t] for t in cut.inputs]
            if gated:
                args.append(torch.tensor(float(thr[cut.index]), device=dev))
            file = f"stage{cut.index}.pt2"
            _build_stage(wrapper, args, in_specs, gated, tmp / file)
            prefix = gate_prefix(cut.index)
            stages.append(StageSpec(
                index=cut.index,
                file=file,
                sha256=sha256_file(tmp / file),
                exit_output=cut.output,
                inputs=in_specs,
                produces=tuple(tg.specs[t] for t in cut.produces),
                carry_after=cut.carry_after,
                logits=cut.output,
                decision=f"{prefix}/decision" if gated else None,
                features=f"{prefix}/features" if gated else None,
                threshold_input=THRESHOLD_INPUT if gated else None,
                gate=GateSpec(policy, float(thr[cut.index]), GATE_FEATURES)
                if gated else None,
                nodes=len(cut.nodes),
            ))
            logger.info("stage %d: %d FX nodes compiled to %s", cut.index, len(cut.nodes), file)
        manifest = Manifest(
            eeopt_version=__version__,
            backend="aoti",
            backend_version=str(torch.__version__),
            onnx_opset=0,
            inputs=tg.inputs,
            num_classes=tg.num_classes,
            stages=tuple(stages),
            source={"outputs": list(tg.outputs), "module": type(model).__name__},
            settings={
                "policy": policy,
                "thresholds": list(thr),
                "device": device,
                "gate": gate,
                "stage_outputs": ["logits", *GATE_OUTPUTS, "carried..."],
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        save_manifest(manifest, tmp)
        if verify:
            prog = TorchProgram(tmp, manifest, threads, device)
            worst = verify_torch(prog, module, example_inputs, _tile)
            logger.info("verified: stages reproduce every exit (max abs error %.2e)", worst)

    write_program_dir(out, fill, force=force)
    return load_torch(Path(out), threads, device)


def verify_torch(prog: Any, module: Any, example_inputs: Any, tile: Any,
                 batches: Sequence[int] = (3, 1), rtol: float = 1e-4, atol: float = 1e-5
                 ) -> float:
    """Chained stages must reproduce every exit of ``module``; returns the max abs error."""
    torch = _import_torch()
    from eeopt.compiler import VerificationError

    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    names = [s.name for s in prog.input_specs]
    worst = 0.0
    for b in batches:
        x = tile(args, b)
        with torch.no_grad():
            want = [w.float().cpu().numpy() for w in module(*x)]
        got = prog.run_all(dict(zip(names, x, strict=True)))
        for k, (w, g) in enumerate(zip(want, got, strict=True)):
            err = float(np.max(np.abs(w - g))) if w.size else 0.0
            worst = max(worst, err)
            if not np.allclose(g, w, rtol=rtol, atol=atol):
                raise VerificationError(
                    f"aoti stage {k} does not reproduce exit {k} at batch {b} (max abs error "
                    f"{err:.3g}); please report this model to eeopt")
    return worst
