"""The one Backend protocol every engine implements, and the input checks they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from eeopt.errors import BackendUnavailableError, DataError
from eeopt.manifest import TensorSpec

__all__ = [
    "Backend",
    "CompiledSegment",
    "InputChecker",
    "check_inputs",
    "get_backend",
    "BACKENDS",
]


@runtime_checkable
class CompiledSegment(Protocol):
    """One compiled stage: runs a dict of named arrays to a dict of named arrays."""

    input_specs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Backend(Protocol):
    name: str

    def available(self) -> bool: ...

    def version(self) -> str: ...

    def compile(
        self, model: bytes, input_specs: Sequence[TensorSpec], output_names: Sequence[str]
    ) -> CompiledSegment: ...


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


def _ort() -> Backend:
    from eeopt.backends.ort import OrtBackend

    return OrtBackend()


BACKENDS = {"onnxruntime": _ort, "ort": _ort}


def get_backend(name: str) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; available: {', '.join(sorted(set(BACKENDS)))}"
        ) from None
    backend = factory()
    if not backend.available():
        raise BackendUnavailableError(f"backend {name!r} is not available on this machine")
    return backend
