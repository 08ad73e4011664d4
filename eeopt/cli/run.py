"""``eeopt run``: a compiled program on an ``.npy``/``.npz`` input -> ``OUT.npz``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.cli.common import in_flags, load_arrays, positive_int, threshold_list
from eeopt.errors import DataError, UsageError
from eeopt.program import check_new_output, write_file
from eeopt.runtime import Result, load
from eeopt.serve import input_files, score_parts, start_ray

__all__ = ["add_parser", "check_output", "run", "save_results"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``run`` command to the ``eeopt`` sub-command parsers."""
    r = sub.add_parser(
        "run",
        help="run a compiled program on an .npy/.npz input",
        description="Run a program with per-sample exits. Writes OUT.npz with `logits` "
        "[N, C] float32 and `exit` [N] int64 (0-based; the final classifier is the last).",
    )
    r.add_argument("program", metavar="DIR", help="compiled program directory")
    r.add_argument("--input", required=True, metavar="X.npy|X.npz",
                   help=".npy for a single-input program, .npz with one array per input name "
                   "(--ray: a directory or glob of them)")
    r.add_argument("--output", required=True, metavar="OUT.npz", help="where to write results "
                   "(--ray: a new directory)")
    r.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="rows per call (default: all rows at once)")
    r.add_argument("--no-buckets", action="store_true",
                   help="text programs: keep the rows' order in batches (by default rows of "
                   "similar length share a batch, so each is cut to its own longest row; the "
                   "output is in the input's order either way)")
    r.add_argument("--thresholds", type=threshold_list, default=None, metavar="T0,T1,...",
                   help="override the compiled thresholds for this run")
    r.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: the count the program was "
                   "compiled for, 1 unless its compile said otherwise)")
    r.add_argument("--ray", action="store_true",
                   help="score on Ray Data instead: --input is a directory or glob of "
                   ".npy/.npz files, --output a new directory of Parquet shards (columns row, "
                   "exit, exit_name, logit_0...; row numbers the rows across the files in "
                   "order); a local Ray, or RAY_ADDRESS's cluster")
    r.add_argument("--concurrency", type=positive_int, default=1, metavar="N",
                   help="--ray: workers in the actor pool, each loading the program once "
                   "(default 1)")
    r.add_argument("--edge", default=None, metavar="HOST:PORT",
                   help="split the run with the edge server there (`eeopt edge DIR --listen "
                   "HOST:PORT` on the same program): the first stages run here, and only the "
                   "rows that did not exit cross, coded; the split follows the program's split "
                   "plan (`eeopt plan-split`) and the measured link, unless --split fixes it")
    r.add_argument("--split", type=int, default=None, metavar="S",
                   help="--edge: run stages 0..S-1 here and the rest on the edge (0 sends the "
                   "input; the stage count never uses the edge), with the program's or "
                   "--thresholds' thresholds")
    r.add_argument("--fallback", choices=["local"], default=None,
                   help="--edge: when the edge does not answer (after bounded retries), run "
                   "the rest here instead of failing")
    r.add_argument("--codec", choices=["auto", "lossless", "lossy"], default="auto",
                   help="--edge: how carried tensors are coded: auto (by entropy against the "
                   "split plan's calibrated threshold; lossless without a plan), lossless "
                   "(bit-exact), or lossy (int8 per channel)")
    r.add_argument("--edge-timeout", type=float, default=5.0, metavar="S",
                   help="--edge: seconds per request before a retry (default 5; 2 retries)")
    r.add_argument("--allow-native", action="store_true",
                   help="also run programs whose stages hold native code (aoti, tensorrt), "
                   "which loading runs: only programs you trust")

    return r  # type: ignore[no-any-return]


def check_output(path: str) -> Path:
    """The ``--output`` path, checked before any work: an ``.npz`` file that can be written."""
    dest = Path(path)
    if dest.suffix != ".npz":
        raise UsageError(f"--output {dest} must end in .npz")
    return check_new_output(dest, force=True, directory=False)


