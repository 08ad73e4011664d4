"""KeepOutputs, ExposeTensors, ExtractStage and FuseGate's result, on tiny hand-built graphs:
the nodes each leaves, whether it reports a change, and that the graphs still run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eeopt.analysis import compute_cuts, find_exit_heads
from eeopt.errors import PassError, UnsupportedModelError
from eeopt.frontend import ModelGraph
from eeopt.passes import (
    CheckModel,
    ExposeTensors,
    ExtractStage,
    FuseGate,
    KeepOutputs,
    NameNodes,
    PassManager,
    RemoveDeadNodes,
    cut_to_outputs,
)
from eeopt.program import TensorSpec
from eeopt.runtime import make_session

from onnx_builders import two_exit_mlp


def _prepared(model: onnx.ModelProto) -> ModelGraph:
    return PassManager([NameNodes(), RemoveDeadNodes()])(ModelGraph(model)).graph


def _run(graph: ModelGraph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = make_session(graph.model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


X = {"x": np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)}


def test_keep_outputs_drops_what_only_the_others_needed() -> None:
    g = _prepared(two_exit_mlp())
    res = KeepOutputs(["exit0"])(g)
    assert res.modified and res.graph.output_names == ["exit0"]
    assert {n.name for n in res.graph.nodes} == {"mm0", "relu0", "head0"}
    assert res.stats["outputs"] == 1 and res.stats["nodes"] == 4
    np.testing.assert_allclose(_run(res.graph, X)["exit0"], _run(g, X)["exit0"], rtol=1e-6)
    assert KeepOutputs(["exit0"])(res.graph).modified is False
    with pytest.raises(UnsupportedModelError, match="no output 'nope'"):
        cut_to_outputs(g, ["nope"])


def test_expose_tensors_adds_outputs_once() -> None:
    g = _prepared(two_exit_mlp())
    res = ExposeTensors(["h", "x", "exit1", "h"])(g)  # an input and an output stay as they are
    assert res.modified and res.graph.output_names == ["exit0", "exit1", "h"]
    got = _run(res.graph, X)
    np.testing.assert_allclose(got["h"], np.maximum(X["x"] @ _init(g, "w0"), 0), rtol=1e-5)
    assert ExposeTensors(["h"])(res.graph).modified is False


def _init(g: ModelGraph, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(i) for i in g.graph.initializer if i.name == name)


def test_extract_stage_is_one_stage_that_runs_alone() -> None:
    g = _prepared(two_exit_mlp())
    cuts = compute_cuts(g, find_exit_heads(g))
    specs = {"x": TensorSpec("x", "float32", ("N", 4)),
             "h": TensorSpec("h", "float32", ("N", 6)),
             "exit0": TensorSpec("exit0", "float32", ("N", 3)),
             "exit1": TensorSpec("exit1", "float32", ("N", 3))}
    s0 = PassManager([ExtractStage(cuts.stages[0], specs), CheckModel()])(g)
    assert [i.name for i in s0.graph.graph.input] == ["x"]
    assert s0.graph.output_names == ["exit0", "h"]
    s1 = ExtractStage(cuts.stages[1], specs)(g).graph
    assert [i.name for i in s1.graph.input] == ["h"] and s1.output_names == ["exit1"]
    first = _run(s0.graph, X)
    whole = _run(g, X)
    np.testing.assert_allclose(first["exit0"], whole["exit0"], rtol=1e-6)
    np.testing.assert_allclose(_run(s1, {"h": first["h"]})["exit1"], whole["exit1"], rtol=1e-6)


def test_fuse_gate_returns_its_gate_in_the_result() -> None:
    g = _prepared(two_exit_mlp())
    stage = KeepOutputs(["exit0"])(g).graph
    res = PassManager([FuseGate("exit0", "patience", stage=2), RemoveDeadNodes()])(stage)
    gate = res.info["FuseGate"]["gate"]
    assert gate.decision == "eeopt_gate2/decision"
    assert gate.state_outputs == ("eeopt_gate2/pred", "eeopt_gate2/streak")
    assert gate.decision in res.graph.output_names
    assert not hasattr(FuseGate("exit0"), "gate")  # the pass keeps no result on itself
    with pytest.raises(PassError, match="no output 'nope' to gate"):
        FuseGate("nope")(stage)
