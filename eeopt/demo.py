"""The Fashion-MNIST demo: `make demo` (python -m eeopt.demo).

1. Loads the committed DemoCNN weights (a 4-exit residual CNN trained by
   scripts/train_demo_cnn.py) and exports OUT/model.onnx: input float32 [B,1,28,28] = pixel/255,
   outputs exit0..exit3, earliest first.
2. Picks one exit threshold on the *validation* split (never the test split): the cheapest one
   whose validation accuracy is within --budget points of the final exit's.
3. Compiles OUT/program/ with it and writes OUT/plain.onnx, the model cut to its final output.
4. On the 10k test images: accuracy of the plain network and of the program, exit fractions, the
   ideal speedup (MACs), and ONNX Runtime latency of the plain network against the program at
   --threads threads, interleaved in this one process: mean/median/p99 at batch 1 (mean is the
   expected cost per input, the headline), throughput at batch 64.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run_demo"]

logger = logging.getLogger(__name__)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def run_demo(out: Path, *, budget_pp: float = 1.0, threads: int = 1, weights: str | None = None,
             limit: int | None = None) -> dict[str, Any]:
    from eeopt.backends.ort import configure_threads, make_session

    configure_threads(threads)  # before any session: one global pool for everything below


    import eeopt
    from eeopt.bench import compare_batch1, compare_throughput
    from eeopt.capture import cut_to_outputs, export_torch
    from eeopt.data import load_dataset
    from eeopt.graph import ModelGraph
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.plan import pick_global_threshold
    from eeopt.profile import model_macs, stage_macs

    def say(msg: str) -> None:
        print(msg, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/4] exporting the DemoCNN to {out / 'model.onnx'}")
    import torch

    model = load_demo_cnn(weights)
    proto = export_torch(model, torch.rand(2, 1, 28, 28))
    _atomic_write(out / "model.onnx", proto.SerializeToString())
    final = proto.graph.output[-1].name
    plain = cut_to_outputs(ModelGraph(proto), [final]).model
    _atomic_write(out / "plain.onnx", plain.SerializeToString())

    x_val, y_val = load_dataset("fashion-mnist:val")
    x_test, y_test = load_dataset("fashion-mnist:test")
    if limit:
        x_test, y_test = x_test[:limit], y_test[:limit]

    say(f"[2/4] picking the exit threshold on the validation split ({len(y_val)} images)")
    prog_dir = out / "program"
    probe = eeopt.compile(out / "model.onnx", prog_dir, threshold=0.9, force=True,
                          threads=threads)
    costs = stage_macs(prog_dir)
    val_logits = [np.concatenate(z) for z in zip(
        *(probe.run_all({"x": np.ascontiguousarray(x_val[i:i + 500])})
          for i in range(0, len(x_val), 500)), strict=True)]
    choice = pick_global_threshold(val_logits, y_val, costs.cumulative, max_loss_pp=budget_pp)
    say(f"      threshold {choice.threshold:.4f}: validation accuracy {choice.accuracy:.2%} vs "
        f"{choice.final_accuracy:.2%} at the final exit, ideal speedup {choice.ideal_speedup:.2f}x")

    say(f"[3/4] compiling {prog_dir}")
    program = eeopt.compile(out / "model.onnx", prog_dir, threshold=choice.threshold,
                            force=True, threads=threads)

    say(f"[4/4] measuring on the test split ({len(y_test)} images, {threads} thread(s))")
    plain_sess = make_session(str(out / "plain.onnx"), threads)
    plain_out = plain_sess.get_outputs()[0].name

    def run_plain(feeds: Any) -> Any:
        return plain_sess.run([plain_out], dict(feeds))[0]

    def run_program(feeds: Any) -> Any:
        return program.run(feeds)

    feeds = {"x": np.ascontiguousarray(x_test)}
    plain_pred = np.concatenate([run_plain({"x": x_test[i:i + 256]}).argmax(1)
                                 for i in range(0, len(y_test), 256)])
    res = [program.run({"x": x_test[i:i + 256]}) for i in range(0, len(y_test), 256)]
    prog_pred = np.concatenate([r.prediction for r in res])
    exits = np.concatenate([r.exit for r in res])
    frac = np.bincount(exits, minlength=program.num_exits) / len(exits)
    plain_macs = model_macs(plain)
    ideal = plain_macs / costs.expected(frac)
    b1 = compare_batch1(run_plain, run_program, feeds)
    b64 = compare_throughput(run_plain, run_program, feeds, 64)

    acc_plain = float((plain_pred == y_test).mean())
    acc_prog = float((prog_pred == y_test).mean())
    results: dict[str, Any] = {
        "data": "fashion-mnist:test",
        "rows": int(len(y_test)),
        "threads": threads,
        "threshold": choice.threshold,
        "budget_pp": budget_pp,
        "accuracy": {"plain": acc_plain, "program": acc_prog,
                     "loss_pp": 100 * (acc_plain - acc_prog)},
        "validation": {"accuracy": choice.accuracy, "final_accuracy": choice.final_accuracy},
        "exit_fractions": frac.tolist(),
        "macs": {"plain": plain_macs, "stages": list(costs.stage),
                 "expected_program": costs.expected(frac)},
        "ideal_speedup": ideal,
        "batch1": b1.to_dict(),
        "batch64": b64.to_dict(),
        "efficiency_batch1": b1.speedup_mean / ideal,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
    }
    _atomic_write(out / "results.json", (json.dumps(results, indent=2) + "\n").encode())

    def row(label: str, a: str, b: str, c: str = "") -> str:
        return f"  {label:<32}{a:>14}{b:>14}{c:>12}"

    say("")
    say(f"eeopt demo: DemoCNN on Fashion-MNIST test ({len(y_test)} images), ONNX Runtime CPU, "
        f"{threads} thread(s)")
    say(row("", "plain net", "eeopt", "ratio"))
    say(row("accuracy", f"{acc_plain:.2%}", f"{acc_prog:.2%}",
            f"{100 * (acc_prog - acc_plain):+.2f} pp"))
    say(row("batch 1 mean latency (headline)", f"{b1.plain.mean_ms:.3f} ms",
            f"{b1.program.mean_ms:.3f} ms", f"{b1.speedup_mean:.2f}x"))
    say(row("batch 1 median latency", f"{b1.plain.median_ms:.3f} ms",
            f"{b1.program.median_ms:.3f} ms",
            f"{b1.plain.median_ms / b1.program.median_ms:.2f}x"))
    say(row("batch 1 p99 latency", f"{b1.plain.p99_ms:.3f} ms", f"{b1.program.p99_ms:.3f} ms",
            f"{b1.plain.p99_ms / b1.program.p99_ms:.2f}x"))
    say(row("batch 64 throughput", f"{b64.plain_throughput:,.0f}/s",
            f"{b64.program_throughput:,.0f}/s", f"{b64.speedup_mean:.2f}x"))
    say(row("MACs per image", f"{plain_macs / 1e6:.2f} M", f"{costs.expected(frac) / 1e6:.2f} M",
            f"{ideal:.2f}x"))
    say("  exit fractions: " + ", ".join(f"exit {k}: {f:.1%}" for k, f in enumerate(frac)))
    say(f"  threshold {choice.threshold:.4f} picked on validation for <= {budget_pp} pp loss; "
        f"efficiency at batch 1: {b1.speedup_mean / ideal:.2f} of ideal")
    say(f"  wrote {out / 'results.json'}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eeopt.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/demo", help="output directory (default build/demo)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="accuracy loss allowed on validation, in points (default 1.0)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.add_argument("--weights", default=None, help="DemoCNN weights (default: the committed)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from eeopt.errors import EEOptError

    try:
        run_demo(Path(args.out), budget_pp=args.budget, threads=args.threads,
                 weights=args.weights, limit=args.limit)
    except EEOptError as exc:
        sys.stderr.write(f"eeopt demo: error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
