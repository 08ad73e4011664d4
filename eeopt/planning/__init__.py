"""Planning: which exits to keep and each gate's threshold, from calibration data and a cost
model, under an accuracy budget. Pure functions over arrays and records: no session, no file,
no command-line flag.

- ``calibration``: ``Calibration`` (every exit's logits on labelled rows) and the exits a plan
  makes rows take;
- ``search``: the exact search over kept exits and a threshold grid;
- ``plan``: ``plan_exits`` (margin or Learn-then-Test risk control), ``evaluate_plan``,
  ``exit_benefit``;
- ``cost``: the cost model (``CostFit``, ``ProfileReport``) and its predictions.
"""

from __future__ import annotations

from eeopt.planning.calibration import (
    Calibration,
    exits_of_plan,
    local_exits,
    simulate_exits,
    simulate_patience,
    to_policy_threshold,
)
from eeopt.planning.cost import (
    ZERO,
    CostFit,
    NodeTime,
    PlannedCosts,
    ProfileReport,
    StageProfile,
    ideal_and_predicted,
)
from eeopt.planning.plan import (
    ExitPlan,
    Promise,
    ThresholdChoice,
    evaluate_plan,
    exit_benefit,
    fresh_loss_probability,
    loss_interval,
    loss_pvalue,
    pick_global_threshold,
    plan_exits,
    stage_cost_fn,
)
from eeopt.planning.search import (
    DEFAULT_GRID,
    DROP,
    Frontier,
    SearchResult,
    most_correct,
    search_thresholds,
)

__all__ = [
    "DEFAULT_GRID",
    "DROP",
    "ZERO",
    "Calibration",
    "CostFit",
    "ExitPlan",
    "Frontier",
    "Promise",
    "NodeTime",
    "PlannedCosts",
    "ProfileReport",
    "SearchResult",
    "StageProfile",
    "ThresholdChoice",
    "evaluate_plan",
    "exit_benefit",
    "fresh_loss_probability",
    "exits_of_plan",
    "ideal_and_predicted",
    "local_exits",
    "loss_interval",
    "loss_pvalue",
    "most_correct",
    "pick_global_threshold",
    "plan_exits",
    "search_thresholds",
    "simulate_exits",
    "simulate_patience",
    "stage_cost_fn",
    "to_policy_threshold",
]
