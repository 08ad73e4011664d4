"""OrtProgram: runs an ONNX Runtime program (``backend="onnxruntime"``) with a per-sample exit.

After each stage the rows whose gate fired leave the batch. Only the remaining rows go on, with
their carried tensors and their rows of any graph input a later stage reads again. Results come
back in the original row order. No copy is made when no row leaves, and the run stops as soon as
no row remains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import ManifestError
from eeopt.kernels.reference import NEVER
from eeopt.program import Manifest, StageSpec, resolve_in_dir
from eeopt.runtime.base import (
    Inputs,
    Part,
    Program,
    Result,
    StageCall,
    trim_axis,
    trim_to_longest,
)
from eeopt.runtime.sessions import configure_threads, fast_run, make_session

__all__ = ["OrtProgram", "load_ort"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Hot:
    """What the run loop needs of one stage, worked out once at load time."""

    run: Any
    """The session's run, as ``run(fetch, feeds, None)`` (``backends.ort.fast_run``)."""
    inputs: tuple[str, ...]
    fetch: list[str]
    """logits, then (gated stages) the decision, then the carried tensors it makes."""
    produces: tuple[str, ...]
    """The carried tensors the stage makes (its logits too, when a later stage reads them)."""
    produced_at: tuple[int, ...]
    """Where each of ``produces`` is among the outputs fetched."""
    threshold: str | None
    compact: tuple[tuple[str, int | None], ...]


@dataclass
class _Stage:
    spec: StageSpec
    session: Any
    input_names: tuple[str, ...]
    compact_axes: dict[str, int | None]


#: ONNX Runtime's type names, by the manifest's dtype
_ORT_TYPES = {"float16": "tensor(float16)", "float32": "tensor(float)",
              "float64": "tensor(double)", "int8": "tensor(int8)", "int16": "tensor(int16)",
              "int32": "tensor(int32)", "int64": "tensor(int64)", "uint8": "tensor(uint8)",
              "uint16": "tensor(uint16)", "uint32": "tensor(uint32)", "uint64": "tensor(uint64)",
              "bool": "tensor(bool)", "bfloat16": "tensor(bfloat16)"}


def _check_interface(session: Any, spec: StageSpec, num_classes: int) -> None:
    """The stage file's inputs and outputs are the ones the manifest says (names, dtypes, the
    logits' class count): a tampered manifest is one line here, not a failure mid-run."""
    where = f"stage {spec.index} file {spec.file} does not match the manifest:"
    got = {i.name: i for i in session.get_inputs()}
    want = {t.name: t for t in spec.inputs}
    reads = set(want) | ({spec.threshold_input} if spec.threshold_input else set())
    if set(got) != reads:
        raise ManifestError(f"{where} it reads {sorted(got)}, the manifest says {sorted(reads)}; "
                            "recompile")
    for name, t in want.items():
        if got[name].type != _ORT_TYPES.get(t.dtype):
            raise ManifestError(f"{where} input {name!r} is {got[name].type}, the manifest says "
                                f"{t.dtype}; recompile")
    outs = {o.name: o for o in session.get_outputs()}
    needed = [spec.logits, *([spec.decision] if spec.decision else []),
              *(t.name for t in spec.produces)]
    for name in needed:
        if name not in outs:
            raise ManifestError(f"{where} it has no output {name!r}; recompile")
    classes = outs[spec.logits].shape[-1] if outs[spec.logits].shape else None
    if isinstance(classes, int) and classes != num_classes:
        raise ManifestError(f"{where} its logits have {classes} classes, the manifest says "
                            f"{num_classes}; recompile")


