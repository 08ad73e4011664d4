"""``eeopt train``: train a multi-exit model on a shipped data set and write DIR/.

    eeopt train --data fashion-mnist --arch demo-cnn --objective distill --epochs 2 --out run/

DIR holds ``checkpoint.pt`` (the state dict; ``torch.load(..., weights_only=True)`` then
``eeopt.train.build_model(arch).load_state_dict``), ``model.onnx`` (the multi-exit model,
ready for ``eeopt compile``) and ``metrics.json`` (per-exit validation accuracy, the objective,
the arguments, the time). DIR is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

from eeopt.cli.common import in_flags, positive_int
from eeopt.data import DATASETS
from eeopt.errors import UsageError
from eeopt.program import check_new_output

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

_ARCHS = ("demo-cnn", "efficientnet-lite0", "minilm-l6")
#: the architectures of text, and the data set they train on
_TEXT_ARCHS, _TEXT_DATA = ("minilm-l6",), "tweets"
_OBJECTIVES = ("ce", "distill", "weighted-entropy", "consistency", "jei")


def _setting(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key.strip():
            raise ValueError
        return key.strip().replace("-", "_"), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KEY=NUMBER (e.g. temperature=2), got {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to the ``eeopt`` sub-command parsers."""
    t = subparsers.add_parser(
        "train",
        help="train a multi-exit model with one of the exit-training objectives",
        description="Train a multi-exit model on a shipped data set and write "
        "DIR/checkpoint.pt, DIR/model.onnx (ready for `eeopt compile`) and DIR/metrics.json. "
        "Objectives: ce (per-exit cross-entropy), distill (self-distillation from the final "
        "exit), weighted-entropy (adaptive off-ramps, trained ramp by ramp), consistency "
        "(clean vs perturbed agreement), jei (JEI-DNN: the committed DemoCNN or MiniLM heads and "
        "one gate per early exit trained in turn on the frozen backbone; also writes "
        "DIR/gates.npz for `eeopt compile --policy jei --gates`). See docs/training.md.",
    )
    t.add_argument("--data", default="fashion-mnist", metavar="NAME",
                   help="data set: its train split trains, val validates (default fashion-mnist)")
    t.add_argument("--arch", default="demo-cnn", choices=_ARCHS,
                   help="architecture (default demo-cnn, from scratch; efficientnet-lite0 is "
                   "ImageNet-pretrained with exits attached automatically; minilm-l6 is the "
                   "pretrained MiniLM-L6 text encoder with an exit after every layer, for "
                   "--data tweets: it trains the heads, biases and LayerNorms, BitFit-style)")
    t.add_argument("--objective", default="ce", choices=_OBJECTIVES,
                   help="training objective (default ce)")
    t.add_argument("--epochs", type=positive_int, default=1, metavar="N",
                   help="epochs (per ramp for weighted-entropy; default 1)")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory to write")
    t.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="train on a seeded random subset of N images")
    t.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    t.add_argument("--lr", type=float, default=None,
                   help="peak SGD learning rate (default 0.05; jei: 0.01)")
    t.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="training batch size (default 128; jei: 64)")
    t.add_argument("--grad-clip", type=float, default=1.0, metavar="NORM",
                   help="clip each step's gradient norm to NORM (default 1.0; 0 turns "
                   "clipping off; keeps networks without batch norm from bouncing back to "
                   "chance)")
    t.add_argument("--freeze-backbone", action="store_true",
                   help="train only the exit heads and the final classifier")
    t.add_argument("--image-size", type=positive_int, default=64, metavar="PX",
                   help="efficientnet-lite0: resize the 28x28 images to PX x PX (default 64)")
    t.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="an objective setting, repeatable (e.g. --set temperature=2 for "
                   "distill, --set alpha=0.5 for weighted-entropy)")
    t.add_argument("--threads", type=positive_int, default=2, metavar="N",
                   help="torch CPU threads (default 2)")
    t.add_argument("--force", action="store_true", help="replace DIR if it exists")
    t.add_argument("--lambda", dest="lam", type=float, default=None, metavar="LAMBDA",
                   help="jei: the oracle exit argmin CE + LAMBDA * MACs fraction (default 0.3)")
    t.add_argument("--alternate", type=positive_int, default=None, metavar="K",
                   help="jei: switch between the head and gate phases every K batches "
                   "(default 200)")
    return t  # type: ignore[no-any-return]


