"""JEI-DNN's alternating training (Regol, Chataoui, Coates, ICLR 2024, arXiv 2310.09163) on the
torch model: a frozen backbone, the exit heads (the paper's inference modules, IMs) and one
gate per early exit (gating modules, GMs) trained in turn.

    from eeopt.train import train_jei
    res = train_jei(load_demo_cnn(), data="fashion-mnist", lam=0.3, epochs=2)
    res.gateset.save("gates.npz")          # eeopt compile ... --policy jei --gates gates.npz

- IM phase (``alternate`` batches): the heads train on ``sum_l CE_l`` (the released code's
  weighting reduces to the plain sum); the gates are untouched.
- Gate phase (the next ``alternate`` batches): with the heads fixed (eval mode), the oracle
  exit ``l* = argmin_l CE_l + lambda * c_l`` (``c_l`` = MACs to exit ``l`` over the whole
  model's, every earlier head included) gives the targets ``t_l = 1[l >= l*]``; each gate
  ``g_l = sigmoid(Linear(4 -> 1)(f(sg(z_l))))`` on the four detached softmax statistics is
  trained with BCE-with-logits, positives weighted by ``min(5, #neg/#pos)`` (per batch).

The backbone is frozen, so its features at every head's input are computed once (eval mode)
and cached: an epoch then costs only the heads. Each gate standardises its features with the
mean and spread measured once, on the training rows, under the starting heads; the
standardisation is part of the gate (``MLPParams``), so the compiled gate is the trained one.
SGD (momentum 0.9, weight decay 5e-4) for both, cosine decay from ``lr`` to ``lr / 50`` over
all steps, as in the paper. The gates come out as an ``eeopt.gates.GateSet`` (policy ``jei``,
source ``logits``): the same form ``eeopt.gates.train_gates`` produces, so ``eeopt.compile(...,
policy="jei", gates=...)`` and the planner take them unchanged. ``docs/training.md`` and
``docs/gating.md`` describe the design.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from eeopt.errors import UsageError
from eeopt.gates import GateNet, GateSet, jei_paper_exits, torch_logit_features
from eeopt.models.demo_cnn import DemoCNN, count_exit_macs
from eeopt.train._fit import load_train_val

__all__ = ["DEFAULT_ALTERNATE", "DEFAULT_LR", "JEIResult", "backbone_features", "jei_exits",
           "torch_reference", "train_jei"]

logger = logging.getLogger(__name__)

#: batches per phase before switching between heads and gates (the paper: about 200)
DEFAULT_ALTERNATE = 200
#: the paper's SGD learning rate (cosine decay to ``lr / 50``)
DEFAULT_LR = 0.01
_MIN_LR_FRACTION = 0.02


@dataclass
class JEIResult:
    """What ``train_jei`` returns: the model (heads retrained in place), the torch gate
    modules (pre-activation: ``sigmoid(gate(features))`` is the score), the same gates as a
    ``GateSet`` and the run's record."""

    model: nn.Module
    gates: list[nn.Module]
    gateset: Any
    metrics: dict[str, Any] = field(default_factory=dict)


def _parts(model: nn.Module) -> tuple[nn.ModuleList | None, nn.ModuleList]:
    """``(segments, heads)``; ``segments`` is None for a model that computes its heads' inputs
    itself (``exit_features``, as ``TextBatch`` over MiniLM does)."""
    heads = getattr(model, "heads", None)
    if (callable(getattr(model, "exit_features", None)) and isinstance(heads, nn.ModuleList)
            and len(heads) >= 2):
        return None, heads
    segments = getattr(model, "segments", None)
    if not (isinstance(segments, nn.ModuleList) and isinstance(heads, nn.ModuleList)
            and len(segments) == len(heads) >= 2):
        raise UsageError("the jei objective trains models built as a chain of `segments` with "
                         "one head each in `heads` (as DemoCNN is), or with `exit_features(x)` "
                         "giving every head's input (as TextBatch over MiniLM does)")
    return segments, heads


