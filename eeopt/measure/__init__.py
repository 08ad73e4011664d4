"""Measurement on the target machine: timing primitives, the profile the planner prices plans
with, calibration runs, and the closed loop that corrects the profile by running a plan.

- ``timing``: interleaved timers (``time_interleaved``, ``compare_batch1``,
  ``compare_throughput``, ``measure_means``);
- ``profile``: ``profile_model`` -> ``ProfileReport``;
- ``calibrate``: every exit's logits on labelled data -> ``Calibration``;
- ``closed_loop``: ``measure_corrections``.
"""

from __future__ import annotations

from eeopt.measure.calibrate import calibrate
from eeopt.measure.closed_loop import measure_corrections
from eeopt.measure.profile import profile_model
from eeopt.measure.timing import (
    Comparison,
    LatencyStats,
    Runner,
    compare_batch1,
    compare_throughput,
    measure_means,
    time_interleaved,
)

__all__ = [
    "Comparison",
    "LatencyStats",
    "Runner",
    "calibrate",
    "compare_batch1",
    "compare_throughput",
    "measure_corrections",
    "measure_means",
    "profile_model",
    "time_interleaved",
]
