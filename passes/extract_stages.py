"""extract_stages: cut the model into one ONNX graph per exit, following a CutPlan.

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

from eeopt.graph import ModelGraph
from eeopt.manifest import TensorSpec
from eeopt.passes.compute_cuts import CutPlan, StageCut, shape_only_nodes, with_shape_closure
from eeopt.passes.find_exit_heads import ExitHead

__all__ = ["extract_stages", "extract_head", "value_info_from_spec", "stage_logits_name"]

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


def _stage_model(
    graph: ModelGraph, cut: StageCut, specs: Mapping[str, TensorSpec]
) -> onnx.ModelProto:
    nodes = [onnx.NodeProto() for _ in cut.nodes]
    for dst, src in zip(nodes, graph.iter_nodes(cut.nodes), strict=True):
        dst.CopyFrom(src)
    logits = stage_logits_name(cut)
    if logits != cut.output:
        nodes.append(helper.make_node("Identity", [cut.output], [logits], name=f"{logits}/id"))
    reads = {t for n in nodes for t in (list(n.input) + _subgraph_reads(n)) if t}
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


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    from eeopt.graph import subgraph_inputs

    return sorted(subgraph_inputs(node))


def extract_stages(
    graph: ModelGraph, plan: CutPlan, specs: Mapping[str, TensorSpec]
) -> list[ModelGraph]:
    """One ModelGraph per stage. ``specs`` types every stage input and output tensor."""
    out = []
    for cut in plan.stages:
        model = _stage_model(graph, cut, specs)
        logger.debug(
            "stage %d: %d nodes, inputs %s, outputs %s",
            cut.index, len(model.graph.node), [i.name for i in model.graph.input],
            [o.name for o in model.graph.output],
        )
        out.append(ModelGraph(model))
    return out



def extract_head(
    graph: ModelGraph, head: ExitHead, specs: Mapping[str, TensorSpec]
) -> ModelGraph:
    """Exit ``head`` alone, as a model from the backbone tensors it reads to its logits (used
    to measure what a head costs apart from its backbone segment)."""
    nodes, reads = with_shape_closure(graph, head.nodes, shape_only_nodes(graph))
    cut = StageCut(index=head.index, output=head.output, nodes=tuple(nodes), recomputed=(),
                   inputs=tuple(reads), produces=(), carry_after=())
    return ModelGraph(_stage_model(graph, cut, specs))
