"""The FX frontend for the torch-native path: ``torch.export`` -> FX graph -> a ``CutView``.

The ONNX path cuts a ``ModelGraph``; this module gives the cut analysis the same view of a
``torch.export`` graph (``eeopt.frontend.view.CutView``): nodes are FX nodes, a tensor is named
after the node that makes it, parameters and buffers are constants, and nodes whose value is
an int or a shape (``sym_size``, arithmetic on sizes) are shape-only, recomputed by each stage
that needs them rather than carried (a carried size would go stale once rows leave). So both
paths cut at the same places by the same rule: every node runs in the first stage whose exit
needs it. Only extraction is specific to FX: ``stage_module`` copies a stage's nodes into a
``GraphModule`` that reads the stage's inputs and returns its exit's logits followed by the
tensors it makes for later stages.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import networkx as nx

from eeopt.errors import UnsupportedModelError, first_line
from eeopt.frontend.torch_export import example_args, quiet_torch_export
from eeopt.frontend.view import CutView
from eeopt.program import BATCH, TensorSpec

__all__ = ["MAX_BATCH", "FxGraph", "StageNodes", "capture_fx", "stage_module",
           "tile_tensors", "torch_dtype_name"]

logger = logging.getLogger(__name__)

#: the largest batch a compiled stage accepts
MAX_BATCH = 1 << 20


@dataclass(frozen=True)
class FxGraph:
    """An exported multi-exit module, as the cut analysis sees it."""

    module: Any
    """The unlifted ``torch.fx.GraphModule`` of ``torch.export`` (parameters as attributes)."""
    view: CutView
    outputs: tuple[str, ...]
    """The exits' logits, earliest first (FX node names)."""
    needed: tuple[frozenset[str], ...]
    """Per exit: every node its output depends on."""
    inputs: tuple[TensorSpec, ...]
    values: dict[str, Any]
    """Every tensor's value on the example inputs at a batch of 3 (to export the stages)."""
    num_classes: int
    batch_expr: Any
    """The batch size's symbol in the exported graph."""
    batch_nodes: frozenset[str] = frozenset()
    """``sym_size`` nodes that read the batch size: each stage reads it off its own inputs."""
    spec_cache: dict[str, TensorSpec] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def _nodes(self) -> dict[str, Any]:
        return {n.name: n for n in self.module.graph.nodes}

    def spec(self, name: str) -> TensorSpec:
        """Tensor ``name``'s dtype, shape and batch axis, read off the exported graph."""
        if name not in self.spec_cache:
            self.spec_cache[name] = _spec(name, self._nodes[name].meta.get("val"),
                                          self.batch_expr)
        return self.spec_cache[name]


class StageNodes(Protocol):
    """What ``stage_module`` reads of a stage's cut (``eeopt.analysis.StageCut`` has it)."""

    index: int
    output: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    produces: tuple[str, ...]


def torch_dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def tile_tensors(args: Sequence[Any], batch: int) -> tuple[Any, ...]:
    """Each tensor's rows repeated (or cut) along axis 0 to ``batch`` rows."""
    import torch

    out = []
    for a in args:
        idx = torch.arange(batch, device=a.device) % max(int(a.shape[0]), 1)
        out.append(a.index_select(0, idx).contiguous())
    return tuple(out)


