"""One ONNX graph for a whole program: the stages inlined, the per-sample exit and the batch
compaction done with standard operators (``NonZero``, ``Gather``, ``If``, ``ScatterND``).

For gated stage ``k`` the graph holds, in the scope of the rows that reached it::

    stage k's nodes (its gate included)        -> logits_k [m, C], decision_k [m]
    keep   = Reshape(NonZero(Not(decision_k)), [-1])     rows that go on
    If Size(keep) > 0:
        every carried tensor t: Gather(t, keep, axis=batch axis of t)
        (trimming: Slice along its sequence axis to the longest row kept)
        ... stage k+1, nested the same way ...  -> logits', exit' [r]
        ScatterND(logits_k, keep[:, None], logits'), ScatterND(k, keep[:, None], exit')
    else: logits_k, k

so each stage runs on exactly the rows (in the same order, cut to the same length) that the
eeopt runtime gives it, and the results equal ``eeopt.load(dir).run(x)``. The whole chain sits
in an ``If`` on ``N > 0``: a batch of no rows runs nothing. Each stage's threshold is element
``k`` of the graph input ``thresholds``. A stage's weights are initializers of the scope that
runs it (see ``_Builder``); every name is prefixed with its stage (``s{k}/``) or level
(``e{k}/``), so no name is defined twice in any scope.

Padding re-trim (programs with a ``sequence`` in their manifest): a row's length is the
position of its last nonzero mask entry. For right padding this is the runtime's token count;
for a mask with padding before a token it keeps that token, so the graph never cuts a token
(the eeopt runtime refuses such a mask instead).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eeopt.errors import UnsupportedModelError, UsageError
from eeopt.program import (
    Manifest,
    StageSpec,
    check_new_output,
    load_manifest,
    resolve_in_dir,
    write_file,
)

__all__ = ["THRESHOLDS", "LOGITS", "EXIT", "MIN_OPSET", "check_file_output", "export_onnx",
           "one_graph"]

#: the graph input holding one threshold per gated exit (float32 [K])
THRESHOLDS = "thresholds"
LOGITS = "logits"
EXIT = "exit"
#: NonZero (9) and ScatterND (11) need at least this
MIN_OPSET = 11

_NP_TO_ONNX = {"float16": 10, "float32": 1, "float64": 11, "int8": 3, "int16": 5, "int32": 6,
               "int64": 7, "uint8": 2, "uint16": 4, "uint32": 12, "uint64": 13, "bool": 9,
               "bfloat16": 16}


@dataclass
class _Builder:
    """Nodes and weights of one scope (the main graph or an ``If`` branch). A stage's weights
    live in the scope that runs it: ONNX Runtime pre-packs a MatMul's weights only when they are
    initializers of the MatMul's own graph, and an unpacked GEMM sums in another order (logits
    then differ from the stage sessions' in the 6th digit)."""

    opset: int
    weights: list[Any] = field(default_factory=list)
    nodes: list[Any] = field(default_factory=list)

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def reduce_max(self, x: str, axis: int, out: str) -> str:
        if self.opset >= 18:  # the axes became an input
            axes = self.const(f"{out}/axes", np.array([axis], dtype=np.int64))
            return self.node("ReduceMax", [x, axes], out, keepdims=0)
        return self.node("ReduceMax", [x], out, axes=[axis], keepdims=0)

    def branch(self) -> _Builder:
        return _Builder(self.opset)

    def graph(self, name: str, outputs: Sequence[Any], inputs: Sequence[Any] = ()) -> Any:
        return helper.make_graph(self.nodes, name, list(inputs), list(outputs), self.weights)


