"""fit(): train any multi-exit module with one of the objectives, deterministically.

The model's ``forward`` must return one ``[batch, classes]`` logits tensor per exit, earliest
first. Optimiser: SGD with Nesterov momentum 0.9 and weight decay, gradients clipped to norm
``grad_clip`` (1.0), linear warm-up over the first 5% of a stage's steps then cosine decay to
zero, stepped per batch. No augmentation beyond what the objective itself does. Objectives
that train exit by exit (``weighted-entropy``) run ``epochs`` per stage, so they take more
steps than the joint ones on the same call.

Why the clip: a backbone without batch norm, at PyTorch's default init, sits at chance for
tens of steps with tiny logits; when it starts to learn its gradient norm jumps ~50x, and
without a bound the step (carried on by momentum) throws it back to chance, again and again.
On a BN-free residual CNN (Fashion-MNIST, 2 epochs of 10,000 rows, ``ce``) the final exit
reached 25-62% across five inits without the clip, 59-62% with it. On the batch-normed demo
CNN (``benchmarks/results/training_methods.md``, one seed) the joint objectives lose up to 1.1
points per exit with it and ``weighted-entropy`` gains up to 12 at its later exits.

At the end of each stage's first epoch, ``fit`` compares the loss over its last tenth of steps
with its first tenth and warns when it has not fallen by 10% (``metrics["warnings"]``): a run
that learned nothing says so instead of returning quietly. A non-finite loss stops training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from eeopt.data import load_dataset
from eeopt.errors import DataError, UsageError
from eeopt.train._objectives import Objective, make_objective, resample

__all__ = ["evaluate", "exit_dependencies", "fit", "load_split", "predict", "stalled_loss"]

logger = logging.getLogger(__name__)

ArrayPair = tuple[Any, Any]


def load_train_val(data: str | ArrayPair, limit: int | None, seed: int,
                   val_data: str | ArrayPair | None = None, val_limit: int | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and validation tensors: ``data``'s train split (a seeded subset of ``limit``
    rows), and the val split of ``val_data``, else of ``data`` when it is a name, else the
    training rows themselves; the first ``val_limit`` of them."""
    train_x, train_y = load_split(data, "train", limit, seed)
    if val_data is not None:
        val_x, val_y = load_split(val_data, "val")
    elif isinstance(data, str):
        val_x, val_y = load_split(data, "val")
    else:
        val_x, val_y = train_x, train_y
    if val_limit is not None and val_limit < val_x.shape[0]:
        val_x, val_y = val_x[:val_limit], val_y[:val_limit]
    return train_x, train_y, val_x, val_y


