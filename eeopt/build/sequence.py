"""Finding the sequence axis a runtime may trim (text models with right padding).

A compacted batch keeps the padded length of its longest original row, although the rows that
remain may all be short. If the model has a ``[batch, seq]`` attention mask and its exits do not
change when padding is added, every tensor that follows the sequence length can be cut to the
longest remaining row after each compaction. ``find_sequence`` decides that at compile time:

1. the mask: the one integer or bool ``[batch, seq]`` input whose ``seq`` is symbolic (one
   named like ``*mask*`` if there are several);
2. the axes: the model runs at two padded lengths with every carried tensor exposed; an axis
   that follows the length is a sequence axis;
3. the check: the same two runs must give the same exits (within ``TOLERANCE``), i.e. padding
   changes nothing. If it does (a model that pools over padding, say), there is no trimming.

Sample masks are right-padded with random lengths (``right_padded``), so that compile-time
probing and verification see what the runtime accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from eeopt.frontend import ModelGraph
from eeopt.passes import ExposeTensors
from eeopt.program import SequenceSpec, TensorSpec
from eeopt.runtime import make_session

__all__ = ["TOLERANCE", "find_mask", "find_sequence", "right_padded"]

logger = logging.getLogger(__name__)

#: how far an exit's logits may move when padding is added for trimming to count as exact
TOLERANCE = 1e-5
#: padding positions the check adds
EXTRA = 3


def find_mask(inputs: Sequence[TensorSpec]) -> TensorSpec | None:
    """The attention-mask input, if the model has exactly one candidate (see the module)."""
    cands = [s for s in inputs if len(s.shape) == 2 and s.batch_axis == 0
             and isinstance(s.shape[1], str) and np.dtype(s.dtype).kind in "iub"]
    if len(cands) > 1:
        cands = [s for s in cands if "mask" in s.name.lower()]
    return cands[0] if len(cands) == 1 else None


def right_padded(feeds: Mapping[str, np.ndarray], mask: str, seed: int) -> dict[str, np.ndarray]:
    """``feeds`` with ``mask`` replaced by right padding of random lengths (1 to the full
    length; the first row full) and every other integer input zeroed where it is padding."""
    m = feeds[mask]
    n, t = m.shape
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, n)
    if n:
        lengths[0] = t
    keep = np.arange(t)[None, :] < lengths[:, None]
    out = dict(feeds)
    out[mask] = keep.astype(m.dtype)
    for name, a in feeds.items():
        if name != mask and a.ndim >= 2 and a.shape[:2] == (n, t) and a.dtype.kind in "iu":
            out[name] = np.where(keep.reshape(n, t, *([1] * (a.ndim - 2))), a, 0).astype(a.dtype)
    return out


def _padded(feeds: Mapping[str, np.ndarray], axes: Mapping[str, int],
            extra: int) -> dict[str, np.ndarray]:
    """``feeds`` with ``extra`` zero positions appended along each input's sequence axis."""
    out = dict(feeds)
    for name, axis in axes.items():
        a = feeds[name]
        width = [(0, 0)] * a.ndim
        width[axis] = (0, extra)
        out[name] = np.pad(a, width)
    return out


def find_sequence(graph: ModelGraph, inputs: Sequence[TensorSpec],
                  feeds: Mapping[str, np.ndarray], carried: Sequence[str],
                  outputs: Sequence[str]) -> SequenceSpec | None:
    """The model's trimmable sequence axes, or None (see the module). ``feeds``: sample inputs
    (several rows; the mask right-padded), ``carried``: the tensors that cross a cut."""
    mask = find_mask(inputs)
    if mask is None:
        return None
    symbol = mask.shape[1]
    m = feeds[mask.name]
    if m.ndim != 2 or m.shape[0] < 1 or not np.isin(m, (0, 1)).all() or bool(
            (m[:, 1:] > m[:, :-1]).any()):
        logger.info("no sequence trimming: the sample mask %r is not right padding of 0/1",
                    mask.name)
        return None
    in_axes: dict[str, int] = {}
    for s in inputs:
        hits = [ax for ax, d in enumerate(s.shape) if d == symbol and ax != s.batch_axis]
        if len(hits) > 1:
            logger.info("no sequence trimming: input %r has the length on several axes", s.name)
            return None
        if hits:
            in_axes[s.name] = hits[0]
    length = int(m.shape[1])
    fetch = list(dict.fromkeys([*outputs, *(c for c in carried if c not in in_axes)]))
    tapped = ExposeTensors([c for c in fetch if c not in outputs])(graph).graph
    session = make_session(tapped.model.SerializeToString())
    short = dict(zip(fetch, session.run(fetch, dict(feeds)), strict=True))
    long = dict(zip(fetch, session.run(fetch, _padded(feeds, in_axes, EXTRA)), strict=True))
    worst = max(float(np.max(np.abs(short[o].astype(np.float64) - long[o])))
                if short[o].size else 0.0 for o in outputs)
    if not worst <= TOLERANCE:
        logger.info("no sequence trimming: the exits change by %.2e when padding is added "
                    "(the model reads padded positions)", worst)
        return None
    axes = dict(in_axes)
    for c in fetch:
        if c in outputs and c not in carried:
            continue
        a, b = short[c], long[c]
        hits = [ax for ax in range(a.ndim) if a.shape[ax] == length
                and b.shape[ax] == length + EXTRA]
        if len(hits) > 1:
            logger.info("no sequence trimming: carried tensor %r has the length on several "
                        "axes %s", c, hits)
            return None
        if hits:
            axes[c] = hits[0]
    logger.info("sequence axis: mask %r; trims %s", mask.name, axes)
    return SequenceSpec(mask=mask.name, axes=axes)
