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
from typing import NoReturn

import numpy as np

from eeopt import __version__
from eeopt.errors import DataError, EEOptError, UsageError
from eeopt.kernels.reference import POLICIES

__all__ = ["main", "build_parser"]

logger = logging.getLogger("eeopt")

EPILOG = """\
examples:
  eeopt compile model.onnx --out program/ --threshold 0.9
  eeopt run program/ --input x.npy --output out.npz --batch-size 64
  eeopt inspect program/
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


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
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--threshold", type=_threshold, metavar="T",
                   help="one exit threshold for every early exit (maxprob, margin: 0 < T <= 1; "
                   "entropy: T >= 0 nats; patience: T >= 1 agreeing exits)")
    g.add_argument("--thresholds", type=_threshold_list, metavar="T0,T1,...",
                   help="one threshold per early exit, comma-separated")
    c.add_argument("--policy", default="maxprob", choices=POLICIES,
                   help="how a gate decides (default maxprob): maxprob >= T, entropy <= T, "
                   "margin (top1 - top2) >= T, or patience (PABEE: T consecutive exits agree)")
    c.add_argument("--example-inputs", metavar="X.npz",
                   help="sample inputs (one array per input name) used to verify the "
                   "compile; needed when random inputs do not suit the model")
    c.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    c.add_argument("--force", action="store_true", help="replace DIR if it exists")
    c.add_argument("--no-verify", action="store_true",
                   help="skip the numerical check of the stages against the original model")

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


def cmd_compile(args: argparse.Namespace) -> int:
    import eeopt

    example = None
    if args.example_inputs:
        ex = _load_arrays(args.example_inputs)
        example = ex if isinstance(ex, dict) else (ex,)
    program = eeopt.compile(
        args.model,
        args.out,
        example_inputs=example,
        threshold=args.threshold,
        thresholds=args.thresholds,
        force=args.force,
        threads=args.threads,
        verify=not args.no_verify,
        policy=args.policy,
    )
    thr = ", ".join(f"{t:g}" for t in program.thresholds)
    print(f"compiled {args.model} -> {args.out}: {program.num_exits} stages, thresholds [{thr}]"
          + ("" if args.no_verify else ", verified against the original"))
    return 0


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
        print(f"\nplan: {m.plan}")
    return 0


COMMANDS = {"compile": cmd_compile, "run": cmd_run, "inspect": cmd_inspect}


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
