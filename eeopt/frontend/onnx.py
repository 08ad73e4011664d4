"""The ONNX frontend: an ONNX file, an ``onnx.ModelProto``, serialized bytes or a torch module
(exported to ONNX) -> ModelGraph, and the model's input specs.

A multi-exit model returns one ``[batch, classes]`` logits tensor per exit, earliest exit first
and the final classifier last. Its batch dimension must be dynamic (axis 0 of every input).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from eeopt.errors import DataError, UnsupportedModelError, UsageError
from eeopt.frontend.graph import ModelGraph
from eeopt.frontend.torch_export import export_torch
from eeopt.program import BATCH, TensorSpec

__all__ = ["capture", "input_specs", "load_onnx", "onnx_dtype", "value_dims"]

logger = logging.getLogger(__name__)


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


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch module exists only once torch is imported
    return torch is not None and isinstance(model, torch.nn.Module)


def capture(
    model: Any,
    *,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    dynamic_shapes: Any = None,
) -> ModelGraph:
    """Turn an ONNX path, an ``onnx.ModelProto`` or a torch module into a ModelGraph
    (``dynamic_shapes``: a torch module's dynamic axes beyond the batch; ``export_torch``)."""
    if dynamic_shapes is not None and not _is_torch_module(model):
        raise UsageError("{dynamic_shapes} applies to a torch module; an ONNX model declares "
                         "its dynamic axes itself (symbolic dims, e.g. torch.onnx.export's "
                         "dynamic_axes)")
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
        return ModelGraph(export_torch(model, example_inputs, input_names=input_names,
                                       dynamic_shapes=dynamic_shapes))
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
