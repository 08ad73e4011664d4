"""The ``eeopt`` command line: a thin layer over the library, one module per command.

It turns flags into the library's settings and the library's errors into one line naming the
flags (``common.FLAGS``): 2 for usage errors, 1 otherwise; ``--debug`` shows the traceback.
Nothing is written unless the whole command succeeds. The library never imports it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

from eeopt.cli import (
    bench,
    cascade,
    compile,
    edge,
    export,
    inspect,
    plan_split,
    profile,
    run,
    serve,
    train,
)
from eeopt.cli.common import FLAGS, Parser
from eeopt.errors import EEOptError, UsageError
from eeopt.version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

logger = logging.getLogger("eeopt")

EPILOG = """\
examples:
  eeopt compile model.onnx --out program/ --threshold 0.9
  eeopt cascade tiny.onnx big.onnx --calib fashion-mnist:val --budget 0.5 --out program/
  eeopt run program/ --input x.npy --output out.npz --batch-size 64
  eeopt inspect program/
  eeopt export program/ --format onnx --out program.onnx
  eeopt serve program/ --port 8000 --replicas 2
  eeopt plan-split program/ --calib fashion-mnist:calib --edge-speedup 4 --rtt-ms 20
  eeopt edge program/ --listen 0.0.0.0:50051        # and on the device:
  eeopt run program/ --input x.npy --output out.npz --edge edge-host:50051
  eeopt train --data fashion-mnist --arch demo-cnn --objective consistency --epochs 3 --out run/
"""

#: command -> its module (``add_parser(subparsers)``, ``run(args) -> exit status``), in the
#: order ``eeopt --help`` lists them
COMMANDS: dict[str, ModuleType] = {
    "compile": compile, "run": run, "profile": profile, "bench": bench, "cascade": cascade,
    "train": train, "inspect": inspect, "export": export, "serve": serve,
    "plan-split": plan_split, "edge": edge,
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="eeopt",
        description="Compile and run early-exit neural networks: inputs that are already "
        "confident leave at an intermediate exit, and exited rows leave the batch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"eeopt {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


class Terminated(BaseException):
    """SIGTERM, raised where the command is so that it unwinds as an interrupt does: every
    temporary output is removed on the way out."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eeopt`` command line; returns the exit status."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except UsageError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"eeopt {args.command}: error: {exc.render(FLAGS)}\n")
        return 2
    except EEOptError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"eeopt {args.command}: error: {exc.render(FLAGS)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("eeopt: interrupted\n")
        return 130
    except Terminated:
        sys.stderr.write("eeopt: terminated\n")
        return 143
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
