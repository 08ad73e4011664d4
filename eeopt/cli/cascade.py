"""``eeopt cascade``: a chain of separate models (cheapest first) -> one early-exit program."""

from __future__ import annotations

import argparse
from typing import Any

from eeopt.cascade import compile_cascade, model_prefix
from eeopt.cli.common import in_flags, plan_lines, positive_int, threshold, threshold_list
from eeopt.cli.compile import thresholds_and_planner
from eeopt.errors import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``cascade`` command to the ``eeopt`` sub-command parsers."""
    ca = sub.add_parser(
        "cascade",
        help="compile a chain of separate models (cheapest first) into one early-exit program",
        description="Network-selection cascade (Bolukbasi et al., ICML 2017): merge the models "
        "into one ONNX graph on their shared input(s) (names prefixed m0/, m1/, ...; outputs "
        "in order: model 0's, then model 1's, ...), then compile it like any multi-exit model. "
        "Each model is its own stage; a row whose gate fires after model k returns model k's "
        "logits and never runs a later model; a row that goes on pays for every model it ran, "
        "and the planner's cost counts every network evaluated. List the models cheapest "
        "first; the last one's (last) output is the final classifier. The models must read "
        "the same inputs (matched by name, else by position) and predict the same classes.",
    )
    ca.add_argument("models", nargs="+", metavar="MODEL.onnx",
                    help="two or more ONNX models, cheapest first (each: [batch, classes] "
                    "logits per output, dynamic batch)")
    ca.add_argument("--out", required=True, metavar="DIR", help="program directory to write")
    cg = ca.add_mutually_exclusive_group()
    cg.add_argument("--threshold", type=threshold, metavar="T",
                    help="one gate threshold for every early exit")
    cg.add_argument("--thresholds", type=threshold_list, metavar="T0,T1,...",
                    help="one threshold per early exit (every model's outputs but the last)")
    ca.add_argument("--calib", metavar="DATA",
                    help="planner: calibration data (fashion-mnist:val or an .npz with inputs "
                    "+ 'y'); it picks the kept models and their thresholds; needs --budget")
    ca.add_argument("--budget", type=float, metavar="PP",
                    help="planner: accuracy loss allowed against the last model, in points")
    ca.add_argument("--guarantee", type=float, metavar="P",
                    help="planner: hold the budget with probability P (risk control)")
    ca.add_argument("--margin", type=float, default=2.0, metavar="SIGMAS",
                    help="planner: standard errors of the loss estimate kept below the budget "
                    "(default 2)")
    ca.add_argument("--plan-batch", type=positive_int, default=1, metavar="N",
                    help="planner: the batch size to minimise latency at (default 1)")
    ca.add_argument("--policy", default="maxprob",
                    help="how a gate decides, as for `eeopt compile` (default maxprob)")
    ca.add_argument("--save-merged", metavar="MERGED.onnx",
                    help="also write the merged model; the program then records it as its "
                    "source, so `eeopt bench` compares against the last model alone")
    ca.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads, to profile with and to run the program "
                    "with (default 1; 0: all cores)")
    ca.add_argument("--force", action="store_true", help="replace DIR (and MERGED.onnx)")
    ca.add_argument("--no-verify", action="store_true",
                    help="skip the numerical check of the stages against the merged model")

    return ca  # type: ignore[no-any-return]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt cascade``; returns the exit status."""
    if len(args.models) < 2:
        raise UsageError(f"a cascade needs at least 2 models, got {len(args.models)}")
    program = compile_cascade(
        args.models,
        args.out,
        save_merged=args.save_merged,
        **thresholds_and_planner(args),
    )
    thr = ", ".join(f"{t:g}" for t in program.thresholds)
    exits = ", ".join(s.exit_output for s in program.manifest.stages)
    print(f"compiled a cascade of {len(args.models)} models -> {args.out}: "
          f"{program.num_exits} stages ({exits}), thresholds [{thr}]"
          + ("" if args.no_verify else ", verified against the merged model"))
    for k, m in enumerate(args.models):
        print(f"  {model_prefix(k)} = {m}")
    if program.manifest.plan:
        print("\n".join(plan_lines(program.manifest.plan)))
    return 0
