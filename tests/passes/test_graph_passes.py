"""Structural tests of the graph passes on tiny hand-built graphs."""

from __future__ import annotations

import pytest

from eeopt.errors import PassError
from eeopt.frontend import ModelGraph
from eeopt.passes import CheckModel, NameNodes, PassManager, RemoveDeadNodes

from onnx_builders import two_exit_mlp


def test_name_nodes_names_once() -> None:
    g = ModelGraph(two_exit_mlp())
    first = NameNodes()(g)
    assert first.modified and first.stats["renamed"] == 1
    names = [n.name for n in first.graph.nodes]
    assert all(names) and len(set(names)) == len(names)
    assert NameNodes()(first.graph).modified is False


def test_remove_dead_nodes_drops_dead_branch_and_initializer() -> None:
    g = NameNodes()(ModelGraph(two_exit_mlp())).graph
    res = RemoveDeadNodes()(g)
    assert res.modified
    assert "dead" not in {n.name for n in res.graph.nodes}
    assert "unused" not in res.graph.initializer_names
    assert res.stats == {"nodes": 1, "initializers": 1}
    assert RemoveDeadNodes()(res.graph).modified is False


def test_check_model_rejects_invalid_graph_and_names_the_pass() -> None:
    m = two_exit_mlp()
    m.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(PassError, match="CheckModel"):
        PassManager([NameNodes(), CheckModel()])(ModelGraph(m))
