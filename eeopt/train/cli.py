"""``eeopt train``: train a multi-exit model on a shipped data set and write DIR/.

    eeopt train --data fashion-mnist --arch demo-cnn --objective distill --epochs 2 --out run/

DIR holds ``checkpoint.pt`` (the state dict; ``torch.load(..., weights_only=True)`` then
``eeopt.train.build_model(arch).load_state_dict``), ``model.onnx`` (the multi-exit model,
ready for ``eeopt compile``) and ``metrics.json`` (per-exit validation accuracy, the objective,
the arguments, the time). DIR is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eeopt._argtypes import positive_int as _positive_int
from eeopt.errors import UsageError

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

_ARCHS = ("demo-cnn", "efficientnet-lite0")
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
        "(clean vs perturbed agreement), jei (JEI-DNN: the committed DemoCNN's heads and "
        "one gate per early exit trained in turn on the frozen backbone; also writes "
        "DIR/gates.npz for `eeopt compile --policy jei --gates`). See docs/training.md.",
    )
    t.add_argument("--data", default="fashion-mnist", metavar="NAME",
                   help="data set: its train split trains, val validates (default fashion-mnist)")
    t.add_argument("--arch", default="demo-cnn", choices=_ARCHS,
                   help="architecture (default demo-cnn, from scratch; efficientnet-lite0 is "
                   "ImageNet-pretrained with exits attached automatically)")
    t.add_argument("--objective", default="ce", choices=_OBJECTIVES,
                   help="training objective (default ce)")
    t.add_argument("--epochs", type=_positive_int, default=1, metavar="N",
                   help="epochs (per ramp for weighted-entropy; default 1)")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory to write")
    t.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on a seeded random subset of N images")
    t.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    t.add_argument("--lr", type=float, default=None,
                   help="peak SGD learning rate (default 0.05; jei: 0.01)")
    t.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="training batch size (default 128; jei: 64)")
    t.add_argument("--freeze-backbone", action="store_true",
                   help="train only the exit heads and the final classifier")
    t.add_argument("--image-size", type=_positive_int, default=64, metavar="PX",
                   help="efficientnet-lite0: resize the 28x28 images to PX x PX (default 64)")
    t.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="an objective setting, repeatable (e.g. --set temperature=2 for "
                   "distill, --set alpha=0.5 for weighted-entropy)")
    t.add_argument("--threads", type=_positive_int, default=2, metavar="N",
                   help="torch CPU threads (default 2)")
    t.add_argument("--force", action="store_true", help="replace DIR if it exists")
    t.add_argument("--lambda", dest="lam", type=float, default=None, metavar="LAMBDA",
                   help="jei: the oracle exit argmin CE + LAMBDA * MACs fraction (default 0.3)")
    t.add_argument("--alternate", type=_positive_int, default=None, metavar="K",
                   help="jei: switch between the head and gate phases every K batches "
                   "(default 200)")
    return t  # type: ignore[no-any-return]


def _check(args: argparse.Namespace) -> None:
    from eeopt.data import DATASETS

    name = args.data.split(":", 1)[0].strip().lower()
    if name not in DATASETS:
        raise UsageError(f"--data {args.data!r} is not a shipped data set: use one of "
                         + ", ".join(DATASETS))
    args.data = name
    if args.lr is None:
        args.lr = 0.01 if args.objective == "jei" else 0.05
    if args.batch_size is None:
        args.batch_size = 64 if args.objective == "jei" else 128
    if args.objective != "jei" and (getattr(args, "lam", None) is not None
                                    or getattr(args, "alternate", None) is not None):
        raise UsageError("--lambda and --alternate apply to --objective jei")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if args.image_size < 32:
        raise UsageError(f"--image-size must be >= 32, got {args.image_size}")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.settings:
        out[key] = int(value) if key == "max_shift" else value
    return out


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing an existing ``out`` only once ``tmp`` is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _command(args: argparse.Namespace) -> str:
    """The ``eeopt train`` command line that reproduces this run."""
    parts = ["eeopt", "train", "--data", args.data, "--arch", args.arch, "--objective",
             args.objective, "--epochs", str(args.epochs), "--out", str(args.out),
             "--seed", str(args.seed), "--lr", f"{args.lr:g}", "--batch-size",
             str(args.batch_size), "--threads", str(args.threads)]
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


def write_run(args: argparse.Namespace, model: Any, metrics: dict[str, Any], started: float, *,
              objective: str, metrics_record: dict[str, Any],
              extra_files: Callable[[Path], None] | None = None,
              report_extra: dict[str, Any] | None = None) -> Path:
    """Write a training run to ``args.out``: ``checkpoint.pt``, ``model.onnx`` (exported at the
    data's input shape), whatever ``extra_files`` writes into the directory, and
    ``metrics.json``; all into a temporary sibling renamed into place."""
    import onnx
    import torch

    from eeopt.capture import export_torch
    from eeopt.train import load_split

    example, _ = load_split(args.data, "val", limit=2, seed=args.seed)
    proto = export_torch(model.eval(), example)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        torch.save(state, tmp / "checkpoint.pt")
        onnx.save(proto, os.fspath(tmp / "model.onnx"))
        if extra_files is not None:
            extra_files(tmp)
        report = {
            "arch": args.arch,
            "data": args.data,
            "objective": objective,
            "objective_config": metrics["objective_config"],
            "val_acc": metrics["val_acc"],
            "num_exits": metrics["num_exits"],
            "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
            "command": _command(args),
            "train_seconds": metrics["train_seconds"],
            "wall_seconds": round(time.time() - started, 2),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
            **(report_extra or {}),
            "metrics": metrics_record,
        }
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``eeopt train``; returns the exit status."""
    _check(args)
    if args.objective == "jei":
        from eeopt.train._jei import run_cli

        return run_cli(args)
    import torch

    from eeopt.train import build_model, fit

    settings = _settings(args)
    torch.manual_seed(args.seed)  # the fresh heads' initialisation
    model = build_model(args.arch, image_size=args.image_size)
    started = time.time()
    metrics = fit(model, data=args.data, objective=args.objective, epochs=args.epochs,
                  limit=args.limit, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                  freeze_backbone=args.freeze_backbone, progress=True, threads=args.threads,
                  **settings)
    out = write_run(args, model, metrics, started, objective=metrics["objective"],
                    metrics_record={k: v for k, v in metrics.items() if k != "loss_curve"})
    accs = ", ".join(f"exit {k}: {a:.2%}" for k, a in enumerate(metrics["val_acc"]))
    print(f"trained {args.arch} with {metrics['objective']} for {args.epochs} epoch(s) on "
          f"{metrics['train_size']} images in {metrics['train_seconds']:.0f} s; val accuracy "
          f"{accs}; wrote {out}/checkpoint.pt, model.onnx, metrics.json")
    return 0
