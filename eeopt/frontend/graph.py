"""ModelGraph: the one in-memory representation the passes work on.

A ModelGraph wraps an ``onnx.ModelProto`` and derives, on demand, the indexes the passes need:
which node produces a tensor, which nodes consume it, and a networkx view of the node DAG. A
ModelGraph is treated as immutable: a pass that rewrites the model returns a new ModelGraph.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import networkx as nx
import onnx

from eeopt.errors import UnsupportedModelError

__all__ = ["ModelGraph", "subgraph_inputs", "node_inputs"]

logger = logging.getLogger(__name__)


def _subgraph_outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (If/Loop/Scan body) reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {i.name for i in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(node_inputs(node))
        defined.update(o for o in node.output if o)
    return used - defined


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors read by the subgraphs held in ``node``'s attributes."""
    names: set[str] = set()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names |= _subgraph_outer_names(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                names |= _subgraph_outer_names(g)
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its explicit inputs, then its subgraphs' outer-scope reads."""
    explicit = [i for i in node.input if i]
    implicit = sorted(subgraph_inputs(node) - set(explicit))
    return explicit + implicit


@dataclass(frozen=True)
class ModelGraph:
    """An ONNX model plus derived indexes (producer, consumers, networkx DAG)."""

    model: onnx.ModelProto
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    # ----------------------------------------------------------------- basic views
    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node)

    @property
    def input_names(self) -> list[str]:
        inits = self.initializer_names
        return [i.name for i in self.graph.input if i.name not in inits]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.output]

    @functools.cached_property
    def initializer_names(self) -> frozenset[str]:
        names = {i.name for i in self.graph.initializer}
        names |= {i.values.name for i in self.graph.sparse_initializer}
        return frozenset(names)

    @property
    def opset(self) -> int:
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return int(imp.version)
        raise UnsupportedModelError("the model imports no default ONNX opset; re-export it")

    # ----------------------------------------------------------------- indexes
    @functools.cached_property
    def node_by_name(self) -> dict[str, onnx.NodeProto]:
        out: dict[str, onnx.NodeProto] = {}
        for node in self.graph.node:
            if not node.name:
                raise UnsupportedModelError(
                    "a node has no name; run the NameNodes pass before building indexes"
                )
            if node.name in out:
                raise UnsupportedModelError(
                    f"two nodes share the name {node.name!r}; run the NameNodes pass first"
                )
            out[node.name] = node
        return out

    @functools.cached_property
    def producer(self) -> dict[str, str]:
        """Tensor name -> name of the node that produces it (graph inputs are absent)."""
        out: dict[str, str] = {}
        for node in self.graph.node:
            for t in node.output:
                if t:
                    out[t] = node.name
        return out

    @functools.cached_property
    def consumers(self) -> dict[str, list[str]]:
        """Tensor name -> names of the nodes that read it (explicitly or from a subgraph)."""
        out: dict[str, list[str]] = {}
        for node in self.graph.node:
            for t in node_inputs(node):
                out.setdefault(t, []).append(node.name)
        return out

    @functools.cached_property
    def inputs_of(self) -> dict[str, list[str]]:
        """Node name -> every tensor it reads, subgraph reads included."""
        return {node.name: node_inputs(node) for node in self.graph.node}

    @functools.cached_property
    def order(self) -> dict[str, int]:
        """Node name -> position in the model's (topologically sorted) node list."""
        return {node.name: i for i, node in enumerate(self.graph.node)}

    @functools.cached_property
    def nx(self) -> nx.DiGraph:
        """The node DAG: an edge producer -> consumer per tensor, tensor names on the edge."""
        g: nx.DiGraph = nx.DiGraph()
        for node in self.graph.node:
            g.add_node(node.name, op=node.op_type)
        for node in self.graph.node:
            for t in self.inputs_of[node.name]:
                src = self.producer.get(t)
                if src is None:
                    continue
                if g.has_edge(src, node.name):
                    g.edges[src, node.name]["tensors"].append(t)
                else:
                    g.add_edge(src, node.name, tensors=[t])
        if not nx.is_directed_acyclic_graph(g):
            raise UnsupportedModelError("the model's graph has a cycle; ONNX graphs must be DAGs")
        return g

    def ancestors_of_tensor(self, tensor: str) -> set[str]:
        """Nodes needed to compute ``tensor`` (its producer included)."""
        src = self.producer.get(tensor)
        if src is None:
            return set()
        return set(nx.ancestors(self.nx, src)) | {src}

    def value_info(self) -> dict[str, onnx.ValueInfoProto]:
        """Typed value infos for every tensor that shape inference can type."""
        cached = self._cache.get("value_info")
        if cached is None:
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, data_prop=True)
            except Exception as exc:  # shape inference is best effort
                logger.debug("shape inference failed: %s", exc)
                inferred = self.model
            vi: dict[str, onnx.ValueInfoProto] = {}
            for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
                inferred.graph.output
            ):
                vi[v.name] = v
            self._cache["value_info"] = vi
            cached = vi
        assert isinstance(cached, dict)
        return cached

    def iter_nodes(self, names: Iterable[str]) -> Iterator[onnx.NodeProto]:
        """The named nodes, in the model's topological order."""
        wanted = set(names)
        for node in self.graph.node:
            if node.name in wanted:
                yield node

    def with_model(self, model: onnx.ModelProto) -> ModelGraph:
        return ModelGraph(model)
