"""Thresholds that adapt online (Apparate's idea, SOSP'24, with a stated bound):

    served = eeopt.adapt(eeopt.load("program/"), budget=0.5, shadow=0.02)
    res = served.run(x)          # the response: the program at the current thresholds
    served.process_shadow()      # off the response path (a server's background thread)
    served.state()               # level, thresholds, live loss and its upper bound, decisions

A fraction ``shadow`` of the rows that left early are also run to the final exit, off the
response path. Their disagreement with the final exit, times the share of rows that leave early,
is exactly the budget's loss (points of accuracy lost against the final classifier) on live
traffic. It is estimated over a window of recent rows, with a one-sided Wilson upper bound.

- The estimate above the budget, on at least ``min_shadow`` shadowed rows: raise the thresholds
  one step (fewer early exits) and start a fresh window. (Raising on the upper bound alone would
  raise on calm traffic whenever too few rows were shadowed to prove it calm: with 30 shadowed
  rows and 40% leaving early, the bound is 3.3 points with no disagreement at all.)
- The upper bound below ``slack`` x budget, over a whole window: lower them one step. Lowering
  needs proof, raising only evidence: the pair is the hysteresis that keeps it from flapping.

The steps form a ladder of threshold sets, from the compiled plan (level 0) toward "no early
exit". Each step moves every gate by the same amount in its own units, so along the ladder the
early exits, their loss and their saving all fall together. Level 0 is the planner's choice: the
cheapest plan within the budget on the calibration data. ``levels_below`` steps are allowed
under it, for traffic that turns out easier than the calibration data.

Between two changes the thresholds are fixed, so every window's estimate is unbiased for the
thresholds in force. The transient after a shift lasts at most the rows it takes to fill
``min_shadow`` shadowed early rows (about ``min_shadow / (shadow x early share)`` rows).
"""

from eeopt.online._controller import (
    AdaptiveProgram,
    Decision,
    adapt,
    ladder_thresholds,
    wilson_upper,
)

__all__ = ["AdaptiveProgram", "Decision", "adapt", "ladder_thresholds", "wilson_upper"]
