"""The one verifier: a compiled program's chained stages must reproduce every exit of a
reference, on sample inputs at a few batch sizes, or the compile fails and writes nothing.

Every backend verifies through ``verify_exits``: onnxruntime against the original model on
ONNX Runtime, AOTInductor against the torch module, TensorRT against the onnxruntime program.
NaN where the reference has NaN matches: that NaN is the model's own, on these inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from eeopt.errors import VerificationError

__all__ = ["RTOL", "ATOL", "verify_exits"]

logger = logging.getLogger(__name__)

RTOL = 1e-4
ATOL = 1e-5

Exits = Callable[[Any], Sequence[Any]]
"""Inputs -> every exit's logits (arrays, or anything ``np.asarray`` takes)."""


def verify_exits(program: Exits, reference: Exits, samples: Iterable[tuple[int, Any]], *,
                 exits: Sequence[str], what: str = "stage", rtol: float = RTOL,
                 atol: float = ATOL) -> float:
    """Check ``program(x)`` against ``reference(x)`` exit by exit for every ``(batch, x)`` of
    ``samples``; ``exits`` names the exits in messages. Returns the largest absolute error
    (over the values both give as numbers); raises ``VerificationError`` naming the stage, the
    exit and the batch at the first mismatch, and saying when the reference itself gave NaN
    there (the model's doing on these inputs, not eeopt's)."""
    worst = 0.0
    for batch, x in samples:
        want, got = reference(x), program(x)
        for k, (w, g) in enumerate(zip(want, got, strict=True)):
            w = np.asarray(w, dtype=np.float32)
            g = np.asarray(g, dtype=np.float32)
            both = np.isfinite(w) & np.isfinite(g)
            err = float(np.max(np.abs(w - g)[both])) if both.any() else 0.0
            worst = max(worst, err)
            model_nan = bool(np.isnan(w).any())
            bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            if bad.any():
                if np.isnan(w[bad]).all():  # the stages differ only where the model gave NaN
                    raise VerificationError(
                        f"{what} {k} does not reproduce exit {exits[k]} at batch {batch}, and "
                        "the model itself gives NaN there on the verification inputs (random "
                        "values unless given): that is the model's, not eeopt's; pass "
                        "{example_inputs} that suit it")
                raise VerificationError(
                    f"{what} {k} does not reproduce exit {exits[k]} at batch {batch} (max abs "
                    f"error {err:.3g}); please report this model to eeopt")
            if model_nan:
                logger.warning("the model gives NaN at exit %s on the verification inputs; the "
                               "stages give NaN at the same places", exits[k])
    return worst
