"""Benchmarks of compiled programs: ``run_bench`` (what `eeopt bench` and `make demo` run), the
frontier plot, the text report, and metrics such as the ECE. The timers themselves are
``eeopt.measure.timing``'s."""

from __future__ import annotations

from eeopt.bench.metrics import ece
from eeopt.bench.plot import plot_frontier
from eeopt.bench.report import format_bench, format_table
from eeopt.bench.run import bare_stages, plain_model_path, run_bench

__all__ = ["bare_stages", "ece", "format_bench", "format_table", "plain_model_path",
           "plot_frontier", "run_bench"]
