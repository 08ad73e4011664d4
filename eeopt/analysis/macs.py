"""Multiply-accumulates per node, counted from the shapes ONNX shape inference derives (Conv,
ConvTranspose, Gemm, MatMul; other ops count 0): the analytic view of a model's cost, beside
the measured one (``eeopt.measure.profile``)."""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["count_macs", "model_macs"]


def _fix_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = batch  # eeopt's inputs have their batch (their only free dim) here
                break
    return m


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
        inferred.graph.output
    ):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in inferred.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def count_macs(model: onnx.ModelProto, batch: int = 1) -> dict[str, int]:
    """Node name -> multiply-accumulates at ``batch`` (nodes whose shapes are unknown count 0)."""
    shapes = _shapes(_fix_batch(model, batch))
    macs: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        ins = [shapes.get(t) for t in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        n = 0
        try:
            if node.op_type == "Conv" and out and ins[1]:
                n = int(np.prod(out)) * int(np.prod(ins[1][1:]))
            elif node.op_type == "ConvTranspose" and ins[0] and ins[1]:
                n = int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))
            elif node.op_type in ("Gemm", "MatMul") and out and ins[0]:
                k = ins[0][-1]
                if node.op_type == "Gemm" and any(
                    a.name == "transA" and a.i for a in node.attribute
                ):
                    k = ins[0][0]
                n = int(np.prod(out)) * int(k)
        except (IndexError, TypeError):
            n = 0
        macs[name] = n
    return macs


def model_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """The model's multiply-accumulates at ``batch``: ``count_macs`` summed."""
    return sum(count_macs(model, batch).values())
