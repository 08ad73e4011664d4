"""Train DemoCNN on Fashion-MNIST and write the weights eeopt ships (reproduces them exactly).

    python scripts/train_demo_cnn.py                  # the committed weights
    python scripts/train_demo_cnn.py --epochs 2 --out /tmp/demo_cnn.pt   # a quick trial

Recipe: all four exits trained jointly on the ``train`` split (55,000 images) with the sum of
their cross-entropies (equal weights); SGD with Nesterov momentum 0.9 and weight decay 5e-4;
one epoch of linear warm-up, then cosine decay to zero, stepped per batch; augmentation is a
random 28x28 crop of the image zero-padded by 2 px plus a random horizontal flip. Seeds are
fixed (torch, numpy). Nothing is selected on val or test: the last epoch is saved. At the end the
per-exit accuracy on val and test is printed and written with the run's settings, cost and
timing to ``<out>.json`` next to the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eeopt.data import load_fashion_mnist  # noqa: E402
from eeopt.models.demo_cnn import DEFAULT_WEIGHTS, NUM_EXITS, DemoCNN, count_exit_macs  # noqa: E402

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=25, help="training epochs (default 25)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--epochs, --batch-size and --lr must be positive")
    return args


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the 2-px zero-padded image and random horizontal flip, per sample."""
    b, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    oy = torch.randint(0, 5, (b,), generator=gen)
    ox = torch.randint(0, 5, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
    out = padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def _evaluate(model: DemoCNN, images: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per-exit top-1 accuracy."""
    model.eval()
    correct = torch.zeros(NUM_EXITS, dtype=torch.long)
    y = torch.from_numpy(np.array(labels))
    for start in range(0, len(labels), 1000):
        xb = torch.from_numpy(np.array(images[start : start + 1000]))
        xb = xb.contiguous(memory_format=torch.channels_last)
        for k, logits in enumerate(model(xb)):
            correct[k] += (logits.argmax(1) == y[start : start + 1000]).sum()
    return [float(c) / len(labels) for c in correct]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train_x_np, train_y_np = load_fashion_mnist("train")
    train_x = torch.from_numpy(np.array(train_x_np))
    train_y = torch.from_numpy(np.array(train_y_np))
    n = len(train_y)

    model = DemoCNN().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    macs = count_exit_macs(model)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("DemoCNN: %d parameters, cumulative MACs per exit %s", n_params, macs["cumulative"])
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = math.ceil(n / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = int(args.warmup_epochs * steps_per_epoch)

    val_x, val_y = load_fashion_mnist("val")
    start_time = time.perf_counter()
    step = 0
    history: list[dict[str, object]] = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        running = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for i in bar:
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb = _augment(train_x[idx], gen).contiguous(memory_format=torch.channels_last)
            yb = train_y[idx]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, warmup, args.lr)
            losses = [F.cross_entropy(logits, yb) for logits in model(xb)]
            loss = torch.stack(losses).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if i else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        val_acc = _evaluate(model, val_x, val_y)
        elapsed = time.perf_counter() - start_time
        history.append({"epoch": epoch + 1, "loss": round(running, 4), "val_acc": val_acc})
        logger.info(
            "epoch %d/%d  loss %.3f  val acc per exit %s  (%.0f s)",
            epoch + 1,
            args.epochs,
            running,
            " ".join(f"{a:.4f}" for a in val_acc),
            elapsed,
        )
    train_seconds = time.perf_counter() - start_time

    model.eval()
    val_acc = _evaluate(model, val_x, val_y)
    test_x, test_y = load_fashion_mnist("test")
    test_acc = _evaluate(model, test_x, test_y)
    for k in range(NUM_EXITS):
        logger.info(
            "exit %d: %8d MACs (%.3f)  val %.4f  test %.4f",
            k,
            macs["cumulative"][k],
            macs["cumulative"][k] / macs["cumulative"][-1],
            val_acc[k],
            test_acc[k],
        )

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(state, out)
    total_macs = macs["cumulative"][-1]
    report = {
        "model": "DemoCNN",
        "widths": list(model.widths),
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": (
            f"SGD(lr={args.lr}, momentum=0.9, nesterov=True, weight_decay={args.weight_decay})"
        ),
        "schedule": f"linear warm-up {args.warmup_epochs} epoch(s), cosine to 0, per step",
        "loss": "sum over the 4 exits of cross-entropy, equal weights",
        "augmentation": "random crop 28x28 from 2-px zero padding, random horizontal flip",
        "seed": args.seed,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "train_seconds": round(train_seconds, 1),
        "train_size": n,
        "parameters": n_params,
        "weights_bytes": out.stat().st_size,
        "macs_cumulative": macs["cumulative"],
        "macs_fraction": [round(m / total_macs, 4) for m in macs["cumulative"]],
        "macs_segment": macs["segment"],
        "macs_head": macs["head"],
        "val_acc": val_acc,
        "test_acc": test_acc,
        "history": history,
    }
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s and %s in %.0f s of training", out, json_path, train_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
