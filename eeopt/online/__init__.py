"""Thresholds that adapt online (Apparate's idea, SOSP'24, with a stated bound):

    served = eeopt.adapt(eeopt.load("program/"), budget=0.5, shadow=0.02)
    res = served.run(x)          # the response: the program at the current thresholds
    served.process_shadow()      # off the response path (a server's background thread)
    served.state()               # level, thresholds, live loss and its upper bound, decisions

A fraction ``shadow`` of the rows that left early are also run to the final exit, off the
response path. Their disagreement with the final exit, times the share of rows that leave early,
is exactly the budget's loss (points of accuracy lost against the final classifier) on live
traffic. It is estimated over a window of recent rows, with a one-sided Wilson upper bound.

- Raise on evidence: the window's lower bound (or, for a small excess that shows only over
  many rows, the lower bound over everything since the last change) above the budget. For the
  policies numpy can replay (maxprob, entropy, margin, patience) the shadow run computes every
  exit's logits, so the shadowed rows price every level above the current one (the rows that
  leave early there are among those that leave early here): the controller jumps straight to
  the lowest level whose estimate is under ``slack`` x budget. Learned gates step one level.
- Lower on proof: the window's upper bound under ``slack`` x budget over a full window. The
  pair is the hysteresis that keeps it from flapping. (Raising on the upper bound would raise
  on calm traffic whenever too few rows were shadowed to prove it calm: with 30 shadowed rows
  and 40% leaving early, the bound is 3.3 points with no disagreement at all.)

The loss is the disagreement with the final exit, which bounds the accuracy lost against it
from above (a row can only lose accuracy by disagreeing). Plan the program on labels that are
the final exit's own predictions to budget the same quantity (``benchmarks/drift.py`` does).

The steps form a ladder of threshold sets, from the compiled plan (level 0) toward "no early
exit". Each step moves every gate by the same amount in its own units, so along the ladder the
early exits, their loss and their saving all fall together. Level 0 is the planner's choice: the
cheapest plan within the budget on the calibration data. ``levels_below`` steps are allowed
under it, for traffic that turns out easier than the calibration data.

Between two changes the thresholds are fixed, so every window's estimate is unbiased for the
thresholds in force. After a shift the first raise waits for about 10 shadowed rows that show
the excess (``10 / (shadow x early share)`` rows); an excess too small to prove on a window
waits for the rows since the last change to prove it.
"""

from eeopt.online._controller import (
    REPLAYABLE,
    AdaptiveProgram,
    Decision,
    adapt,
    ladder_thresholds,
    replay_exits,
    wilson_upper,
)

__all__ = ["REPLAYABLE", "AdaptiveProgram", "Decision", "adapt", "ladder_thresholds",
           "replay_exits", "wilson_upper"]
