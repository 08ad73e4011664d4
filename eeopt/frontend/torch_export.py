"""torch.export for eeopt: a multi-exit ``torch.nn.Module`` to ONNX with a dynamic batch, and
the checks and quiet logging both torch paths share (the ONNX export here, the FX capture in
``eeopt.frontend.fx``). torch is imported inside each function: it is optional."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import onnx

from eeopt.errors import DataError, UnsupportedModelError, first_line

__all__ = ["dynamic_axes", "example_args", "export_torch", "quiet_torch_export"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    names = ["torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "torch.fx"]
    saved = [(n, logging.getLogger(n).level) for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in saved:
            logging.getLogger(n).setLevel(lvl)


def example_args(example_inputs: Any, what: str) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple of tensors with one batch size, or a one-line DataError
    (``what`` names what needs them)."""
    import torch

    if example_inputs is None:
        raise DataError(
            f"{what} needs example_inputs (a tensor or a tuple of tensors, one per forward "
            "argument)"
        )
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise DataError("example_inputs must be a tensor or a tuple of tensors")
    batch = {int(a.shape[0]) for a in args}
    if len(batch) != 1:
        raise DataError(f"example_inputs disagree on the batch size (axis 0 of every input): "
                        f"{sorted(batch)}")
    return tuple(args)


def dynamic_axes(dynamic_shapes: Any, input_names: Sequence[str],
                 ranks: Sequence[int]) -> list[dict[int, Any]]:
    """``dynamic_shapes`` (see ``export_torch``) as one ``{axis: name or Dim}`` per input, in
    order, checked: a one-line DataError names the input and the axis at fault."""
    n = len(input_names)
    if dynamic_shapes is None:
        return [{} for _ in range(n)]
    if isinstance(dynamic_shapes, dict):
        unknown = [k for k in dynamic_shapes if k not in input_names]
        if unknown:
            raise DataError(f"dynamic_shapes names {unknown[0]!r}, which is not an input of the "
                            f"module's forward (its inputs: {', '.join(input_names)})")
        entries = [dynamic_shapes.get(name) for name in input_names]
    elif isinstance(dynamic_shapes, (tuple, list)):
        if len(dynamic_shapes) != n:
            raise DataError(f"dynamic_shapes has {len(dynamic_shapes)} entries for {n} inputs: "
                            "give one per input (None for an input with only a dynamic batch)")
        entries = list(dynamic_shapes)
    else:
        raise DataError("dynamic_shapes must be a tuple with one {axis: name} per input, or a "
                        "dict of them keyed by input name")
    out: list[dict[int, Any]] = []
    for name, rank, entry in zip(input_names, ranks, entries, strict=True):
        if entry is None:
            out.append({})
            continue
        if not isinstance(entry, dict):
            raise DataError(f"dynamic_shapes for input {name!r} must be a dict {{axis: name}}, "
                            f"got {type(entry).__name__}")
        axes: dict[int, Any] = {}
        for axis, dim in entry.items():
            if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < rank:
                raise DataError(f"dynamic_shapes for input {name!r}: axis {axis!r} is not an "
                                f"axis of its {rank}-d example")
            if axis == 0:
                continue  # the batch, dynamic anyway
            if isinstance(dim, str):
                if not dim.isidentifier():
                    raise DataError(f"dynamic_shapes for input {name!r}: dimension name "
                                    f"{dim!r} must be an identifier such as 'seq'")
            elif dim is None or type(dim).__name__ not in ("Dim", "_Dim", "_DimHint",
                                                           "_DerivedDim"):
                raise DataError(f"dynamic_shapes for input {name!r}: axis {axis} needs a name "
                                f"(str) or a torch.export.Dim, got {dim!r}")
            axes[axis] = dim
        out.append(axes)
    return out


def export_torch(
    module: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    opset: int | None = None,
    dynamic_shapes: Any = None,
) -> onnx.ModelProto:
    """Export a multi-exit ``torch.nn.Module`` to ONNX with a dynamic batch on every input.

    ``dynamic_shapes`` marks more axes dynamic, as ``torch.export`` does: one entry per input
    (a tuple in argument order, or a dict keyed by the forward's argument names), each a dict
    ``{axis: name}``; axes that share a name share one dimension (a text model's ``input_ids``
    and ``attention_mask`` share ``"seq"``). A ``torch.export.Dim`` works in place of a name.
    Axis 0 is always the batch."""
    import torch

    args = example_args(example_inputs, "compiling a torch module")
    batch = {int(a.shape[0]) for a in args}
    if batch == {1} or batch == {0}:  # export would specialise a batch of 1
        args = tuple(a.repeat(2, *([1] * (a.dim() - 1))) if a.shape[0] else a for a in args)
    args = tuple(args)
    if input_names is None:
        params = [
            p.name
            for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        input_names = params[: len(args)] if len(params) >= len(args) else None
    if input_names is None:
        input_names = [f"input{i}" for i in range(len(args))]
    module = module.eval()
    with torch.no_grad():
        outs = module(*args)
    if not isinstance(outs, (tuple, list)) or not all(isinstance(o, torch.Tensor) for o in outs):
        raise UnsupportedModelError(
            "the module's forward must return a tuple of logits tensors, one per exit "
            f"(earliest first); it returned {type(outs).__name__}"
        )
    for i, o in enumerate(outs):
        if o.dim() != 2:
            raise UnsupportedModelError(
                f"exit {i} returns shape {list(o.shape)}; every exit must return [batch, classes]"
            )
    output_names = [f"exit{i}" for i in range(len(outs))]
    axes = dynamic_axes(dynamic_shapes, list(input_names), [a.dim() for a in args])
    dims: dict[str, Any] = {"batch": torch.export.Dim("batch")}
    shapes = []
    for per_input in axes:
        spec: dict[int, Any] = {0: dims["batch"]}
        for axis, dim in per_input.items():
            if isinstance(dim, str):
                dim = dims.setdefault(dim, torch.export.Dim(dim))
            spec[axis] = dim
        shapes.append(spec)
    dynamic_shapes = tuple(shapes)
    try:
        with quiet_torch_export():
            program = torch.onnx.export(
                module,
                args,
                None,
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names),
                output_names=output_names,
                opset_version=opset,
                verbose=False,
            )
    except Exception as exc:
        raise UnsupportedModelError(f"torch.onnx.export failed: {first_line(exc)}") from exc
    assert program is not None
    return program.model_proto