def load_split(data: str | ArrayPair, split: str, limit: int | None = None, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` tensors of a data set split (a name such as ``"fashion-mnist"``) or
    of an ``(inputs, labels)`` pair; ``limit`` keeps a seeded random subset of that size."""
    if isinstance(data, str):
        name = data.split(":", 1)[0]
        x_np, y_np = load_dataset(f"{name}:{split}")
    else:
        try:
            x_np, y_np = data
        except (TypeError, ValueError):
            raise DataError("data must be a data set name or an (inputs, labels) pair") from None
    if isinstance(x_np, dict):  # several inputs (text: ids, mask): one [N, inputs, ...] tensor
        x_np = np.stack([np.asarray(a) for a in x_np.values()], axis=1)
    x = torch.as_tensor(np.array(x_np, copy=True))
    y = torch.as_tensor(np.array(y_np, copy=True)).long()
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if limit is not None:
        if limit <= 0:
            raise UsageError(f"limit must be positive, got {limit}")
        if limit < x.shape[0]:
            idx = torch.from_numpy(np.random.default_rng(seed).permutation(x.shape[0])[:limit])
            x, y = x[idx], y[idx]
    return x, y


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = model(x)
    if not isinstance(out, (tuple, list)) or not all(isinstance(o, torch.Tensor) for o in out):
        raise UsageError(
            "fit() trains multi-exit modules: forward must return a tuple of logits tensors, "
            f"one per exit (got {type(out).__name__}); use attach_exits() on a plain backbone"
        )
    return tuple(out)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500,
            channels_last: bool = False) -> list[torch.Tensor]:
    """Every exit's logits on ``x`` (eval mode), earliest first."""
    was = model.training
    model.eval()
    try:
        chunks: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            chunks.append(_outputs(model, xb))
    finally:
        model.train(was)
    if not chunks:
        return []
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             channels_last: bool = False) -> list[float]:
    """Per-exit top-1 accuracy."""
    return [float((z.argmax(1) == y).float().mean()) for z in
            predict(model, x, channels_last=channels_last)]


def exit_dependencies(model: nn.Module, example: torch.Tensor) -> list[set[int]]:
    """Per exit, the indices (into ``model.parameters()``) of the parameters its output
    depends on, found by autograd on a small batch."""
    params = list(model.parameters())
    live = [i for i, p in enumerate(params) if p.requires_grad]  # frozen ones have no grad
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outs = _outputs(model, example)
            deps = []
            for z in outs:
                grads = torch.autograd.grad(z.sum(), [params[i] for i in live],
                                            allow_unused=True, retain_graph=True)
                deps.append({live[j] for j, g in enumerate(grads) if g is not None})
    finally:
        model.train(was)
    return deps


def _frozen_parameters(model: nn.Module) -> set[int]:
    """Indices of the parameters outside the exits, for ``freeze_backbone``."""
    params = list(model.parameters())
    ident = {id(p): i for i, p in enumerate(params)}
    get = getattr(model, "exit_parameters", None)
    if callable(get):
        keep = {id(p) for p in get()}
    elif isinstance(getattr(model, "heads", None), nn.Module):
        keep = {id(p) for p in model.heads.parameters()}  # type: ignore[union-attr]
    else:
        raise UsageError(
            "freeze_backbone needs a model with exit_parameters() (attach_exits builds one) or "
            "a `heads` submodule holding the exit heads"
        )
    return {ident[id(p)] for p in params if id(p) not in keep}


def _eval_frozen_batchnorm(model: nn.Module) -> None:
    """Keep the running statistics of batch norms whose affine parameters are frozen."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                m.eval()


@contextmanager
def _deterministic(seed: int, threads: int) -> Iterator[None]:
    saved_threads = torch.get_num_threads()
    saved_det = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_rng = torch.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_det, warn_only=saved_warn)
        torch.set_rng_state(saved_rng)


def _lr_at(step: int, total: int, peak: float) -> float:
    warmup = max(1, int(0.05 * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def fit(
    model: nn.Module,
    data: str | ArrayPair = "fashion-mnist",
    objective: str | Objective = "ce",
    epochs: int = 1,
    limit: int | None = None,
    seed: int = 0,
    lr: float = 0.05,
    batch_size: int = 128,
    freeze_backbone: bool = False,
    progress: bool = True,
    *,
    val_data: ArrayPair | None = None,
    val_limit: int | None = None,
    weight_decay: float = 5e-4,
    threads: int = 2,
    channels_last: bool | None = None,
    grad_clip: float | None = 1.0,
    **objective_kwargs: Any,
) -> dict[str, Any]:
    """Train ``model`` (in place) with ``objective`` and return the metrics.

    ``data``: a data set name (trains on its ``train`` split, validates on ``val``) or an
    ``(inputs, labels)`` pair (then pass ``val_data``, else the training data is reused).
    ``limit``: train on a seeded random subset of that many rows; validation then uses
    ``max(1000, limit)`` rows unless ``val_limit`` says otherwise. ``freeze_backbone``: train
    only the exit heads (``model.exit_parameters()`` or ``model.heads``). Extra keyword
    arguments configure the objective (e.g. ``temperature=2.0`` for ``"distill"``).
    ``grad_clip``: the largest gradient norm a step takes (None: no clipping).

    Deterministic for a given ``seed`` and ``threads``: torch's and numpy's seeds are set,
    deterministic algorithms are requested, and the global RNG state is restored afterwards.
    Returns a dict with ``val_acc`` (per exit, after training), ``history`` (per stage and
    epoch: mean loss, per-exit val accuracy), ``loss_curve`` (per stage, per-batch losses),
    ``stage_sizes``, ``train_seconds``, ``warnings`` (e.g. a loss that did not fall in the
    first epoch) and the settings.
    """
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"lr must be a positive number, got {lr}")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise UsageError(f"grad_clip must be a positive number or None, got {grad_clip}")
    obj = make_objective(objective, **objective_kwargs)
    if val_limit is None and limit is not None:
        val_limit = max(1000, limit)
    train_x, train_y, val_x, val_y = load_train_val(data, limit, seed, val_data, val_limit)
    cl = train_x.dim() == 4 if channels_last is None else channels_last
    n = int(train_x.shape[0])

    metrics: dict[str, Any] = {
        "objective": obj.name,
        "objective_config": obj.config(),
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "grad_clip": grad_clip,
        "freeze_backbone": freeze_backbone,
        "threads": threads,
        "train_size": n,
        "val_size": int(val_x.shape[0]),
        "history": [],
        "loss_curve": [],
        "stage_sizes": [],
        "warnings": [],
    }
    params = list(model.parameters())
    saved_grad = [p.requires_grad for p in params]
    if cl:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    start_time = time.perf_counter()
    try:
        with _deterministic(seed, threads):
            gen = torch.Generator().manual_seed(seed)
            frozen = _frozen_parameters(model) if freeze_backbone else set()
            trainable = {i for i, p in enumerate(params) if p.requires_grad} - frozen
            example = train_x[:2]
            if cl and example.dim() == 4:
                example = example.contiguous(memory_format=torch.channels_last)
            deps = exit_dependencies(model, example)
            num_exits = len(deps)
            metrics["num_exits"] = num_exits
            stages = obj.num_stages(num_exits)
            done: set[int] = set()
            rows = torch.arange(n)
            for stage in range(stages):
                exits = obj.stage_exits(stage, num_exits)
                wanted = set().union(*(deps[e] for e in exits)) & trainable
                stage_params = sorted(wanted - done)
                done |= wanted
                if rows.numel() < batch_size:
                    logger.warning("stage %d: only %d training rows left; training on all %d",
                                   stage, rows.numel(), n)
                    rows = torch.arange(n)
                metrics["stage_sizes"].append(int(rows.numel()))
                if not stage_params:
                    logger.warning("stage %d trains exits %s but they have no parameter left "
                                   "to train", stage, list(exits))
                    metrics["loss_curve"].append([])
                else:
                    _train_stage(model, obj, stage, stages, [params[i] for i in stage_params],
                                 train_x, train_y, rows, val_x, val_y, epochs=epochs, lr=lr,
                                 batch_size=batch_size, weight_decay=weight_decay,
                                 grad_clip=grad_clip, gen=gen, channels_last=cl,
                                 progress=progress, metrics=metrics)
                if stage + 1 < stages:
                    outs = predict(model, train_x[rows], channels_last=cl)
                    keep = obj.keep(stage, outs, train_y[rows])
                    if keep is not None:
                        rows = resample(rows, ~keep, gen)
                        logger.info("stage %d: %d training rows go on to stage %d",
                                    stage, rows.numel(), stage + 1)
            metrics["val_acc"] = evaluate(model, val_x, val_y, channels_last=cl)
    finally:
        for p, g in zip(params, saved_grad, strict=True):
            p.requires_grad_(g)
        if cl:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        model.eval()
    metrics["train_seconds"] = round(time.perf_counter() - start_time, 2)
    return metrics


def _train_stage(
    model: nn.Module, obj: Objective, stage: int, stages: int, stage_params: Sequence[nn.Parameter],
    train_x: torch.Tensor, train_y: torch.Tensor, rows: torch.Tensor,
    val_x: torch.Tensor, val_y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
    weight_decay: float, grad_clip: float | None, gen: torch.Generator, channels_last: bool,
    progress: bool, metrics: dict[str, Any],
) -> None:
    ids = {id(p) for p in stage_params}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    optimizer = torch.optim.SGD(stage_params, lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    obj.begin_stage(stage)
    steps = math.ceil(rows.numel() / batch_size)
    total = steps * epochs
    curve: list[float] = []
    step = 0
    label = f"{obj.name}" + (f" ramp {stage + 1}/{stages}" if stages > 1 else "")
    for epoch in range(epochs):
        model.train()
        _eval_frozen_batchnorm(model)
        order = rows[torch.randperm(rows.numel(), generator=gen)]
        bar = tqdm(range(steps), desc=f"{label} epoch {epoch + 1}/{epochs}", unit="batch",
                   leave=False, disable=not progress)
        epoch_loss = 0.0
        for i in bar:
            idx = order[i * batch_size : (i + 1) * batch_size]
            if idx.numel() < 2 and steps > 1:  # a batch of one breaks batch norm
                continue
            xb, yb = train_x[idx], train_y[idx]
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, lr)
            loss = obj.loss(_outputs(model, xb), yb, xb, model)
            if not torch.isfinite(loss):
                raise UsageError(f"the {obj.name} loss became {loss.item()} at stage {stage}, "
                                 f"epoch {epoch + 1}: lower lr (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(stage_params, grad_clip)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            curve.append(value)
            epoch_loss += value
            if progress:
                bar.set_postfix(loss=f"{value:.3f}")
        val_acc = evaluate(model, val_x, val_y, channels_last=channels_last)
        entry = {"stage": stage, "epoch": epoch + 1, "rows": int(rows.numel()),
                 "loss": round(epoch_loss / max(1, steps), 4),
                 "val_acc": [round(a, 4) for a in val_acc]}
        metrics["history"].append(entry)
        logger.info("%s epoch %d/%d: loss %.3f, val acc per exit %s", label, epoch + 1, epochs,
                    entry["loss"], " ".join(f"{a:.3f}" for a in val_acc))
        if epoch == 0:
            stalled = stalled_loss(curve)
            if stalled:
                msg = (f"{label}: {stalled} after its first epoch (val acc per exit "
                       f"{' '.join(f'{a:.3f}' for a in val_acc)}); the model is not learning: "
                       f"try another lr (now {lr:g}), grad_clip (now {grad_clip}), more epochs, "
                       "or normalise the input / add batch norm")
                logger.warning(msg)
                metrics["warnings"].append(msg)
    metrics["loss_curve"].append(curve)


#: a first epoch shorter than this says too little to judge
MIN_STEPS_TO_JUDGE = 20


def stalled_loss(curve: Sequence[float], min_fall: float = 0.1) -> str | None:
    """Why the per-step losses ``curve`` of a first epoch say training is not working, or
    None: the mean over the last tenth of the steps has not fallen by ``min_fall`` (10%) from
    the mean over the first tenth. Healthy runs fall 16-26% in their first epoch, stalled ones
    0-4% (BN-free residual CNN on Fashion-MNIST, with and without gradient clipping)."""
    if len(curve) < MIN_STEPS_TO_JUDGE:
        return None
    k = max(1, len(curve) // 10)
    first = sum(curve[:k]) / k
    last = sum(curve[-k:]) / k
    if first > 0 and last > (1 - min_fall) * first:
        return (f"the training loss went from {first:.3f} to {last:.3f} (first and last tenth "
                f"of the steps), not down by {min_fall:.0%}")
    return None