def _check(args: argparse.Namespace) -> None:
    name = args.data.split(":", 1)[0].strip().lower()
    if name not in DATASETS:
        raise UsageError(f"--data {args.data!r} is not a shipped data set: use one of "
                         + ", ".join(DATASETS))
    args.data = name
    text_arch, text_data = args.arch in _TEXT_ARCHS, name == _TEXT_DATA
    if text_arch != text_data:
        raise UsageError(f"--arch {args.arch} trains on "
                         + (f"--data {_TEXT_DATA}" if text_arch else "images, not tweets: use "
                            f"--arch {' or '.join(_TEXT_ARCHS)} for --data {name}"))
    if args.lr is None:
        args.lr = 0.01 if args.objective == "jei" else 0.05
    if args.batch_size is None:
        args.batch_size = 64 if args.objective == "jei" else 128
    if args.objective != "jei" and (getattr(args, "lam", None) is not None
                                    or getattr(args, "alternate", None) is not None):
        raise UsageError("--lambda and --alternate apply to --objective jei")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if not (args.grad_clip >= 0 and math.isfinite(args.grad_clip)):
        raise UsageError(f"--grad-clip must be >= 0 (0: off), got {args.grad_clip}")
    if args.objective == "jei" and args.grad_clip != 1.0:
        raise UsageError("--grad-clip applies to the fit objectives, not --objective jei")
    check_new_output(args.out, force=args.force, marker="metrics.json")  # a run's
    if args.image_size < 32:
        raise UsageError(f"--image-size must be >= 32, got {args.image_size}")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.settings:
        out[key] = int(value) if key == "max_shift" else value
    return out


def _command(args: argparse.Namespace) -> str:
    """The ``eeopt train`` command line that reproduces this run."""
    parts = ["eeopt", "train", "--data", args.data, "--arch", args.arch, "--objective",
             args.objective, "--epochs", str(args.epochs), "--out", str(args.out),
             "--seed", str(args.seed), "--lr", f"{args.lr:g}", "--batch-size",
             str(args.batch_size), "--threads", str(args.threads)]
    if args.objective != "jei":
        parts += ["--grad-clip", f"{args.grad_clip:g}"]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.arch == "efficientnet-lite0":
        parts += ["--image-size", str(args.image_size)]
    if args.freeze_backbone:
        parts.append("--freeze-backbone")
    for key, value in args.settings:
        parts += ["--set", f"{key}={value:g}"]
    if getattr(args, "lam", None) is not None:
        parts += ["--lambda", f"{args.lam:g}"]
    if getattr(args, "alternate", None) is not None:
        parts += ["--alternate", str(args.alternate)]
    return shlex.join(parts)


