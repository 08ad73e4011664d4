"""Cost of a model and of each compiled stage.

For now the cost model is analytic: multiply-accumulates counted per node from the shapes that
ONNX shape inference derives at batch 1 (Conv, ConvTranspose, Gemm, MatMul; other ops count 0).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eeopt.manifest import load_manifest, resolve_in_dir

__all__ = ["count_macs", "model_macs", "stage_macs", "StageCosts"]

logger = logging.getLogger(__name__)


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


def model_macs(model: onnx.ModelProto | str | os.PathLike[str], batch: int = 1) -> int:
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    return sum(count_macs(m, batch).values())


@dataclass(frozen=True)
class StageCosts:
    """Per stage, its own MACs; ``cumulative[k]`` is what a row leaving at exit k paid."""

    stage: tuple[int, ...]

    @property
    def cumulative(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum(self.stage))

    def expected(self, exit_fractions: np.ndarray) -> float:
        """Expected MACs per row for a given distribution over exits."""
        return float(np.dot(np.asarray(exit_fractions, dtype=float), self.cumulative))


def stage_macs(program_dir: str | os.PathLike[str]) -> StageCosts:
    d = Path(program_dir)
    manifest = load_manifest(d)
    return StageCosts(
        tuple(model_macs(os.fspath(resolve_in_dir(d, s.file))) for s in manifest.stages)
    )
