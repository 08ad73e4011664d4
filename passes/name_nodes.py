"""NameNodes: give every node a unique, non-empty name so analyses can index nodes by name."""

from __future__ import annotations

import logging

import onnx

from eeopt.frontend import ModelGraph
from eeopt.passes._infra import Pass, PassResult

__all__ = ["NameNodes"]

logger = logging.getLogger(__name__)


class NameNodes(Pass):
    """Rename unnamed or duplicate nodes to ``<op>_<index>``; named unique nodes are kept."""

    def call(self, graph: ModelGraph) -> PassResult:
        seen: set[str] = set()
        renamed = 0
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        taken = {n.name for n in model.graph.node if n.name}
        for i, node in enumerate(model.graph.node):
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in taken or name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            seen.add(name)
            taken.add(name)
            renamed += 1
        if renamed:
            logger.debug("named %d nodes", renamed)
            return PassResult(ModelGraph(model), True, {"renamed": renamed})
        return PassResult(graph, False, {"renamed": 0})

    def ensures(self, graph: ModelGraph) -> None:
        _ = graph.node_by_name  # raises on an empty or duplicate name
