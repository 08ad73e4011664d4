"""What the planner needs of learned gates: their scores as a ``Calibration``, a threshold grid
for scores in [0, 1], the rows the gates train on and the rows the planner sees."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eeopt.build import AnalysedModel
from eeopt.data import load_labelled
from eeopt.errors import UsageError
from eeopt.gates._data import GateData, collect_gate_data
from eeopt.planning import DEFAULT_GRID, Calibration

__all__ = ["LearnedCalibration", "learned_grid", "load_gate_data", "split_rows",
           "TRAIN_FRACTION"]

logger = logging.getLogger(__name__)

#: share of the calibration rows the gates train on; the planner sees only the rest
TRAIN_FRACTION = 0.5


@dataclass(frozen=True)
class LearnedCalibration(Calibration):
    """A Calibration whose gate scores are a learned policy's (``[K-1, N]``), whatever policy
    name the planner asks for: the planner's search then runs unchanged on them."""

    learned: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def scores(self, policy: str) -> np.ndarray:
        return self.learned

    def subset(self, idx: np.ndarray) -> LearnedCalibration:
        return LearnedCalibration(tuple(z[idx] for z in self.logits), self.labels[idx],
                                  self.learned[:, idx])


def learned_grid(scores: np.ndarray) -> np.ndarray:
    """Thresholds for scores in [0, 1]: an even grid, the max-prob grid (dense near 1) and the
    data's own quantiles."""
    q = np.quantile(scores, np.linspace(0.02, 0.98, 49)) if scores.size else np.zeros(0)
    return np.unique(np.concatenate([np.linspace(0.02, 0.98, 49), DEFAULT_GRID, q]))


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, rest)``: sorted row indices, a seeded random ``fraction`` of ``n`` rows and
    the others (the rows the gates train on, and the rows the planner sees)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fraction * n))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def load_gate_data(model: AnalysedModel, calib: Any, *, progress: bool
                   ) -> tuple[GateData, dict[str, np.ndarray]]:
    """The gates' training data from ``calib`` (a data set name, an ``.npz`` or a
    ``(feeds, labels)`` pair), and the calibration inputs."""
    if isinstance(calib, Calibration):
        raise UsageError("learned policies need the calibration inputs, not only the exits' "
                         "logits: pass a data set name, an .npz or a (feeds, labels) pair")
    feeds, labels = calib if isinstance(calib, tuple) else load_labelled(str(calib),
                                                                          model.inputs)
    return collect_gate_data(model, feeds, labels, progress=progress), feeds
