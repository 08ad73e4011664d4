"""Split computing on a shaped link: the device half and the edge half (``eeopt edge``) in two
network namespaces joined by a veth pair, each direction rate-shaped with ``tc tbf``.

    sudo python benchmarks/split.py          # ~4 min; writes benchmarks/results/split.*
    python benchmarks/split.py --quick       # fewer rows, shorter adaptive run

What it does:

1. Compiles the committed DemoCNN (fixed thresholds; every exit kept), or with ``--model
   minilm`` the MiniLM-L6 tweets model (maxprob 0.9 at every exit), and plans its split with
   ``eeopt.split`` (``measure_split`` + ``plan_split_program`` on 2,000 calibration rows,
   budget ``--budget`` pp), recording the plan in the program's manifest.
2. **The device is emulated, and stated**: this machine slowed ``--slowdown`` times (each
   device stage call takes its cost measured here times the slowdown: the call, then a sleep
   for the rest), a microcontroller-class device next to a server. The edge is this machine
   at its own speed, so the edge speed-up the planner is told is the same factor.
3. ``netem`` is missing from these kernels, so the 20 ms RTT is a stated delay the device adds
   to every exchange (``EdgeClient(added_rtt_ms=...)``); ``tbf`` shapes the bandwidth.
4. At each bandwidth, batch 1, ``--rows`` eval rows: every split stage
   with the thresholds the joint plan chose for it (the exhaustive search: the measured best of
   these is "exhaustive best"), plain offloading (all on the edge, the raw input sent),
   and the plan's own choice (one of the splits: its numbers are that split's run). p50/p99
   end-to-end latency, bytes per request, accuracy.
5. The link-adaptive device: the plan's choices, moved by the measured link while the shaping
   changes mid-run (100 -> 1 -> 100 Mbit/s), plotted.

Needs root for ``ip netns`` (CAP_NET_ADMIN); where namespaces cannot be made it says so and
exits 0 without writing results. Results: ``benchmarks/results/split.{json,md,png}``
(``split_minilm.*`` for MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NS_DEV, NS_EDGE = "eesplit-dev", "eesplit-edge"
IF_DEV, IF_EDGE = "eesplit-d", "eesplit-e"
IP_DEV, IP_EDGE = "10.231.7.1", "10.231.7.2"
PORT = 50071
MTU = 576


# ---------------------------------------------------------------------------- the link
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def drop_link() -> None:
    for ns in (NS_DEV, NS_EDGE):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def make_link() -> str | None:
    """The two namespaces and the veth pair; None, or why they cannot be made."""
    drop_link()
    try:
        _ip("netns", "add", NS_DEV)
        _ip("netns", "add", NS_EDGE)
        _ip("link", "add", IF_DEV, "type", "veth", "peer", "name", IF_EDGE)
        _ip("link", "set", IF_DEV, "netns", NS_DEV)
        _ip("link", "set", IF_EDGE, "netns", NS_EDGE)
        for ns, dev, addr in ((NS_DEV, IF_DEV, IP_DEV), (NS_EDGE, IF_EDGE, IP_EDGE)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            # a small MTU: tbf lets one burst through unshaped, so keep bursts small
            _ip("-n", ns, "link", "set", dev, "mtu", str(MTU), "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        set_rate(100.0)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        drop_link()
        err = getattr(exc, "stderr", "") or str(exc)
        return f"cannot make network namespaces here ({err.strip()}): run as root on Linux " \
               "with iproute2 and tc"
    return None


def set_rate(mbit: float) -> None:
    """``tbf`` at ``mbit`` on both ends (each shapes its own egress)."""
    burst = max(int(mbit * 1e6 / 8 / 1000), 2 * MTU + 100)  # 1 ms of traffic, 2 packets
    for ns, dev in ((NS_DEV, IF_DEV), (NS_EDGE, IF_EDGE)):
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev,
                        "root", "tbf", "rate", f"{mbit:g}mbit", "burst", str(burst),
                        "latency", "1000ms"], check=True, capture_output=True, text=True)


# ---------------------------------------------------------------------------- device worker
def _slow_device(prog: Any, device_ms: list[float]) -> None:
    """Each stage call takes ``device_ms[k]``: the call, then a sleep for the rest."""
    def wrap(k: int, run: Any) -> Any:
        target = device_ms[k] / 1e3

        def call(fetch: Any, feeds: Any, options: Any) -> Any:
            t0 = time.perf_counter()
            out = run(fetch, feeds, options)
            left = target - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
            return out
        return call
    prog.instrument(wrap)


def worker(cfg_path: str) -> int:
    """Runs inside the device namespace: every run of the config, results to its ``out``."""
    import eeopt

    cfg = json.loads(Path(cfg_path).read_text())
    prog = eeopt.load(cfg["program"], threads=1)
    _slow_device(prog, cfg["device_ms"])
    with np.load(cfg["rows"]) as z:
        arrays = {k: z[k] for k in z.files}
    y = arrays.pop("y")
    rows = y.shape[0]

    def row_of(i: int) -> dict[str, np.ndarray]:
        return {k: v[i % rows:i % rows + 1] for k, v in arrays.items()}

    out = []
    for run in cfg["runs"]:
        adaptive = run.get("adaptive", False)
        client = prog.connect_edge(cfg["edge"], split=None if adaptive else run["split"],
                                   thresholds=None if adaptive else run["thresholds"],
                                   codec=run["codec"], added_rtt_ms=cfg["rtt_ms"],
                                   timeout_s=10.0, probe_every_s=0.5)
        for i in range(5):  # warm up both halves
            client.run(row_of(i))
        s0 = dict(client.stats)
        lat, exits, preds, log = [], [], [], []
        start = time.time()
        i = 0
        while (time.time() - start < run["seconds"]) if adaptive else i < rows:
            t0 = time.perf_counter()
            r = client.run(row_of(i))
            dt = 1e3 * (time.perf_counter() - t0)
            lat.append(dt)
            exits.append(int(r.exit[0]))
            preds.append(int(r.logits.argmax(1)[0]) == int(y[i % rows]))
            if adaptive:
                log.append([time.time(), client.choice[0], dt,
                            client.monitor.bandwidth_bps or 0.0])
            i += 1
        st = {k: v - s0[k] for k, v in client.stats.items()}
        out.append({"name": run["name"], "split": client.choice[0], "latency_ms": lat,
                    "rows": len(lat), "exits": np.bincount(exits, minlength=prog.num_exits
                                                           ).tolist(),
                    "accuracy": float(np.mean(preds)), "bytes_sent": st["bytes_sent"],
                    "bytes_received": st["bytes_received"], "requests": st["requests"],
                    "probes": st["probes"], "log": log,
                    "moves": client.chooser.moves if client.chooser else []})
        client.close()
    Path(cfg["out"]).write_text(json.dumps(out))
    return 0


def _run_device(cfg: dict[str, Any], work: Path, tag: str) -> tuple[subprocess.Popen[str], Path]:
    path = work / f"cfg-{tag}.json"
    cfg = {**cfg, "out": str(work / f"out-{tag}.json")}
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(["ip", "netns", "exec", NS_DEV, sys.executable, __file__,
                             "--worker", str(path)], text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc, Path(cfg["out"])


def _wait(proc: subprocess.Popen[str], out: Path) -> list[dict[str, Any]]:
    if proc.wait() != 0 or not out.is_file():
        raise SystemExit(f"the device worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- models
#: model -> its default slowdown of the emulated device
MODELS = {"demo-cnn": 400.0, "minilm": 3.0}
CALIB_ROWS = 2000


def _build(model: str, out: Path, rows: int) -> tuple[Any, Any, Any]:
    """The program, ``(calibration feeds, labels)`` and ``(eval feeds, labels)``."""
    import onnx
    import torch

    import eeopt
    from eeopt.frontend import export_torch

    if model == "demo-cnn":
        from eeopt.data import load_dataset
        from eeopt.models.demo_cnn import load_demo_cnn

        onnx.save(export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28)),
                  out.parent / "model.onnx")
        prog = eeopt.compile(out.parent / "model.onnx", out, thresholds=[0.84, 0.64, 0.52])
        name = prog.input_specs[0].name
        parts = []
        for split, n in (("calib", CALIB_ROWS), ("eval", rows)):
            x, y = load_dataset(f"fashion-mnist:{split}")
            parts.append(({name: np.asarray(x[:n], np.float32)}, np.asarray(y[:n])))
        return prog, parts[0], parts[1]
    from eeopt.data import load_tweets
    from eeopt.models.minilm import load_minilm_tweets

    ex = load_tweets("val")[0]
    example = tuple(torch.from_numpy(np.array(ex[k][:4])) for k in ("input_ids",
                                                                     "attention_mask"))
    seq = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    onnx.save(export_torch(load_minilm_tweets().eval(), example, dynamic_shapes=seq),
              out.parent / "model.onnx")
    prog = eeopt.compile(out.parent / "model.onnx", out, threshold=0.9, threads=1)
    parts = []
    for split, n in (("calib", CALIB_ROWS), ("eval", rows)):
        feeds, labels = load_tweets(split)
        parts.append(({k: np.ascontiguousarray(v[:n]) for k, v in feeds.items()},
                      np.asarray(labels[:n])))
    return prog, parts[0], parts[1]


# ---------------------------------------------------------------------------- main
def _pct(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q)) if v else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="demo-cnn",
                   help="demo-cnn (Fashion-MNIST) or minilm (tweets; its program is compiled "
                   "here, every exit kept at maxprob 0.9)")
    p.add_argument("--rows", type=int, default=200, help="eval rows per run (batch 1)")
    p.add_argument("--slowdown", type=float, default=None,
                   help="the emulated device is this machine slowed this many times "
                   "(default: demo-cnn 400, a microcontroller-class device; minilm 3, a "
                   "phone-class CPU)")
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--bandwidths", default="1,10,100", help="Mbit/s")
    p.add_argument("--adaptive-s", type=float, default=36.0,
                   help="length of the adaptive run (thirds at 100, 1, 100 Mbit/s)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.quick:
        args.rows, args.adaptive_s = 60, 24.0
    if args.slowdown is None:
        args.slowdown = MODELS[args.model]
    bandwidths = [float(b) for b in args.bandwidths.split(",")]
    stem = "split" if args.model == "demo-cnn" else f"split_{args.model}"

    import torch

    from eeopt.split import measure_split, plan_split_program, record_split

    why = make_link()
    if why is not None:
        print(f"benchmarks/split.py: skipped: {why}")
        return 0
    torch.set_num_threads(1)
    edge = None
    try:
        with tempfile.TemporaryDirectory(prefix="eeopt-split-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)
            print(f"building the {args.model} program ...", flush=True)
            prog, (cx, cy), (ex, ey) = _build(args.model, work / "p", args.rows)
            k = prog.num_exits
            print("measuring the split on the calibration rows ...", flush=True)
            m = measure_split(prog, cx, cy, codec_budget_pp=args.budget / 2)
            here_ms = list(m.device_ms)
            m = replace(m, device_ms=tuple(args.slowdown * v for v in here_ms),
                        device_source=f"this machine's stage calls x {args.slowdown:g} "
                        "(emulated device)")
            plan = plan_split_program(m, policy="maxprob", budget_pp=args.budget,
                                      edge_speedup=args.slowdown, rtt_ms=args.rtt_ms,
                                      bandwidths_bps=[b * 1e6 for b in bandwidths],
                                      info={"device": m.device_source})
            record_split(work / "p", plan)
            np.savez(work / "rows.npz", **ex, y=ey)
            edge = subprocess.Popen(
                ["ip", "netns", "exec", NS_EDGE, sys.executable, "-m", "eeopt", "edge",
                 str(work / "p"), "--listen", f"{IP_EDGE}:{PORT}", "--threads", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            line = edge.stdout.readline() if edge.stdout else ""
            if "serving" not in line:
                raise SystemExit(f"the edge did not start: {line}")
            base = {"program": str(work / "p"), "device_ms": list(m.device_ms),
                    "rows": str(work / "rows.npz"), "edge": f"{IP_EDGE}:{PORT}",
                    "rtt_ms": args.rtt_ms}
            report: dict[str, Any] = {
                "model": args.model, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "slowdown": args.slowdown, "rtt_ms": args.rtt_ms, "budget_pp": args.budget,
                "rows": args.rows, "here_stage_ms": here_ms, "device_ms": list(m.device_ms),
                "bytes_per_row_planned": list(m.bytes_per_row),
                "lossy_cost_pp": list(m.lossy_cost_pp), "codec_bits": list(m.codec_bits),
                "plan": plan.to_record(), "bandwidths": []}
            by_p50 = replace(plan, objective="p50")  # the same choices, ranked by p50
            for bw, trow in zip(bandwidths, plan.table, strict=True):
                set_rate(bw)
                runs = [{"name": f"split {e['split']}", "split": e["split"], "codec": "auto",
                         "choice": e["choice"],
                         "thresholds": list(plan.choices[e["choice"]].thresholds)}
                        for e in trow["plans"]]
                picked = {"mean": plan.best(bw * 1e6), "p50": by_p50.best(bw * 1e6)}
                assert picked["mean"] == trow["choice"]  # the plan's own table
                for obj, idx in picked.items():  # a choice planned at another bandwidth
                    if idx not in [r["choice"] for r in runs]:
                        c = plan.choices[idx]
                        runs.append({"name": f"planned by {obj}", "split": c.split,
                                     "codec": "auto", "choice": idx,
                                     "thresholds": list(c.thresholds)})
                runs.append({"name": "all on edge (raw input)", "split": 0, "codec": "raw",
                             "choice": -1, "thresholds": runs[0]["thresholds"]})
                print(f"{bw:g} Mbit/s: {len(runs)} runs of {args.rows} rows", flush=True)
                res = _wait(*_run_device({**base, "runs": runs}, work, f"bw{bw:g}"))
                entries = []
                for run, r in zip(runs, res, strict=True):
                    entries.append({**{k2: r[k2] for k2 in ("name", "split", "rows", "exits",
                                                             "accuracy", "requests")},
                                    "codec": run["codec"], "choice": run["choice"],
                                    "thresholds": run["thresholds"],
                                    "p50_ms": _pct(r["latency_ms"], 50),
                                    "p99_ms": _pct(r["latency_ms"], 99),
                                    "mean_ms": float(np.mean(r["latency_ms"])),
                                    "bytes_per_row": r["bytes_sent"] / max(r["rows"], 1),
                                    "bytes_per_request": r["bytes_sent"] / max(r["requests"],
                                                                               1)})
                splits = [e for e in entries if e["codec"] == "auto"]
                best = min(splits, key=lambda e: e["p50_ms"])
                best_mean = min(splits, key=lambda e: e["mean_ms"])
                raw_edge = entries[-1]
                device = next(e for e in splits if e["split"] == k)
                row: dict[str, Any] = {"mbit": bw, "runs": entries,
                                       "exhaustive_best_split": best["split"],
                                       "exhaustive_best_mean_split": best_mean["split"]}
                for obj, idx in picked.items():
                    e = next(e for e in splits if e["choice"] == idx)
                    tag = "" if obj == "mean" else "_p50"
                    row.update({
                        f"planned{tag}_split": e["split"], f"planned{tag}_name": e["name"],
                        f"planned{tag}_over_best_p50": e["p50_ms"] / best["p50_ms"],
                        f"planned{tag}_over_best_mean": e["mean_ms"] / best_mean["mean_ms"],
                        f"all_edge_over_planned{tag}_mean": raw_edge["mean_ms"] / e["mean_ms"],
                        f"all_edge_over_planned{tag}_p50": raw_edge["p50_ms"] / e["p50_ms"],
                        f"all_device_over_planned{tag}_p50": device["p50_ms"] / e["p50_ms"]})
                row["planned_expected_ms"] = trow["expected_ms"]
                report["bandwidths"].append(row)
            # the link-adaptive device, the shaping changed mid-run
            set_rate(100.0)
            third = args.adaptive_s / 3
            proc, out = _run_device({**base, "runs": [{"name": "adaptive", "adaptive": True,
                                                       "codec": "auto",
                                                       "seconds": args.adaptive_s}]},
                                    work, "adaptive")
            time.sleep(3.0)  # the worker's start and warm-up
            changes = [(time.time(), 100.0)]
            for rate in (1.0, 100.0):
                time.sleep(third)
                set_rate(rate)
                changes.append((time.time(), rate))
            ad = _wait(proc, out)[0]
            report["adaptive"] = {"changes": changes, "log": ad["log"], "moves": ad["moves"],
                                  "probes": ad["probes"], "rows": ad["rows"]}
    finally:
        if edge is not None:
            edge.terminate()
            edge.wait(timeout=30)
        drop_link()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(_dumps(report))
    _write_md(report, args.out / f"{stem}.md", k)
    _plot(report, args.out / f"{stem}.png")
    print((args.out / f"{stem}.md").read_text())
    return 0


def _dumps(report: dict[str, Any]) -> str:
    """The report as JSON, each list of numbers on one line (the adaptive log is long), the
    log's values rounded."""
    for row in report.get("adaptive", {}).get("log", []):
        row[:] = [round(row[0], 3), int(row[1]), round(row[2], 2), float(f"{row[3]:.4g}")]
    text = json.dumps(report, indent=1)
    return re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text) + "\n"


