"""Structural tests of the graph passes on tiny hand-built graphs."""

from __future__ import annotations

import onnx
import pytest

from eeopt.errors import PassError, UnsupportedModelError
from eeopt.graph import ModelGraph
from eeopt.passes import (
    CheckModel,
    NameNodes,
    PassManager,
    RemoveDeadNodes,
    compute_cuts,
    find_exit_heads,
    shape_only_nodes,
)

from onnx_builders import reshape_across_exit, three_exit_chain, two_exit_mlp


def _prepared(model: onnx.ModelProto) -> ModelGraph:
    return PassManager([NameNodes(), RemoveDeadNodes()])(ModelGraph(model)).graph


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


def test_find_exit_heads_separates_heads_from_backbone() -> None:
    g = _prepared(two_exit_mlp())
    heads = find_exit_heads(g)
    assert heads.num_exits == 2
    assert heads.heads[0].nodes == {"head0"}
    assert heads.heads[0].reads == ("h",)
    # everything after the branch point feeds only the final exit
    assert heads.heads[1].nodes == {"mm1", "skip", "head1", g.producer["c"]}
    assert "h" in heads.heads[1].reads


def test_find_exit_heads_rejects_single_output() -> None:
    m = two_exit_mlp()
    del m.graph.output[1]
    with pytest.raises(UnsupportedModelError, match="at least 2"):
        find_exit_heads(_prepared(m))


def test_find_exit_heads_rejects_reversed_exits() -> None:
    find_exit_heads(_prepared(three_exit_chain()))  # the right order passes
    m = three_exit_chain()
    outs = list(m.graph.output)
    del m.graph.output[:]
    m.graph.output.extend(reversed(outs))
    with pytest.raises(UnsupportedModelError, match="earliest exit first"):
        find_exit_heads(_prepared(m))


def test_compute_cuts_carries_the_skip_and_nothing_is_recomputed() -> None:
    g = _prepared(two_exit_mlp())
    plan = compute_cuts(g, find_exit_heads(g))
    s0, s1 = plan.stages
    assert set(s0.nodes) == {"mm0", "relu0", "head0"}
    assert s0.inputs == ("x",)
    assert s0.produces == ("h",) and s0.carry_after == ("h",)
    assert s1.inputs == ("h",) and s1.carry_after == ()
    # every node runs in exactly one stage
    assert not set(s0.nodes) & set(s1.nodes)


def test_shape_arithmetic_is_recomputed_not_carried() -> None:
    g = _prepared(reshape_across_exit())
    assert shape_only_nodes(g) == {"shape", "gather", "concat"}
    plan = compute_cuts(g, find_exit_heads(g))
    s0, s1 = plan.stages
    assert "flat_shape" not in s0.carry_after
    assert set(s1.recomputed) == {"shape", "gather", "concat"}
    # stage 1 recomputes Shape(h) from the carried h, which it needs anyway
    assert s1.inputs == ("h",)


def test_check_model_rejects_invalid_graph_and_names_the_pass() -> None:
    m = two_exit_mlp()
    m.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(PassError, match="CheckModel"):
        PassManager([NameNodes(), CheckModel()])(ModelGraph(m))
