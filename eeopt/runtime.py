"""Program: loads a compiled program and runs it with a per-sample exit.

After each stage the rows whose gate fired leave the batch. Only the remaining rows go on, with
their carried tensors and their rows of any graph input a later stage reads again. Results come
back in the original row order. No copy is made when no row leaves, and the run stops as soon as
no row remains.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eeopt.backends.base import InputChecker
from eeopt.backends.ort import OrtBackend, OrtSegment, configure_threads
from eeopt.errors import DataError, ManifestError, UsageError
from eeopt.kernels.reference import NEVER
from eeopt.manifest import Manifest, StageSpec, TensorSpec, load_manifest, resolve_in_dir

__all__ = ["Program", "Result", "load", "Inputs"]

logger = logging.getLogger(__name__)

Inputs = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Result:
    """``logits``: ``[N, C]`` float32, each row's logits at the exit where it left.
    ``exit``: ``[N]`` int64, the 0-based exit index (final classifier = num_exits - 1)."""

    logits: np.ndarray
    exit: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def exit_counts(self, num_exits: int) -> np.ndarray:
        return np.bincount(self.exit, minlength=num_exits)


@dataclass
class _Stage:
    spec: StageSpec
    segment: OrtSegment
    input_names: tuple[str, ...]
    compact_axes: dict[str, int | None]


def _compact(arr: np.ndarray, keep: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return arr
    if axis == 0:
        return arr[keep]
    return np.take(arr, keep, axis=axis)


class Program:
    """A compiled early-exit program: one ONNX Runtime session per stage."""

    def __init__(self, path: Path, manifest: Manifest, threads: int | None = None) -> None:
        if manifest.backend != "onnxruntime":
            raise ManifestError(
                f"{path} was compiled for backend {manifest.backend!r}; this runtime runs "
                "'onnxruntime' programs"
            )
        self.path = path
        self.manifest = manifest
        backend = OrtBackend(threads)
        axes: dict[str, int | None] = {s.name: s.batch_axis for s in manifest.inputs}
        for st in manifest.stages:
            for t in st.inputs + st.produces:
                axes[t.name] = t.batch_axis
        self._stages: list[_Stage] = []
        for st in manifest.stages:
            file = resolve_in_dir(path, st.file)
            outputs = [st.logits] + [t.name for t in st.produces if t.name != st.logits]
            extra: list[str] = []
            if st.gate is not None:
                assert st.decision is not None and st.threshold_input is not None
                outputs.append(st.decision)
                extra.append(st.threshold_input)
            seg = backend.compile(file.read_bytes(), st.inputs, outputs, extra)
            self._stages.append(
                _Stage(
                    spec=st,
                    segment=seg,
                    input_names=tuple(t.name for t in st.inputs),
                    compact_axes={t: axes.get(t, 0) for t in st.carry_after},
                )
            )
        self._thresholds = np.array(manifest.thresholds, dtype=np.float32)
        self._check = InputChecker(manifest.inputs)

    # ------------------------------------------------------------------ properties
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
    def thresholds(self) -> tuple[float, ...]:
        return tuple(float(t) for t in self._thresholds)

    def __repr__(self) -> str:
        return (
            f"Program({str(self.path)!r}, exits={self.num_exits}, "
            f"thresholds={list(self.thresholds)})"
        )

    # ------------------------------------------------------------------ running
    def _feeds(self, x: Inputs) -> tuple[dict[str, np.ndarray], int]:
        if isinstance(x, Mapping):
            feeds = dict(x)
        else:
            if len(self.input_specs) != 1:
                names = ", ".join(s.name for s in self.input_specs)
                raise DataError(
                    f"the program has {len(self.input_specs)} inputs ({names}); pass a dict "
                    "from input name to array"
                )
            feeds = {self.input_specs[0].name: x}
        return feeds, self._check(feeds)

    def _resolve_thresholds(self, thresholds: float | Sequence[float] | None) -> np.ndarray:
        if thresholds is None:
            return self._thresholds
        k = self.num_exits - 1
        if isinstance(thresholds, (int, float, np.floating)):
            vals = [float(thresholds)] * k
        else:
            vals = [float(t) for t in thresholds]
        if len(vals) != k:
            raise UsageError(f"the program has {k} gated exits; got {len(vals)} thresholds")
        if any(math.isnan(v) for v in vals):
            raise UsageError("a threshold is NaN")
        return np.array(vals, dtype=np.float32)

    def run(self, x: Inputs, *, thresholds: float | Sequence[float] | None = None) -> Result:
        """Run with per-sample exits. ``thresholds`` overrides the compiled ones for this call
        (a value above 1 disables that exit)."""
        feeds, n = self._feeds(x)
        thr = self._resolve_thresholds(thresholds)
        logits = np.empty((n, self.num_classes), dtype=np.float32)
        exits = np.empty((n,), dtype=np.int64)
        if n == 0:
            return Result(logits, exits)
        live: dict[str, np.ndarray] = feeds
        order: np.ndarray | None = None  # original row of each remaining row; None = identity
        last = len(self._stages) - 1
        for k, st in enumerate(self._stages):
            sfeeds = {name: live[name] for name in st.input_names}
            if k < last:
                sfeeds[st.spec.threshold_input] = thr[k : k + 1].reshape(())  # type: ignore[index]
            outs = st.segment.run(sfeeds, check=False)
            out_logits = outs[st.spec.logits]
            if k == last:
                rows = slice(None) if order is None else order
                logits[rows] = out_logits
                exits[rows] = k
                break
            for t in st.spec.produces:
                live[t.name] = outs[t.name]
            decision = outs[st.spec.decision]  # type: ignore[index]
            leaving = np.flatnonzero(decision)
            if leaving.size:
                rows_out = leaving if order is None else order[leaving]
                logits[rows_out] = out_logits[leaving]
                exits[rows_out] = k
                if leaving.size == decision.shape[0]:
                    break
                keep = np.flatnonzero(~decision)
                order = keep if order is None else order[keep]
                live = {t: _compact(live[t], keep, ax) for t, ax in st.compact_axes.items()}
            else:
                live = {t: live[t] for t in st.compact_axes}
        return Result(logits, exits)

    def run_all(self, x: Inputs) -> list[np.ndarray]:
        """Every exit's logits for every row, with no early exit (for verification and
        calibration). Returns one ``[N, C]`` float32 array per exit."""
        feeds, n = self._feeds(x)
        live: dict[str, np.ndarray] = feeds
        out: list[np.ndarray] = []
        for k, st in enumerate(self._stages):
            sfeeds = {name: live[name] for name in st.input_names}
            if st.spec.threshold_input is not None and st.spec.gate is not None:
                sfeeds[st.spec.threshold_input] = np.array(NEVER[st.spec.gate.policy],
                                                           dtype=np.float32)
            outs = st.segment.run(sfeeds, check=False)
            out.append(np.asarray(outs[st.spec.logits], dtype=np.float32))
            for t in st.spec.produces:
                live[t.name] = outs[t.name]
            if k < len(self._stages) - 1:
                live = {t: live[t] for t in st.compact_axes}
        return out


def load(path: str | os.PathLike[str], threads: int | None = None) -> Program:
    """Load and verify a compiled program directory (manifest, sha256 of every stage file)."""
    p = Path(path)
    manifest = load_manifest(p)
    configure_threads(threads)
    return Program(p, manifest, threads)