def _compact(arr: np.ndarray, keep: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return arr
    if axis == 0:
        return arr[keep]
    return np.take(arr, keep, axis=axis)


class OrtProgram(Program):
    """A compiled early-exit program: one ONNX Runtime session per stage, all on the process's
    one global thread pool."""

    backend = "onnxruntime"
    supports_stage_calls = True
    supports_trimming = True

    def __init__(self, path: Path, manifest: Manifest, threads: int | None = None) -> None:
        super().__init__(path, manifest)
        configure_threads(threads)
        axes = manifest.batch_axes()
        self._stages: list[_Stage] = []
        for st in manifest.stages:
            file = resolve_in_dir(path, st.file)
            session = make_session(file.read_bytes(), threads)
            _check_interface(session, st, manifest.num_classes)
            self._stages.append(
                _Stage(
                    spec=st,
                    session=session,
                    input_names=tuple(t.name for t in st.inputs),
                    compact_axes={t: axes.get(t, 0) for t in st.carry_after},
                )
            )
        self._thresholds_changed()
        hot: list[_Hot] = []
        for stage in self._stages:
            sp = stage.spec
            made = tuple(t.name for t in sp.produces if t.name != sp.logits)
            gated = sp.gate is not None
            fetch = [sp.logits, *([sp.decision] if gated and sp.decision else []), *made]
            # a later stage may read this exit's logits (exit k+1 = head(...) + exit k): then
            # they are carried too, from output 0
            produces = tuple(t.name for t in sp.produces)
            hot.append(_Hot(
                run=fast_run(stage.session),
                inputs=stage.input_names,
                fetch=fetch,
                produces=produces,
                produced_at=tuple(fetch.index(t) for t in produces),
                threshold=sp.threshold_input if gated else None,
                compact=tuple(stage.compact_axes.items()),
            ))
        out0 = {o.name: o.type for o in self._stages[0].session.get_outputs()}
        self._float_logits = out0.get(self._stages[0].spec.logits) == "tensor(float)"
        self._plain_runs = tuple(h.run for h in hot)
        self._set_hot(hot)
        seq = manifest.sequence
        self._seq_axes: dict[str, int] = dict(seq.axes) if seq is not None else {}
        self._seq_mask = seq.mask if seq is not None else ""

    def _trim_feeds(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                 np.ndarray]:
        """The inputs cut to their longest row, and each row's length (``trim_padding``)."""
        return trim_to_longest(feeds, self._seq_mask, self._seq_axes)

    def _thresholds_changed(self) -> None:
        self._thr0 = [np.array(t, dtype=np.float32) for t in self._thresholds]

    @property
    def one_row_fast_path(self) -> bool:
        """Whether one row of this program's lone input goes straight to its first stage's
        session (a gated first stage that reads just that input and gives float32 logits):
        the latency-bound case, with no generic input handling."""
        return self._first is not None

    def instrument(self, wrap: Callable[[int, Any], Any] | None) -> None:
        """Route stage ``k``'s session call through ``wrap(k, run)``, a callable that takes
        ``(fetch, feeds, run_options)`` as ``run`` does: every call the run loop makes (both
        paths), e.g. to time or record each stage call. ``None`` restores the plain calls."""
        self._set_hot([replace(h, run=run if wrap is None else wrap(k, run))
                       for k, (h, run) in enumerate(zip(self._hot, self._plain_runs,
                                                        strict=True))])

    def _set_hot(self, hot: Sequence[_Hot]) -> None:
        self._hot = list(hot)
        # the one-row path's view of the stages: plain tuples, nothing looked up per call
        self._one = tuple(
            (h.run, h.fetch, h.inputs, h.threshold,
             tuple(zip(h.produces, h.produced_at, strict=True)),
             tuple(t for t, _ in h.compact), np.full(1, k, dtype=np.int64))
            for k, h in enumerate(hot))
        # the hottest case of all, one row of a lone input into a gated first stage that reads
        # just that input and gives float32 logits: run() calls that stage itself
        lone, h0 = self._check.lone, self._hot[0]
        self._first = None
        if (lone is not None and h0.threshold is not None and h0.inputs == (lone[0],)
                and self._float_logits):
            self._first = (h0.run, h0.fetch, lone[0], h0.threshold, (1, *lone[3]), lone[1])

    # ------------------------------------------------------------------ running
    def run(self, x: Inputs, *, thresholds: float | Sequence[float] | None = None,
            edge: str | None = None) -> Result:
        """Run with per-sample exits. ``thresholds`` overrides the compiled ones for this call
        (a value above 1 disables a maxprob exit); ``edge``: see ``Program.run``."""
        first = self._first
        # one checked row (array or dict): hot
        if first is not None and thresholds is None and edge is None:
            run, fetch, name, threshold, shape, dtype = first
            a = x if type(x) is np.ndarray else (
                x.get(name) if type(x) is dict and len(x) == 1 else None)
            if type(a) is np.ndarray and a.shape == shape and a.dtype == dtype:
                outs = run(fetch, {name: a, threshold: self._thr0[0]}, None)
                if outs[1][0]:
                    return Result(outs[0], self._one[0][6].copy())
                return self._run_one(self._after(0, {name: a}, outs), self._thr0, 1)
        return super().run(x, thresholds=thresholds, edge=edge)

    def _run(self, feeds: dict[str, np.ndarray], n: int,
             thresholds: float | Sequence[float] | None) -> Result:
        thr = self._thr0 if thresholds is None else [
            np.array(t, dtype=np.float32) for t in self.resolve_thresholds(thresholds)]
        lengths = None
        if self._trim and n:
            feeds, lengths = self._trim_feeds(feeds)
        if n == 1:  # before the result buffers: the one-row path returns its exit's arrays
            return self._run_one(feeds, thr, 0)
        logits = np.empty((n, self.num_classes), dtype=np.float32)
        exits = np.empty((n,), dtype=np.int64)
        if n:
            self._loop(feeds, thr, lengths, logits, exits, 0, len(self._hot))
        return Result(logits, exits)

    def _run_part(self, feeds: dict[str, np.ndarray], n: int,
                  thresholds: float | Sequence[float] | None, start: int, stop: int) -> Part:
        thr = self._thr0 if thresholds is None else [
            np.array(t, dtype=np.float32) for t in self.resolve_thresholds(thresholds)]
        lengths = None
        if self._trim and n and self._seq_mask in feeds:
            feeds, lengths = self._trim_feeds(feeds)
        logits = np.zeros((n, self.num_classes), dtype=np.float32)
        exits = np.full((n,), -1, dtype=np.int64)
        rows, carried = np.arange(0), {}
        if n:
            order, live = self._loop(feeds, thr, lengths, logits, exits, start, stop)
            if live is not None:
                rows = np.arange(n) if order is None else order
                carried = live
        return Part(logits, exits, rows, carried)

    def _loop(self, live: dict[str, np.ndarray], thr: Sequence[np.ndarray],
              lengths: np.ndarray | None, logits: np.ndarray, exits: np.ndarray, start: int,
              stop: int) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
        """Stages ``start..stop-1`` on ``live``'s rows (at least 2, or a part run), each
        leaving row's logits and exit written into ``logits``/``exits`` at its original row.
        Returns the rows that go on past ``stop`` (None: all of them) and what they carry,
        or ``(None, None)`` when none does."""
        length = int(live[self._seq_mask].shape[1]) if lengths is not None else 0
        order: np.ndarray | None = None  # original row of each remaining row; None = identity
        hot = self._hot
        # the hot loop: everything per stage was worked out at load time (see _Hot)
        for k in range(start, stop):
            h = hot[k]
            sfeeds = {name: live[name] for name in h.inputs}
            if h.threshold is None:  # the final stage takes every row still here
                out_logits = h.run(h.fetch, sfeeds, None)[0]
                if order is None:
                    logits[:] = out_logits
                    exits[:] = k
                else:
                    logits[order] = out_logits
                    exits[order] = k
                return None, None
            sfeeds[h.threshold] = thr[k]
            outs = h.run(h.fetch, sfeeds, None)
            out_logits, decision = outs[0], outs[1]
            for name, i in zip(h.produces, h.produced_at, strict=True):
                live[name] = outs[i]
            m = decision.shape[0]
            if m == 1:  # one row left: no index arithmetic
                if decision[0]:
                    row = 0 if order is None else int(order[0])
                    logits[row] = out_logits[0]
                    exits[row] = k
                    return None, None
                live = {t: live[t] for t, _ in h.compact}
                continue
            leaving = np.flatnonzero(decision)
            if leaving.size == 0:
                live = {t: live[t] for t, _ in h.compact}  # no copy when no row leaves
                continue
            rows_out = leaving if order is None else order[leaving]
            logits[rows_out] = out_logits[leaving]
            exits[rows_out] = k
            if leaving.size == m:
                return None, None
            keep = np.flatnonzero(~decision)
            order = keep if order is None else order[keep]
            if lengths is not None:  # trim_padding: cut to the longest row that remains
                longest = max(int(lengths[order].max()), 1)
                if longest < length:
                    length = longest
                    seq = self._seq_axes
                    live = {t: _compact(live[t], keep, ax) if t not in seq
                            else trim_axis(live[t], seq[t], longest, keep) if ax == 0
                            else trim_axis(_compact(live[t], keep, ax), seq[t], longest)
                            for t, ax in h.compact}
                    continue
            live = {t: _compact(live[t], keep, ax) for t, ax in h.compact}
        return order, live

    def _run_one(self, live: dict[str, np.ndarray], thr: Sequence[np.ndarray],
                 start: int) -> Result:
        """One row (the latency-bound case), from stage ``start`` on, ``live`` holding what it
        reads: no row bookkeeping, no result buffers; the exit's own output array is the
        result. Every Python step here costs a few times its microbenchmark time, since each
        stage call leaves the interpreter's caches cold: keep it short."""
        one = self._one
        for k in range(start, len(one)):
            run, fetch, inputs, threshold, _, _, exit_k = one[k]
            sfeeds = {name: live[name] for name in inputs}
            if threshold is not None:
                sfeeds[threshold] = thr[k]
            outs = run(fetch, sfeeds, None)
            if threshold is None or outs[1][0]:
                z = outs[0]
                return Result(z if z.dtype == np.float32 else z.astype(np.float32),
                              exit_k.copy())
            live = self._after(k, live, outs)
        raise AssertionError("the final stage has no gate")  # pragma: no cover

    def _after(self, k: int, live: dict[str, np.ndarray], outs: list[Any]
               ) -> dict[str, np.ndarray]:
        """What is alive after stage ``k`` of a one-row run: ``live`` plus the tensors the
        stage produced (its ``outs``), less the ones no later stage reads."""
        _, _, _, _, produces, carry, _ = self._one[k]
        if produces:
            live = {**live, **{name: outs[i] for name, i in produces}}
        return {t: live[t] for t in carry}

    def _walk(self, x: Inputs) -> Iterator[tuple[_Hot, dict[str, np.ndarray], list[Any]]]:
        """Every stage with every row and no exit: yields each stage's hot record, the feeds
        it was called with (gates disabled) and its outputs."""
        feeds, _ = self._feeds(x)
        live: dict[str, np.ndarray] = feeds
        for h, st in zip(self._hot, self._stages, strict=True):
            sfeeds = {name: live[name] for name in h.inputs}
            if h.threshold is not None:
                policy = st.spec.gate.policy  # type: ignore[union-attr]
                sfeeds[h.threshold] = np.array(NEVER[policy], dtype=np.float32)
            outs = h.run(h.fetch, sfeeds, None)
            yield h, sfeeds, outs
            for name, i in zip(h.produces, h.produced_at, strict=True):
                live[name] = outs[i]
            live = {t: live[t] for t, _ in h.compact}

    def run_all(self, x: Inputs) -> list[np.ndarray]:
        return [np.asarray(outs[0], dtype=np.float32) for _, _, outs in self._walk(x)]

    def stage_calls(self, x: Inputs) -> list[StageCall]:
        """Per stage, its session call (as the run loop makes it) on what it reads when all of
        ``x``'s rows get that far, with no gate firing and no bookkeeping."""
        return [StageCall(h.run, h.fetch, sfeeds) for h, sfeeds, _ in self._walk(x)]


def load_ort(path: Path, manifest: Manifest, threads: int | None = None) -> OrtProgram:
    """The runtime's loader for ``onnxruntime`` programs (``eeopt.load`` calls it)."""
    return OrtProgram(path, manifest, threads)
