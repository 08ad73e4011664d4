"""Training of each learned exit policy from calibration data (heads frozen), and the trained
gates as one ``GateSet``: numpy scores for the planner, ``LearnedGate``s for the compiler.

Notation: exits ``k = 0..K-1`` (``K-1`` the final classifier), ``z_k`` logits, ``CE_k`` the
per-row cross-entropy, ``err_k`` the 0/1 error, ``c_k`` the fraction of the model's cost paid by
a row leaving at exit ``k``. The formulas are in ``docs/gating.md``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from eeopt.errors import UsageError
from eeopt.gates._data import GateData, earliest_correct, require_route
from eeopt.gates._nets import fit_mlp
from eeopt.kernels.onnx_learned_gate import LearnedGate, MLPParams
from eeopt.kernels.reference import (
    LEARNED_POLICIES,
    learned_score,
    logit_gate_features,
    twin_route,
)

__all__ = ["GateSet", "train_gates", "DEFAULT_LAMBDA", "DEFAULT_TAU", "oracle_exit",
           "jei_paper_exits"]

logger = logging.getLogger(__name__)

#: JEI-DNN's trade-off between a row's cross-entropy and its normalised MACs
DEFAULT_LAMBDA = 0.3
#: Bolukbasi et al.'s price of time, in 0/1-loss units per whole-model time
DEFAULT_TAU = 0.2
STEPS = 300
#: the ``format`` field of a saved GateSet (``GateSet.save``)
GATESET_FORMAT = "eeopt-gates/1"


@dataclass(frozen=True)
class GateSet:
    """Trained gates for one policy over every early exit of a model (the twin: one network,
    ``K`` outputs, in ``mlps[0]``)."""

    policy: str
    mlps: tuple[MLPParams, ...]
    sources: tuple[str, ...]
    tensor_names: tuple[str | None, ...]
    tensor_ranks: tuple[int, ...]
    num_exits: int
    route_input: str | None = None
    route_pool: int = 0
    route_rank: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    route_shape: tuple[int, ...] = ()

    def features(self, data: GateData, k: int) -> np.ndarray:
        """Gate ``k``'s input matrix, as the compiled gate computes it."""
        if self.policy == "twin":
            require_route(data)
            assert data.route_x is not None
            return data.route_x
        f = logit_gate_features(data.logits[k])
        if self.sources[k] == "tensor+logits":
            t = data.tensors[k]
            assert t is not None
            f = np.concatenate([t, f], axis=1)
        return f

    def scores(self, data: GateData) -> np.ndarray:
        """``[K-1, N]`` float32: each early exit's score (fires when ``>= threshold``)."""
        if self.policy == "twin":
            p = self.mlps[0]
            cols = tuple(range(self.num_exits - 1))
            return twin_route(self.features(data, 0), p.mean, p.inv_std, p.weights, p.biases,
                              cols).T.copy()
        return np.stack([learned_score(self.features(data, k), m.mean, m.inv_std, m.weights,
                                       m.biases) for k, m in enumerate(self.mlps)])

    def learned_gates(self, kept: Sequence[int]) -> list[LearnedGate]:
        """One compiled gate per kept early exit (``kept`` ends with the final exit)."""
        early = list(kept)[:-1]
        if self.policy == "twin":
            cols = tuple(early)
            return [LearnedGate(self.policy, "route", self.mlps[0] if j == 0 else None,
                                tensor=self.route_input if j == 0 else None,
                                pool=self.route_pool, rank=self.route_rank, columns=cols,
                                input_shape=self.route_shape,
                                column=j) for j in range(len(early))]
        return [LearnedGate(self.policy, self.sources[k], self.mlps[k],
                            tensor=self.tensor_names[k] if self.sources[k] == "tensor+logits"
                            else None, rank=self.tensor_ranks[k]) for k in early]

    def describe(self) -> dict[str, Any]:
        return {"policy": self.policy, "gates": [m.to_dict() for m in self.mlps],
                "sources": list(self.sources), **self.info}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gates to an ``.npz`` (arrays plus a JSON header; ``GateSet.load`` reads
        it back, no pickle)."""
        arrays: dict[str, np.ndarray] = {}
        for i, m in enumerate(self.mlps):
            arrays[f"mlp{i}_mean"] = np.asarray(m.mean, dtype=np.float32)
            arrays[f"mlp{i}_inv_std"] = np.asarray(m.inv_std, dtype=np.float32)
            for j, (w, b) in enumerate(zip(m.weights, m.biases, strict=True)):
                arrays[f"mlp{i}_w{j}"] = np.asarray(w, dtype=np.float32)
                arrays[f"mlp{i}_b{j}"] = np.asarray(b, dtype=np.float32)
        header = {"format": GATESET_FORMAT, "policy": self.policy, "num_exits": self.num_exits,
                  "layers": [len(m.weights) for m in self.mlps], "sources": list(self.sources),
                  "tensor_names": list(self.tensor_names),
                  "tensor_ranks": list(self.tensor_ranks), "route_input": self.route_input,
                  "route_pool": self.route_pool, "route_rank": self.route_rank,
                  "route_shape": list(self.route_shape), "info": self.info}
        arrays["header"] = np.frombuffer(json.dumps(header, default=float).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GateSet:
        """Read gates written by ``save``; a missing or malformed file raises ``UsageError``."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("format") != GATESET_FORMAT:
                    raise ValueError(f"not an eeopt gate file (format {header.get('format')!r})")
                mlps = tuple(MLPParams(
                    mean=z[f"mlp{i}_mean"], inv_std=z[f"mlp{i}_inv_std"],
                    weights=tuple(z[f"mlp{i}_w{j}"] for j in range(n)),
                    biases=tuple(z[f"mlp{i}_b{j}"] for j in range(n)))
                    for i, n in enumerate(header["layers"]))
                gs = cls(str(header["policy"]), mlps, tuple(header["sources"]),
                         tuple(header["tensor_names"]), tuple(int(r) for r in
                                                              header["tensor_ranks"]),
                         int(header["num_exits"]), header["route_input"],
                         int(header["route_pool"]), int(header["route_rank"]),
                         dict(header["info"]), tuple(int(d) for d in header["route_shape"]))
        except FileNotFoundError:
            raise UsageError(f"gate file {os.fspath(path)} not found") from None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise UsageError(f"gate file {os.fspath(path)} is not a valid eeopt gate file "
                             f"(the .npz GateSet.save writes): "
                             f"{type(exc).__name__}: {exc}") from None
        want = 1 if gs.policy == "twin" else gs.num_exits - 1
        if len(gs.mlps) != want or len(gs.sources) != len(gs.mlps):
            raise UsageError(f"gate file {os.fspath(path)} is malformed: {len(gs.mlps)} gates "
                             f"for {gs.num_exits} exits")
        return gs