def _report(args: argparse.Namespace, metrics: dict[str, Any], *, objective: str,
            metrics_record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The run's ``metrics.json`` (``write_run`` adds the times and the torch version)."""
    return {
        "arch": args.arch,
        "data": args.data,
        "objective": objective,
        "objective_config": metrics["objective_config"],
        "val_acc": metrics["val_acc"],
        "num_exits": metrics["num_exits"],
        "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "command": _command(args),
        "train_seconds": metrics["train_seconds"],
        **extra,
        "metrics": metrics_record,
    }


def _example(args: argparse.Namespace) -> Any:
    """Two validation images: the shape ``model.onnx`` is exported at."""
    from eeopt.train import load_split

    example, _ = load_split(args.data, "val", limit=2, seed=args.seed)
    return example


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt train``; returns the exit status."""
    _check(args)
    if args.objective == "jei":
        return _run_jei(args)
    import torch

    from eeopt.train import build_model, fit, write_run

    settings = _settings(args)
    torch.manual_seed(args.seed)  # the fresh heads' initialisation
    model = build_model(args.arch, image_size=args.image_size)
    started = time.time()
    metrics = fit(model, data=args.data, objective=args.objective, epochs=args.epochs,
                  limit=args.limit, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                  freeze_backbone=args.freeze_backbone, progress=True, threads=args.threads,
                  grad_clip=args.grad_clip or None, **settings)
    out = write_run(args.out, model, _example(args), started=started, force=args.force,
                    report=_report(args, metrics, objective=metrics["objective"],
                                   metrics_record={k: v for k, v in metrics.items()
                                                   if k != "loss_curve"}))
    accs = ", ".join(f"exit {k}: {a:.2%}" for k, a in enumerate(metrics["val_acc"]))
    print(f"trained {args.arch} with {metrics['objective']} for {args.epochs} epoch(s) on "
          f"{metrics['train_size']} rows in {metrics['train_seconds']:.0f} s; val accuracy "
          f"{accs}; wrote {out}/checkpoint.pt, model.onnx, metrics.json")
    return 0


def _run_jei(args: argparse.Namespace) -> int:
    """``eeopt train --objective jei``: DIR/checkpoint.pt, model.onnx, gates.npz and
    metrics.json."""
    from eeopt.train import DEFAULT_ALTERNATE, train_jei, write_run

    if args.arch not in ("demo-cnn", "minilm-l6"):
        raise UsageError("--objective jei retrains the heads of a trained model on its frozen "
                         "backbone: only --arch demo-cnn and minilm-l6 (the committed weights) "
                         "have one")
    if args.settings:
        raise UsageError("--objective jei takes --lambda and --alternate, not --set")
    lam = 0.3 if args.lam is None else float(args.lam)
    alternate = DEFAULT_ALTERNATE if args.alternate is None else int(args.alternate)
    model: Any
    if args.arch == "minilm-l6":
        from eeopt.models.minilm import TextBatch, load_minilm_tweets

        model = TextBatch(load_minilm_tweets())
    else:
        from eeopt.models import load_demo_cnn

        model = load_demo_cnn()
    started = time.time()
    res = train_jei(model, data=args.data, lam=lam, epochs=args.epochs, alternate=alternate,
                    limit=args.limit, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                    threads=args.threads, progress=True,
                    val_limit=max(1000, args.limit) if args.limit else None,
                    feature_batch=64 if args.arch == "minilm-l6" else 500)
    metrics = res.metrics
    out = Path(args.out)
    write_run(out, model, _example(args), started=started, force=args.force,
              extra_files=lambda d: res.gateset.save(d / "gates.npz"),
              report=_report(args, metrics, objective="jei", metrics_record=metrics,
                             gates="gates.npz",
                             compile=f"eeopt compile {out}/model.onnx --policy jei --gates "
                                     f"{out}/gates.npz --calib {args.data}:calib --budget 0.5 "
                                     "--out program/"))
    accs = ", ".join(f"exit {k}: {a:.2%}" for k, a in enumerate(metrics["val_acc"]))
    gl = metrics["gate_phase_mean_loss"]
    gate_txt = (f"gate-phase loss {gl[0]:.3f} -> {gl[-1]:.3f} over {len(gl)} phases"
                if gl else "no gate phase ran (raise --epochs or lower --alternate)")
    print(f"trained {args.arch} heads and jei gates (lambda {lam:g}, alternating every "
          f"{alternate} batches) for {args.epochs} epoch(s) on {metrics['train_size']} rows "
          f"in {metrics['train_seconds']:.0f} s; val accuracy {accs}; {gate_txt}; wrote "
          f"{out}/checkpoint.pt, model.onnx, gates.npz, metrics.json")
    return 0
