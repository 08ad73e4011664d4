"""Calibration: run every candidate exit over labelled data once, with no early exit (the
uncut model on ONNX Runtime), for the planner (``eeopt.planning.Calibration``)."""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from eeopt.frontend import ModelGraph
from eeopt.planning import Calibration
from eeopt.runtime import make_session

__all__ = ["calibrate"]

logger = logging.getLogger(__name__)


def calibrate(graph: ModelGraph, feeds: dict[str, np.ndarray], labels: np.ndarray, *,
              batch: int = 500, progress: bool = True) -> Calibration:
    """Every exit's logits on the calibration data, from the uncut model."""
    sess = make_session(graph.model.SerializeToString())
    names = graph.output_names
    n = labels.shape[0]
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for start in tqdm(range(0, n, batch), desc="eeopt calibrate", unit="batch",
                      disable=not progress or None, leave=False):
        outs = sess.run(names, {k: v[start:start + batch] for k, v in feeds.items()})
        for i, o in enumerate(outs):
            chunks[i].append(np.asarray(o, dtype=np.float32))
    return Calibration(tuple(np.concatenate(c) for c in chunks), labels)
