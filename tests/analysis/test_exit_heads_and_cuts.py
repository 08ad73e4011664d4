"""The analyses on tiny hand-built graphs: exit heads, the exits' order, cuts, and the shape
arithmetic a stage recomputes."""

from __future__ import annotations

import onnx
import pytest

from eeopt.analysis import compute_cuts, find_exit_heads
from eeopt.errors import UnsupportedModelError
from eeopt.frontend import ModelGraph, shape_only_nodes
from eeopt.passes import NameNodes, PassManager, RemoveDeadNodes

from onnx_builders import reshape_across_exit, three_exit_chain, two_exit_mlp


def _prepared(model: onnx.ModelProto) -> ModelGraph:
    return PassManager([NameNodes(), RemoveDeadNodes()])(ModelGraph(model)).graph


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
