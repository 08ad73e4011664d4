"""RemoveDeadNodes: drop nodes and initializers that no graph output depends on."""

from __future__ import annotations

import logging

import onnx

from eeopt.frontend import ModelGraph, node_inputs
from eeopt.passes._infra import Pass, PassResult

__all__ = ["RemoveDeadNodes"]

logger = logging.getLogger(__name__)


class RemoveDeadNodes(Pass):
    """Keep only what the outputs need. Graph inputs are kept: they are the model's interface."""

    def call(self, graph: ModelGraph) -> PassResult:
        needed = {o.name for o in graph.graph.output}
        live_nodes: list[onnx.NodeProto] = []
        for node in reversed(graph.graph.node):
            if any(o in needed for o in node.output if o):
                live_nodes.append(node)
                needed.update(node_inputs(node))
        live_nodes.reverse()
        removed_nodes = len(graph.graph.node) - len(live_nodes)
        inits = [i for i in graph.graph.initializer if i.name in needed]
        removed_inits = len(graph.graph.initializer) - len(inits)
        if not removed_nodes and not removed_inits:
            return PassResult(graph, False, {"nodes": 0, "initializers": 0})
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        del model.graph.node[:]
        model.graph.node.extend(live_nodes)
        del model.graph.initializer[:]
        model.graph.initializer.extend(inits)
        kept_vi = [v for v in model.graph.value_info if v.name in needed]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept_vi)
        logger.debug("removed %d dead nodes, %d initializers", removed_nodes, removed_inits)
        return PassResult(
            ModelGraph(model), True, {"nodes": removed_nodes, "initializers": removed_inits}
        )
