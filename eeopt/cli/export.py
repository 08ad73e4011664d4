"""``eeopt export``: a compiled program as one standard ONNX model (``eeopt.export``)."""

from __future__ import annotations

import argparse
from typing import Any

from eeopt.build.tensorrt import build_one_engine
from eeopt.cli.common import in_flags
from eeopt.errors import UsageError
from eeopt.export import THRESHOLDS, export_onnx
from eeopt.program import load_manifest

__all__ = ["add_parser", "run"]

FORMATS = ("onnx", "tensorrt")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``export`` command to the ``eeopt`` sub-command parsers."""
    e = sub.add_parser(
        "export", help="write a program as one ONNX model that any ONNX runtime serves",
        description="Write a compiled program as one self-contained ONNX model that computes "
        "exactly what the program computes, the per-sample exit and the batch compaction "
        "included, with standard operators only (NonZero, Gather, If, ScatterND): serve it "
        "from ONNX Runtime in any language, or any runtime that takes ONNX. Inputs: the "
        f"model's inputs plus `{THRESHOLDS}` (float32 [K], one per gated exit; the compiled "
        "ones are in the model's metadata). Outputs: `logits` [N, C] float32 and `exit` [N] "
        "int64. The file is written whole or not at all. See docs/export.md.")
    e.add_argument("program", metavar="DIR", help="compiled program directory (onnxruntime "
                   "backend)")
    e.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (default), or tensorrt: one TensorRT engine built from that graph "
                   "(needs TensorRT 10 and an NVIDIA GPU; never yet run)")
    e.add_argument("--fp16", action="store_true", help="tensorrt: build in FP16")
    e.add_argument("--out", required=True, metavar="FILE", help="the model file to write, "
                   "e.g. program.onnx")
    e.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return e  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt export``; returns the exit status."""
    m = load_manifest(args.program)
    if args.fp16 and args.format != "tensorrt":
        raise UsageError("--fp16 applies to --format tensorrt")
    if args.format == "tensorrt":
        out = build_one_engine(args.program, args.out, fp16=args.fp16, force=args.force)
        names = ", ".join(t.name for t in m.inputs)
        print(f"built one TensorRT engine for {args.program} -> {out} "
              f"({out.stat().st_size / 1e6:.1f} MB); inputs {names} and `{THRESHOLDS}` "
              f"[{len(m.thresholds)}]; outputs `logits`, `exit`")
        return 0
    out = export_onnx(args.program, args.out, force=args.force)
    size = out.stat().st_size / 1e6
    thr = ", ".join(f"{t:g}" for t in m.thresholds)
    trim = "; trims padding along the sequence axis" if m.sequence is not None else ""
    print(f"exported {args.program} -> {out} ({size:.1f} MB, {m.num_exits} stages, "
          f"{len(m.thresholds)} gated exits{trim})")
    print(f"feed `{THRESHOLDS}` = [{thr}] (the compiled thresholds) or your own; outputs "
          f"`logits` [N, {m.num_classes}] and `exit` [N] (k = "
          + ", ".join(f"{k}: {n}" for k, n in enumerate(m.exit_names)) + ")")
    return 0
