"""What every runtime shares: the ``Program`` interface, its ``Result``, and the input checks.

``Program.run`` checks the inputs once (``InputChecker``, a fast path over ``check_inputs``)
and hands them to the backend's ``_run``; each backend module (``ort``, ``aoti``,
``tensorrt``) implements the per-sample exit on its own engine. Nothing here imports an engine.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from eeopt.errors import DataError, ManifestError, UsageError
from eeopt.kernels.reference import check_run_threshold
from eeopt.program import Manifest, TensorSpec

__all__ = ["Inputs", "InputChecker", "Part", "Program", "Result", "StageCall", "check_inputs",
           "check_right_padding", "take_rows", "trim_axis"]

Inputs = np.ndarray | Mapping[str, np.ndarray]


class Result(NamedTuple):
    """``logits``: ``[N, C]`` float32, each row's logits at the exit where it left.
    ``exit``: ``[N]`` int64, the 0-based index of the program's exit (final classifier =
    num_exits - 1); ``Program.exit_names[k]`` is the model output exit k computes.

    A named tuple: immutable, and cheap to make (a frozen dataclass costs about 1 us more a
    call, a sixtieth of a small stage)."""

    logits: np.ndarray
    exit: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def exit_counts(self, num_exits: int) -> np.ndarray:
        return np.bincount(self.exit, minlength=num_exits)


class Part(NamedTuple):
    """What running stages ``start..stop-1`` of a program leaves (``Program.run_stages``):
    the half of a split run on one machine.

    ``logits`` ``[N, C]`` and ``exit`` ``[N]`` hold each row that left at one of those
    stages (``exit`` -1 and the logits unset for the rest); ``rows`` are the indices of the
    rows that go on, in the order of ``carried``, which holds what stage ``stop`` reads, for
    those rows only (empty when ``stop`` is the end or no row goes on)."""

    logits: np.ndarray
    exit: np.ndarray
    rows: np.ndarray
    carried: dict[str, np.ndarray]


class StageCall(NamedTuple):
    """One stage's bare engine call with its feeds, ready to time: ``call()``, or
    ``call(feeds)`` with some of them replaced (e.g. other rows of a graph input)."""

    run: Any
    fetch: list[str]
    feeds: dict[str, np.ndarray]

    def __call__(self, feeds: Mapping[str, np.ndarray] | None = None) -> list[Any]:
        return self.run(self.fetch, self.feeds if feeds is None else {**self.feeds, **feeds},
                        None)


def check_inputs(
    specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray], *, what: str = "program"
) -> int:
    """Check names, dtypes and fixed dims of ``inputs`` against ``specs``; return the batch size.

    Raises ``DataError`` with one line naming the input and what was expected.
    """
    names = {s.name for s in specs}
    for s in specs:
        if s.name not in inputs:
            expected = ", ".join(s.describe() for s in specs)
            raise DataError(f"missing input {s.name!r}; the {what} expects: {expected}")
    extra = sorted(set(inputs) - names)
    if extra:
        expected = ", ".join(s.describe() for s in specs)
        raise DataError(f"unknown input {extra[0]!r}; the {what} expects: {expected}")
    batch: int | None = None
    symbols: dict[str, int] = {}
    for s in specs:
        arr = inputs[s.name]
        if not isinstance(arr, np.ndarray):
            raise DataError(f"input {s.name!r} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(s.dtype):
            raise DataError(
                f"input {s.name!r} has dtype {arr.dtype}, expected {s.dtype}; convert it with "
                f".astype(np.{s.dtype})"
            )
        if arr.ndim != len(s.shape):
            raise DataError(
                f"input {s.name!r} has shape {list(arr.shape)}, expected rank {len(s.shape)}: "
                f"{s.describe()}"
            )
        for axis, (got, want) in enumerate(zip(arr.shape, s.shape, strict=True)):
            if axis == s.batch_axis:
                if batch is None:
                    batch = got
                elif got != batch:
                    raise DataError(
                        f"input {s.name!r} has batch size {got} but another input has {batch}; "
                        "all inputs must share the batch dimension"
                    )
            elif isinstance(want, int) and got != want:
                raise DataError(
                    f"input {s.name!r} has shape {list(arr.shape)}; axis {axis} must be {want} "
                    f"({s.describe()})"
                )
            elif isinstance(want, str) and symbols.setdefault(want, got) != got:
                raise DataError(
                    f"input {s.name!r} axis {axis} is {got}, but dimension {want!r} is "
                    f"{symbols[want]} in another input"
                )
    return 0 if batch is None else int(batch)


def check_right_padding(feeds: Mapping[str, np.ndarray], mask: str) -> None:
    """A trimming run needs right padding (each row's tokens first): a one-line DataError
    otherwise, naming a row that breaks it."""
    m = feeds[mask]
    if m.ndim == 2 and m.shape[1] > 1:
        bad = np.flatnonzero(((m[:, 1:] != 0) & (m[:, :-1] == 0)).any(axis=1))
        if bad.size:
            raise DataError(
                f"input {mask!r} row {int(bad[0])} has a token after padding: eeopt trims right "
                "padding, so pad on the right (tokenizer padding_side='right'), or run without "
                "trimming (trim_padding off)")


def trim_axis(arr: np.ndarray, axis: int, length: int,
              rows: np.ndarray | None = None) -> np.ndarray:
    """``arr`` cut to ``length`` along ``axis`` (and to ``rows`` along axis 0), one contiguous
    copy."""
    index: list[Any] = [slice(None)] * arr.ndim
    index[axis] = slice(0, length)
    if rows is not None:
        index[0] = rows
    return np.ascontiguousarray(arr[tuple(index)])


def take_rows(feeds: Mapping[str, np.ndarray], rows: np.ndarray,
              axes: Mapping[str, int | None]) -> dict[str, np.ndarray]:
    """``feeds``' ``rows``, each array taken along its batch axis (``Manifest.batch_axes``;
    0 when not listed); an array with no batch axis is passed whole."""
    return {k: v if axes.get(k, 0) is None else np.take(v, rows, axis=axes.get(k, 0))
            for k, v in feeds.items()}


def trim_to_longest(feeds: Mapping[str, np.ndarray], mask: str, axes: Mapping[str, int]
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``feeds`` with every input in ``axes`` cut along its sequence axis to the longest row
    (the nonzero count of ``mask``, at least 1; no copy when nothing is cut), and each row's
    length."""
    m = feeds[mask]
    lengths = np.count_nonzero(m, axis=1)
    longest = max(int(lengths.max()) if lengths.size else 1, 1)
    out = feeds if isinstance(feeds, dict) else dict(feeds)
    if longest < m.shape[1]:
        out = {name: trim_axis(a, axes[name], longest) if name in axes else a
               for name, a in feeds.items()}
    return out, lengths


