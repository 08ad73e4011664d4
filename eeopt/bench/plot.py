"""The accuracy-latency frontier as a plot (matplotlib, imported when a plot is made)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_frontier"]


def plot_frontier(results: dict[str, Any], path: str) -> None:
    """Accuracy against mean batch-1 latency, per budget, with the plain network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [f for f in results["frontier"] if "accuracy" in f]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if pts:
        xs = [f["program_mean_ms"] for f in pts]
        ys = [100 * f["accuracy"] for f in pts]
        ax.plot(xs, ys, "o-", color="tab:blue", label="eeopt program (planned per budget)")
        for f, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(f"{f['budget_pp']:g} pp", (x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
        plain_ms = float(np.median([f["plain_mean_ms"] for f in pts]))
        plain_acc = 100 * results["accuracy"]["plain"]  # type: ignore[index]
        ax.plot([plain_ms], [plain_acc], "s", color="tab:red", label="plain network")
    lat1 = results["latency"].get("1")
    if lat1:
        ax.plot([lat1["program"]["mean_ms"]], [100 * results["accuracy"]["program"]],  # type: ignore[index]
                "*", ms=14, color="tab:green", label="this program")
    ax.set_xlabel("mean latency per input at batch 1 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs latency, {results['data']}, {results['threads']} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
