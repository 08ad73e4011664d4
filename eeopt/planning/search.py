"""The planner's search: the cheapest kept exits and thresholds with enough rows right.

A depth-first enumeration over the ordered exits, each either dropped or given a threshold from
a grid, with the last gated exit's grid evaluated in one vectorised pass and branches pruned by a
cost lower bound. It is exact over the grid; past ``max_leaves`` it falls back to coordinate
descent from the best single global threshold. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_GRID", "DROP", "Frontier", "SearchResult", "most_correct",
           "search_thresholds"]

#: candidate thresholds for max-probability-like scores: dense near 1
DEFAULT_GRID = np.unique(
    np.concatenate([np.linspace(0.3, 0.9, 31), 1.0 - np.logspace(-1, -4, 31)])
)


@dataclass(frozen=True)
class SearchResult:
    kept: tuple[int, ...]
    """Kept exits, ascending; the final exit is always last."""
    thresholds: tuple[float, ...]
    """One per kept early exit."""
    cost: float
    """Expected cost per row."""
    correct: int
    exact: bool


DROP = -1


def _levels(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``[K-1, N]``: how many grid thresholds each row's score reaches (it fires for grid
    index g iff g < level)."""
    return np.searchsorted(grid, scores, side="right").astype(np.int64)


def search_thresholds(
    scores: np.ndarray,
    correct: np.ndarray,
    stage_cost: Callable[[int, int], float],
    *,
    min_correct: int,
    grid: np.ndarray = DEFAULT_GRID,
    allow_drop: bool = True,
    max_leaves: int = 200_000,
    tolerance: float = 0.0,
) -> SearchResult:
    """Cheapest (kept exits, thresholds) with at least ``min_correct`` rows right.

    ``scores``: ``[K-1, N]``; ``correct``: ``[K, N]``; ``stage_cost(prev, k)``: per-row cost of
    the stage from kept exit ``prev`` (-1: the input) to kept exit ``k``.

    ``tolerance``: costs within this fraction of the cheapest count as equal (the cost model's
    measurement noise); among those plans the one with the most rows right wins (ties: the
    cheaper), so that noise in the timings does not pick between plans of equal cost and
    unequal accuracy. The coordinate-descent fallback ignores it.
    """
    km1, n = scores.shape
    final = km1
    # thresholds reach the runtime as float32: search over float32-exact values
    grid = np.unique(np.asarray(grid, dtype=np.float32).astype(np.float64))
    g = len(grid)
    options = g + (1 if allow_drop else 0)
    leaves = options ** max(km1 - 1, 0)
    lvl = _levels(scores, grid)
    cost_tab = {(p, k): stage_cost(p, k) for p in range(-1, final) for k in range(p + 1, final + 1)}
    if km1 == 0:
        return SearchResult((final,), (), cost_tab[(-1, final)], int(correct[final].sum()), True)
    if leaves > max_leaves:
        return _coordinate_descent(lvl, correct, cost_tab, grid, min_correct, allow_drop)
    best = _exact(lvl, correct, cost_tab, grid, min_correct, allow_drop, cap=None)
    if best is None:  # not even the final exit alone meets it (min_correct too high)
        return SearchResult((final,), (), n * cost_tab[(-1, final)],
                            int(correct[final].sum()), True)
    if tolerance > 0:
        best = _exact(lvl, correct, cost_tab, grid, min_correct, allow_drop,
                      cap=best.cost * (1.0 + tolerance)) or best
    return best


