"""Network-selection cascades (Bolukbasi et al., ICML 2017): a chain of separate models compiled
as one early-exit program.

``merge_models`` builds one ONNX graph out of the chain: the models share the graph input(s), every
model's node, tensor, initializer and value-info names get the prefix ``m<k>/``, and the merged
graph's outputs are, in order, each model's outputs (model 0's outputs first, each model's outputs
in its own order). A single-output model so contributes one exit; a multi-exit model contributes
all its exits, wherever it stands in the chain. The last output (the last model's last output) is
the final classifier; list the models cheapest first.

The existing compiler does the rest: ``compute_cuts`` runs every node in the first stage whose
exit needs it, so model k's nodes land in model k's stage, and the graph inputs are carried to
the later stages and compacted with the batch like any carried tensor. A row that leaves at
model k's gate never runs a later model; a row that goes on pays for every model it ran. The
planner (``calib``/``budget``) profiles each model's stage, so its expected-latency objective
counts every network evaluated, and it picks the kept networks and their thresholds.

Input matching: by name when every model has the same set of input names, else by position
(model 0's names win). Dtypes must agree, and so must fixed non-batch dimensions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eeopt.compiler import compile as compile_model
from eeopt.errors import UnsupportedModelError, UsageError, first_line
from eeopt.frontend import load_onnx, onnx_dtype, value_dims
from eeopt.kernels.reference import gate_decision, patience_step
from eeopt.program import check_new_output, write_file
from eeopt.runtime import Program, make_session

__all__ = ["ModelLike", "compile_cascade", "merge_models", "model_prefix", "reference_run"]

logger = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike[str]

_DEFAULT_DOMAINS = ("", "ai.onnx")


def model_prefix(k: int) -> str:
    """The name prefix of the ``k``-th model's nodes and tensors in the merged graph."""
    return f"m{k}/"


def _load(model: ModelLike, k: int) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, f"model {k}"
    if isinstance(model, (str, os.PathLike)):
        return load_onnx(model), f"model {k} ({os.fspath(model)})"
    raise UsageError(f"cascade model {k} is a {type(model).__name__}; pass ONNX paths or "
                     "onnx.ModelProto objects")


