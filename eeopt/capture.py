"""Capture: a torch module or an ONNX file -> ModelGraph, plus the model's input specs.

A multi-exit model returns one ``[batch, classes]`` logits tensor per exit, earliest exit first
and the final classifier last. Its batch dimension must be dynamic (axis 0 of every input).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from eeopt.errors import DataError, UnsupportedModelError
from eeopt.graph import ModelGraph
from eeopt.manifest import TensorSpec

__all__ = [
    "BATCH",
    "capture",
    "example_args",
    "load_onnx",
    "export_torch",
    "input_specs",
    "random_inputs",
    "tile_inputs",
    "cut_to_outputs",
    "onnx_dtype",
    "value_dims",
]

logger = logging.getLogger(__name__)

#: the symbolic name eeopt gives every batch dimension
BATCH = "N"


def onnx_dtype(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name)
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX element type {onnx.TensorProto.DataType.Name(elem_type)} has no numpy dtype"
        ) from exc


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise DataError(f"model file {p} does not exist")
    if p.is_dir():
        raise DataError(f"{p} is a directory; pass the .onnx file")
    try:
        model = onnx.load(os.fspath(p))
    except Exception as exc:
        raise UnsupportedModelError(
            f"{p} is not a readable ONNX model ({type(exc).__name__}); export it with "
            "torch.onnx.export or pass a torch module to eeopt.compile"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise UnsupportedModelError(f"{p} parsed as an empty ONNX model; is it really ONNX?")
    return model


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def export_torch(
    module: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    opset: int | None = None,
) -> onnx.ModelProto:
    """Export a multi-exit ``torch.nn.Module`` to ONNX with a dynamic batch on every input."""
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
    bdim = torch.export.Dim("batch")
    dynamic_shapes = tuple({0: bdim} for _ in args)
    try:
        with _quiet_torch_export():
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
        raise UnsupportedModelError(f"torch.onnx.export failed: {_first_line(exc)}") from exc
    assert program is not None
    return program.model_proto


def capture(
    model: Any,
    *,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
) -> ModelGraph:
    """Turn an ONNX path, an ``onnx.ModelProto`` or a torch module into a ModelGraph."""
    if isinstance(model, (str, os.PathLike)):
        return ModelGraph(load_onnx(model))
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return ModelGraph(copy)
    if isinstance(model, bytes):
        try:
            return ModelGraph(onnx.load_from_string(model))
        except Exception as exc:
            raise UnsupportedModelError("the bytes given are not a serialized ONNX model") from exc
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(model, torch.nn.Module):
        return ModelGraph(export_torch(model, example_inputs, input_names=input_names))
    raise UnsupportedModelError(
        f"cannot compile a {type(model).__name__}: pass a path to an ONNX file, an "
        "onnx.ModelProto, or a torch.nn.Module"
    )


def value_dims(vi: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    """A value's declared dims (int, symbolic name, or None when unknown); None: no shape."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(str(d.dim_param))
        else:
            out.append(None)
    return tuple(out)


def input_specs(graph: ModelGraph) -> tuple[TensorSpec, ...]:
    """The model's inputs; axis 0 of each is the batch and must be dynamic."""
    specs = []
    inits = graph.initializer_names
    for vi in graph.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedModelError(f"input {vi.name!r} is not a tensor; eeopt needs tensors")
        dims = value_dims(vi)
        if dims is None or not dims:
            raise UnsupportedModelError(
                f"input {vi.name!r} has no shape or is a scalar; every input needs a batch axis 0"
            )
        if isinstance(dims[0], int):
            raise UnsupportedModelError(
                f"input {vi.name!r} has a fixed batch dimension {dims[0]}; export the model with "
                "a dynamic batch (torch.onnx.export dynamic_shapes={0: Dim('batch')} or "
                "dynamic_axes={name: {0: 'batch'}})"
            )
        dtype = onnx_dtype(vi.type.tensor_type.elem_type)
        specs.append(TensorSpec(vi.name, dtype, (BATCH, *dims[1:]), 0))
    if not specs:
        raise UnsupportedModelError("the model has no inputs")
    return tuple(specs)


def _symbol_values(
    specs: Sequence[TensorSpec], example: Mapping[str, np.ndarray] | None
) -> dict[str, int]:
    values: dict[str, int] = {}
    if example:
        for s in specs:
            arr = example.get(s.name)
            if arr is None:
                continue
            for axis, d in enumerate(s.shape):
                if isinstance(d, str) and axis != s.batch_axis and axis < arr.ndim:
                    values.setdefault(d, int(arr.shape[axis]))
    return values


def random_inputs(
    specs: Sequence[TensorSpec],
    batch: int,
    *,
    seed: int = 0,
    example: Mapping[str, np.ndarray] | None = None,
    default_dim: int = 8,
) -> dict[str, np.ndarray]:
    """Random arrays that fit ``specs`` (floats in [0, 1), ints and bools in {0, 1}).

    Symbolic non-batch dimensions take their size from ``example`` when given, else
    ``default_dim``; dimensions sharing a name share a size.
    """
    rng = np.random.default_rng(seed)
    symbols = _symbol_values(specs, example)
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = []
        for axis, d in enumerate(s.shape):
            if axis == s.batch_axis:
                shape.append(batch)
            elif isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str):
                shape.append(symbols.setdefault(d, default_dim))
            else:
                shape.append(default_dim)
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            arr = rng.random(shape).astype(dt)
        elif dt.kind == "b":
            arr = rng.integers(0, 2, shape).astype(bool)
        elif dt.kind in "iu":
            arr = rng.integers(0, 2, shape).astype(dt)
        else:
            raise UnsupportedModelError(f"cannot make sample data for input {s.name!r} ({dt})")
        out[s.name] = arr
    return out


def tile_inputs(example: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``example`` rows repeated (or cut) along axis 0 to ``batch`` rows."""
    out = {}
    for k, v in example.items():
        n = v.shape[0]
        if n == 0:
            raise DataError(f"example input {k!r} has no rows")
        out[k] = np.ascontiguousarray(v[np.arange(batch) % n])
    return out


def cut_to_outputs(graph: ModelGraph, outputs: Sequence[str]) -> ModelGraph:
    """The model restricted to ``outputs`` (dead nodes removed): e.g. the plain network, cut to
    its final classifier."""
    from eeopt.passes import RemoveDeadNodes

    missing = [o for o in outputs if o not in graph.output_names]
    if missing:
        raise UnsupportedModelError(f"the model has no output {missing[0]!r}")
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    keep = [o for o in model.graph.output if o.name in set(outputs)]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return RemoveDeadNodes()(ModelGraph(model)).graph
