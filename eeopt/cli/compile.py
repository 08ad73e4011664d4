"""``eeopt compile``: a multi-exit ONNX model -> a program directory."""

from __future__ import annotations

import argparse
from typing import Any

from eeopt.cli.common import (
    in_flags,
    load_arrays,
    plan_lines,
    positive_int,
    threshold,
    threshold_list,
)
from eeopt.compiler import compile as compile_model
from eeopt.errors import UsageError
from eeopt.gates import LEARNED_POLICIES, GateSet
from eeopt.kernels.reference import POLICIES

__all__ = ["add_parser", "run", "thresholds_and_planner"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``compile`` command to the ``eeopt`` sub-command parsers."""
    c = sub.add_parser(
        "compile",
        help="compile a multi-exit ONNX model into a program directory",
        description="Split a multi-exit ONNX model (one [batch, classes] output per exit, "
        "earliest first, final classifier last, dynamic batch) into one stage per exit, fuse "
        "each exit's gate (softmax max-probability >= threshold) into its stage, verify the "
        "stages against the original, and write DIR/manifest.json + DIR/stage<k>.onnx.",
    )
    c.add_argument("model", metavar="MODEL.onnx", help="the multi-exit ONNX model")
    c.add_argument("--out", required=True, metavar="DIR", help="program directory to write")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=threshold, metavar="T",
                   help="one exit threshold for every early exit (maxprob, margin: 0 < T <= 1; "
                   "entropy: T >= 0 nats; patience: T >= 1 agreeing exits)")
    g.add_argument("--thresholds", type=threshold_list, metavar="T0,T1,...",
                   help="one threshold per early exit, comma-separated")
    c.add_argument("--calib", metavar="DATA",
                   help="planner: calibration data, a built-in name (fashion-mnist:val) or an "
                   ".npz with one array per input plus 'y'; needs --budget")
    c.add_argument("--budget", type=float, metavar="PP",
                   help="planner: accuracy loss allowed against the final exit, in points")
    c.add_argument("--guarantee", type=float, metavar="P",
                   help="planner: hold the budget with probability P (e.g. 0.95), by risk "
                   "control on held-out calibration rows")
    c.add_argument("--margin", type=float, default=2.0, metavar="SIGMAS",
                   help="planner: keep this many standard errors of the loss estimate below "
                   "the budget (default 2; 0 plans right up to the budget)")
    c.add_argument("--plan-batch", type=positive_int, default=1, metavar="N",
                   help="planner: the batch size to minimise latency at (default 1)")
    c.add_argument("--policy", default="maxprob", choices=POLICIES + LEARNED_POLICIES,
                   help="how a gate decides (default maxprob): maxprob >= T, entropy <= T, "
                   "margin (top1 - top2) >= T, or patience (PABEE: T consecutive exits agree); "
                   "learned from --calib (score >= T, T in [0, 1], default 0.5): jei (JEI-DNN "
                   "gates), gate-unit (CN111445026A), cost-sensitive (Bolukbasi et al. 2017), "
                   "twin (EP4356304A1: the exit is chosen from the input before running)")
    c.add_argument("--tau", type=float, default=None, metavar="TAU",
                   help="cost-sensitive policy: the price of time in 0/1-loss units per "
                   "whole-model time (default 0.2)")
    c.add_argument("--lambda", dest="lam", type=float, default=None, metavar="LAMBDA",
                   help="jei policy: the oracle's trade-off argmin CE + LAMBDA * MACs fraction "
                   "(default 0.3)")
    c.add_argument("--gates", metavar="GATES.npz",
                   help="learned policies: gates trained elsewhere (eeopt train --objective jei "
                   "writes DIR/gates.npz; eeopt.gates.GateSet.save) instead of training them on "
                   "--calib; with --budget the planner tunes their thresholds on every --calib row")
    c.add_argument("--example-inputs", metavar="X.npz",
                   help="sample inputs (one array per input name) used to verify the "
                   "compile; needed when random inputs do not suit the model")
    c.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads, to profile with and to run the program "
                   "with (recorded in the manifest; eeopt run uses it by default); default 1, as "
                   "eeopt profile and eeopt bench; 0: all cores")
    c.add_argument("--force", action="store_true", help="replace DIR if it exists")
    c.add_argument("--no-verify", action="store_true",
                   help="skip the numerical check of the stages against the original model")
    c.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "aoti"),
                   help="onnxruntime (default); tensorrt: one engine per stage (needs "
                   "TensorRT 10 and a GPU; not yet run); aoti: AOTInductor, needs a torch "
                   "module, so use the Python API eeopt.compile(module, ..., backend='aoti')")
    c.add_argument("--fp16", action="store_true", help="tensorrt: build FP16 engines")

    return c  # type: ignore[no-any-return]


def thresholds_and_planner(args: argparse.Namespace) -> dict[str, Any]:
    """The ``eeopt.compile`` keywords that `compile` and `cascade` share."""
    return {"threshold": args.threshold, "thresholds": args.thresholds, "force": args.force,
            "threads": args.threads, "verify": not args.no_verify, "policy": args.policy,
            "calib": args.calib, "budget": args.budget, "guarantee": args.guarantee,
            "plan_batch": args.plan_batch, "margin": args.margin, "progress": True}


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt compile``; returns the exit status."""
    example = None
    if args.example_inputs:
        ex = load_arrays(args.example_inputs)
        example = ex if isinstance(ex, dict) else (ex,)
    gates = None
    if getattr(args, "gates", None):
        if args.policy not in LEARNED_POLICIES:
            raise UsageError(f"--gates applies to the learned policies "
                             f"({', '.join(LEARNED_POLICIES)}), not --policy {args.policy}")
        if args.lam is not None or args.tau is not None:
            raise UsageError("--lambda/--tau set how gates are trained; with --gates they are "
                             "trained already: drop --lambda/--tau")
        gates = GateSet.load(args.gates)
    program = compile_model(
        args.model,
        args.out,
        example_inputs=example,
        **thresholds_and_planner(args),
        tau=args.tau,
        lam=args.lam,
        gates=gates,
        backend=args.backend,
        fp16=args.fp16,
    )
    thr = ", ".join(f"{t:g}" for t in program.thresholds)
    print(f"compiled {args.model} -> {args.out}: {program.num_exits} stages, thresholds [{thr}]"
          + ("" if args.no_verify else ", verified against the original"))
    if program.manifest.plan:
        print("\n".join(plan_lines(program.manifest.plan)))
    return 0