def _default_opset(model: onnx.ModelProto, what: str) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    raise UnsupportedModelError(f"{what} imports no default ONNX opset; re-export it")


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    inits |= {i.values.name for i in model.graph.sparse_initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _describe(vi: onnx.ValueInfoProto) -> str:
    dims = value_dims(vi)
    shape = "?" if dims is None else "[" + ", ".join(
        "?" if d is None else str(d) for d in dims) + "]"
    return f"{vi.name} {onnx_dtype(vi.type.tensor_type.elem_type)} {shape}"


def _input_map(models: Sequence[onnx.ModelProto], whats: Sequence[str]) -> list[dict[str, str]]:
    """Per model: its input name -> the shared (model 0's) input name. Raises one clear error
    when the models' inputs do not match."""
    base = _real_inputs(models[0])
    base_names = [i.name for i in base]
    maps: list[dict[str, str]] = [{n: n for n in base_names}]
    for k in range(1, len(models)):
        ins = _real_inputs(models[k])
        names = [i.name for i in ins]
        if len(ins) != len(base):
            raise UnsupportedModelError(
                f"cascade inputs do not match: {whats[0]} takes {len(base)} input(s) "
                f"({', '.join(map(_describe, base))}) but {whats[k]} takes {len(ins)} "
                f"({', '.join(map(_describe, ins))}); every model must read the same inputs")
        if set(names) == set(base_names):
            mapping = {n: n for n in names}
        else:
            mapping = dict(zip(names, base_names, strict=True))
            logger.info("%s: inputs matched to %s by position (%s)", whats[k], whats[0],
                        ", ".join(f"{a} -> {b}" for a, b in mapping.items()))
        by_name = {i.name: i for i in base}
        for vi in ins:
            ref = by_name[mapping[vi.name]]
            if not _same_input(vi, ref):
                raise UnsupportedModelError(
                    f"cascade inputs do not match: {whats[k]} input {_describe(vi)} vs "
                    f"{whats[0]} input {_describe(ref)}; every model must read the same inputs "
                    "(same dtype and fixed dimensions)")
        maps.append(mapping)
    return maps


def _same_input(a: onnx.ValueInfoProto, b: onnx.ValueInfoProto) -> bool:
    if not (a.type.HasField("tensor_type") and b.type.HasField("tensor_type")):
        return False
    if a.type.tensor_type.elem_type != b.type.tensor_type.elem_type:
        return False
    da, db = value_dims(a), value_dims(b)
    if da is None or db is None:
        return True  # nothing declared to compare; the compile's verification runs them
    if len(da) != len(db):
        return False
    # axis 0 is the batch; a symbolic or unknown dimension matches anything
    return all(not (isinstance(x, int) and isinstance(y, int) and x != y)
               for x, y in zip(da[1:], db[1:], strict=True))


def _check_classes(models: Sequence[onnx.ModelProto], whats: Sequence[str]) -> None:
    """Every output that declares its class count must declare the same one."""
    seen: dict[int, str] = {}
    for m, what in zip(models, whats, strict=True):
        for o in m.graph.output:
            dims = value_dims(o)
            if dims and len(dims) == 2 and isinstance(dims[1], int):
                seen.setdefault(dims[1], f"{what} output {o.name!r}")
    if len(seen) > 1:
        parts = ", ".join(f"{where} has {c}" for c, where in seen.items())
        raise UnsupportedModelError(
            f"the cascade's models disagree on the number of classes ({parts}); every model "
            "must classify into the same classes")


def _rename_graph(graph: onnx.GraphProto, rename: Callable[[str], str]) -> None:
    """Apply ``rename`` to every name in ``graph`` and its subgraphs, in place. Applied to every
    occurrence alike, so subgraph scoping is preserved."""
    for node in graph.node:
        if node.name:
            node.name = rename(node.name)
        for i, t in enumerate(node.input):
            if t:
                node.input[i] = rename(t)
        for i, t in enumerate(node.output):
            if t:
                node.output[i] = rename(t)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_graph(attr.g, rename)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_graph(g, rename)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        vi.name = rename(vi.name)
    for init in graph.initializer:
        init.name = rename(init.name)
    for sp in graph.sparse_initializer:
        sp.values.name = rename(sp.values.name)
        if sp.indices.name:
            sp.indices.name = rename(sp.indices.name)


def _normalize(models: list[onnx.ModelProto], whats: Sequence[str]) -> int:
    """Inline local functions and bring every model to one default-domain opset (the highest);
    returns it. Other domains must agree on their version."""
    for k, m in enumerate(models):
        if m.functions:
            import onnx.inliner

            models[k] = onnx.inliner.inline_local_functions(m)
            logger.info("%s: inlined %d local function(s)", whats[k], len(m.functions))
    opsets = [_default_opset(m, w) for m, w in zip(models, whats, strict=True)]
    target = max(opsets)
    for k, (m, v) in enumerate(zip(models, opsets, strict=True)):
        if v == target:
            continue
        from onnx import version_converter

        try:
            models[k] = version_converter.convert_version(m, target)
        except Exception as exc:
            raise UnsupportedModelError(
                f"{whats[k]} uses ONNX opset {v} and another model opset {target}, and "
                f"converting it failed ({first_line(exc)}); re-export every model with opset "
                f"{target}"
            ) from exc
        logger.info("%s: converted from opset %d to %d", whats[k], v, target)
    domains: dict[str, tuple[int, str]] = {}
    for m, what in zip(models, whats, strict=True):
        for imp in m.opset_import:
            if imp.domain in _DEFAULT_DOMAINS:
                continue
            prev = domains.setdefault(imp.domain, (int(imp.version), what))
            if prev[0] != imp.version:
                raise UnsupportedModelError(
                    f"{what} imports domain {imp.domain!r} version {imp.version} but {prev[1]} "
                    f"imports version {prev[0]}; re-export them with the same version")
    return target


def merge_models(models: Sequence[ModelLike]) -> onnx.ModelProto:
    """One ONNX graph that computes every model of the cascade on the shared input(s).

    Outputs, in order: model 0's outputs, then model 1's, ... (each model's own output order).
    Names are prefixed ``m<k>/``; the shared inputs keep model 0's names.
    """
    if len(models) < 2:
        raise UsageError(f"a cascade needs at least 2 models, got {len(models)}")
    loaded = [_load(m, k) for k, m in enumerate(models)]
    protos = [m for m, _ in loaded]
    whats = [w for _, w in loaded]
    for m, what in zip(protos, whats, strict=True):
        if not m.graph.output:
            raise UnsupportedModelError(f"{what} has no outputs")
    input_maps = _input_map(protos, whats)
    _check_classes(protos, whats)
    opset = _normalize(protos, whats)

    shared = {vi.name: vi for vi in _real_inputs(protos[0])}
    nodes: list[onnx.NodeProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    inits: list[onnx.TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    for k, m in enumerate(protos):
        prefix = model_prefix(k)
        mapping = input_maps[k]

        def rename(name: str, _p: str = prefix, _m: Mapping[str, str] = mapping) -> str:
            return _m.get(name, _p + name)

        g = onnx.GraphProto()
        g.CopyFrom(m.graph)
        _rename_graph(g, rename)
        nodes.extend(g.node)
        outputs.extend(g.output)
        inits.extend(g.initializer)
        sparse.extend(g.sparse_initializer)
        value_info.extend(g.value_info)
        # initializers that IR < 4 models also list as inputs stay initializers only: the
        # merged inputs are model 0's real inputs

    merged_graph = onnx.helper.make_graph(
        nodes, "eeopt_cascade", list(shared.values()), outputs, initializer=inits,
        value_info=[vi for vi in value_info if vi.name not in shared],
        sparse_initializer=sparse,
    )
    merged_graph.doc_string = (
        f"eeopt cascade of {len(protos)} models: " + "; ".join(
            f"{model_prefix(k)} = {w} ({len(m.graph.output)} output(s))"
            for k, (m, w) in enumerate(zip(protos, whats, strict=True))))
    opset_imports = [onnx.helper.make_opsetid("", opset)]
    seen_domains = {""}
    for m in protos:
        for imp in m.opset_import:
            if imp.domain not in _DEFAULT_DOMAINS and imp.domain not in seen_domains:
                opset_imports.append(onnx.helper.make_opsetid(imp.domain, imp.version))
                seen_domains.add(imp.domain)
    merged = onnx.helper.make_model(merged_graph, opset_imports=opset_imports,
                                    producer_name="eeopt.cascade")
    merged.ir_version = max(4, *(int(m.ir_version) for m in protos))
    try:
        onnx.checker.check_model(merged)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedModelError(f"the merged cascade graph is not valid ONNX "
                                    f"({first_line(exc)}); check every model with "
                                    "onnx.checker first") from exc
    logger.info("merged %d models into one graph: %d nodes, outputs %s", len(protos),
                len(nodes), [o.name for o in outputs])
    return merged


def compile_cascade(models: Sequence[ModelLike], out: str | os.PathLike[str], *,
                    save_merged: str | os.PathLike[str] | None = None,
                    force: bool = False, **compile_kwargs: Any) -> Program:
    """Merge ``models`` (cheapest first) and compile the result into a program at ``out``;
    returns the loaded ``Program``. Every ``eeopt.compile`` keyword passes through (thresholds,
    or ``calib`` + ``budget`` for the planner, ``policy``, ``threads``, ...).

    ``save_merged``: also write the merged ONNX model there and compile from that file, so the
    manifest records it (``eeopt bench`` then finds it, and its plain network is the last model
    alone).
    """
    check_new_output(out, force=force)  # before any work, as `eeopt compile` does
    merged = merge_models(models)
    source: Any = merged
    if save_merged is not None:
        path = check_new_output(save_merged, force=force, directory=False)
        write_file(path, lambda tmp: onnx.save(merged, os.fspath(tmp)), suffix=".onnx")
        source = path
    try:
        return compile_model(source, out, force=force, **compile_kwargs)
    except BaseException:
        if save_merged is not None:  # a failed compile leaves nothing behind
            Path(save_merged).unlink(missing_ok=True)
        raise


def reference_run(models: Sequence[ModelLike], feeds: Mapping[str, np.ndarray],
                  thresholds: Sequence[float], *, policy: str = "maxprob"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's semantics, computed the plain way: run every original model with ONNX
    Runtime on every row, then give each row the logits of the first exit (in cascade output
    order) whose gate fires, else the last. Returns ``(logits [N, C] float32, exit [N] int64)``.

    ``feeds`` is keyed by model 0's input names; other models get them by the same matching
    rule as :func:`merge_models`. ``thresholds``: one per early exit.
    """
    loaded = [_load(m, k) for k, m in enumerate(models)]
    protos = [m for m, _ in loaded]
    maps = _input_map(protos, [w for _, w in loaded])
    exits: list[np.ndarray] = []
    for m, mapping in zip(protos, maps, strict=True):
        sess = make_session(m.SerializeToString())
        own = {name: feeds[shared] for name, shared in mapping.items()}
        exits.extend(np.asarray(o, dtype=np.float32) for o in sess.run(None, own))
    if len(thresholds) != len(exits) - 1:
        raise UsageError(f"got {len(thresholds)} thresholds for {len(exits) - 1} early exits")
    n = exits[0].shape[0]
    logits = np.array(exits[-1], copy=True)
    exit_ = np.full(n, len(exits) - 1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    pred = streak = None
    for k, (z, t) in enumerate(zip(exits[:-1], thresholds, strict=True)):
        if policy == "patience":
            pred, streak = patience_step(z, pred, streak)
        fire = open_ & gate_decision(z, t, policy, streak)
        logits[fire] = z[fire]
        exit_[fire] = k
        open_ &= ~fire
    return logits, exit_
