"""Learned exit decisions, compiled into the same program format as the fixed gates.

    from eeopt.gates import collect_gate_data, train_gates
    gates = train_gates("jei", data)            # or "gate-unit", "cost-sensitive", "twin"
    eeopt.compile(model, "program/", policy="jei", gates=gates, threshold=0.5)
    eeopt.compile(model, "program/", policy="jei", calib="fashion-mnist:val", budget=0.5)

The compile itself is ``eeopt.compile(..., policy=...)`` (``eeopt.compiler.learned``); this
package trains the gates and gives the planner their scores.

Policies (``LEARNED_POLICIES``), each a small network whose weights are fused into the stage:

- ``jei``: JEI-DNN (arXiv 2310.09163) gates, trained on oracle exits ``argmin CE + lambda c``;
- ``gate-unit``: CN111445026A's gate unit, labelled with each row's earliest correct exit;
- ``cost-sensitive``: Bolukbasi et al. (ICML 2017), weighted binary classifiers trained backward
  from the last exit, with ``tau`` pricing time;
- ``twin``: EP4356304A1 claim 2, a distilled network that picks the exit from the input.

Torch is needed to train (imported lazily); compiled programs run without it. The formulas and
design are in ``docs/gating.md``.
"""

from __future__ import annotations

from eeopt.gates._data import GateData, collect_gate_data, earliest_correct, exit_costs
from eeopt.gates._nets import GateNet, gate_net_from, torch_logit_features, torch_pool
from eeopt.gates._planning import (
    TRAIN_FRACTION,
    LearnedCalibration,
    learned_grid,
    load_gate_data,
    split_rows,
)
from eeopt.gates._policies import (
    DEFAULT_LAMBDA,
    DEFAULT_TAU,
    GateSet,
    jei_paper_exits,
    oracle_exit,
    train_gates,
)
from eeopt.gates._reference import reference_run, reference_scores
from eeopt.kernels.reference import LEARNED_POLICIES

__all__ = [
    "DEFAULT_LAMBDA",
    "DEFAULT_TAU",
    "LEARNED_POLICIES",
    "TRAIN_FRACTION",
    "GateData",
    "GateNet",
    "GateSet",
    "LearnedCalibration",
    "collect_gate_data",
    "earliest_correct",
    "exit_costs",
    "gate_net_from",
    "jei_paper_exits",
    "learned_grid",
    "load_gate_data",
    "oracle_exit",
    "reference_run",
    "reference_scores",
    "split_rows",
    "torch_logit_features",
    "torch_pool",
    "train_gates",
]
