"""Train TinyCNN on Fashion-MNIST and write the weights eeopt ships (the first network of the
cascade benchmark, benchmarks/cascade.py).

    python scripts/train_tiny_cnn.py                        # the committed weights
    python scripts/train_tiny_cnn.py --epochs 1 --out /tmp/tiny.pt   # a quick trial

Recipe: the ``train`` split (55,000 images), cross-entropy, AdamW (lr 3e-3, weight decay 1e-4),
cosine decay to zero stepped per batch, random horizontal flips; 1 torch thread, fixed seeds.
Nothing is selected on val or test: the last epoch is saved. The run's settings, cost (MACs),
timing and val/test accuracy go to ``<out>.json`` next to the weights.
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
from eeopt.models.tiny_cnn import DEFAULT_WEIGHTS, TinyCNN, count_macs  # noqa: E402

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--widths", default="16,32", help="conv widths w0,w1 (default 16,32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--epochs, --batch-size and --lr must be positive")
    try:
        args.widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        p.error(f"--widths takes two integers, e.g. 16,32; got {args.widths!r}")
    if len(args.widths) != 2 or min(args.widths) < 1:
        p.error(f"--widths takes two positive integers, e.g. 16,32; got {args.widths!r}")
    return args


@torch.no_grad()
def _evaluate(model: TinyCNN, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), 1000):
        xb = torch.from_numpy(np.array(images[start : start + 1000]))
        (logits,) = model(xb)
        correct += int((logits.argmax(1) == torch.from_numpy(
            np.array(labels[start : start + 1000]))).sum())
    return correct / len(labels)


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
    val_x, val_y = load_fashion_mnist("val")

    model = TinyCNN(args.widths)
    macs = count_macs(model)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("TinyCNN%s: %d parameters, %d MACs per image", args.widths, n_params, macs)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
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
            xb, yb = train_x[idx], train_y[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            for group in opt.param_groups:
                group["lr"] = 0.5 * args.lr * (1.0 + math.cos(math.pi * step / total))
            (logits,) = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if i else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        val_acc = _evaluate(model, val_x, val_y)
        history.append({"epoch": epoch + 1, "loss": round(running, 4), "val_acc": val_acc})
        logger.info("epoch %d/%d  loss %.3f  val acc %.4f  (%.0f s)", epoch + 1, args.epochs,
                    running, val_acc, time.perf_counter() - start_time)
    train_seconds = time.perf_counter() - start_time

    model.eval()
    val_acc = _evaluate(model, val_x, val_y)
    test_x, test_y = load_fashion_mnist("test")
    test_acc = _evaluate(model, test_x, test_y)
    logger.info("TinyCNN: val %.4f  test %.4f", val_acc, test_acc)

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    state["_widths"] = torch.tensor(args.widths, dtype=torch.int64)
    torch.save(state, out)
    report = {
        "model": "TinyCNN",
        "widths": list(args.widths),
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW(lr={args.lr}, weight_decay={args.weight_decay})",
        "schedule": "cosine to 0, per step, no warm-up",
        "loss": "cross-entropy",
        "augmentation": "random horizontal flip",
        "seed": args.seed,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "train_seconds": round(train_seconds, 1),
        "train_size": n,
        "parameters": n_params,
        "weights_bytes": out.stat().st_size,
        "macs": macs,
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
