"""``eeopt inspect``: a readable table of a compiled program."""

from __future__ import annotations

import argparse
from typing import Any

from eeopt.bench import format_table
from eeopt.cli.common import in_flags, plan_lines
from eeopt.program import load_manifest
from eeopt.split import SplitPlan

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``inspect`` command to the ``eeopt`` sub-command parsers."""
    i = sub.add_parser("inspect", help="show a program's stages, carried tensors and gates",
                       description="Print a readable table of a compiled program.")
    i.add_argument("program", metavar="DIR", help="compiled program directory")
    return i  # type: ignore[no-any-return]


def _gate_text(policy: str, t: float) -> str:
    return {"maxprob": f"max prob >= {t:g}", "entropy": f"entropy <= {t:g}",
            "margin": f"margin >= {t:g}", "patience": f"{t:g} exits agree"}.get(
                policy, f"{policy} {t:g}")


@in_flags
def run(args: argparse.Namespace) -> int:
    """Run ``eeopt inspect``; returns the exit status."""
    m = load_manifest(args.program)
    print(f"program   {args.program}")
    print(f"eeopt     {m.eeopt_version} (schema {m.schema_version}), backend {m.backend} "
          f"{m.backend_version}, opset {m.onnx_opset}")
    print(f"inputs    {', '.join(s.describe() for s in m.inputs)}")
    print(f"classes   {m.num_classes}; exits {m.num_exits} (Result.exit -> model output: "
          + ", ".join(f"{k} -> {name}" for k, name in enumerate(m.exit_names)) + ")")
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
    print(format_table(["stage", "file", "model output", "nodes", "reads", "carries on", "gate"],
                       rows))
    if m.plan:
        p = m.plan
        print("\n" + "\n".join(plan_lines(p)))
        if p.exit_benefit:
            print("\nper-exit benefit (each early exit alone with the final one; 5-fold "
                  "cross-validated, threshold chosen on the other folds):")
            print(format_table(["exit", "accuracy", "marginal cost ms", "saves ms/row",
                                "loss pp"], [
                [str(b["exit"]), f"{b['accuracy']:.2%} +- {b['accuracy_std']:.2%}",
                 f"{b['marginal_cost_ms']:.4f}",
                 f"{b['saved_ms']:.4f} +- {b['saved_ms_std']:.4f}", f"{b['loss_pp']:.2f}"]
                for b in p.exit_benefit]))
    if m.split:
        _split_lines(m)
    return 0


def _split_lines(m: Any) -> None:
    """The recorded split plan (``eeopt plan-split``), one row per planned bandwidth."""
    plan = SplitPlan.of_manifest(m)
    assert plan is not None
    info = plan.info or {}
    print(f"\nsplit plan (eeopt plan-split; RTT {plan.rtt_ms:g} ms, edge = device / "
          f"{info.get('edge_speedup', '?')}, budget {plan.budget_pp:g} pp, by "
          f"{plan.objective} latency; device: {info.get('device', '?')}):")
    print(format_table(["Mbit/s", "split", "thresholds", "expected ms", "codec pp"], [
        [f"{r['bandwidth_bps'] / 1e6:g}", str(r["split"]),
         ", ".join(f"{t:.3g}" for t in r["thresholds"]), f"{r['expected_ms']:.2f}",
         f"{r['lossy_cost_pp']:.2f}"] for r in plan.table]))
    print("switching points: " + (", ".join(
        f"{bw / 1e6:.3g} Mbit/s -> split {plan.choices[c].split}"
        for bw, c in plan.boundaries()) or "none"))
