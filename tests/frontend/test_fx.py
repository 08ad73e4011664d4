"""The FX view of a torch.export graph gets the same cut analysis as the ONNX graph, and its
stages, as ``stage_module`` extracts them, reproduce every exit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from eeopt.analysis import Cuts, check_exit_order, cuts_from_view  # noqa: E402
from eeopt.build import analyse_model  # noqa: E402
from eeopt.errors import DataError, UnsupportedModelError  # noqa: E402
from eeopt.frontend import FxGraph, capture_fx, stage_module  # noqa: E402

import topologies  # noqa: E402


def _cuts(tg: FxGraph) -> Cuts:
    """The cut analysis on the FX view, as ``eeopt.build.compile_aoti`` runs it."""
    check_exit_order(tg.view, tg.outputs, tg.needed)
    return cuts_from_view(tg.view, tg.outputs, tg.needed)


@pytest.mark.parametrize("name", ["residual", "longskip", "heavy"])
def test_fx_and_onnx_cut_at_the_same_places(name: str) -> None:
    model = topologies.make(name, seed=4)
    ex = topologies.example(name, 3, seed=5)
    fx = capture_fx(model, ex)
    cuts = _cuts(fx)
    onnx_plan = analyse_model(model, example_inputs=ex)
    assert len(cuts.stages) == len(onnx_plan.cuts.stages)
    assert [len(c.carry_after) for c in cuts.stages] == \
        [len(c.carry_after) for c in onnx_plan.cuts.stages]
    assert sorted(fx.spec(t).shape for t in cuts.carried) == \
        sorted(onnx_plan.specs[t].shape for t in onnx_plan.cuts.carried)
    assert all(fx.spec(t).batch_axis == 0 for t in cuts.carried)


@pytest.mark.parametrize("name", ["residual", "longskip", "masked"])
def test_chained_stage_modules_reproduce_every_exit(name: str) -> None:
    model = topologies.make(name, seed=6)
    tg = capture_fx(model, topologies.example(name, 4, seed=7))
    x = topologies.example(name, 5, seed=8)
    with torch.no_grad():
        want = model(*x)
        live = dict(zip(tg.view.graph_inputs, x, strict=True))
        for k, cut in enumerate(_cuts(tg).stages):
            outs = stage_module(tg, cut)(*[live[t] for t in cut.inputs])
            live.update(zip(cut.produces, outs[1:], strict=True))
            torch.testing.assert_close(outs[0], want[k], rtol=1e-5, atol=1e-6)


def test_residual_skip_is_carried_across_cut_0() -> None:
    tg = capture_fx(topologies.make("residual", seed=1),
                    topologies.example("residual", 2, seed=1))
    cuts = _cuts(tg)
    first = cuts.stages[0]
    assert len(first.produces) == 2  # the block input (skip) and the exit's branch point
    assert cuts.stages[-1].produces == ()


def test_exits_out_of_order_are_refused() -> None:
    class Reversed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = topologies.make("longskip", seed=0)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.inner(x)[::-1]

    with pytest.raises(UnsupportedModelError, match="earliest first"):
        _cuts(capture_fx(Reversed(), torch.randn(3, 12)))


def test_bad_inputs_are_one_line() -> None:
    model = topologies.make("longskip", seed=0)
    with pytest.raises(DataError, match="example_inputs"):
        capture_fx(model, None)
    with pytest.raises(UnsupportedModelError, match="at least 2"):
        capture_fx(torch.nn.Linear(12, 3), torch.randn(3, 12))


class _SizeAndInplace(torch.nn.Module):
    """Reads x.size(0) again after the cut, and mutates a tensor in place."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(6, 8)
        self.h0 = torch.nn.Linear(8, 3)
        self.l2 = torch.nn.Linear(8, 8)
        self.h1 = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.l1(x.view(x.size(0), -1)).relu_()
        e0 = self.h0(h)
        h2 = torch.relu(self.l2(h)).reshape(x.size(0), 2, 4).sum(1)
        return e0, self.h1(h2)


def test_batch_size_is_read_per_stage_and_graph_is_functional() -> None:
    torch.manual_seed(0)
    model = _SizeAndInplace().eval()
    tg = capture_fx(model, torch.randn(4, 2, 3))
    cuts = _cuts(tg)
    assert "x" not in cuts.carried  # stage 1 reads the batch size off its own input
    assert tg.batch_nodes
    targets = {str(n.target) for n in tg.module.graph.nodes if n.op == "call_function"}
    assert not any(t.endswith("_.default") for t in targets)  # no in-place op left
    x = torch.randn(7, 2, 3)
    with torch.no_grad():
        want = model(x)
        live = {tg.view.graph_inputs[0]: x}
        for k, cut in enumerate(cuts.stages):
            outs = stage_module(tg, cut)(*[live[t] for t in cut.inputs])
            live.update(zip(cut.produces, outs[1:], strict=True))
            torch.testing.assert_close(outs[0], want[k], rtol=1e-5, atol=1e-6)