@dataclass(frozen=True)
class Frontier:
    """Every plan over the grid that no other plan beats on both cost and rows right, cheapest
    first: a search for any budget, with or without a cost tolerance, is then a lookup. Built
    by one enumeration of every plan (``Frontier.build``), worth it when a caller searches many
    budgets on the same data (the planner's margin bisection and its guarantee sequence)."""

    cost: np.ndarray
    """Ascending."""
    correct: np.ndarray
    """Strictly ascending along with the cost."""
    plans: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]

    #: enumerate at most this many leaves (each a vectorised pass over the last exit's grid)
    MAX_LEAVES = 20_000

    @classmethod
    def build(cls, scores: np.ndarray, correct: np.ndarray,
              stage_cost: Callable[[int, int], float], *, grid: np.ndarray = DEFAULT_GRID,
              allow_drop: bool = True) -> Frontier | None:
        """The frontier, or None past ``MAX_LEAVES`` (search each budget then)."""
        km1, n = scores.shape
        final = km1
        grid = np.unique(np.asarray(grid, dtype=np.float32).astype(np.float64))
        g = len(grid)
        if km1 == 0 or (g + (1 if allow_drop else 0)) ** max(km1 - 1, 0) > cls.MAX_LEAVES:
            return None
        lvl = _levels(scores, grid)
        cost_tab = {(p, k): stage_cost(p, k) for p in range(-1, final)
                    for k in range(p + 1, final + 1)}
        corr_final = correct[final]
        costs: list[np.ndarray] = []
        corrs: list[np.ndarray] = []
        which: list[np.ndarray] = []  # (prefix id, grid index or DROP) per point
        prefixes: list[tuple[tuple[int, ...], tuple[float, ...]]] = []

        def leaf(rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
                 kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
            k = km1 - 1
            m = rows.size
            pid = len(prefixes)
            prefixes.append((kept, thr))
            cf_all = int(corr_final[rows].sum())
            if allow_drop or m == 0:
                costs.append(np.array([cost_sum + m * (paid + cost_tab[(prev, final)])]))
                corrs.append(np.array([corr_sum + cf_all], dtype=np.float64))
                which.append(np.array([[pid, DROP if allow_drop else 0]]))
            if m == 0:
                return
            lv = lvl[k, rows]
            hist_n = np.bincount(lv, minlength=g + 1)
            hist_ck = np.bincount(lv, weights=correct[k, rows], minlength=g + 1)
            hist_cf = np.bincount(lv, weights=corr_final[rows], minlength=g + 1)
            fire_n = np.cumsum(hist_n[::-1])[::-1][1:]
            fire_ck = np.cumsum(hist_ck[::-1])[::-1][1:]
            stay_cf = cf_all - np.cumsum(hist_cf[::-1])[::-1][1:]
            c_here = paid + cost_tab[(prev, k)]
            costs.append(cost_sum + m * c_here + (m - fire_n) * cost_tab[(k, final)])
            corrs.append(np.round(corr_sum + fire_ck + stay_cf))
            which.append(np.stack([np.full(g, pid), np.arange(g)], axis=1))

        def twig(rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
                 kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
            # the last two gated exits at once: every threshold j of the first, then every
            # option of the second on the rows j leaves (a cumulative 2-d histogram), in the
            # order dfs + leaf would enumerate them
            k2, k = km1 - 2, km1 - 1
            if allow_drop:
                leaf(rows, paid, prev, cost_sum, corr_sum, kept, thr)
            c2 = paid + cost_tab[(prev, k2)]
            lv2, lv1 = lvl[k2, rows], lvl[k, rows]
            fire2_n = rows.size - np.cumsum(np.bincount(lv2, minlength=g + 1))[:g]
            empty = np.flatnonzero(fire2_n == 0)
            jn = int(empty[0]) + 1 if empty.size else g  # as dfs: stop after the first no-fire
            fire2_ck = (float(correct[k2, rows].sum())
                        - np.cumsum(np.bincount(lv2, weights=correct[k2, rows],
                                                minlength=g + 1))[:g])
            cell = lv2 * (g + 1) + lv1

            def stay_hist(w: np.ndarray | None) -> np.ndarray:
                h = np.bincount(cell, weights=w, minlength=(g + 1) ** 2).reshape(g + 1, g + 1)
                return np.cumsum(h, axis=0)[:jn]  # [j, level of k]: rows with lv2 <= j

            h_n = stay_hist(None)
            h_ck = stay_hist(correct[k, rows].astype(np.float64))
            h_cf = stay_hist(corr_final[rows].astype(np.float64))
            m = h_n.sum(axis=1)
            cf_all = h_cf.sum(axis=1)
            base_cost = cost_sum + fire2_n[:jn] * c2
            base_corr = corr_sum + fire2_ck[:jn]
            drop_cost = base_cost + m * (c2 + cost_tab[(k2, final)])
            drop_corr = base_corr + cf_all
            fire_n = np.cumsum(h_n[:, ::-1], axis=1)[:, ::-1][:, 1:]
            fire_ck = np.cumsum(h_ck[:, ::-1], axis=1)[:, ::-1][:, 1:]
            fire_cf = np.cumsum(h_cf[:, ::-1], axis=1)[:, ::-1][:, 1:]
            keep_cost = (base_cost[:, None] + m[:, None] * (c2 + cost_tab[(k2, k)])
                         + (m[:, None] - fire_n) * cost_tab[(k, final)])
            keep_corr = base_corr[:, None] + fire_ck + (cf_all[:, None] - fire_cf)
            block_cost = np.concatenate([drop_cost[:, None], keep_cost], axis=1)
            block_corr = np.round(np.concatenate([drop_corr[:, None], keep_corr], axis=1))
            valid = np.ones((jn, g + 1), bool)
            valid[:, 0] = allow_drop | (m == 0)
            valid[m == 0, 1:] = False
            pid0 = len(prefixes)
            for j in range(jn):
                prefixes.append((kept + (k2,), thr + (float(grid[j]),)))
            ids = np.empty((jn, g + 1, 2), np.int64)
            ids[:, :, 0] = pid0 + np.arange(jn)[:, None]
            ids[:, 0, 1] = DROP if allow_drop else 0
            ids[:, 1:, 1] = np.arange(g)
            costs.append(block_cost[valid])
            corrs.append(block_corr[valid])
            which.append(ids[valid])

        def dfs(k: int, rows: np.ndarray, paid: float, prev: int, cost_sum: float,
                corr_sum: int, kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
            if k == km1 - 1:
                leaf(rows, paid, prev, cost_sum, corr_sum, kept, thr)
                return
            if k == km1 - 2:
                twig(rows, paid, prev, cost_sum, corr_sum, kept, thr)
                return
            if allow_drop:
                dfs(k + 1, rows, paid, prev, cost_sum, corr_sum, kept, thr)
            c_here = paid + cost_tab[(prev, k)]
            lv = lvl[k, rows]
            for j in range(g):
                fire = lv > j
                nf = int(fire.sum())
                dfs(k + 1, rows[~fire], c_here, k, cost_sum + nf * c_here,
                    corr_sum + int(correct[k, rows[fire]].sum()), kept + (k,),
                    thr + (float(grid[j]),))
                if nf == 0:
                    break  # higher thresholds fire nobody either: same as the last one

        dfs(0, np.arange(n), 0.0, -1, 0.0, 0, (), ())
        cost = np.concatenate(costs)
        corr = np.concatenate(corrs)
        ids = np.concatenate(which)
        order = np.lexsort((-corr, cost))  # cheapest first; at equal cost the most right
        c = corr[order]
        # on the frontier: more right than every cheaper plan (the first such, at equal cost)
        before = np.concatenate([[-1.0], np.maximum.accumulate(c)[:-1]])
        keep = order[c > before]
        plans = []
        for i in keep:
            kept, thr = prefixes[int(ids[i, 0])]
            j = int(ids[i, 1])
            if j == DROP:
                plans.append((kept + (final,), thr))
            else:
                plans.append((kept + (km1 - 1, final), thr + (float(grid[j]),)))
        return cls(cost[keep], corr[keep].astype(np.int64), tuple(plans))

    def _result(self, i: int) -> SearchResult:
        kept, thr = self.plans[i]
        return SearchResult(kept, thr, float(self.cost[i]), int(self.correct[i]), True)

    def search(self, min_correct: int, tolerance: float = 0.0) -> SearchResult | None:
        """``search_thresholds``' answer, or None when no plan gets ``min_correct`` right."""
        i = int(np.searchsorted(self.correct, min_correct, side="left"))
        if i == len(self.correct):
            return None
        if tolerance > 0:
            cap = self.cost[i] * (1.0 + tolerance) * (1 + 1e-12)
            i = max(i, int(np.searchsorted(self.cost, cap, side="right")) - 1)
        return self._result(i)


def most_correct(scores: np.ndarray, correct: np.ndarray, *, grid: np.ndarray = DEFAULT_GRID,
                 allow_drop: bool = True, max_leaves: int = 200_000) -> int | None:
    """The most rows any plan over the grid gets right, whatever it costs (None past
    ``max_leaves``): a search asking for more has no answer, and need not run."""
    km1 = scores.shape[0]
    if km1 == 0:
        return int(correct[-1].sum())
    grid = np.unique(np.asarray(grid, dtype=np.float32).astype(np.float64))
    if (len(grid) + (1 if allow_drop else 0)) ** max(km1 - 1, 0) > max_leaves:
        return None
    free = {(p, k): 0.0 for p in range(-1, km1) for k in range(p + 1, km1 + 1)}
    best = _exact(_levels(scores, grid), correct, free, grid, 0, allow_drop, cap=math.inf)
    return None if best is None else best.correct


def _exact(lvl: np.ndarray, correct: np.ndarray, cost_tab: dict[tuple[int, int], float],
           grid: np.ndarray, min_correct: int, allow_drop: bool, cap: float | None,
           ) -> SearchResult | None:
    """The exact search over the grid: with ``cap`` None, the cheapest plan with at least
    ``min_correct`` rows right; else the plan with the most rows right (ties: the cheaper)
    among those costing at most ``cap``."""
    km1, n = lvl.shape
    final = km1
    g = len(grid)
    best: list[SearchResult | None] = [None]
    corr_final = correct[final]
    # cheapest conceivable cost of moving on from kept exit p: the cheapest next stage
    next_min = {p: min(cost_tab[(p, k)] for k in range(p + 1, final + 1))
                for p in range(-1, final)}
    # the most rows a plan could still get right from exit k on: those some exit >= k gets
    reachable = np.flip(np.logical_or.accumulate(np.flip(correct, 0), axis=0), 0)

    def better(cost: float, corr: int) -> bool:
        b = best[0]
        if b is None:
            return True
        if cap is None:
            return cost < b.cost - 1e-12
        return corr > b.correct or (corr == b.correct and cost < b.cost - 1e-12)

    def consider(cost: float, corr: int, kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        if corr < min_correct or (cap is not None and cost > cap * (1 + 1e-12)):
            return
        if better(cost, corr):
            best[0] = SearchResult(kept, thr, float(cost), int(corr), True)

    def leaf(rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
             kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        k = km1 - 1  # the last gated exit, vectorised over its grid
        m = rows.size
        cf_all = int(corr_final[rows].sum())
        # option: drop exit k
        if allow_drop:
            consider(cost_sum + m * (paid + cost_tab[(prev, final)]), corr_sum + cf_all,
                     kept + (final,), thr)
        if m == 0:
            return
        lv = lvl[k, rows]
        hist_n = np.bincount(lv, minlength=g + 1)
        hist_ck = np.bincount(lv, weights=correct[k, rows], minlength=g + 1)
        hist_cf = np.bincount(lv, weights=corr_final[rows], minlength=g + 1)
        # rows firing at grid index j have level > j
        fire_n = np.cumsum(hist_n[::-1])[::-1][1:]          # [g]: #(lv > j)
        fire_ck = np.cumsum(hist_ck[::-1])[::-1][1:]
        stay_cf = cf_all - np.cumsum(hist_cf[::-1])[::-1][1:]
        c_here = paid + cost_tab[(prev, k)]
        costs = cost_sum + m * c_here + (m - fire_n) * cost_tab[(k, final)]
        corrs = np.round(corr_sum + fire_ck + stay_cf)
        ok = corrs >= min_correct - 1e-9
        if cap is not None:
            ok &= costs <= cap * (1 + 1e-12)
        idx = np.flatnonzero(ok)
        if idx.size:
            if cap is None:
                j = int(idx[np.argmin(costs[idx])])
            else:  # most rows right, then cheapest
                j = int(idx[np.lexsort((costs[idx], -corrs[idx]))[0]])
            consider(float(costs[j]), int(corrs[j]), kept + (k, final),
                     thr + (float(grid[j]),))

    def dfs(k: int, rows: np.ndarray, paid: float, prev: int, cost_sum: float, corr_sum: int,
            kept: tuple[int, ...], thr: tuple[float, ...]) -> None:
        b = best[0]
        bound = cost_sum + rows.size * (paid + next_min[prev])  # every completion costs more
        if cap is None:
            if b is not None and bound >= b.cost:
                return
        elif bound > cap * (1 + 1e-12):
            return
        # every completion gets at most the rows some later exit gets right
        most = corr_sum + int(reachable[k, rows].sum())
        if most < min_correct or (cap is not None and b is not None and most < b.correct):
            return
        if k == km1 - 1:
            leaf(rows, paid, prev, cost_sum, corr_sum, kept, thr)
            return
        if allow_drop:
            dfs(k + 1, rows, paid, prev, cost_sum, corr_sum, kept, thr)
        c_here = paid + cost_tab[(prev, k)]
        lv = lvl[k, rows]
        for j in range(g):
            fire = lv > j
            nf = int(fire.sum())
            here = rows[fire]
            dfs(k + 1, rows[~fire], c_here, k, cost_sum + nf * c_here,
                corr_sum + int(correct[k, here].sum()), kept + (k,), thr + (float(grid[j]),))
            if nf == 0:
                break  # higher thresholds fire nobody either: same as the last one

    dfs(0, np.arange(n), 0.0, -1, 0.0, 0, (), ())
    return best[0]


def _evaluate(lvl: np.ndarray, correct: np.ndarray, cost_tab: dict[tuple[int, int], float],
              choice: Sequence[int]) -> tuple[float, int]:
    """Total cost and correct rows for one grid index (or DROP) per gated exit."""
    km1, n = lvl.shape
    final = km1
    open_ = np.ones(n, dtype=bool)
    cost = 0.0
    corr = 0
    paid = 0.0
    prev = -1
    for k, j in enumerate(choice):
        if j == DROP:
            continue
        paid += cost_tab[(prev, k)]
        fire = open_ & (lvl[k] > j)
        cost += int(fire.sum()) * paid
        corr += int(correct[k, fire].sum())
        open_ &= ~fire
        prev = k
    paid += cost_tab[(prev, final)]
    cost += int(open_.sum()) * paid
    corr += int(correct[final, open_].sum())
    return cost, corr


def _coordinate_descent(lvl: np.ndarray, correct: np.ndarray,
                        cost_tab: dict[tuple[int, int], float], grid: np.ndarray,
                        min_correct: int, allow_drop: bool) -> SearchResult:
    km1 = lvl.shape[0]
    g = len(grid)
    opts = list(range(g)) + ([DROP] if allow_drop else [])
    # start from the best single global threshold (or all dropped)
    start = [DROP] * km1 if allow_drop else [g - 1] * km1
    best_cost, best_corr = _evaluate(lvl, correct, cost_tab, start)
    best = list(start)
    for j in range(g):
        c, r = _evaluate(lvl, correct, cost_tab, [j] * km1)
        if r >= min_correct and (best_corr < min_correct or c < best_cost):
            best, best_cost, best_corr = [j] * km1, c, r
    improved = True
    while improved:
        improved = False
        for k in range(km1):
            for j in opts:
                trial = list(best)
                trial[k] = j
                c, r = _evaluate(lvl, correct, cost_tab, trial)
                if r >= min_correct and c < best_cost - 1e-12:
                    best, best_cost, best_corr, improved = trial, c, r, True
    kept = tuple(k for k in range(km1) if best[k] != DROP) + (km1,)
    thr = tuple(float(grid[best[k]]) for k in range(km1) if best[k] != DROP)
    return SearchResult(kept, thr, float(best_cost), int(best_corr), False)
