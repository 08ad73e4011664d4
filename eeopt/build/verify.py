"""The one verifier: a compiled program's chained stages must reproduce every exit of a
reference, on sample inputs at a few batch sizes, or the compile fails and writes nothing.

Every backend verifies through ``verify_exits``: onnxruntime against the original model on
ONNX Runtime, AOTInductor against the torch module, TensorRT against the onnxruntime program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from eeopt.errors import VerificationError

__all__ = ["RTOL", "ATOL", "verify_exits"]

RTOL = 1e-4
ATOL = 1e-5

Exits = Callable[[Any], Sequence[Any]]
"""Inputs -> every exit's logits (arrays, or anything ``np.asarray`` takes)."""


def verify_exits(program: Exits, reference: Exits, samples: Iterable[tuple[int, Any]], *,
                 exits: Sequence[str], what: str = "stage", rtol: float = RTOL,
                 atol: float = ATOL) -> float:
    """Check ``program(x)`` against ``reference(x)`` exit by exit for every ``(batch, x)`` of
    ``samples``; ``exits`` names the exits in messages. Returns the largest absolute error;
    raises ``VerificationError`` naming the stage, the exit and the batch at the first
    mismatch."""
    worst = 0.0
    for batch, x in samples:
        want, got = reference(x), program(x)
        for k, (w, g) in enumerate(zip(want, got, strict=True)):
            w = np.asarray(w, dtype=np.float32)
            g = np.asarray(g, dtype=np.float32)
            err = float(np.max(np.abs(w - g))) if w.size else 0.0
            worst = max(worst, err)
            if not np.allclose(g, w, rtol=rtol, atol=atol):
                raise VerificationError(
                    f"{what} {k} does not reproduce exit {exits[k]} at batch {batch} (max abs "
                    f"error {err:.3g}); please report this model to eeopt")
    return worst