def save_results(path: str, **arrays: np.ndarray) -> None:
    """``arrays`` into the ``.npz`` at ``path``, atomically."""
    dest = check_output(path)
    write_file(dest, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")  # type: ignore[arg-type]


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt run``; returns the exit status."""
    if args.ray:
        return _run_ray(args)
    if args.concurrency != 1:
        raise UsageError("--concurrency applies to --ray")
    if args.edge is None and (args.split is not None or args.fallback is not None):
        raise UsageError("--split and --fallback apply with --edge")
    check_output(args.output)
    program = load(args.program, threads=args.threads, allow_native=args.allow_native)
    feeds = _feeds(program, load_arrays(args.input))
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    bs = args.batch_size or max(n, 1)
    if args.edge is not None:
        res = _run_split(program, feeds, bs, args)
    else:
        res = program.run_in_batches(feeds, bs, thresholds=args.thresholds, progress=n > bs,
                                     buckets=False if args.no_buckets or bs >= n else None)
    all_logits, all_exits = res.logits, res.exit
    save_results(args.output, logits=all_logits.astype(np.float32), exit=all_exits)
    counts = np.bincount(all_exits, minlength=program.num_exits)
    frac = ", ".join(f"exit {k} ({name}): {c / max(n, 1):.1%}"
                     for k, (name, c) in enumerate(zip(program.exit_names, counts, strict=True)))
    print(f"wrote {args.output}: {n} rows ({frac})")
    return 0


def _run_split(program: Any, feeds: dict[str, np.ndarray], bs: int,
               args: argparse.Namespace) -> Result:
    """``eeopt run --edge``: batches of ``bs`` rows in order through an ``EdgeClient``."""
    if args.thresholds is not None and args.split is None:
        raise UsageError("--thresholds with --edge needs --split (the split plan brings its "
                         "own thresholds)")
    client = program.connect_edge(args.edge, split=args.split, thresholds=args.thresholds,
                                  fallback=args.fallback, codec=args.codec,
                                  timeout_s=args.edge_timeout)
    try:
        res = program.run_in_batches(feeds, bs, buckets=False, edge=args.edge)
    finally:
        client.close()
    st = client.stats
    split, _ = client.choice
    print(f"split run with {args.edge}: {st['requests']} requests, {st['rows_sent']} rows "
          f"crossed ({st['bytes_sent']:,} bytes sent), split at stage {split}"
          + (f", {st['local_fallbacks']} run locally (edge down)" if st["local_fallbacks"]
             else ""))
    return res  # type: ignore[no-any-return]


def _feeds(program: Any, data: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """``load_arrays``' result as the program's feeds (an ``.npy`` feeds a one-input program)."""
    if isinstance(data, dict):
        return data
    if len(program.input_specs) > 1:
        names = ", ".join(s.name for s in program.input_specs)
        raise DataError(f"the program has several inputs ({names}); pass an .npz with one "
                        "array per input name")
    return {program.input_specs[0].name: data}


def _run_ray(args: argparse.Namespace) -> int:
    """``eeopt run --ray``: Parquet shards in a new ``--output`` directory."""
    if args.thresholds is not None or args.no_buckets:
        raise UsageError("--thresholds and --no-buckets apply without --ray")
    out = Path(args.output)
    if out.exists():
        raise UsageError(f"--output {out} exists: --ray writes a new directory of Parquet "
                         "shards; choose another name")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} does not exist: create it first")
    files = input_files(args.input)
    program = load(args.program, threads=args.threads)  # a bad program fails before Ray starts
    parts = [(str(f), _feeds(program, load_arrays(str(f)))) for f in files]
    start_ray()
    rows = score_parts(args.program, parts, out, batch_size=args.batch_size or 256,
                       concurrency=args.concurrency, threads=args.threads or 1,
                       num_cpus=0.5)  # Ray Data's Parquet writes need a CPU too
    print(f"wrote {out}/: {rows} rows from {len(files)} file(s) as Parquet (row, exit, "
          "exit_name, logit_0...)")
    return 0
