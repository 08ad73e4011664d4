"""The online threshold controller (``eeopt.adapt``); see the package docstring."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from eeopt.errors import UsageError
from eeopt.kernels.reference import LEARNED_POLICIES, NEVER, gate_decision, patience_step
from eeopt.runtime import Inputs, Program, Result, load

__all__ = ["REPLAYABLE", "AdaptiveProgram", "Decision", "adapt", "ladder_thresholds",
           "replay_exits", "wilson_upper"]

logger = logging.getLogger(__name__)

#: each level up keeps this share of a score gate's gap to 1 (and of an entropy threshold)
STEP = 0.7
#: the lowest a score threshold goes on the ladder's lower rungs
MIN_SCORE = 0.01
#: shadowed rows needed before a lower bound over the budget raises the thresholds
_EARLY_EVIDENCE = 10
#: served batches and shadowed rows remembered at most (since the last change)
_MAX_MARKS = 200_000


def wilson_upper(k: int, m: int, confidence: float) -> float:
    """One-sided Wilson score upper bound on a proportion: ``k`` successes in ``m`` trials."""
    if m <= 0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    p = k / m
    centre = p + z * z / (2 * m)
    spread = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return float(min(1.0, (centre + spread) / (1 + z * z / m)))


#: the policies whose gates numpy can replay on every exit's logits (to price other levels)
REPLAYABLE = ("maxprob", "entropy", "margin", "patience")


def replay_exits(logits: Sequence[np.ndarray], policies: Sequence[str],
                 thresholds: Sequence[float]) -> np.ndarray:
    """``[N]``: where each row leaves, given every exit's logits (``kernels.reference``'s
    gates; the last exit takes every row left)."""
    n = logits[0].shape[0]
    exits = np.full(n, len(logits) - 1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    pred = streak = None
    for k, (p, t) in enumerate(zip(policies, thresholds, strict=True)):
        if p == "patience":
            pred, streak = patience_step(logits[k], pred, streak)
            fire = gate_decision(logits[k], t, p, streak)
        else:
            fire = gate_decision(logits[k], t, p)
        exits[open_ & fire] = k
        open_ &= ~fire
    return exits


def ladder_thresholds(policies: Sequence[str], compiled: Sequence[float], level: int,
                      top: int) -> list[float]:
    """The thresholds at ``level``: 0 is ``compiled``, each level up gives fewer early exits,
    ``top`` and above gives none, and negative levels give more."""
    if level >= top:
        return [float(NEVER[p]) for p in policies]
    out = []
    for p, t in zip(policies, compiled, strict=True):
        if p == "patience":
            out.append(float(max(1.0, t + level)))
        elif p == "entropy":  # fires when the entropy is at most t
            out.append(float(t * STEP ** level))
        elif p in ("maxprob", "margin") or p in LEARNED_POLICIES:  # fires when score >= t
            gap = (1.0 - min(t, 1.0)) * STEP ** level
            out.append(float(min(1.0, max(MIN_SCORE, 1.0 - gap))))
        else:
            raise UsageError(f"eeopt.adapt does not know how to move a {p!r} gate")
    return out


@dataclass(frozen=True)
class Decision:
    """One change of level: when (rows served so far), which way, and the window's evidence."""

    rows: int
    seconds: float
    action: str
    """``raise`` (fewer early exits) or ``lower`` (more)."""
    level: int
    thresholds: tuple[float, ...]
    window_rows: int
    early_share: float
    shadowed: int
    disagreed: int
    loss_pp: float
    loss_upper_pp: float