def _ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return lse - z[np.arange(len(y)), y]


def oracle_exit(data: GateData, lam: float) -> np.ndarray:
    """JEI-DNN's oracle ``l* = argmin_l CE_l + lambda * c_l`` per row."""
    ce = np.stack([_ce(z, data.labels) for z in data.logits])
    return np.argmin(ce + lam * data.macs[:, None], axis=0).astype(np.int64)


def jei_paper_exits(scores: np.ndarray) -> np.ndarray:
    """JEI-DNN's own inference rule from the gate outputs ``g_l`` (``[K-1, N]``): ``P_l = max(0,
    min(g_l, 1 - sum_{j<l} g_j))``, exit at the first ``l`` with ``P_l / prod_{j<l}(1 - P_j)
    >= 0.5``, else the final exit. Used for reporting; the compiled jei gate tests ``g_l >= t``."""
    km1, n = scores.shape
    g = scores.astype(np.float64)
    exits = np.full(n, km1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    used = np.zeros(n)
    surv = np.ones(n)
    for k in range(km1):
        p = np.maximum(0.0, np.minimum(g[k], 1.0 - used))
        fire = open_ & (p >= 0.5 * np.maximum(surv, 1e-12)) & (p > 0)
        exits[fire] = k
        open_ &= ~fire
        used += g[k]
        surv *= 1.0 - p
    return exits


def _pos_weight(y: np.ndarray) -> float:
    pos = float(y.sum())
    neg = float(y.size - pos)
    return min(5.0, neg / pos) if pos > 0 else 1.0


def train_gates(policy: str, data: GateData, *, lam: float | None = None,
                tau: float | None = None, time_frac: Sequence[float] | np.ndarray | None = None,
                seed: int = 0, steps: int = STEPS, progress: bool = True) -> GateSet:
    """Train ``policy``'s gates on ``data`` (heads frozen). ``time_frac``: per exit, the share
    of the plain network's time a row leaving there pays (the cost-sensitive policy's time; the
    MACs fraction when None)."""
    if policy not in LEARNED_POLICIES:
        raise UsageError(f"{policy!r} is not a learned policy; choose one of "
                         f"{', '.join(LEARNED_POLICIES)}")
    k = data.num_exits
    km1 = k - 1
    correct = data.correct()
    n_nets = 1 if policy == "twin" else km1
    bar = tqdm(total=n_nets * steps, desc=f"eeopt gates: train {policy}", unit="step",
               disable=not progress or None, leave=False)
    sources = ["logits"] * km1
    info: dict[str, Any] = {"train_rows": data.rows, "steps": steps, "seed": seed}
    mlps: list[MLPParams] = []
    try:
        if policy == "jei":
            lam = DEFAULT_LAMBDA if lam is None else float(lam)
            star = oracle_exit(data, lam)
            info.update(lam=lam, macs_frac=data.macs.tolist(),
                        oracle_fractions=(np.bincount(star, minlength=k) / data.rows).tolist())
            for e in range(km1):
                y = (star <= e).astype(np.float32)  # t_l = 1 for l >= l*
                x = logit_gate_features(data.logits[e])
                mlps.append(fit_mlp(x, y, pos_weight=_pos_weight(y), hidden=(), seed=seed + e,
                                    steps=steps, bar=bar))
        elif policy == "gate-unit":
            first = earliest_correct(correct)
            for e in range(km1):
                y = (first <= e).astype(np.float32)
                x = logit_gate_features(data.logits[e])
                if data.tensors[e] is not None:
                    sources[e] = "tensor+logits"
                    x = np.concatenate([data.tensors[e], x], axis=1)  # type: ignore[list-item]
                mlps.append(fit_mlp(x, y, hidden=(16,), seed=seed + e, steps=steps, bar=bar))
            info["label_fractions"] = [float((first <= e).mean()) for e in range(km1)]
        elif policy == "cost-sensitive":
            tau = DEFAULT_TAU if tau is None else float(tau)
            t = np.asarray(time_frac if time_frac is not None else data.macs, dtype=np.float64)
            err = (~correct).astype(np.float64)
            info.update(tau=tau, time_frac=t.tolist())
            trained: dict[int, MLPParams] = {}
            labels_frac = {}
            for e in range(km1 - 1, -1, -1):  # backward from the last early exit
                down = np.full(data.rows, km1, dtype=np.int64)
                open_ = np.ones(data.rows, dtype=bool)
                for j in range(e + 1, km1):  # the downstream policy, already trained
                    m = trained[j]
                    s = learned_score(logit_gate_features(data.logits[j]), m.mean, m.inv_std,
                                      m.weights, m.biases)
                    fire = open_ & (s >= 0.5)
                    down[fire] = j
                    open_ &= ~fire
                rows = np.arange(data.rows)
                cont = err[down, rows] + tau * (t[down] - t[e])
                here = err[e]
                y = (here <= cont).astype(np.float32)  # exiting costs no more than going on
                w = np.abs(here - cont)
                if w.sum() <= 0:
                    w = np.ones_like(w)
                labels_frac[e] = float(y.mean())
                trained[e] = fit_mlp(logit_gate_features(data.logits[e]), y, weights=w,
                                     hidden=(8,), seed=seed + e, steps=steps, bar=bar)
            mlps = [trained[e] for e in range(km1)]
            info["exit_label_fractions"] = [labels_frac[e] for e in range(km1)]
        else:  # twin
            require_route(data)
            assert data.route_x is not None
            y = earliest_correct(correct)
            info["target_fractions"] = (np.bincount(y, minlength=k) / data.rows).tolist()
            mlps.append(fit_mlp(data.route_x, y, kind="multiclass", classes=k, hidden=(32,),
                                seed=seed, steps=steps, bar=bar))
            sources = ["route"]
    finally:
        bar.close()
    gs = GateSet(policy, tuple(mlps), tuple(sources), data.tensor_names, data.tensor_ranks, k,
                 data.route_input, data.route_pool, data.route_rank, info, data.route_shape)
    logger.info("trained %s gates on %d rows", policy, data.rows)
    return gs