class InputChecker:
    """``check_inputs`` with the specs compiled once: a fast path for the per-call check of a
    hot loop, which defers to ``check_inputs`` for the message when something is wrong."""

    def __init__(self, specs: Sequence[TensorSpec], what: str = "program") -> None:
        self.specs = tuple(specs)
        self.what = what
        self._plan = []
        for s in self.specs:
            fixed = tuple((ax, d) for ax, d in enumerate(s.shape) if isinstance(d, int)
                          and ax != s.batch_axis)
            symbolic = any(isinstance(d, str) and ax != s.batch_axis
                           for ax, d in enumerate(s.shape))
            self._plan.append((s.name, np.dtype(s.dtype), len(s.shape), s.batch_axis, fixed,
                               symbolic))
        self._names = frozenset(s.name for s in self.specs)
        self._simple = not any(p[5] for p in self._plan)
        # the commonest case, one input batched on axis 0 with every other dim fixed: one
        # tuple comparison checks the whole shape
        s0 = self.specs[0] if len(self.specs) == 1 else None
        self.lone: tuple[str, np.dtype[Any], int, tuple[int, ...]] | None = None
        """``(name, dtype, ndim, shape[1:])`` of a lone input batched on axis 0 with every
        other dim fixed: an array matching all four passes the check."""
        tail = tuple(d for d in s0.shape[1:] if isinstance(d, int)) if s0 is not None else ()
        if (s0 is not None and s0.batch_axis == 0 and s0.shape
                and len(tail) == len(s0.shape) - 1):
            self.lone = (s0.name, np.dtype(s0.dtype), len(s0.shape), tail)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> int:
        if not self._simple or len(inputs) != len(self._plan):
            return check_inputs(self.specs, inputs, what=self.what)
        if self.lone is not None:
            name, dtype, ndim, tail = self.lone
            arr = inputs.get(name)
            if (type(arr) is np.ndarray and arr.dtype == dtype and arr.ndim == ndim
                    and arr.shape[1:] == tail):
                return arr.shape[0]
            return check_inputs(self.specs, inputs, what=self.what)
        batch = -1
        for name, dtype, ndim, axis, fixed, _ in self._plan:
            arr = inputs.get(name)
            if (
                type(arr) is not np.ndarray
                or arr.dtype != dtype
                or arr.ndim != ndim
                or any(arr.shape[ax] != d for ax, d in fixed)
            ):
                return check_inputs(self.specs, inputs, what=self.what)
            if axis is not None:
                b = arr.shape[axis]
                if batch < 0:
                    batch = b
                elif b != batch:
                    return check_inputs(self.specs, inputs, what=self.what)
        return max(batch, 0)


