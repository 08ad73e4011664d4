"""Load test of ``eeopt serve`` (Ray Serve): an open-loop Poisson load over HTTP on loopback,
the eeopt program against the plain model behind the same front end (``--plain``), on the
MiniLM tweets program and on the demo CNN.

    python benchmarks/serving.py            # ~8 min on 2 cores; writes benchmarks/results/
    python benchmarks/serving.py --quick    # fewer levels, shorter

1. Compile each model (MiniLM: the committed weights, maxprob at the 1 pp thresholds of
   ``benchmarks/results/text_tweets.json``; DemoCNN: planned for 0.5 pp on fashion-mnist:calib)
   and serve both it and the plain model (its last output, one ONNX Runtime session) on one
   local Ray instance: 1 replica each, 1 ONNX Runtime thread, ``@serve.batch`` up to 32
   requests, 5 ms wait.
2. For each offered load (requests/s), send Poisson arrivals for ``--seconds`` (at most
   ``--max-requests``) of 16-row requests (eval rows, JSON bodies), to each of the two in turn;
   every request has a 30 s timeout. Record each request's latency.
3. Report p50/p99 against offered load, and the highest load whose p99 stays under the SLO
   (MiniLM 1000 ms, DemoCNN 100 ms per 16-row request). Then sequential single-row requests:
   JSON against an ``.npy`` body, to show the HTTP path's own cost.

The client shares the machine's 2 cores with Ray's proxy and the replicas: what it costs is in
every number, for both servers alike. Results: ``benchmarks/results/serving.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEXT_THRESHOLDS = (0.7722, 0.791, 0.6938, 0.52, 0.5328)  # maxprob at 1 pp (text_tweets.json)
SLO_MS = {"minilm": 1000.0, "demo": 100.0}
LEVELS = {"minilm": (2, 4, 6, 8, 12, 16, 20, 24, 32), "demo": (25, 50, 75, 100, 125, 150, 200)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _open_loop(url: str, bodies: list[bytes], qps: float, seconds: float,
                     max_requests: int, seed: int) -> dict[str, Any]:
    """Poisson arrivals at ``qps`` for ``seconds``; each request's latency (s) or error."""
    import aiohttp

    rng = np.random.default_rng(seed)
    n = int(min(max_requests, max(5, qps * seconds)))
    gaps = rng.exponential(1.0 / qps, n)
    lat: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one(body: bytes) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body,
                                        headers={"content-type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1
                return
            lat.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        due = start
        for i in range(n):
            due += gaps[i]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    a = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"offered_qps": qps, "requests": n, "errors": errors, "answered_qps": len(lat) / wall,
            "p50_ms": float(np.nanpercentile(a, 50)), "p99_ms": float(np.nanpercentile(a, 99)),
            "mean_ms": float(np.nanmean(a))}


def _sequential(url: str, body: bytes, kind: str, n: int) -> dict[str, float]:
    import urllib.request

    lat = []
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers={"content-type": kind})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        lat.append(time.perf_counter() - t0)
    a = np.array(lat[5:]) * 1e3
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.median(a)),
            "p99_ms": float(np.percentile(a, 99)), "requests": int(a.size)}