@torch.no_grad()
def backbone_features(model: nn.Module, x: torch.Tensor, batch: int = 500) -> list[torch.Tensor]:
    """The frozen backbone's output at every head's input (eval mode), one tensor per exit."""
    segments, heads = _parts(model)
    was = model.training
    model.eval()
    chunks: list[list[torch.Tensor]] = [[] for _ in heads]
    try:
        for start in range(0, x.shape[0], batch):
            h = x[start:start + batch]
            if segments is None:
                outs = model.exit_features(h)  # type: ignore[operator]
            else:
                if h.dim() == 4:
                    h = h.contiguous(memory_format=torch.channels_last)
                outs = []
                for seg in segments:
                    h = seg(h)
                    outs.append(h)
            for k, f in enumerate(outs):
                chunks[k].append(f.contiguous())
    finally:
        model.train(was)
    return [torch.cat(c) for c in chunks]


def _head_logits(heads: nn.ModuleList, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [h(f) for h, f in zip(heads, feats, strict=True)]


@torch.no_grad()
def _eval_logits(heads: nn.ModuleList, feats: Sequence[torch.Tensor], batch: int = 1000
                 ) -> list[torch.Tensor]:
    was = heads.training
    heads.eval()
    try:
        n = feats[0].shape[0]
        parts = [_head_logits(heads, [f[i:i + batch] for f in feats]) for i in range(0, n, batch)]
    finally:
        heads.train(was)
    return [torch.cat([p[k] for p in parts]) for k in range(len(feats))]


def _per_row_ce(logits: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return torch.stack([F.cross_entropy(z.double(), y, reduction="none") for z in logits])


def _oracle(logits: Sequence[torch.Tensor], y: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """``l* = argmin_l CE_l + lambda * c_l`` per row (``costs`` already times lambda)."""
    return torch.argmin(_per_row_ce(logits, y) + costs[:, None], dim=0)


def _gate_loss(gates: Sequence[nn.Module], logits: Sequence[torch.Tensor], star: torch.Tensor
               ) -> tuple[torch.Tensor, list[float]]:
    total = torch.zeros((), dtype=torch.float32)
    parts = []
    for k, g in enumerate(gates):
        t = (star <= k).float()  # t_l = 1 for l >= l*
        pos = float(t.sum())
        neg = float(t.numel()) - pos
        pw = torch.tensor(min(5.0, neg / pos) if pos > 0 else 1.0)
        s = g(torch_logit_features(logits[k].detach()))[:, 0]
        loss = F.binary_cross_entropy_with_logits(s, t, pos_weight=pw)
        total = total + loss
        parts.append(float(loss.detach()))
    return total, parts


@torch.no_grad()
def _scores(gates: Sequence[nn.Module], logits: Sequence[torch.Tensor]) -> np.ndarray:
    return np.stack([torch.sigmoid(g(torch_logit_features(z))[:, 0]).numpy()
                     for g, z in zip(gates, logits, strict=False)])


def jei_exits(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Each row's first early exit whose score reaches its threshold, else the final exit."""
    km1, n = scores.shape
    exits = np.full(n, km1, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for k, t in enumerate(thresholds):
        fire = open_ & (scores[k] >= np.float32(t))
        exits[fire] = k
        open_ &= ~fire
    return exits


@torch.no_grad()
def torch_reference(model: nn.Module, gates: Sequence[nn.Module], x: torch.Tensor,
                    thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pure torch: ``(exits [N], logits [N, C], scores [K-1, N])`` of the model's exits and the
    gate modules, each row leaving at its first gate with ``score >= threshold``."""
    was = model.training
    model.eval()
    try:
        outs = [z.float() for z in model(x)]
    finally:
        model.train(was)
    scores = _scores(gates, outs[:-1])
    exits = jei_exits(scores, thresholds)
    logits = torch.stack(outs).numpy()[exits, np.arange(x.shape[0])]
    return exits, logits, scores


def _offline(gates: Sequence[nn.Module], logits: Sequence[torch.Tensor], y: torch.Tensor,
             macs: np.ndarray) -> dict[str, Any]:
    """Validation summary at ``g >= 0.5`` and with the paper's inference rule."""
    scores = _scores(gates, logits[:-1])
    z = torch.stack(list(logits)).numpy()
    yy = y.numpy()
    out: dict[str, Any] = {}
    for name, exits in (("threshold_0.5", jei_exits(scores, [0.5] * scores.shape[0])),
                        ("paper_rule", jei_paper_exits(scores))):
        pred = z[exits, np.arange(len(yy))].argmax(1)
        out[name] = {"accuracy": round(float((pred == yy).mean()), 4),
                     "macs_fraction": round(float(macs[exits].mean()), 4),
                     "exit_fractions": [round(float(v), 4) for v in
                                        np.bincount(exits, minlength=len(logits)) / len(yy)]}
    return out


def _lr_at(step: int, total: int, peak: float) -> float:
    lo = peak * _MIN_LR_FRACTION
    return lo + 0.5 * (peak - lo) * (1.0 + math.cos(math.pi * step / max(1, total)))


def train_jei(
    model: nn.Module,
    data: str | tuple[Any, Any] = "fashion-mnist",
    *,
    lam: float = 0.3,
    epochs: int = 1,
    alternate: int = DEFAULT_ALTERNATE,
    limit: int | None = None,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    gate_lr: float | None = None,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    threads: int = 1,
    macs: Sequence[float] | None = None,
    val_data: tuple[Any, Any] | None = None,
    val_limit: int | None = None,
    progress: bool = True,
    feature_batch: int = 500,
) -> JEIResult:
    """Alternate JEI-DNN's IM and gate phases every ``alternate`` batches for ``epochs`` over
    ``data`` (a data set name: its train split, validated on val; or an ``(inputs, labels)``
    pair) with the backbone frozen. ``macs``: per exit, the cumulative MACs (any unit; the
    default counts DemoCNN's, or asks the model's ``exit_macs()``). ``feature_batch``: rows per
    call while the backbone's features are cached. Returns the model (heads retrained in
    place), the gates and a record of the run (phase losses, oracle exit fractions, per-exit
    validation accuracy)."""
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    if alternate < 1:
        raise UsageError(f"{{alternate}} must be >= 1 batch, got {alternate}")
    if not (math.isfinite(lam) and lam >= 0):
        raise UsageError(f"{{lam}} {lam} must be >= 0")
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"lr must be > 0, got {lr}")
    gate_lr = lr if gate_lr is None else float(gate_lr)
    _, heads = _parts(model)
    num_exits = len(heads)
    if macs is None:
        if isinstance(model, DemoCNN):
            macs = count_exit_macs(model)["cumulative"]
        elif callable(getattr(model, "exit_macs", None)):
            macs = model.exit_macs()  # type: ignore[operator]
        else:
            raise UsageError("pass macs= (cumulative MACs per exit) for a model other than "
                             "DemoCNN")
    macs_arr = np.asarray(macs, dtype=np.float64)
    if macs_arr.shape != (num_exits,) or not macs_arr[-1] > 0:
        raise UsageError(f"macs must give {num_exits} cumulative counts, got {list(macs)}")
    c = np.maximum.accumulate(np.clip(macs_arr / macs_arr[-1], 0.0, 1.0))

    train_x, train_y, val_x, val_y = load_train_val(data, limit, seed, val_data, val_limit)

    saved_threads = torch.get_num_threads()
    saved_rng = torch.get_rng_state()
    saved_grad = [p.requires_grad for p in model.parameters()]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        t0 = time.perf_counter()
        feats = backbone_features(model, train_x, batch=feature_batch)
        val_feats = backbone_features(model, val_x, batch=feature_batch)
        cache_s = time.perf_counter() - t0
        logger.info("cached the frozen backbone's features of %d + %d rows in %.1f s",
                    train_x.shape[0], val_x.shape[0], cache_s)
        head_params = [p for p in heads.parameters()]
        for p in head_params:
            p.requires_grad_(True)
        start_logits = _eval_logits(heads, feats)
        val_start = _eval_logits(heads, val_feats)
        gates: list[nn.Module] = []
        for k in range(num_exits - 1):  # standardise with the starting heads' statistics
            f = torch_logit_features(start_logits[k]).numpy()
            std = f.std(axis=0)
            inv = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0).astype(np.float32)
            gates.append(GateNet(f.mean(axis=0).astype(np.float32), inv, [4, 1]))
        gate_params = [p for g in gates for p in g.parameters()]
        head_start = [p.detach().clone() for p in head_params]
        gate_start = [p.detach().clone() for p in gate_params]
        opt_h = torch.optim.SGD(head_params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        opt_g = torch.optim.SGD(gate_params, lr=gate_lr, momentum=0.9,
                                weight_decay=weight_decay)
        costs = torch.as_tensor(lam * c, dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        n = int(train_x.shape[0])
        steps = max(1, n // batch_size) if n >= 2 * batch_size else math.ceil(n / batch_size)
        total = steps * epochs
        phases: list[dict[str, Any]] = []
        oracle_counts = np.zeros(num_exits, dtype=np.int64)
        history: list[dict[str, Any]] = []
        bar = tqdm(total=total, desc=f"jei (lambda {lam:g})", unit="batch", leave=False,
                   disable=not progress)
        step = 0
        try:
            for epoch in range(epochs):
                order = torch.randperm(n, generator=gen)
                for i in range(steps):
                    idx = order[i * batch_size:(i + 1) * batch_size]
                    fb = [f[idx] for f in feats]
                    yb = train_y[idx]
                    phase = "im" if (step // alternate) % 2 == 0 else "gate"
                    if not phases or phases[-1]["phase"] != phase:
                        phases.append({"phase": phase, "first_step": step, "losses": []})
                    if phase == "im":
                        for group in opt_h.param_groups:
                            group["lr"] = _lr_at(step, total, lr)
                        heads.train()
                        logits = _head_logits(heads, fb)
                        loss = sum((F.cross_entropy(z, yb) for z in logits),
                                   torch.zeros(()))
                        opt_h.zero_grad(set_to_none=True)
                        loss.backward()
                        opt_h.step()
                    else:
                        for group in opt_g.param_groups:
                            group["lr"] = _lr_at(step, total, gate_lr)
                        heads.eval()
                        with torch.no_grad():
                            logits = _head_logits(heads, fb)
                            star = _oracle(logits, yb, costs)
                        oracle_counts += np.bincount(star.numpy(), minlength=num_exits)
                        loss, _ = _gate_loss(gates, logits[:-1], star)
                        opt_g.zero_grad(set_to_none=True)
                        loss.backward()
                        opt_g.step()
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise UsageError(f"the jei {phase} loss became {value} at step {step}: "
                                         f"lower {{lr}} (now {lr})")
                    phases[-1]["losses"].append(value)
                    step += 1
                    bar.update()
                    bar.set_postfix(phase=phase, loss=f"{value:.3f}")
                heads.eval()
                val_logits = _eval_logits(heads, val_feats)
                entry = {"epoch": epoch + 1,
                         "val_acc": [round(float((z.argmax(1) == val_y).float().mean()), 4)
                                     for z in val_logits],
                         "val_jei": _offline(gates, val_logits, val_y, c)}
                history.append(entry)
                logger.info("jei epoch %d/%d: val acc per exit %s", epoch + 1, epochs,
                            entry["val_acc"])
        finally:
            bar.close()
        heads.eval()
        for g in gates:
            g.eval()
        end_logits = _eval_logits(heads, feats)
        val_end = _eval_logits(heads, val_feats)
        oracle_train = np.bincount(_oracle(end_logits, train_y, costs).numpy(),
                                   minlength=num_exits)
    finally:
        for p, flag in zip(model.parameters(), saved_grad, strict=True):
            p.requires_grad_(flag)
        torch.set_num_threads(saved_threads)
        torch.set_rng_state(saved_rng)
        model.eval()
    for g in gates:
        for p in g.parameters():
            p.requires_grad_(False)
    phase_summary = [{"phase": ph["phase"], "first_step": ph["first_step"],
                      "batches": len(ph["losses"]),
                      "mean_loss": round(float(np.mean(ph["losses"])), 5),
                      "first_loss": round(ph["losses"][0], 5),
                      "last_loss": round(ph["losses"][-1], 5)} for ph in phases]
    gate_phases = [p for p in phase_summary if p["phase"] == "gate"]
    km1 = num_exits - 1
    info: dict[str, Any] = {
        "trained": "torch, alternating heads and gates (eeopt train --objective jei)",
        "lam": float(lam), "macs_frac": [float(v) for v in c], "train_rows": n,
        "epochs": epochs, "alternate": alternate, "seed": seed,
        "oracle_fractions": [float(v) for v in oracle_train / max(1, n)],
    }
    mlps = tuple(g.params() for g in gates)  # type: ignore[operator]
    gateset = GateSet("jei", mlps, ("logits",) * km1,
                      (None,) * km1, (0,) * km1, num_exits, info=info)
    val_acc_start = [round(float((z.argmax(1) == val_y).float().mean()), 4) for z in val_start]
    metrics: dict[str, Any] = {
        "objective": "jei",
        "objective_config": {"lam": float(lam), "alternate": alternate, "lr": lr,
                             "gate_lr": gate_lr, "momentum": 0.9, "weight_decay": weight_decay,
                             "schedule": f"cosine from lr to lr * {_MIN_LR_FRACTION:g}",
                             "backbone": "frozen (features cached once, eval mode)",
                             "im_loss": "sum_l CE_l",
                             "gate_loss": "sum_l BCE-with-logits(g_l, 1[l >= l*]), "
                                          "pos_weight min(5, #neg/#pos) per batch"},
        "epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch_size,
        "weight_decay": weight_decay, "freeze_backbone": True, "threads": threads,
        "train_size": n, "val_size": int(val_x.shape[0]), "num_exits": num_exits,
        "steps": total, "macs_cumulative": [float(v) for v in macs_arr],
        "macs_fraction": [round(float(v), 6) for v in c],
        "cache_seconds": round(cache_s, 2),
        "phases": phase_summary,
        "gate_phase_mean_loss": [p["mean_loss"] for p in gate_phases],
        "im_phase_mean_loss": [p["mean_loss"] for p in phase_summary if p["phase"] == "im"],
        "oracle_fractions_seen": [round(float(v), 4) for v in
                                  oracle_counts / max(1, oracle_counts.sum())],
        "oracle_fractions_train_end": [round(float(v), 4) for v in oracle_train / max(1, n)],
        "val_acc_start": val_acc_start,
        "val_acc": [round(float((z.argmax(1) == val_y).float().mean()), 4) for z in val_end],
        "val_jei": _offline(gates, val_end, val_y, c),
        "head_change_l2": round(float(sum(float((p.detach() - q).pow(2).sum()) for p, q in
                                          zip(head_params, head_start, strict=True)) ** 0.5), 6),
        "gate_change_l2": round(float(sum(float((p.detach() - q).pow(2).sum()) for p, q in
                                          zip(gate_params, gate_start, strict=True)) ** 0.5), 6),
        "history": history,
    }
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    if not gate_phases:
        logger.warning("no gate phase ran: %d batches in all, alternate=%d; the gates are "
                       "untrained", total, alternate)
    return JEIResult(model, gates, gateset, metrics)
