"""ExtractStage: the model's stage k as an ONNX graph of its own, following a ``StageCut``.

Stage k holds the backbone from the previous cut to this one, exit k's head, and the shape
arithmetic it recomputes. Its inputs are the graph inputs and carried tensors it reads; its
outputs are the exit's logits and the carried tensors it makes for later stages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from eeopt.analysis import StageCut
from eeopt.frontend import ModelGraph, subgraph_inputs
from eeopt.passes._infra import Pass, PassResult
from eeopt.program import TensorSpec

__all__ = ["ExtractStage", "stage_model", "stage_logits_name", "value_info_from_spec"]

logger = logging.getLogger(__name__)


def value_info_from_spec(spec: TensorSpec) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    vi = helper.make_tensor_value_info(spec.name, elem, None)
    shape = vi.type.tensor_type.shape
    shape.SetInParent()  # a scalar keeps rank 0 rather than unknown rank
    for d in spec.shape:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d
    return vi


def stage_logits_name(cut: StageCut) -> str:
    """The stage's logits output: the exit's own tensor, or an Identity of a carried one."""
    return cut.output if cut.output not in cut.inputs else f"{cut.output}/eeopt_exit"


def stage_model(
    graph: ModelGraph, cut: StageCut, specs: Mapping[str, TensorSpec]
) -> onnx.ModelProto:
    """The nodes ``cut`` names, from ``cut.inputs`` to the exit's logits and ``cut.produces``,
    as a model (``specs`` types every input and output)."""
    nodes = [onnx.NodeProto() for _ in cut.nodes]
    for dst, src in zip(nodes, graph.iter_nodes(cut.nodes), strict=True):
        dst.CopyFrom(src)
    logits = stage_logits_name(cut)
    if logits != cut.output:
        nodes.append(helper.make_node("Identity", [cut.output], [logits], name=f"{logits}/id"))
    reads = {t for n in nodes for t in (list(n.input) + sorted(subgraph_inputs(n))) if t}
    inits = [i for i in graph.graph.initializer if i.name in reads]
    inputs = [value_info_from_spec(specs[t]) for t in cut.inputs]
    logits_spec = specs[cut.output]
    outputs = [value_info_from_spec(TensorSpec(logits, logits_spec.dtype, logits_spec.shape))]
    outputs += [value_info_from_spec(specs[t]) for t in cut.produces if t != logits]
    g = helper.make_graph(nodes, f"stage{cut.index}", inputs, outputs, initializer=inits)
    model = helper.make_model(
        g,
        opset_imports=list(graph.model.opset_import),
        ir_version=graph.model.ir_version,
        producer_name="eeopt",
    )
    model.functions.extend(graph.model.functions)
    return model


class ExtractStage(Pass):
    """The whole model -> stage ``cut.index`` alone."""

    def __init__(self, cut: StageCut, specs: Mapping[str, TensorSpec]) -> None:
        self.cut = cut
        self.specs = specs

    def call(self, graph: ModelGraph) -> PassResult:
        model = stage_model(graph, self.cut, self.specs)
        logger.debug(
            "stage %d: %d nodes, inputs %s, outputs %s",
            self.cut.index, len(model.graph.node), [i.name for i in model.graph.input],
            [o.name for o in model.graph.output],
        )
        return PassResult(ModelGraph(model), True, {"nodes": len(model.graph.node)})
