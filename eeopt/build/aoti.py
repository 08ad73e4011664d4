"""Emit an AOTInductor program: one ahead-of-time compiled ``.pt2`` package per stage
(``backend="aoti"``).

Pipeline (``compile_aoti``):
  torch.export (dynamic batch) -> FX view (``eeopt.frontend.fx``) -> the shared cut analysis
  (``eeopt.analysis.cuts_from_view``)
  -> per stage: the stage's FX nodes + the fused gate (``kernels/torch_gate.py``) as one module
     -> torch.export (batch dynamic, threshold a 0-d input) -> aoti_compile_and_package
  -> manifest (backend "aoti") -> verify: chained stages reproduce every exit of the module
  -> rename into place; ``eeopt.load`` returns a ``eeopt.runtime.TorchProgram``.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eeopt.analysis import check_exit_order, cuts_from_view
from eeopt.build.verify import verify_exits
from eeopt.errors import BackendUnavailableError, UnsupportedModelError, UsageError, first_line
from eeopt.frontend import (
    MAX_BATCH,
    capture_fx,
    quiet_torch_export,
    stage_module,
    tile_tensors,
)
from eeopt.kernels.reference import GATE_FEATURES
from eeopt.program import (
    THRESHOLD_INPUT,
    GateSpec,
    Manifest,
    StageSpec,
    TensorSpec,
    gate_prefix,
    save_manifest,
    sha256_file,
    write_dir,
)
from eeopt.runtime import TorchProgram, load_torch
from eeopt.runtime.aoti import import_torch
from eeopt.version import __version__

__all__ = ["GATE_CHOICES", "GATE_POLICIES", "check_device", "compile_aoti"]

logger = logging.getLogger(__name__)

GATE_CHOICES = ("auto", "torch", "op")
#: the policies the torch gate computes (patience runs on onnxruntime)
GATE_POLICIES = ("maxprob", "entropy", "margin")
GATE_OUTPUTS = ("features", "decision", "order", "count")


def check_device(device: str) -> None:
    """``device`` is one AOTInductor compiles for, and is here."""
    torch = import_torch()
    if device not in ("cpu", "cuda"):
        raise UsageError(f"{{device}} {device!r} is not supported; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "device='cuda' needs a CUDA build of torch and a visible GPU; none is here "
            "(compile with device='cpu')")


def _stage_wrapper(body: Any, gated: bool, policy: str, gate: str) -> Any:
    import_torch()
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
    torch = import_torch()
    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    dyn: list[Any] = [None if s.batch_axis is None else {s.batch_axis: batch} for s in specs]
    if gated:
        dyn.append(None)
    with quiet_torch_export():
        try:
            ep = torch.export.export(module, tuple(args), dynamic_shapes=(tuple(dyn),))
        except Exception as exc:
            raise UnsupportedModelError(
                f"torch.export cannot capture {path.stem} with a dynamic batch ({first_line(exc)})"
            ) from exc
        try:
            torch._inductor.aoti_compile_and_package(ep, package_path=os.fspath(path))
        except Exception as exc:
            raise BackendUnavailableError(
                f"AOTInductor could not compile {path.name} ({first_line(exc)}); on CPU it needs a "
                "C++ compiler (g++); the chained exception has the details") from exc


def compile_aoti(
    model: Any,
    out: str | os.PathLike[str],
    *,
    example_inputs: Any,
    thresholds: Callable[[int], Sequence[float]],
    policy: str = "maxprob",
    device: str = "cpu",
    gate: str = "auto",
    verify: bool = True,
    force: bool = False,
    threads: int | None = None,
    progress: bool = False,
) -> TorchProgram:
    """Compile a multi-exit torch module into an ``aoti`` program directory; return the loaded
    ``TorchProgram``. ``thresholds(k)``: the thresholds of the model's ``k`` early exits."""
    torch = import_torch()
    if gate not in GATE_CHOICES:
        raise UsageError(f"{{gate}} {gate!r} is not one of {', '.join(GATE_CHOICES)}")
    if policy not in GATE_POLICIES:
        raise UsageError(f"{{policy}} {policy} is not supported by backend 'aoti'; choose one "
                         f"of {', '.join(GATE_POLICIES)} (patience runs on onnxruntime)")
    check_device(device)
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
    tg = capture_fx(module, example_inputs)
    check_exit_order(tg.view, tg.outputs, tg.needed)
    cuts = cuts_from_view(tg.view, tg.outputs, tg.needed)
    last = len(cuts.stages) - 1
    thr = list(thresholds(last))

    def fill(tmp: Path) -> None:
        stages = []
        iterator: Any = cuts.stages
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="aoti stages", unit="stage")
        for cut in iterator:
            gated = cut.index != last
            body = stage_module(tg, cut)
            wrapper = _stage_wrapper(body, gated, policy, gate)
            in_specs = tuple(tg.spec(t) for t in cut.inputs)
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
                produces=tuple(tg.spec(t) for t in cut.produces),
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
            backend=TorchProgram.backend,
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
            worst = verify_torch(TorchProgram(tmp, manifest, threads, device), module,
                                 example_inputs)
            logger.info("verified: stages reproduce every exit (max abs error %.2e)", worst)

    write_dir(out, fill, force=force)
    return load_torch(Path(out), threads, device, allow_native=True)  # built here


def verify_torch(prog: TorchProgram, module: Any, example_inputs: Any,
                 batches: Sequence[int] = (3, 1)) -> float:
    """The program's chained stages against the torch module."""
    torch = import_torch()
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    names = [s.name for s in prog.input_specs]

    def reference(x: tuple[Any, ...]) -> list[Any]:
        with torch.no_grad():
            return [w.float().cpu().numpy() for w in module(*x)]

    return verify_exits(lambda x: prog.run_all(dict(zip(names, x, strict=True))), reference,
                        [(b, tile_tensors(args, b)) for b in batches],
                        exits=[str(k) for k in range(prog.num_exits)], what="aoti stage")