def _write_md(r: dict[str, Any], path: Path, k: int) -> None:
    lines = [
        f"# Split computing on a shaped link ({r['model']})", "",
        f"Two network namespaces joined by veth, each direction shaped with `tc tbf`; RTT "
        f"{r['rtt_ms']:g} ms added by the device as a stated delay (no netem in these "
        f"kernels). **The device is emulated**: this machine's stage calls slowed "
        f"{r['slowdown']:g}x (here: " + ", ".join(f"{v:.3f}" for v in r["here_stage_ms"])
        + " ms per stage; device: " + ", ".join(f"{v:.1f}" for v in r["device_ms"])
        + f" ms), and the edge is this machine, so the planner's edge speed-up is "
        f"{r['slowdown']:g}. Batch 1, {r['rows']} eval rows per run; plan budget "
        f"{r['budget_pp']:g} pp (codec included). {r['machine']}. Rerun: `python "
        f"benchmarks/split.py --model {r['model']}` (root).", "",
        "| Mbit/s | run | p50 ms | mean ms | p99 ms | bytes/request | bytes/row | accuracy | "
        "exits |", "|---|---|---|---|---|---|---|---|---|"]
    for b in r["bandwidths"]:
        for e in b["runs"]:
            tag = " (planned by mean)" if e["name"] == b["planned_name"] else ""
            tag += " (planned by p50)" if e["name"] == b["planned_p50_name"] else ""
            lines.append(f"| {b['mbit']:g} | {e['name']}{tag} | {e['p50_ms']:.1f} | "
                         f"{e['mean_ms']:.1f} | {e['p99_ms']:.1f} | "
                         f"{e['bytes_per_request']:,.0f} | {e['bytes_per_row']:,.0f} | "
                         f"{e['accuracy']:.1%} | "
                         f"{'/'.join(map(str, e['exits']))} |")
    lines += ["", "Planned by mean (the default: what the planner minimises) and by p50 "
              "(`--objective p50`), each against the measured best of every split:", "",
              "| Mbit/s | objective | planned split | planned / best p50 | planned / best mean "
              "| all-on-edge (raw) / planned, p50 | ... mean | all-on-device / planned, p50 |",
              "|---|---|---|---|---|---|---|---|"]
    for b in r["bandwidths"]:
        for obj, tag in (("mean", ""), ("p50", "_p50")):
            lines.append(
                f"| {b['mbit']:g} | {obj} | {b[f'planned{tag}_split']} | "
                f"{b[f'planned{tag}_over_best_p50']:.2f} | "
                f"{b[f'planned{tag}_over_best_mean']:.2f} | "
                f"{b[f'all_edge_over_planned{tag}_p50']:.2f}x | "
                f"{b[f'all_edge_over_planned{tag}_mean']:.2f}x | "
                f"{b[f'all_device_over_planned{tag}_p50']:.2f}x |")
    a = r["adaptive"]
    t0 = a["changes"][0][0]
    moves = "; ".join(f"at {t - t0:.1f} s from choice {f} to {to}" for t, f, to in a["moves"])
    lines += ["", "Link-adaptive device: shaping " + " -> ".join(
        f"{rate:g} Mbit/s at {t - t0:.1f} s" for t, rate in a["changes"])
        + f"; the split moved {len(a['moves'])} times ({moves or 'never'}); {a['rows']} rows, "
        f"{a['probes']} probes. Split s runs stages 0..s-1 on the device ({k}: all on the "
        "device; 0: the input sent, coded losslessly)."]
    path.write_text("\n".join(lines) + "\n")


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [e["name"] for e in r["bandwidths"][0]["runs"]  # those run at every bandwidth
             if all(any(f["name"] == e["name"] for f in b["runs"]) for b in r["bandwidths"])]
    mbit = [b["mbit"] for b in r["bandwidths"]]
    for name in names:
        ys = [next(e["mean_ms"] for e in b["runs"] if e["name"] == name)
              for b in r["bandwidths"]]
        ax.plot(mbit, ys, marker="o", label=name, linestyle="--" if "raw" in name else "-")
    ax.plot(mbit, [next(e["mean_ms"] for e in b["runs"] if e["name"] == b["planned_name"])
                   for b in r["bandwidths"]], "k*", markersize=14, label="planned (by mean)")
    ax.set_xscale("log")
    ax.set_xlabel(f"link bandwidth, Mbit/s (RTT {r['rtt_ms']:g} ms)")
    ax.set_ylabel("mean end-to-end latency, ms (batch 1)")
    ax.set_title("every split vs plain offloading (split s: stages < s on the device)")
    ax.legend(fontsize=8)
    a = r["adaptive"]
    t0 = a["changes"][0][0]
    log = np.asarray(a["log"])
    if log.size:
        t = log[:, 0] - t0
        for split in sorted(set(log[:, 1].astype(int))):
            sel = log[:, 1] == split
            bx.scatter(t[sel], log[sel, 2], s=6, label=f"request at split {split}")
        bx.set_ylabel("request latency, ms")
        bx.legend(fontsize=8, loc="upper left", markerscale=2)
        cx = bx.twinx()
        times = [c[0] - t0 for c in a["changes"]] + [float(t.max())]
        rates = [c[1] for c in a["changes"]]
        cx.step(times, [*rates, rates[-1]], where="post", color="r", label="shaped (tbf)")
        cx.plot(t, np.where(log[:, 3] > 0, log[:, 3], np.nan) / 1e6, "r:", linewidth=0.9,
                label="the device's estimate")
        cx.set_yscale("log")
        cx.set_ylabel("link, Mbit/s")
        cx.legend(fontsize=8, loc="upper right")
    bx.set_xlabel("seconds")
    bx.set_title("link-adaptive device: the split follows the shaped link")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
