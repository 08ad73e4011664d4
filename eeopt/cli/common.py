"""What the commands share: the one-line argparse parser, argument types, the table of flags
(the only place that maps eeopt's settings to command-line flags), and input/output helpers."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from eeopt.errors import DataError, EEOptError, UsageError
from eeopt.planning import Promise
from eeopt.program import PlanRecord

__all__ = [
    "FLAGS",
    "Parser",
    "in_flags",
    "int_list",
    "load_arrays",
    "plan_lines",
    "positive_int",
    "threshold",
    "threshold_list",
]

#: eeopt's setting names (``eeopt.compile`` and friends' keyword arguments, as the library's
#: messages mark them) -> the command line's flags
FLAGS = {
    "threshold": "--threshold",
    "thresholds": "--thresholds",
    "calib": "--calib",
    "budget": "--budget",
    "guarantee": "--guarantee",
    "margin": "--margin",
    "plan_batch": "--plan-batch",
    "policy": "--policy",
    "tau": "--tau",
    "lam": "--lambda",
    "gates": "--gates",
    "example_inputs": "--example-inputs",
    "threads": "--threads",
    "force": "--force",
    "backend": "--backend",
    "fp16": "--fp16",
    "out": "--out",
    "model": "--model",
    "passes": "--passes",
    "data": "--data",
    "arch": "--arch",
    "lr": "--lr",
    "alternate": "--alternate",
    "allow_native": "--allow-native",
    "input": "--input",
    "port": "--port",
    "replicas": "--replicas",
    "max_batch": "--max-batch",
    "max_rows": "--max-rows",
    "batch_wait_ms": "--batch-wait-ms",
    "max_body_mb": "--max-body-mb",
    "plain_onnx": "--plain",
    "adapt": "--adapt",
    "listen": "--listen",
    "max_request": "--max-request-mb",
    "edge": "--edge",
    "split": "--split",
    "fallback": "--fallback",
    "codec": "--codec",
    "device_ms": "--device-ms",
    "objective": "--objective",
}

F = TypeVar("F", bound=Callable[..., Any])


def in_flags(command: F) -> F:
    """A command whose errors name the command line's flags (``FLAGS``) where the library's
    messages name its settings."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EEOptError as exc:
            shown = exc.render(FLAGS)
            if shown == exc.template:
                raise
            raise type(exc)(shown) from exc

    return run  # type: ignore[return-value]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def threshold_list(text: str) -> list[float]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated thresholds, e.g. 0.9,0.8")
    return [threshold(p.strip()) for p in parts]


def int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated positive integers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise UsageError(f"{flag} takes comma-separated positive integers, got {text!r}")
    return vals


def load_arrays(path: str) -> dict[str, np.ndarray] | np.ndarray:
    """An ``.npy`` (one array) or ``.npz`` (arrays by name), never unpickling."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {p} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)  # type: ignore[no-any-return]
    except Exception as exc:
        raise DataError(f"cannot read {p} as a numpy file: {exc}") from exc
    raise DataError(f"input {p} must be a .npy or .npz file")


def plan_lines(p: PlanRecord) -> list[str]:
    """A compiled plan, readably: used by `compile`, `cascade` and `inspect`."""
    lines = [
        f"plan ({p.policy}, budget {p.budget_pp:g} pp, priced at batch {p.batch}, "
        f"calibration {p.calibration or '?'}):",
        f"  kept exits {', '.join(p.kept_outputs)}; thresholds "
        + ", ".join(f"{t:.4g}" for t in p.thresholds),
        f"  predicted accuracy {p.predicted_accuracy:.2%} vs {p.final_accuracy:.2%} "
        f"final ({p.predicted_loss_pp:.2f} pp, margin {p.margin_pp:.2f}); "
        f"{p.predicted_latency_ms:.3f} ms/row vs {p.plain_latency_ms:.3f} plain "
        f"({p.predicted_speedup:.2f}x)",
    ]
    if p.predicted_speedup < 1.0:
        lines.append("  warning: predicted slower than the plain network: no early exit pays "
                     "for its heads and stage calls on this model within this budget; serve "
                     "the plain model, or raise --budget")
    if p.holdout:
        h = p.holdout
        lines.append(f"  held-out check ({int(h['rows'])} rows): loss {h['loss_pp']:.2f} pp, "
                     f"{h['latency_ms']:.3f} ms/row")
    promise = Promise.of(p.promise)
    lines.append("  promise: " + (promise.describe(p.budget_pp) if promise is not None else
                                  "not recorded (compiled before eeopt recorded promises)"))
    return lines