class _Export:
    """Builds the graph for one program directory."""

    def __init__(self, path: Path, manifest: Manifest, per_batch: bool = False) -> None:
        self.path, self.m, self.per_batch = path, manifest, per_batch
        if manifest.backend != "onnxruntime":
            raise UsageError(f"{path} is a {manifest.backend} program; export the ONNX program "
                             "it was compiled from (recompile with --backend onnxruntime)")
        self.stages = [onnx.load_model_from_string(resolve_in_dir(path, st.file).read_bytes())
                       for st in manifest.stages]
        opsets = {op.version for s in self.stages for op in s.opset_import
                  if op.domain in ("", "ai.onnx")}
        domains = {op.domain for s in self.stages for op in s.opset_import} - {"", "ai.onnx"}
        if domains:
            raise UsageError(f"{path}: a stage uses the operator domain(s) {sorted(domains)}, "
                             "which a plain ONNX runtime may not serve; cannot export it")
        self.opset = max(max(opsets, default=MIN_OPSET), MIN_OPSET)
        self.ir_version = max(s.ir_version for s in self.stages)
        self.axes = manifest.batch_axes()
        seq = manifest.sequence
        self.seq_axes: dict[str, int] = dict(seq.axes) if seq is not None else {}
        self.seq_mask = seq.mask if seq is not None else None
        self.gated = [k for k, st in enumerate(manifest.stages) if st.gate is not None]

    # --------------------------------------------------------------------- pieces
    def _inline(self, b: _Builder, k: int, live: dict[str, str]) -> dict[str, str]:
        """Stage ``k``'s nodes in scope ``b``, reading ``live`` (stage name -> scope name);
        returns its outputs (stage name -> scope name)."""
        st, g = self.m.stages[k], self.stages[k].graph
        rename: dict[str, str] = {}
        for init in g.initializer:
            new = f"s{k}/{init.name}"
            t = type(init)()
            t.CopyFrom(init)
            t.name = new
            b.weights.append(t)
            rename[init.name] = new
        for inp in g.input:
            if inp.name in rename:  # an initializer listed as an input (old exporters)
                continue
            if inp.name == st.threshold_input:
                idx = b.const(f"e{k}/threshold_index", np.array(self.gated.index(k),
                                                                dtype=np.int64))
                rename[inp.name] = b.node("Gather", [THRESHOLDS, idx], f"e{k}/threshold",
                                          axis=0)
            elif inp.name in live:
                rename[inp.name] = live[inp.name]
            else:
                raise UsageError(f"{self.path}: stage {k} reads {inp.name!r}, which no earlier "
                                 "stage makes; recompile the program")
        for node in g.node:
            if any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS
                raise UsageError(f"{self.path}: stage {k} holds a {node.op_type} with a "
                                 "subgraph; exporting such stages is not supported")
            outs = []
            for o in node.output:
                if o:
                    rename[o] = f"s{k}/{o}"
                outs.append(rename.get(o, ""))
            new = helper.make_node(node.op_type, [rename[i] if i else "" for i in node.input],
                                   outs, name=f"s{k}/{node.name or outs[0]}",
                                   domain=node.domain)
            new.attribute.extend(node.attribute)
            b.nodes.append(new)
        return {o.name: rename[o.name] for o in g.output}

    def _float_logits(self, b: _Builder, k: int, name: str) -> str:
        g = self.stages[k].graph
        elem = next((o.type.tensor_type.elem_type for o in g.output
                     if o.name == self.m.stages[k].logits), 1)
        if elem == 1:
            return name
        return b.node("Cast", [name], f"e{k}/logits_f32", to=1)

    def _exit_ids(self, b: _Builder, k: int, like: str) -> str:
        """``[m]`` int64 filled with ``k``, ``m`` the rows of ``like`` (axis 0)."""
        shape = b.node("Shape", [like], f"e{k}/rows_shape")
        rows = b.node("Slice", [shape, b.const(f"e{k}/zero1", np.array([0], dtype=np.int64)),
                                b.const(f"e{k}/one1", np.array([1], dtype=np.int64))],
                      f"e{k}/rows")
        return b.node("Expand", [b.const(f"e{k}/k", np.array(k, dtype=np.int64)), rows],
                      f"e{k}/exit")

    def _lengths(self, b: _Builder, mask: str) -> str:
        """``[N]`` int64: each row's last nonzero mask position + 1 (0 for no token)."""
        on = b.node("Cast", [b.node("Cast", [mask], "seq/mask_bool", to=9)], "seq/mask_i64",
                    to=7)
        shape = b.node("Shape", [mask], "seq/mask_shape")
        width = b.node("Gather", [shape, b.const("seq/axis1", np.array(1, dtype=np.int64))],
                       "seq/width", axis=0)
        one = b.const("seq/one", np.array(1, dtype=np.int64))
        pos = b.node("Range", [one, b.node("Add", [width, one], "seq/width1"), one],
                     "seq/positions")
        return b.reduce_max(b.node("Mul", [on, pos], "seq/last"), 1, "seq/lengths")

    def _trim(self, b: _Builder, tag: str, live: dict[str, str], lengths: str
              ) -> dict[str, str]:
        """Every live tensor with a sequence axis cut to the longest of ``lengths``."""
        longest = b.node("Max", [b.reduce_max(lengths, 0, f"{tag}/longest_raw"),
                                 b.const(f"{tag}/one", np.array(1, dtype=np.int64))],
                         f"{tag}/longest")
        ends = b.node("Reshape", [longest, b.const(f"{tag}/shape1", np.array([1], np.int64))],
                      f"{tag}/ends")
        zero = b.const(f"{tag}/zero", np.array([0], dtype=np.int64))
        out = dict(live)
        for name, scoped in live.items():
            ax = self.seq_axes.get(name)
            if ax is None:
                continue
            axes = b.const(f"{tag}/axes/{name}", np.array([ax], dtype=np.int64))
            out[name] = b.node("Slice", [scoped, zero, ends, axes], f"{tag}/{name}")
        return out

    # --------------------------------------------------------------------- levels
    def _level(self, b: _Builder, k: int, live: dict[str, str], lengths: str | None
               ) -> tuple[str, str]:
        """Stage ``k`` onwards for the rows in scope; returns ``(logits, exit)`` names."""

        st: StageSpec = self.m.stages[k]
        outs = self._inline(b, k, live)
        logits = self._float_logits(b, k, outs[st.logits])
        exit_k = self._exit_ids(b, k, logits)
        if st.gate is None:
            return logits, exit_k
        live = {**live, **{t.name: outs[t.name] for t in st.produces}}
        decision = outs[st.decision]  # type: ignore[index]
        stay = b.node("Not", [decision], f"e{k}/stay")
        keep = b.node("Reshape", [b.node("NonZero", [stay], f"e{k}/nonzero"),
                                  b.const(f"e{k}/flat", np.array([-1], dtype=np.int64))],
                      f"e{k}/keep")
        any_left = b.node("Greater", [b.node("Size", [keep], f"e{k}/left"),
                                      b.const(f"e{k}/zero", np.array(0, dtype=np.int64))],
                          f"e{k}/any_left")
        then = b.branch()
        if self.per_batch:  # the baseline: the whole batch goes on unless every row left
            sub = self._level(then, k + 1, {n: live[n] for n in st.carry_after}, None)
            then_out = (then.node("Identity", [sub[0]], f"e{k}/then_logits"),
                        then.node("Identity", [sub[1]], f"e{k}/then_exit"))
            return self._if(b, k, any_left, then, then_out, logits, exit_k)
        carried: dict[str, str] = {}
        for name in st.carry_after:
            ax = self.axes.get(name, 0)
            carried[name] = (live[name] if ax is None else
                             then.node("Gather", [live[name], keep], f"c{k}/{name}", axis=ax))
        sub_lengths = None
        if lengths is not None:
            sub_lengths = then.node("Gather", [lengths, keep], f"c{k}/lengths", axis=0)
            carried = self._trim(then, f"t{k}", carried, sub_lengths)
        sub_logits, sub_exit = self._level(then, k + 1, carried, sub_lengths)
        index = then.node("Reshape", [keep, then.const(f"e{k}/col", np.array([-1, 1], np.int64))],
                          f"e{k}/index")
        then_out = (then.node("ScatterND", [logits, index, sub_logits], f"e{k}/then_logits"),
                    then.node("ScatterND", [exit_k, index, sub_exit], f"e{k}/then_exit"))
        return self._if(b, k, any_left, then, then_out, logits, exit_k)

    def _if(self, b: _Builder, k: int, cond: str, then: _Builder, then_out: tuple[str, str],
            logits: str, exit_k: str) -> tuple[str, str]:
        """``If cond: then (giving then_out) else: (logits, exit_k)`` in scope ``b``."""
        other = b.branch()
        else_out = (other.node("Identity", [logits], f"e{k}/else_logits"),
                    other.node("Identity", [exit_k], f"e{k}/else_exit"))
        out = (f"e{k}/logits_out", f"e{k}/exit_out")
        self._add_if(b, cond, out, f"e{k}/if", (then, then_out, f"stage{k}_rows_left"),
                     (other, else_out, f"stage{k}_all_left"))
        return out

    def _add_if(self, b: _Builder, cond: str, out: tuple[str, str], name: str,
                then: tuple[_Builder, tuple[str, str], str],
                other: tuple[_Builder, tuple[str, str], str]) -> None:
        """An ``If`` in scope ``b`` whose branches (scope, its (logits, exit) outputs, graph
        name) each give ``logits [?, C]`` and ``exit [?]`` as ``out``."""
        c = self.m.num_classes

        def graph(branch: tuple[_Builder, tuple[str, str], str]) -> Any:
            sub, names, tag = branch
            return sub.graph(tag, [helper.make_tensor_value_info(names[0], 1, [None, c]),
                                   helper.make_tensor_value_info(names[1], 7, [None])])

        b.nodes.append(helper.make_node("If", [cond], list(out), name=name,
                                        then_branch=graph(then), else_branch=graph(other)))

    def build(self) -> Any:
        top = _Builder(self.opset)
        first = self.m.inputs[0]
        rows = top.node("Gather", [top.node("Shape", [first.name], "e/input_shape"),
                                   top.const("e/batch_axis",
                                             np.array(first.batch_axis or 0, np.int64))],
                        "e/rows", axis=0)
        any_rows = top.node("Greater", [rows, top.const("e/zero", np.array(0, np.int64))],
                            "e/any_rows")
        run = top.branch()
        live = {t.name: t.name for t in self.m.inputs}
        lengths = None
        if self.seq_mask is not None and not self.per_batch:
            lengths = self._lengths(run, self.seq_mask)
            live = self._trim(run, "t", live, lengths)
        z, e = self._level(run, 0, live, lengths)
        run_out = (run.node("Identity", [z], "e/run_logits"),
                   run.node("Identity", [e], "e/run_exit"))
        empty = top.branch()
        c = self.m.num_classes
        empty_out = (empty.node("Identity", [empty.const("e/no_logits",
                                                         np.zeros((0, c), np.float32))],
                                "e/empty_logits"),
                     empty.node("Identity", [empty.const("e/no_exit", np.zeros(0, np.int64))],
                                "e/empty_exit"))
        self._add_if(top, any_rows, (LOGITS, EXIT), "e/if_rows", (run, run_out, "rows"),
                     (empty, empty_out, "no_rows"))
        inputs = [helper.make_tensor_value_info(
            t.name, _NP_TO_ONNX[t.dtype],
            ["N" if i == t.batch_axis else d for i, d in enumerate(t.shape)])
            for t in self.m.inputs]
        inputs.append(helper.make_tensor_value_info(THRESHOLDS, 1, [len(self.gated)]))
        outputs = [helper.make_tensor_value_info(LOGITS, 1, ["N", c]),
                   helper.make_tensor_value_info(EXIT, 7, ["N"])]
        graph_ = top.graph("eeopt_program", outputs, inputs)
        model = helper.make_model(graph_, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="eeopt")
        model.ir_version = self.ir_version
        thresholds = ",".join(f"{t:g}" for t in self.m.thresholds)
        exits = ",".join(self.m.exit_names)
        for key, value in (("eeopt.thresholds", thresholds), ("eeopt.exits", exits),
                           ("eeopt.num_classes", str(c))):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.doc_string = (f"eeopt program {self.path.name}: {len(self.m.stages)} stages with a "
                            "per-sample exit; feed `thresholds` (compiled: "
                            f"[{thresholds}]); outputs logits [N, {c}] and exit [N] "
                            f"(exit k = {exits.replace(',', ', ')})")
        size = model.ByteSize()
        if size >= 2**31:
            raise UnsupportedModelError(
                f"{self.path}: the one graph would be {size / 2**30:.1f} GB, over ONNX's 2 GB "
                "protobuf limit; serve the program with the eeopt runtime instead")
        onnx.checker.check_model(model, full_check=True)
        return model


def one_graph(program_dir: str | os.PathLike[str], *, per_batch: bool = False) -> Any:
    """The program in ``program_dir`` as one checked ``onnx.ModelProto``. ``per_batch``: the
    baseline that ``If`` alone gives (onnxruntime#4484), for comparison only: the next stage
    runs on the whole batch unless every row's gate fired, so a batch leaves only when all its
    rows do (identical to the program at batch 1)."""
    path = Path(program_dir)
    return _Export(path, load_manifest(path), per_batch=per_batch).build()


def check_file_output(out: str | os.PathLike[str], *, force: bool) -> Path:
    """``out`` as a Path, once it is clear a single model file may be written there: not a
    folder, its folder exists, and an existing file only with ``force`` (``check_new_output``)."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{{out}} {path} is a directory: give a file name such as "
                         f"{path}/program.onnx")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} does not exist: create it first")
    return check_new_output(path, force=force, directory=False)


def export_onnx(program_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                force: bool = False) -> Path:
    """Write ``program_dir`` as one ONNX model at ``out`` (written to a temporary file and
    renamed into place; an existing file is kept unless ``force``). Returns ``out``."""
    path = check_file_output(out, force=force)
    model = one_graph(program_dir)
    return write_file(path, model.SerializeToString())