class Program(abc.ABC):
    """A compiled early-exit program, loaded and verified (``eeopt.load``).

    ``run(x)`` checks the inputs once, then the backend runs the stages with per-sample exits
    and returns every row's logits and exit in the original row order. The interface is the
    same for every backend; ``supports_stage_calls`` says whether ``stage_calls`` (the bare
    stage calls `eeopt bench` times as its ideal) is available."""

    backend: ClassVar[str]
    """The manifest's ``backend`` this class runs."""
    supports_stage_calls: ClassVar[bool] = False

    def __init__(self, path: Path, manifest: Manifest) -> None:
        if manifest.backend != self.backend:
            raise ManifestError(
                f"{path} was compiled for backend {manifest.backend!r}; {type(self).__name__} "
                f"runs {self.backend!r} programs (use eeopt.load)")
        self.path = path
        self.manifest = manifest
        self._check = InputChecker(manifest.inputs)
        self._single = manifest.inputs[0].name if len(manifest.inputs) == 1 else None
        self._policies = tuple(s.gate.policy for s in manifest.stages if s.gate is not None)
        for s in manifest.stages:
            rule = None if s.gate is None else check_run_threshold(s.gate.policy,
                                                                   s.gate.threshold)
            if rule:
                raise ManifestError(
                    f"manifest: stages[{s.index}].gate.threshold {s.gate.threshold:g} is out of "  # type: ignore[union-attr]
                    f"range for policy {s.gate.policy}: {rule}; recompile")  # type: ignore[union-attr]
        self._thresholds = np.array(manifest.thresholds, dtype=np.float32)
        self._trim = self.can_trim_padding
        self._edges: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties
    @property
    def can_trim_padding(self) -> bool:
        """Whether this runtime trims the program's sequence axis (``manifest.sequence``)."""
        return self.manifest.sequence is not None and self.supports_trimming

    #: whether a backend's run loop trims the sequence axis (``manifest.sequence``)
    supports_trimming = False

    @property
    def trim_padding(self) -> bool:
        """Cut right padding to the longest remaining row, at the start and after every
        compaction (on by default where ``can_trim_padding``; exits and logits are the same
        either way, which the compile checks). Inputs must then be right-padded."""
        return self._trim

    @trim_padding.setter
    def trim_padding(self, on: bool) -> None:
        if on and not self.can_trim_padding:
            why = ("the program has no sequence axis to trim" if self.manifest.sequence is None
                   else f"backend {self.backend!r} does not trim")
            raise UsageError(f"cannot trim padding: {why}")
        self._trim = bool(on)

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def num_exits(self) -> int:
        return self.manifest.num_exits

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def exit_names(self) -> tuple[str, ...]:
        """The source model's output name of each exit this program kept: a row with
        ``Result.exit == k`` left at the model output ``exit_names[k]``."""
        return self.manifest.exit_names

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(float(t) for t in self._thresholds)

    def export_onnx(self, out: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write this program as one ONNX model that any ONNX runtime serves, the per-sample
        exit and the compaction inside it (``eeopt.export.export_onnx``; needs the onnx
        package, which running a program does not). Returns the file written."""
        from eeopt import export_onnx  # the package root: the runtime never imports onnx

        return export_onnx(self.path, out, force=force)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, exits={self.num_exits}, "
                f"thresholds={list(self.thresholds)})")

    # ------------------------------------------------------------------ thresholds
    def resolve_thresholds(self, thresholds: float | Sequence[float] | None) -> np.ndarray:
        """One float32 threshold per gated exit: the compiled ones (None), one value for
        every exit, or one per exit, each in its policy's range or a value that disables the
        exit (``kernels.reference.check_run_threshold``: above 1 for maxprob)."""
        if thresholds is None:
            return self._thresholds
        k = self.num_exits - 1
        if isinstance(thresholds, (int, float, np.integer, np.floating)) and not isinstance(
                thresholds, bool):
            vals = [float(thresholds)] * k
        elif isinstance(thresholds, (str, bytes)) or not isinstance(thresholds,
                                                                    (Sequence, np.ndarray)):
            raise UsageError(f"{{thresholds}} must be a number or one number per gated exit, "
                             f"got {type(thresholds).__name__} {thresholds!r}")
        else:
            try:
                vals = [float(t) for t in thresholds]
            except (TypeError, ValueError):
                raise UsageError(f"{{thresholds}} must be numbers, got {list(thresholds)!r}"
                                 ) from None
        if len(vals) != k:
            raise UsageError(f"the program has {k} gated exits; got {len(vals)} thresholds")
        for j, (v, policy) in enumerate(zip(vals, self._policies, strict=True)):
            rule = check_run_threshold(policy, v)
            if rule:
                raise UsageError(f"{{thresholds}} value {v:g} for exit {j} is out of range for "
                                 f"policy {policy}: {rule}")
        return np.array(vals, dtype=np.float32)

    def set_thresholds(self, thresholds: float | Sequence[float]) -> None:
        """Make ``thresholds`` the default of later runs (the manifest on disk is unchanged)."""
        self._thresholds = self.resolve_thresholds(thresholds)
        self._thresholds_changed()

    def _thresholds_changed(self) -> None:  # noqa: B027 - an optional hook
        """Refresh whatever a backend derived from ``self._thresholds``."""

    # ------------------------------------------------------------------ running
    def _feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        """``x`` as checked feeds by input name, and the batch size."""
        if type(x) is np.ndarray and self._single is not None:  # the common case, fast
            feeds = {self._single: x}
        elif type(x) is dict or isinstance(x, Mapping):  # (the ABC check costs ~1 us)
            feeds = dict(x)
        else:
            if len(self.input_specs) != 1:
                names = ", ".join(s.name for s in self.input_specs)
                raise DataError(
                    f"the program has {len(self.input_specs)} inputs ({names}); pass a dict "
                    "from input name to array"
                )
            feeds = {self.input_specs[0].name: x}
        n = self._check(feeds)
        if self._trim:
            check_right_padding(feeds, self.manifest.sequence.mask)  # type: ignore[union-attr]
        return feeds, n

    def run(self, x: Any, *, thresholds: float | Sequence[float] | None = None,
            edge: str | None = None) -> Result:
        """Run with per-sample exits. ``thresholds`` overrides the compiled ones for this call
        (a value above 1 disables a maxprob exit). ``edge`` (``host:port``): split the run
        with the edge server there (``connect_edge``; its split and thresholds)."""
        if edge is not None:
            if thresholds is not None:
                raise UsageError("a split run takes its thresholds from the split plan, or "
                                 "from connect_edge(..., split=S, thresholds=...)")
            client = self._edges.get(edge) or self.connect_edge(edge)
            return client.run(x)  # type: ignore[no-any-return]
        feeds, n = self._feeds(x)
        return self._run(feeds, n, thresholds)

    def connect_edge(self, edge: str, **options: Any) -> Any:
        """Connect to the edge server at ``edge`` (``host:port``, ``eeopt edge``) for split
        runs, and make it what ``run(x, edge=edge)`` uses: an ``eeopt.split.EdgeClient``
        (options: ``split``, ``thresholds``, ``codec``, ``timeout_s``, ``retries``,
        ``fallback="local"``, ``adapt``...; needs grpcio and zstandard)."""
        from eeopt import connect_edge  # the package root: the runtime never imports grpc

        client = connect_edge(self, edge, **options)
        old = self._edges.pop(edge, None)
        if old is not None:
            old.close()
        self._edges[edge] = client
        return client

    def run_in_batches(self, x: Any, batch_size: int, *, buckets: bool | None = None,
                       thresholds: float | Sequence[float] | None = None,
                       progress: bool = False, edge: str | None = None) -> Result:
        """``run`` over ``batch_size`` rows at a time; every row comes back in its original
        order. ``buckets`` (default: whether the program trims padding): group rows of
        similar length into the same batch (stable sort by length), so that trimming cuts each
        batch to its own longest row instead of the longest of the whole input. ``edge``: each
        batch a split run with the edge server there (``run(x, edge=...)``)."""
        feeds, n = self._feeds(x)
        if batch_size < 1:
            raise UsageError(f"{{batch_size}} must be >= 1, got {batch_size}")
        if buckets is None:
            buckets = self.trim_padding
        if buckets and self.manifest.sequence is None:
            raise UsageError("length buckets need a program with a sequence axis (text)")
        order = (np.argsort(np.count_nonzero(feeds[self.manifest.sequence.mask], axis=1),  # type: ignore[union-attr]
                            kind="stable") if buckets else np.arange(n))
        logits = np.empty((n, self.num_classes), dtype=np.float32)
        exits = np.empty((n,), dtype=np.int64)
        axes = self.manifest.batch_axes()
        starts = range(0, n, batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="eeopt run", unit="batch", disable=None)  # type: ignore[assignment]
        for start in starts:
            rows = order[start:start + batch_size]
            res = self.run(take_rows(feeds, rows, axes), thresholds=thresholds, edge=edge)
            logits[rows] = res.logits
            exits[rows] = res.exit
        return Result(logits, exits)

    def carried_specs(self, stage: int) -> tuple[TensorSpec, ...]:
        """What stage ``stage`` (> 0) and the stages after it read of what came before: the
        tensors alive after stage ``stage - 1`` (graph inputs included), as a split run
        sends them across."""
        k = self.num_exits
        if not 0 < stage < k:
            raise UsageError(f"a split point is a stage in 1..{k - 1}, got {stage}")
        specs: dict[str, TensorSpec] = {s.name: s for s in self.input_specs}
        for st in self.manifest.stages:
            specs.update({t.name: t for t in st.inputs + st.produces})
        return tuple(specs[name] for name in self.manifest.stages[stage - 1].carry_after)

    def run_stages(self, x: Any, start: int = 0, stop: int | None = None, *,
                   thresholds: float | Sequence[float] | None = None) -> Part:
        """Run stages ``start..stop-1`` (default: to the end) with per-sample exits: the
        device's or the edge's half of a split run (``eeopt.split``). From ``start`` 0, ``x``
        is the program's input; from a later stage, the tensors ``carried_specs(start)``
        names, as an earlier ``run_stages(..., stop=start)`` left them. Running 0..s then
        s..end gives each row the exit and logits ``run`` gives it. ``stop == start`` runs
        nothing: every row goes on, with its inputs checked."""
        k = self.num_exits
        stop = k if stop is None else stop
        if not 0 <= start <= stop <= k or start == k:
            raise UsageError(f"stages {start}..{stop - 1} are not a range of the program's "
                             f"0..{k - 1}")
        if start == 0:
            feeds, n = self._feeds(x)
        else:
            if not isinstance(x, Mapping):
                raise DataError(f"a run from stage {start} takes a dict of the tensors "
                                "carried to it (Program.carried_specs)")
            feeds = dict(x)
            n = check_inputs(self.carried_specs(start), feeds, what=f"stage {start}")
        if stop == start:  # no stage: every row goes on with what it has, checked
            return Part(np.zeros((n, self.num_classes), np.float32), np.full(n, -1, np.int64),
                        np.arange(n), feeds)
        return self._run_part(feeds, n, thresholds, start, stop)

    def _run_part(self, feeds: dict[str, Any], n: int,
                  thresholds: float | Sequence[float] | None, start: int, stop: int) -> Part:
        raise UsageError(f"backend {self.backend!r} programs cannot run a range of stages "
                         "(split runs need an onnxruntime program)")

    @abc.abstractmethod
    def _run(self, feeds: dict[str, Any], n: int,
             thresholds: float | Sequence[float] | None) -> Result:
        """The per-sample exit on checked ``feeds`` of ``n`` rows."""

    @abc.abstractmethod
    def run_all(self, x: Any) -> list[np.ndarray]:
        """Every exit's logits for every row, with no early exit (for verification and
        calibration). Returns one ``[N, C]`` float32 array per exit."""

    def stage_calls(self, x: Inputs) -> list[StageCall]:
        """Per stage, its bare engine call on what it reads when all of ``x``'s rows get that
        far, with no gate firing and no bookkeeping (`eeopt bench`'s ideal). Only where
        ``supports_stage_calls``."""
        raise UsageError(f"backend {self.backend!r} programs have no bare stage calls "
                         "(Program.supports_stage_calls is False)")
