"""CutView: what the cut analysis reads of a graph, whatever represents it.

The ONNX frontend's ModelGraph gives one through ``cut_view``; the FX frontend builds one from a
``torch.export`` graph (``eeopt.frontend.fx``). Nodes and tensors are names; nodes whose outputs
depend only on constants and tensor shapes are marked, since a cut recomputes them rather than
carrying them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from eeopt.frontend.graph import ModelGraph

__all__ = ["CutView", "cut_view", "shape_only_nodes"]

#: ops whose output depends only on the *shape* of their input
_SHAPE_OPS = frozenset({"Shape", "Size"})
#: ops without inputs whose value is fixed
_CONST_OPS = frozenset({"Constant"})


def shape_only_nodes(graph: ModelGraph) -> frozenset[str]:
    """Nodes whose outputs depend only on constants and tensor shapes, never on tensor values."""
    shape_only: set[str] = set()
    shape_tensors: set[str] = set(graph.initializer_names)
    for node in graph.graph.node:
        ins = graph.inputs_of[node.name]
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx"):
            ok = True
        elif not ins:
            ok = node.op_type in _CONST_OPS and node.domain in ("", "ai.onnx")
        else:
            ok = all(t in shape_tensors for t in ins) and not _has_subgraph(node)
        if ok:
            shape_only.add(node.name)
            shape_tensors.update(o for o in node.output if o)
    return frozenset(shape_only)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )


@dataclass(frozen=True)
class CutView:
    """What the cut analysis needs of a graph, whatever represents it: the ONNX ModelGraph
    (``cut_view``) or a ``torch.export`` FX graph (``eeopt.frontend.fx``). Nodes and tensors are
    names; only extracting the stages is specific to each representation."""

    order: Mapping[str, int]
    """Node -> position in a topological order."""
    inputs_of: Mapping[str, Sequence[str]]
    """Node -> every tensor it reads."""
    outputs_of: Mapping[str, Sequence[str]]
    """Node -> the tensors it makes."""
    producer: Mapping[str, str]
    """Tensor -> the node that makes it (graph inputs and constants are absent)."""
    graph_inputs: tuple[str, ...]
    constants: frozenset[str]
    """Tensors with a fixed value (initializers, parameters): never carried."""
    shape_only: frozenset[str]
    """Nodes whose outputs depend only on constants and shapes: recomputed, never carried."""


def cut_view(graph: ModelGraph, shape_only: frozenset[str] | None = None) -> CutView:
    """The ONNX graph's ``CutView`` (``shape_only``: the graph's ``shape_only_nodes``, computed
    when not given)."""
    return CutView(
        order=graph.order,
        inputs_of=graph.inputs_of,
        outputs_of={n.name: [t for t in n.output if t] for n in graph.graph.node},
        producer=graph.producer,
        graph_inputs=tuple(graph.input_names),
        constants=graph.initializer_names,
        shape_only=shape_only_nodes(graph) if shape_only is None else shape_only,
    )