class AdaptiveProgram:
    """A program whose thresholds follow live traffic (``eeopt.adapt``). ``run`` is the
    response path; ``process_shadow`` runs the sampled rows to the final exit and may move the
    thresholds. Both are thread-safe, so a server can call ``process_shadow`` from a background
    thread."""

    def __init__(self, program: Program, budget: float, *, shadow: float = 0.02,
                 window: int = 2000, confidence: float = 0.95, min_shadow: int = 30,
                 slack: float = 0.5, levels_below: int = 2, top: int = 8,
                 max_queue: int = 4096, seed: int = 0) -> None:
        if not (math.isfinite(budget) and budget > 0):
            raise UsageError(f"the budget must be > 0 points, got {budget}")
        if not 0.0 < shadow <= 1.0:
            raise UsageError(f"the shadow fraction must be in (0, 1], got {shadow}")
        if not 0.5 < confidence < 1.0:
            raise UsageError(f"the confidence must be in (0.5, 1), got {confidence}")
        if window < 1 or min_shadow < 1 or top < 1 or levels_below < 0:
            raise UsageError("window, min_shadow and top must be >= 1, levels_below >= 0")
        if not 0.0 <= slack < 1.0:
            raise UsageError(f"slack must be in [0, 1), got {slack}")
        self.program = program
        self.budget, self.shadow, self.window = float(budget), float(shadow), int(window)
        self.confidence, self.min_shadow, self.slack = confidence, int(min_shadow), slack
        self.levels_below, self.top, self.max_queue = int(levels_below), int(top), max_queue
        self.policies = [st.gate.policy for st in program.manifest.stages if st.gate is not None]
        if not self.policies:
            raise UsageError("the program has no early exit to adapt")
        self.compiled = list(program.thresholds)
        self._final = program.num_exits - 1
        self._never = [float(NEVER[p]) for p in self.policies]
        self._replay = all(p in REPLAYABLE for p in self.policies)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self.level = 0
        self.thresholds = ladder_thresholds(self.policies, self.compiled, 0, self.top)
        self.decisions: list[Decision] = []
        self.rows = 0
        self.shadow_rows = 0
        self.shadow_seconds = 0.0
        self.dropped = 0
        # (feeds, [row ids; early answers], level served at)
        self._queue: deque[tuple[dict[str, np.ndarray], np.ndarray, int]] = deque()
        self._reset_window()

    # ------------------------------------------------------------------ window
    def _reset_window(self) -> None:
        self._since = self.rows  # the window counts only rows served at the current level
        # (last row, rows, early rows); the oldest dropped past the memory cap
        self._batches: deque[tuple[int, int, int]] = deque(maxlen=_MAX_MARKS)
        # (row, disagreed at the current level, then at each level above it, up to top)
        self._marks: deque[tuple[int, np.ndarray]] = deque(maxlen=_MAX_MARKS)

    def _window_start(self) -> int:
        """The window: the last ``window`` rows, reaching back (never past the last change) as
        far as it takes to hold ``min_shadow`` shadowed rows, so that a low early share or a
        small ``shadow`` slows the controller down instead of stalling it."""
        start = self.rows - self.window
        if len(self._marks) >= self.min_shadow:
            start = min(start, self._marks[-self.min_shadow][0])
        else:
            start = self._since
        return max(start, self._since)

    def estimate(self) -> dict[str, float]:
        """The window's rows, early share, shadowed and disagreeing rows, the loss estimate and
        its upper bound (points)."""
        with self._lock:
            return self._estimate()

    def _estimate(self, up: int = 0, start: int | None = None) -> dict[str, float]:
        """The estimate over the rows from ``start`` (default: the window) at ``up`` levels
        above the current one (replayed on the shadowed rows: the rows that leave early there
        are among those that left early here)."""
        start = self._window_start() if start is None else max(start, self._since)
        batches = [b for b in self._batches if b[0] >= start]
        rows = sum(b[1] for b in batches)
        early = sum(b[2] for b in batches)
        flags = [f[up] for r, f in self._marks if r >= start and up < len(f)]
        m = len(flags)
        k = int(sum(flags))
        share = early / rows if rows else 0.0
        loss = 100.0 * share * (k / m) if m else 0.0
        upper = 100.0 * share * wilson_upper(k, m, self.confidence) if early else 0.0
        lower = (100.0 * share * (1.0 - wilson_upper(m - k, m, self.confidence))
                 if m else 0.0)
        return {"window_rows": rows, "early_share": share, "shadowed": m, "disagreed": k,
                "loss_pp": loss, "loss_upper_pp": upper, "loss_lower_pp": lower}

    # ------------------------------------------------------------------ serving
    def run(self, x: Inputs) -> Result:
        """The program at the current thresholds; a ``shadow`` share of the rows that left
        early are queued for ``process_shadow``."""
        with self._lock:
            thresholds, level = list(self.thresholds), self.level
        res = self.program.run(x, thresholds=thresholds)
        early = res.exit < self._final
        n = int(res.exit.shape[0])
        with self._lock:
            first = self.rows
            self.rows += n
            self._batches.append((self.rows - 1, n, int(early.sum())))
            pick = np.flatnonzero(early & (self._rng.random(n) < self.shadow))
            if pick.size:
                feeds = (x if isinstance(x, dict) else {self.program.input_specs[0].name: x})
                rows = {k: np.ascontiguousarray(np.asarray(v)[pick]) for k, v in feeds.items()}
                tagged = np.stack([first + pick, res.logits[pick].argmax(axis=1)])
                self._queue.append((rows, tagged, level))
                while len(self._queue) > self.max_queue:
                    self._queue.popleft()
                    self.dropped += 1
        return res

    def process_shadow(self, max_batches: int | None = None) -> int:
        """Run queued rows to the final exit (off the response path), update the window and
        maybe move the thresholds. Returns the rows processed."""
        done = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            with self._lock:
                if not self._queue:
                    break
                feeds, tagged, level = self._queue.popleft()
            batches += 1
            t0 = time.perf_counter()
            if self._replay:  # every exit's logits: price this level and every one above
                outs = [np.asarray(z, dtype=np.float32) for z in self.program.run_all(feeds)]
                final = outs[-1].argmax(axis=1)
                stacked = np.stack(outs)
                cols = []
                for lvl in range(level, self.top + 1):
                    ex = replay_exits(outs, self.policies,
                                      ladder_thresholds(self.policies, self.compiled, lvl,
                                                        self.top))
                    pred = stacked[ex, np.arange(ex.shape[0])].argmax(axis=1)
                    cols.append((ex < self._final) & (pred != final))
                flags = np.stack(cols, axis=1)
            else:
                final = self.program.run(feeds, thresholds=self._never).logits.argmax(axis=1)
                flags = (tagged[1] != final)[:, None]
            spent = time.perf_counter() - t0
            with self._lock:
                self.shadow_seconds += spent
                self.shadow_rows += int(final.shape[0])
                done += int(final.shape[0])
                if level != self.level:  # served under thresholds no longer in force
                    continue
                for row, f in zip(tagged[0], flags, strict=True):
                    self._marks.append((int(row), f))
                self._decide()
        return done

    def _decide(self) -> None:
        est = self._estimate()
        since = self._estimate(start=self._since)
        full = est["window_rows"] >= self.window
        move = 0
        # raise on evidence: the lower bound over the budget, on the window or on everything
        # since the last change (a small excess shows only with many rows)
        over = any(e["shadowed"] >= _EARLY_EVIDENCE and e["loss_lower_pp"] > self.budget
                   for e in (est, since))
        if over and self.level < self.top:
            move = 1
            if self._replay:  # straight to the lowest level with room to spare, if one has
                for up in range(1, self.top - self.level + 1):
                    if self._estimate(up)["loss_pp"] <= self.slack * self.budget:
                        move = up
                        break
                else:
                    move = self.top - self.level
        # lower on proof: the upper bound under slack x budget over a full window
        elif full and est["loss_upper_pp"] < self.slack * self.budget and (
                est["early_share"] == 0 or est["shadowed"] >= self.min_shadow):
            move = -1 if self.level > -self.levels_below else 0
        if not move:
            return
        self.level += move
        self.thresholds = ladder_thresholds(self.policies, self.compiled, self.level, self.top)
        d = Decision(self.rows, time.perf_counter() - self._started,
                     "raise" if move > 0 else "lower", self.level, tuple(self.thresholds),
                     int(est["window_rows"]), est["early_share"], int(est["shadowed"]),
                     int(est["disagreed"]), est["loss_pp"], est["loss_upper_pp"])
        self.decisions.append(d)
        logger.info("adapt: %s to level %d (thresholds %s): window of %d rows, loss %.2f pp, "
                    "upper bound %.2f pp, budget %.2f pp", d.action, d.level,
                    [round(t, 4) for t in d.thresholds], d.window_rows, d.loss_pp,
                    d.loss_upper_pp, self.budget)
        self._reset_window()

    def state(self) -> dict[str, Any]:
        """Everything a dashboard shows: the level, thresholds, the window's estimate, the
        shadowing's cost and every decision."""
        with self._lock:
            est = self._estimate()
            return {"budget_pp": self.budget, "shadow": self.shadow, "level": self.level,
                    "thresholds": list(self.thresholds), "compiled": list(self.compiled),
                    "rows": self.rows, "shadow_rows": self.shadow_rows,
                    "shadow_seconds": self.shadow_seconds, "queued": len(self._queue),
                    "dropped": self.dropped, **est,
                    "decisions": [asdict(d) for d in self.decisions]}


def adapt(program: Program | str, budget: float, shadow: float = 0.02,
          **options: Any) -> AdaptiveProgram:
    """``program`` (or its directory) with thresholds that adapt online to hold ``budget``
    points of accuracy against the final exit; see ``AdaptiveProgram``."""
    prog = load(program) if isinstance(program, str) else program
    return AdaptiveProgram(prog, budget, shadow=shadow, **options)