def export_batch_dynamic(module: Any, args: Sequence[Any]) -> Any:
    """``torch.export`` with axis 0 of every input one shared dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    try:
        with quiet_torch_export():
            return torch.export.export(module, tuple(args),
                                       dynamic_shapes=tuple({0: batch} for _ in args))
    except Exception as exc:
        raise UnsupportedModelError(
            f"torch.export cannot capture the model with a dynamic batch ({first_line(exc)})"
        ) from exc


def _is_tensor(v: Any) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


def _spec(name: str, val: Any, batch_expr: Any) -> TensorSpec:
    import torch

    if not _is_tensor(val):
        raise UnsupportedModelError(
            f"node {name!r} crosses a cut but is a {type(val).__name__}, not a tensor; "
            "eeopt carries only tensors between stages"
        )
    dims: list[int | str | None] = []
    axis: int | None = None
    for i, d in enumerate(val.shape):
        if isinstance(d, torch.SymInt):
            if d.node.expr == batch_expr:
                dims.append(BATCH)
                axis = i if axis is None else axis
            else:
                if batch_expr in d.node.expr.free_symbols:
                    raise UnsupportedModelError(
                        f"tensor {name!r} crosses a cut with shape {list(val.shape)}: its "
                        "batch is folded into another axis, so its rows cannot be compacted"
                    )
                dims.append(None)
        else:
            dims.append(int(d))
    return TensorSpec(name, torch_dtype_name(val.dtype), tuple(dims), axis)


def _shape_only(gm: Any, constants: set[str]) -> frozenset[str]:
    """FX nodes whose value is a number or size, or a tensor made only from constants and
    such numbers (never from a tensor's values)."""
    shape_only: set[str] = set()
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        val = n.meta.get("val")
        ins = [a.name for a in n.all_input_nodes]
        if val is not None and not _is_tensor(val) and not isinstance(val, (tuple, list)):
            shape_only.add(n.name)  # SymInt / int / float / bool: sizes and their arithmetic
        elif all(t in constants or t in shape_only for t in ins) and _is_tensor(val):
            shape_only.add(n.name)
    return frozenset(shape_only)


def capture_fx(module: Any, example_inputs: Any) -> FxGraph:
    """Export ``module`` with a dynamic batch and make its FX graph's ``CutView``."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UnsupportedModelError(
            f"backend='aoti' compiles a torch.nn.Module (AOTInductor starts from torch.export), "
            f"got {type(module).__name__}: call eeopt.compile(module, out, example_inputs=..., "
            "backend='aoti'), or compile the ONNX file with backend 'onnxruntime' or 'tensorrt'"
        )
    args = example_args(example_inputs, "backend='aoti'")
    if int(args[0].shape[0]) < 2:  # export would specialise a batch of 1
        args = tile_tensors(args, 2)
    ep = export_batch_dynamic(module.eval(), args)
    try:  # functional ATen: no in-place op, so moving a node to a later stage is safe
        ep = ep.run_decompositions({})
    except Exception as exc:
        raise UnsupportedModelError(
            f"torch.export could not make the model's graph functional ({first_line(exc)})"
        ) from exc
    gm = ep.module()
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    constants = {n.name for n in nodes if n.op == "get_attr"}
    out_node = next(n for n in nodes if n.op == "output")
    flat_out = list(torch.utils._pytree.tree_leaves(out_node.args[0]))
    if len(flat_out) < 2:
        raise UnsupportedModelError(
            f"the module returns {len(flat_out)} tensor(s); a multi-exit model returns one "
            "[batch, classes] logits tensor per exit (earliest first, final classifier last), "
            "so at least 2"
        )
    outputs: list[str] = []
    for o in flat_out:
        if not isinstance(o, torch.fx.Node) or o.op != "call_function":
            raise UnsupportedModelError(
                f"output {o!r} is a graph input or constant, not an exit's logits")
        if o.name in outputs:
            raise UnsupportedModelError(f"two exits return the same tensor {o.name!r}")
        outputs.append(o.name)

    compute = [n for n in nodes if n.op == "call_function"]
    batch_val = placeholders[0].meta["val"].shape[0]
    if not isinstance(batch_val, torch.SymInt):
        raise UnsupportedModelError("torch.export made the batch static; eeopt needs it dynamic")
    batch_expr = batch_val.node.expr
    # x.size(0) read anywhere is the batch size: a stage gets it from its own inputs instead of
    # receiving the tensor it was first read from (which would then be carried for nothing)
    batch_nodes = frozenset(
        n.name for n in compute
        if n.target is torch.ops.aten.sym_size.int and isinstance(n.meta.get("val"), torch.SymInt)
        and n.meta["val"].node.expr == batch_expr)
    g: nx.DiGraph = nx.DiGraph()
    for n in compute:
        g.add_node(n.name)
    for n in compute:
        for a in n.all_input_nodes:
            if a.op == "call_function":
                g.add_edge(a.name, n.name)
    needed = tuple(frozenset(nx.ancestors(g, o)) | {o} for o in outputs)
    view = CutView(
        order={n.name: i for i, n in enumerate(nodes)},
        inputs_of={n.name: [] if n.name in batch_nodes else [a.name for a in n.all_input_nodes]
                   for n in compute},
        outputs_of={n.name: [n.name] for n in compute},
        producer={n.name: n.name for n in compute},
        graph_inputs=tuple(p.name for p in placeholders),
        constants=frozenset(constants),
        shape_only=_shape_only(gm, constants),
    )
    fx = FxGraph(gm, view, tuple(outputs), needed, (), {}, 0, batch_expr, batch_nodes)
    for p in placeholders:
        if fx.spec(p.name).batch_axis != 0:
            raise UnsupportedModelError(f"input {p.name!r} must have its batch on axis 0")
    classes = set()
    for o in outputs:
        s = fx.spec(o)
        if len(s.shape) != 2 or s.batch_axis != 0 or not isinstance(s.shape[1], int):
            raise UnsupportedModelError(
                f"exit output {o!r} has shape {list(s.shape)}; every exit must return "
                "[batch, classes] logits")
        classes.add(int(s.shape[1]))
    if len(classes) != 1:
        raise UnsupportedModelError(f"the exits disagree on the number of classes: "
                                    f"{sorted(classes)}")
    num_classes = classes.pop()
    if num_classes < 2:
        raise UnsupportedModelError("the exits have 1 class; a gate needs at least 2")

    values = _record(gm, tile_tensors(args, 3))
    names = _forward_names(module, len(placeholders))
    logger.info("captured %d FX nodes, %d exits", len(compute), len(outputs))
    if names != [p.name for p in placeholders]:
        logger.debug("FX placeholder names %s differ from forward()'s %s",
                     [p.name for p in placeholders], names)
    return FxGraph(gm, view, tuple(outputs), needed,
                   tuple(fx.spec(p.name) for p in placeholders), values, num_classes,
                   batch_expr, batch_nodes, fx.spec_cache)


def _forward_names(module: Any, count: int) -> list[str]:
    params = [p.name for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[:count]


def _record(gm: Any, args: Sequence[Any]) -> dict[str, Any]:
    """Every node's value on ``args``."""
    import torch

    values: dict[str, Any] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            values[n.name] = out
            return out

    with torch.no_grad():
        _Recorder(gm).run(*args)
    return values


def stage_module(tg: FxGraph, cut: StageNodes) -> Any:
    """Stage ``cut`` as a ``GraphModule``: ``forward(*cut.inputs) -> (logits, *cut.produces)``."""
    import torch

    src = {n.name: n for n in tg.module.graph.nodes}
    graph = torch.fx.Graph()
    env: dict[str, Any] = {}
    for t in cut.inputs:
        ph = graph.placeholder(t)
        ph.meta = dict(src[t].meta)
        env[t] = ph

    def arg(a: Any) -> Any:
        if a.name not in env:
            if a.op != "get_attr":
                raise UnsupportedModelError(
                    f"stage {cut.index} reads {a.name!r}, which it neither computes nor "
                    "receives; please report this model to eeopt")
            env[a.name] = graph.get_attr(a.target)
        return env[a.name]

    batch_from = next(((env[t], tg.spec(t).batch_axis) for t in cut.inputs
                       if tg.spec(t).batch_axis is not None), None)
    for name in cut.nodes:
        if name in tg.batch_nodes:
            if batch_from is None:
                raise UnsupportedModelError(
                    f"stage {cut.index} needs the batch size but reads no batched tensor")
            env[name] = graph.call_function(torch.ops.aten.sym_size.int, batch_from)
            env[name].meta = dict(src[name].meta)
            continue
        env[name] = graph.node_copy(src[name], arg)
    graph.output((env[cut.output], *(env[t] for t in cut.produces)))
    graph.lint()
    return torch.fx.GraphModule(tg.module, graph, class_name=f"Stage{cut.index}")
