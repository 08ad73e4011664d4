"""Results as text: the tables `eeopt bench`, `eeopt inspect`, `eeopt profile` and `make demo`
print."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_bench", "format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(out)


def format_bench(res: dict[str, Any]) -> str:
    """``run_bench``'s results as the table `eeopt bench` and `make demo` print."""
    lines: list[str] = []
    acc = res["accuracy"]
    lines.append(f"{res['program']} on {res['data']} ({res['rows']} rows, "
                 f"{res['threads']} thread(s))")
    if res.get("text"):
        lines.append("text: batches of rows of similar length; the plain network runs each "
                     "batch cut to its longest row, the program re-trims after every exit")
    lo, hi = res.get("loss_interval_pp") or (res["loss_pp"], res["loss_pp"])
    rows = [["accuracy", f"{acc['plain']:.2%}", f"{acc['program']:.2%}",
             f"{-res['loss_pp']:+.2f} pp"],
            ["  loss, 95% interval (paired)", "", "",
             f"{res['loss_pp']:.2f} pp [{lo:.2f}, {hi:.2f}]"]]
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
    lines.append(format_table(["", "plain net", "eeopt", "ratio"], rows))
    lines.append("exit fractions: " + ", ".join(
        f"{o}: {f:.1%}" for o, f in zip(res["kept_outputs"], res["exit_fractions"], strict=True)))
    if res.get("promise_text"):
        budget = res["budget_pp"]
        held = "held" if res["loss_pp"] <= budget else "NOT held"
        lines.append(f"promise ({held} here: {res['loss_pp']:.2f} pp against {budget:g}): "
                     f"{res['promise_text']}")
    if res["frontier"]:
        lines.append(f"\nfrontier (planned on the calibration data; accuracy on every row, "
                     f"batch-1 latency on the first {res['frontier_rows']}):")
        frows = []
        for f in res["frontier"]:
            if "accuracy" in f:
                lo, hi = f.get("loss_interval_pp", (f.get("loss_pp", 0.0),) * 2)
                frows.append([f"{f['budget_pp']:g}", f"{f['accuracy']:.2%}",
                              f"{f.get('loss_pp', 0.0):.2f} [{lo:.2f}, {hi:.2f}]",
                              f"{f['program_mean_ms']:.3f}", f"{f['plain_mean_ms']:.3f}",
                              f"{f['speedup']:.2f}x", ",".join(f["kept"])])
            else:
                frows.append([f"{f['budget_pp']:g}", "-", "-", "-", "-", "-",
                              "none: serve the plain network (below)"])
        lines.append(format_table(["budget pp", "accuracy", "loss pp [95%]", "program ms",
                                   "plain ms", "speedup", "kept"], frows))
        lines += [f"  budget {f['budget_pp']:g}: {f['skipped']}" for f in res["frontier"]
                  if "accuracy" not in f]
    return "\n".join(lines)