def _models(work: Path, quick: bool) -> dict[str, Any]:
    """Per model: its program, the plain ONNX, and request rows."""
    import onnx
    import torch

    import eeopt
    from eeopt.data import load_dataset, load_tweets
    from eeopt.frontend import ModelGraph, export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.models.minilm import load_minilm_tweets
    from eeopt.passes import cut_to_outputs

    out: dict[str, Any] = {}
    demo = export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28))
    onnx.save(demo, work / "demo.onnx")
    onnx.save(cut_to_outputs(ModelGraph(demo), [demo.graph.output[-1].name]).model,
              work / "demo_plain.onnx")
    prog = eeopt.compile(work / "demo.onnx", work / "demo_prog", calib="fashion-mnist:calib",
                         budget=0.5, threads=1)
    x, _ = load_dataset("fashion-mnist:eval")
    name = prog.input_specs[0].name
    out["demo"] = {"program": prog, "plain": work / "demo_plain.onnx",
                   "rows": lambda i, n: {name: np.asarray(x[i:i + n])}}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seq = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    ex = load_tweets("val")[0]
    example = (torch.from_numpy(np.array(ex["input_ids"][:4])),
               torch.from_numpy(np.array(ex["attention_mask"][:4])))
    text = export_torch(load_minilm_tweets().eval(), example, dynamic_shapes=seq)
    onnx.save(text, work / "minilm.onnx")
    onnx.save(cut_to_outputs(ModelGraph(text), [text.graph.output[-1].name]).model,
              work / "minilm_plain.onnx")
    tprog = eeopt.compile(work / "minilm.onnx", work / "minilm_prog",
                          thresholds=list(TEXT_THRESHOLDS), threads=1)
    feeds, _ = load_tweets("eval")
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    out["minilm"] = {"program": tprog, "plain": work / "minilm_plain.onnx",
                     "rows": lambda i, n: {k: v[i:i + n] for k, v in feeds.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=12.0, help="per load level (default 12)")
    p.add_argument("--max-requests", type=int, default=400, help="per load level at most")
    p.add_argument("--rows", type=int, default=16, help="rows per request (default 16)")
    p.add_argument("--quick", action="store_true", help="every other level, 6 s each")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 6.0
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {msg}", flush=True)

    from ray import serve

    from eeopt.runtime import configure_threads
    from eeopt.serve import build_app, start_ray

    configure_threads(1)
    report: dict[str, Any] = {"rows_per_request": args.rows, "seconds_per_level": args.seconds,
                              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                              "slo_ms": SLO_MS, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        say("[1/3] compiling the MiniLM and demo programs")
        models = _models(work, args.quick)
        ray = start_ray(num_cpus=4, temp_dir=str(work / "ray"))
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        for m, spec in models.items():
            for kind in ("eeopt", "plain"):
                app = build_app(spec["program"].path, max_batch=32, batch_wait_ms=5.0,
                                cpus_per_replica=1.0, name=f"{m}-{kind}",
                                plain_onnx=spec["plain"] if kind == "plain" else None)
                serve.run(app, name=f"{m}-{kind}", route_prefix=f"/{m}-{kind}")
        say("[2/3] open-loop load, 16-row requests, eeopt and plain in turn per level")
        for m, spec in models.items():
            bodies = []
            for i in range(0, 64 * args.rows, args.rows):
                rows = spec["rows"](i, args.rows)
                bodies.append(json.dumps({"inputs": {k: v.tolist() for k, v in rows.items()}})
                              .encode())
            levels = LEVELS[m][::2] if args.quick else LEVELS[m]
            res: dict[str, list[dict[str, Any]]] = {"eeopt": [], "plain": []}
            for qps in levels:
                for kind in (("eeopt", "plain") if qps % 2 else ("plain", "eeopt")):
                    got = asyncio.run(_open_loop(f"{base}/{m}-{kind}", bodies, qps,
                                                 args.seconds, args.max_requests, seed=qps))
                    res[kind].append(got)
                    say(f"      {m} {kind} at {qps} req/s: p50 {got['p50_ms']:.0f} ms, p99 "
                        f"{got['p99_ms']:.0f} ms, answered {got['answered_qps']:.1f}/s, "
                        f"{got['errors']} errors")
            slo = SLO_MS[m]
            best = {k: max((r["offered_qps"] for r in v if r["p99_ms"] <= slo
                            and r["errors"] == 0), default=0.0) for k, v in res.items()}
            report["models"][m] = {"levels": res, "max_qps_under_slo": best,
                                   "ratio": best["eeopt"] / best["plain"] if best["plain"]
                                   else None}
        say("[3/3] sequential single-row requests: JSON vs .npy body")
        for m, spec in models.items():
            one = spec["rows"](0, 1)
            single: dict[str, Any] = {}
            for kind in ("eeopt", "plain"):
                js = json.dumps({"inputs": {k: v.tolist() for k, v in one.items()}}).encode()
                single[f"{kind}, JSON"] = _sequential(f"{base}/{m}-{kind}", js,
                                                      "application/json", 105)
                buf = io.BytesIO()
                np.savez(buf, **one)
                single[f"{kind}, .npz body"] = _sequential(f"{base}/{m}-{kind}", buf.getvalue(),
                                                           "application/x-npz", 105)
            prog = spec["program"]
            t0 = time.perf_counter()
            for _ in range(100):
                prog.run(one)
            single["Program.run in this process (no HTTP)"] = {
                "mean_ms": (time.perf_counter() - t0) * 10.0}
            report["models"][m]["single_row"] = single
        serve.shutdown()
        ray.shutdown()
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(report, indent=1) + "\n")
    md = _markdown(report)
    (args.out / "serving.md").write_text(md)
    _plot(report, args.out / "serving.png")
    print(md)
    print(f"wrote {args.out}/serving.{{json,md,png}} in {report['seconds']:.0f} s")
    return 0


def _markdown(r: dict[str, Any]) -> str:
    lines = ["# eeopt serve under load (Ray Serve, loopback)", "",
             f"Open-loop Poisson requests of {r['rows_per_request']} rows, "
             f"{r['seconds_per_level']:g} s per level; 1 replica, 1 ONNX Runtime thread, "
             "@serve.batch up to 32 requests / "
             f"5 ms; client, proxy and replicas share {r['machine']}. Rerun: "
             "`python benchmarks/serving.py`.", ""]
    for m, v in r["models"].items():
        slo = r["slo_ms"][m]
        lines += [f"## {m}", "", "| offered req/s | eeopt p50 / p99 ms | plain p50 / p99 ms |",
                  "|---|---|---|"]
        for a, b in zip(v["levels"]["eeopt"], v["levels"]["plain"], strict=True):
            def cell(x: dict[str, Any]) -> str:
                err = f" ({x['errors']} errors)" if x["errors"] else ""
                return f"{x['p50_ms']:.0f} / {x['p99_ms']:.0f}{err}"
            lines.append(f"| {a['offered_qps']:g} | {cell(a)} | {cell(b)} |")
        best = v["max_qps_under_slo"]
        ratio = f"{v['ratio']:.2f}x" if v["ratio"] else "n/a"
        lines += ["", f"Highest offered load with p99 <= {slo:g} ms: eeopt {best['eeopt']:g} "
                  f"req/s, plain {best['plain']:g} req/s ({ratio}).", "",
                  "Single-row requests, one at a time:", "", "| | mean ms | p50 ms | p99 ms |",
                  "|---|---|---|---|"]
        for k, s in v["single_row"].items():
            lines.append(f"| {k} | {s['mean_ms']:.2f} | {s.get('p50_ms', float('nan')):.2f} | "
                         f"{s.get('p99_ms', float('nan')):.2f} |")
        lines.append("")
    lines += ["![serving](serving.png)", ""]
    return "\n".join(lines)


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(r["models"])
    fig, ax = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5))
    ax = np.atleast_1d(ax)
    for a, m in zip(ax, models, strict=True):
        for kind, colour in (("eeopt", "#4c72b0"), ("plain", "#c44e52")):
            lv = r["models"][m]["levels"][kind]
            q = [x["offered_qps"] for x in lv]
            a.plot(q, [x["p99_ms"] for x in lv], "o-", color=colour, label=f"{kind} p99")
            a.plot(q, [x["p50_ms"] for x in lv], "o--", color=colour, alpha=0.6,
                   label=f"{kind} p50")
        a.axhline(r["slo_ms"][m], ls=":", color="grey", label="SLO")
        a.set_yscale("log")
        a.set_xlabel("offered load (requests/s)")
        a.set_ylabel("latency (ms)")
        a.set_title(m)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
