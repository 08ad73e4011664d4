"""The ``eeopt`` command line: a thin layer over the library.

Errors print one line and exit non-zero (2 for usage errors, 1 otherwise); ``--debug`` shows the
traceback. Nothing is written unless the whole command succeeds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from eeopt import __version__
from eeopt._argtypes import positive_int as _positive_int
from eeopt.errors import DataError, EEOptError, UsageError
from eeopt.kernels.reference import LEARNED_POLICIES, POLICIES
from eeopt.train import cli as train_cli

__all__ = ["main", "build_parser"]

logger = logging.getLogger("eeopt")

EPILOG = """\
examples:
  eeopt compile model.onnx --out program/ --threshold 0.9
  eeopt cascade tiny.onnx big.onnx --calib fashion-mnist:val --budget 0.5 --out program/
  eeopt run program/ --input x.npy --output out.npz --batch-size 64
  eeopt inspect program/
  eeopt train --data fashion-mnist --arch demo-cnn --objective consistency --epochs 3 --out run/
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _threshold_list(text: str) -> list[float]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated thresholds, e.g. 0.9,0.8")
    return [_threshold(p.strip()) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="eeopt",
        description="Compile and run early-exit neural networks: inputs that are already "
        "confident leave at an intermediate exit, and exited rows leave the batch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"eeopt {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    g.add_argument("--threshold", type=_threshold, metavar="T",
                   help="one exit threshold for every early exit (maxprob, margin: 0 < T <= 1; "
                   "entropy: T >= 0 nats; patience: T >= 1 agreeing exits)")
    g.add_argument("--thresholds", type=_threshold_list, metavar="T0,T1,...",
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
    c.add_argument("--plan-batch", type=_positive_int, default=1, metavar="N",
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
    c.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    c.add_argument("--force", action="store_true", help="replace DIR if it exists")
    c.add_argument("--no-verify", action="store_true",
                   help="skip the numerical check of the stages against the original model")
    c.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "aoti"),
                   help="onnxruntime (default); tensorrt: one engine per stage (needs "
                   "TensorRT 10 and a GPU; not yet run); aoti: AOTInductor, needs a torch "
                   "module, so use the Python API eeopt.compile(module, ..., backend='aoti')")
    c.add_argument("--fp16", action="store_true", help="tensorrt: build FP16 engines")

    r = sub.add_parser(
        "run",
        help="run a compiled program on an .npy/.npz input",
        description="Run a program with per-sample exits. Writes OUT.npz with `logits` "
        "[N, C] float32 and `exit` [N] int64 (0-based; the final classifier is the last).",
    )
    r.add_argument("program", metavar="DIR", help="compiled program directory")
    r.add_argument("--input", required=True, metavar="X.npy|X.npz",
                   help=".npy for a single-input program, .npz with one array per input name")
    r.add_argument("--output", required=True, metavar="OUT.npz", help="where to write results")
    r.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="rows per call (default: all rows at once)")
    r.add_argument("--thresholds", type=_threshold_list, default=None, metavar="T0,T1,...",
                   help="override the compiled thresholds for this run")
    r.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")

    pr = sub.add_parser(
        "profile",
        help="measure per-node, per-exit and per-stage cost on this machine",
        description="Profile a multi-exit model (or the source model of a program directory) "
        "on ONNX Runtime: per-node latency from ORT's profiler, each exit's stage, head + gate "
        "and backbone segment at several batch sizes (median of repeats, fitted as fixed + "
        "per-row), the plain network, the runtime's own per-stage cost, and MACs.",
    )
    pr.add_argument("model", metavar="MODEL.onnx|DIR", help="multi-exit ONNX model or program")
    pr.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    pr.add_argument("--batches", default="1,8,64", metavar="B1,B2,...",
                    help="batch sizes to measure (default 1,8,64)")
    pr.add_argument("--json", metavar="OUT.json", help="also write the full report as JSON")
    pr.add_argument("--top", type=int, default=10, help="slowest nodes to list (default 10)")

    be = sub.add_parser(
        "bench",
        help="accuracy and latency of a program against the plain network, and the frontier",
        description="Measure a program on labelled data against the plain network (its source "
        "model cut to the final output), interleaved in one process: accuracy, exit fractions, "
        "batch-1 mean/median/p99 latency (mean is the headline), throughput at larger batches, "
        "the ideal speedup (the cost of the bare stage calls, timed in the same blocks, times "
        "the measured exit distribution), efficiency = measured over ideal, and the "
        "accuracy-latency frontier across planner budgets.",
    )
    be.add_argument("program", metavar="DIR", help="compiled program directory")
    be.add_argument("--data", required=True, metavar="DATA",
                    help="labelled test data: fashion-mnist:test or an .npz with inputs + 'y'")
    be.add_argument("--batch", default="1,64", metavar="B1,B2,...",
                    help="batch sizes (default 1,64)")
    be.add_argument("--model", metavar="MODEL.onnx",
                    help="the source model (default: the path recorded at compile time)")
    be.add_argument("--calib", metavar="DATA",
                    help="calibration data for the frontier (default: the program's own)")
    be.add_argument("--budgets", default="0,0.25,0.5,1,2,4", metavar="PP,...",
                    help="planner budgets for the frontier (default 0,0.25,0.5,1,2,4)")
    be.add_argument("--no-frontier", action="store_true", help="skip the frontier")
    be.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    be.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    be.add_argument("--passes", type=int, default=3,
                    help="timed passes per batch size; the one with the median speedup is "
                    "reported (default 3)")
    be.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    be.add_argument("--plot", metavar="OUT.png", help="plot the accuracy-latency frontier")

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
    cg.add_argument("--threshold", type=_threshold, metavar="T",
                    help="one gate threshold for every early exit")
    cg.add_argument("--thresholds", type=_threshold_list, metavar="T0,T1,...",
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
    ca.add_argument("--plan-batch", type=_positive_int, default=1, metavar="N",
                    help="planner: the batch size to minimise latency at (default 1)")
    ca.add_argument("--policy", default="maxprob",
                    help="how a gate decides, as for `eeopt compile` (default maxprob)")
    ca.add_argument("--save-merged", metavar="MERGED.onnx",
                    help="also write the merged model; the program then records it as its "
                    "source, so `eeopt bench` compares against the last model alone")
    ca.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ca.add_argument("--force", action="store_true", help="replace DIR (and MERGED.onnx)")
    ca.add_argument("--no-verify", action="store_true",
                    help="skip the numerical check of the stages against the merged model")

    train_cli.add_parser(sub)

    i = sub.add_parser("inspect", help="show a program's stages, carried tensors and gates",
                       description="Print a readable table of a compiled program.")
    i.add_argument("program", metavar="DIR", help="compiled program directory")
    return p


# ---------------------------------------------------------------------------- commands


def _load_arrays(path: str) -> dict[str, np.ndarray] | np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {p} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {p} as a numpy file: {exc}") from exc
    raise DataError(f"input {p} must be a .npy or .npz file")


def _atomic_savez(path: str, **arrays: np.ndarray) -> None:
    dest = Path(path)
    if dest.suffix != ".npz":
        raise UsageError(f"--output {dest} must end in .npz")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".npz", dir=dest.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _thresholds_and_planner(args: argparse.Namespace) -> dict[str, Any]:
    """The ``eeopt.compile`` keywords that `compile` and `cascade` share."""
    return {"threshold": args.threshold, "thresholds": args.thresholds, "force": args.force,
            "threads": args.threads, "verify": not args.no_verify, "policy": args.policy,
            "calib": args.calib, "budget": args.budget, "guarantee": args.guarantee,
            "plan_batch": args.plan_batch, "margin": args.margin, "progress": True}


def cmd_compile(args: argparse.Namespace) -> int:
    import eeopt

    example = None
    if args.example_inputs:
        ex = _load_arrays(args.example_inputs)
        example = ex if isinstance(ex, dict) else (ex,)
    gates = None
    if getattr(args, "gates", None):
        from eeopt.gates import LEARNED_POLICIES, GateSet

        if args.policy not in LEARNED_POLICIES:
            raise UsageError(f"--gates applies to the learned policies "
                             f"({', '.join(LEARNED_POLICIES)}), not --policy {args.policy}")
        if args.lam is not None or args.tau is not None:
            raise UsageError("--lambda/--tau set how gates are trained; with --gates they are "
                             "trained already: drop --lambda/--tau")
        gates = GateSet.load(args.gates)
    program = eeopt.compile(
        args.model,
        args.out,
        example_inputs=example,
        **_thresholds_and_planner(args),
        tau=args.tau,
        lam=args.lam,
        **({"gates": gates} if gates is not None else {}),
        **({"backend": args.backend, "fp16": args.fp16} if args.backend != "onnxruntime"
           else {}),
    )
    thr = ", ".join(f"{t:g}" for t in program.thresholds)
    print(f"compiled {args.model} -> {args.out}: {program.num_exits} stages, thresholds [{thr}]"
          + ("" if args.no_verify else ", verified against the original"))
    if program.manifest.plan:
        print("\n".join(_plan_lines(program.manifest.plan)))
    return 0


def cmd_cascade(args: argparse.Namespace) -> int:
    from eeopt.cascade import compile_cascade, model_prefix

    if len(args.models) < 2:
        raise UsageError(f"a cascade needs at least 2 models, got {len(args.models)}")
    program = compile_cascade(
        args.models,
        args.out,
        save_merged=args.save_merged,
        **_thresholds_and_planner(args),
    )
    thr = ", ".join(f"{t:g}" for t in program.thresholds)
    exits = ", ".join(s.exit_output for s in program.manifest.stages)
    print(f"compiled a cascade of {len(args.models)} models -> {args.out}: "
          f"{program.num_exits} stages ({exits}), thresholds [{thr}]"
          + ("" if args.no_verify else ", verified against the merged model"))
    for k, m in enumerate(args.models):
        print(f"  {model_prefix(k)} = {m}")
    if program.manifest.plan:
        print("\n".join(_plan_lines(program.manifest.plan)))
    return 0


def _plan_lines(p: dict) -> list[str]:  # type: ignore[type-arg]
    """A compiled plan, readably: used by `compile` and `inspect`."""
    lines = [
        f"plan ({p['policy']}, budget {p['budget_pp']:g} pp, priced at batch {p['batch']}, "
        f"calibration {p.get('calibration', '?')}):",
        f"  kept exits {', '.join(p['kept_outputs'])}; thresholds "
        + ", ".join(f"{t:.4g}" for t in p["thresholds"]),
        f"  predicted accuracy {p['predicted_accuracy']:.2%} vs {p['final_accuracy']:.2%} "
        f"final ({p['predicted_loss_pp']:.2f} pp, margin {p.get('margin_pp', 0):.2f}); "
        f"{p['predicted_latency_ms']:.3f} ms/row vs {p['plain_latency_ms']:.3f} plain "
        f"({p['predicted_speedup']:.2f}x)",
    ]
    if p.get("holdout"):
        h = p["holdout"]
        lines.append(f"  held-out check ({h['rows']} rows): loss {h['loss_pp']:.2f} pp, "
                     f"{h['latency_ms']:.3f} ms/row")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import eeopt

    program = eeopt.load(args.program, threads=args.threads)
    data = _load_arrays(args.input)
    feeds = data if isinstance(data, dict) else {program.input_specs[0].name: data}
    if not isinstance(data, dict) and len(program.input_specs) > 1:
        names = ", ".join(s.name for s in program.input_specs)
        raise DataError(f"the program has several inputs ({names}); pass an .npz with one "
                        "array per input name")
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    bs = args.batch_size or max(n, 1)
    logits, exits = [], []
    for start in tqdm(range(0, max(n, 1), bs), desc="eeopt run", unit="batch",
                      disable=None if n > bs else True):
        chunk = {k: v[start : start + bs] for k, v in feeds.items()}
        res = program.run(chunk, thresholds=args.thresholds)
        logits.append(res.logits)
        exits.append(res.exit)
    all_logits = np.concatenate(logits) if logits else np.zeros((0, program.num_classes))
    all_exits = np.concatenate(exits) if exits else np.zeros((0,), np.int64)
    _atomic_savez(args.output, logits=all_logits.astype(np.float32), exit=all_exits)
    counts = np.bincount(all_exits, minlength=program.num_exits)
    frac = ", ".join(f"exit {k}: {c / max(n, 1):.1%}" for k, c in enumerate(counts))
    print(f"wrote {args.output}: {n} rows ({frac})")
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(out)


def _gate_text(policy: str, t: float) -> str:
    return {"maxprob": f"max prob >= {t:g}", "entropy": f"entropy <= {t:g}",
            "margin": f"margin >= {t:g}", "patience": f"{t:g} exits agree"}.get(
                policy, f"{policy} {t:g}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from eeopt.manifest import load_manifest

    m = load_manifest(args.program)
    print(f"program   {args.program}")
    print(f"eeopt     {m.eeopt_version} (schema {m.schema_version}), backend {m.backend} "
          f"{m.backend_version}, opset {m.onnx_opset}")
    print(f"inputs    {', '.join(s.describe() for s in m.inputs)}")
    print(f"classes   {m.num_classes}; exits {m.num_exits}")
    if m.source.get("file"):
        print(f"source    {m.source['file']}")
    print()
    rows = []
    for s in m.stages:
        gate = "final (no gate)" if s.gate is None else _gate_text(s.gate.policy,
                                                                   s.gate.threshold)
        reads = ", ".join(t.describe() for t in s.inputs) or "-"
        passes = ", ".join(s.carry_after) or "-"
        rows.append([str(s.index), s.file, s.exit_output, str(s.nodes), reads, passes, gate])
    print(_table(["stage", "file", "exit", "nodes", "reads", "carries on", "gate"], rows))
    if m.plan:
        p = m.plan
        print("\n" + "\n".join(_plan_lines(p)))
        if p.get("exit_benefit"):
            print("\nper-exit benefit (each early exit alone with the final one; 5-fold "
                  "cross-validated, threshold chosen on the other folds):")
            print(_table(["exit", "accuracy", "marginal cost ms", "saves ms/row", "loss pp"], [
                [str(b["exit"]), f"{b['accuracy']:.2%} +- {b['accuracy_std']:.2%}",
                 f"{b['marginal_cost_ms']:.4f}",
                 f"{b['saved_ms']:.4f} +- {b['saved_ms_std']:.4f}", f"{b['loss_pp']:.2f}"]
                for b in p["exit_benefit"]]))
    return 0


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated positive integers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise UsageError(f"{flag} takes comma-separated positive integers, got {text!r}")
    return vals


def _atomic_text(path: str, text: str) -> None:
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, dest)


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from eeopt.profile import profile_model

    model = args.model
    if Path(model).is_dir():
        from eeopt.bench import _plain_model_path
        from eeopt.manifest import load_manifest

        model = _plain_model_path(load_manifest(model), None)
    batches = _int_list(args.batches, "--batches")
    r = profile_model(model, threads=args.threads, batches=batches, progress=True)
    b_hdr = [f"stage @{b}" for b in batches]
    rows = []
    for e in r.exits:
        rows.append([str(e.exit), e.output, *(f"{e.stage.samples[b]:.3f}" for b in batches),
                     f"{e.backbone.at(batches[0]):.3f}", f"{e.head_gate.at(batches[0]):.3f}",
                     f"{e.gate_us:.1f}", f"{e.macs / 1e6:.2f}"])
    print(f"profile of {model}: ONNX Runtime CPU, {r.threads or 'default'} thread(s); "
          "milliseconds per call (median), fits are fixed + per-row * batch")
    print(_table(["exit", "output", *b_hdr, f"backbone @{batches[0]}",
                  f"head+gate @{batches[0]}", "gate us*",
                  "MMACs"], rows))
    print("plain network: " + ", ".join(f"{r.plain.samples[b]:.3f} ms @{b}" for b in batches)
          + f"; {r.plain_macs / 1e6:.2f} MMACs")
    print("runtime's own cost per stage: " + ", ".join(
        f"{r.runtime.samples[b]:.3f} ms @{b}" for b in batches))
    kept = list(range(r.num_exits))
    print("a row leaving at exit k pays (batch 1, every exit kept): " + ", ".join(
        f"{k}: {c:.3f} ms" for k, c in zip(kept, r.cumulative_ms(kept), strict=True)))
    slow = sorted(r.nodes, key=lambda n: -n.us)[: args.top]
    print("\nslowest nodes as ONNX Runtime ran them (* per-node times include the "
          "profiler's own overhead):")
    print(_table(["stage", "node", "op", "us @1"],
                 [[str(n.stage), n.name, n.op, f"{n.us:.1f}"] for n in slow]))
    if args.json:
        _atomic_text(args.json, json.dumps(r.to_dict(), indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from eeopt.bench import plot_frontier, run_bench
    from eeopt.manifest import load_manifest

    batches = _int_list(args.batch, "--batch")
    try:
        budgets = tuple(float(t) for t in args.budgets.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--budgets takes comma-separated numbers, got {args.budgets!r}"
                         ) from None
    calib = args.calib
    if calib is None and not args.no_frontier:
        plan = load_manifest(args.program).plan or {}
        calib = plan.get("calibration") if plan.get("calibration") != "arrays" else None
    res = run_bench(args.program, args.data, batches=batches, model=args.model,
                    calib=None if args.no_frontier else calib, budgets=budgets,
                    threads=args.threads, limit=args.limit, passes=args.passes)
    print_bench(res)
    if args.json:
        _atomic_text(args.json, json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        if not res["frontier"]:
            raise UsageError("--plot needs the frontier: pass --calib DATA")
        plot_frontier(res, args.plot)
        print(f"wrote {args.plot}")
    return 0


def print_bench(res: dict) -> None:  # type: ignore[type-arg]
    acc = res["accuracy"]
    print(f"{res['program']} on {res['data']} ({res['rows']} rows, {res['threads']} thread(s))")
    rows = [["accuracy", f"{acc['plain']:.2%}", f"{acc['program']:.2%}",
             f"{-res['loss_pp']:+.2f} pp"]]
    for b, lat in res["latency"].items():
        p, q = lat["plain"], lat["program"]
        if b == "1":
            rows.append(["batch 1 mean (headline)", f"{p['mean_ms']:.3f} ms",
                         f"{q['mean_ms']:.3f} ms", f"{lat['speedup_mean']:.2f}x"])
            rows.append(["batch 1 median", f"{p['median_ms']:.3f} ms", f"{q['median_ms']:.3f} ms",
                         f"{p['median_ms'] / q['median_ms']:.2f}x"])
            rows.append(["batch 1 p99", f"{p['p99_ms']:.3f} ms", f"{q['p99_ms']:.3f} ms",
                         f"{p['p99_ms'] / q['p99_ms']:.2f}x"])
        else:
            rows.append([f"batch {b} throughput", f"{lat['plain_rows_per_s']:,.0f}/s",
                         f"{lat['program_rows_per_s']:,.0f}/s", f"{lat['speedup_mean']:.2f}x"])
        rows.append([f"  ideal @{b} (bare stage calls)", "", "", f"{lat['ideal_speedup']:.2f}x"])
        rows.append([f"  efficiency @{b}", "", "", f"{lat['efficiency']:.2f}"])
        speed = lat.get("machine_speed_factor", 1.0)
        rows.append([f"  predicted vs measured @{b} (speed x{speed:.2f})",
                     f"{lat['predicted_program_ms_per_row']:.4f} ms/row",
                     f"{lat['measured_program_ms_per_row']:.4f} ms/row",
                     f"{100 * lat['prediction_error']:+.1f}%"])
    print(_table(["", "plain net", "eeopt", "ratio"], rows))
    print("exit fractions: " + ", ".join(f"{o}: {f:.1%}" for o, f in
                                         zip(res["kept_outputs"], res["exit_fractions"],
                                             strict=True)))
    if res["frontier"]:
        print(f"\nfrontier (planned on the calibration data; accuracy on every row, batch-1 "
              f"latency on the first {res['frontier_rows']}):")
        frows = []
        for f in res["frontier"]:
            if "accuracy" in f:
                frows.append([f"{f['budget_pp']:g}", f"{f['accuracy']:.2%}",
                              f"{f['program_mean_ms']:.3f}", f"{f['plain_mean_ms']:.3f}",
                              f"{f['speedup']:.2f}x", ",".join(f["kept"])])
            else:
                frows.append([f"{f['budget_pp']:g}", "-", "-", "-", "-", f["skipped"][:40]])
        print(_table(["budget pp", "accuracy", "program ms", "plain ms", "speedup", "kept"],
                     frows))


COMMANDS = {"compile": cmd_compile, "cascade": cmd_cascade, "run": cmd_run,
            "inspect": cmd_inspect,
            "profile": cmd_profile, "bench": cmd_bench, "train": train_cli.run}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"eeopt {args.command}: error: {exc}\n")
        return 2
    except EEOptError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"eeopt {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("eeopt: interrupted\n")
        return 130
    except Exception as exc:  # a bug: still one line, the traceback behind --debug
        if args.debug:
            raise
        sys.stderr.write(
            f"eeopt {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback)\n"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
