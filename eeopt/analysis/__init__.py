"""Analyses: pure functions from a graph (or a ``CutView`` of one) to frozen dataclasses. They
never change the graph, open no session and touch no file; the rewriting passes
(``eeopt.passes``) and the builders (``eeopt.build``) take their results as arguments.

- ``exit_heads``: which nodes form each exit's head (``find_exit_heads``), and the exits' order;
- ``cuts``: one stage per exit, and what crosses each cut (``compute_cuts``, ``cuts_from_view``);
- ``probe``: dtype, shape and batch axis of a tensor from its values at two batch sizes;
- ``macs``: multiply-accumulates per node.
"""

from __future__ import annotations

from eeopt.analysis.cuts import Cuts, StageCut, compute_cuts, cuts_from_view, with_shape_closure
from eeopt.analysis.exit_heads import ExitHead, ExitHeads, check_exit_order, find_exit_heads
from eeopt.analysis.macs import count_macs, model_macs
from eeopt.analysis.probe import PROBE_BATCHES, specs_from_samples

__all__ = [
    "PROBE_BATCHES",
    "Cuts",
    "ExitHead",
    "ExitHeads",
    "StageCut",
    "check_exit_order",
    "compute_cuts",
    "count_macs",
    "cuts_from_view",
    "find_exit_heads",
    "model_macs",
    "specs_from_samples",
    "with_shape_closure",
]
