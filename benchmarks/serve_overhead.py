"""Where a single-row request's time goes in ``eeopt serve`` (Ray Serve 2.60), on loopback:
HTTP with a JSON body, HTTP with an ``.npz`` body, and the DeploymentHandle (Serve's own
routing, no HTTP proxy: a floor for any ingress, gRPC included), each with the batch wait at
5 ms and at 0, against ``Program.run`` in-process. DemoCNN, one row, one request at a time.

    python benchmarks/serve_overhead.py    # ~2 min; writes benchmarks/results/serve_overhead.*
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
N = 300


def _stats(ts: list[float]) -> dict[str, float]:
    a = np.array(ts[20:]) * 1e3
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.median(a)),
            "p99_ms": float(np.percentile(a, 99))}


def main() -> int:
    import onnx
    import torch
    from ray import serve

    import eeopt
    from eeopt.data import load_dataset
    from eeopt.frontend import export_torch
    from eeopt.models.demo_cnn import load_demo_cnn
    from eeopt.runtime import configure_threads
    from eeopt.serve import build_app, start_ray

    configure_threads(1)
    out: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                           "requests": N - 20, "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx.save(export_torch(load_demo_cnn().eval(), torch.rand(2, 1, 28, 28)),
                  work / "demo.onnx")
        prog = eeopt.compile(work / "demo.onnx", work / "p", thresholds=[0.84, 0.64, 0.52],
                             threads=1)
        x, _ = load_dataset("fashion-mnist:eval")
        name = prog.input_specs[0].name
        rows = [np.asarray(x[i:i + 1]) for i in range(N)]
        ts = []
        for r in rows:
            t0 = time.perf_counter()
            prog.run(r)
            ts.append(time.perf_counter() - t0)
        out["paths"]["Program.run in-process"] = _stats(ts)
        ray = start_ray(num_cpus=4, temp_dir=str(work / "ray"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for wait in (5.0, 0.0):
            tag = f"wait{int(wait)}"
            handle = serve.run(build_app(prog.path, batch_wait_ms=wait, name=tag), name=tag,
                               route_prefix=f"/{tag}")
            url = f"http://127.0.0.1:{port}/{tag}"
            bodies = {"HTTP, JSON": [(json.dumps({"inputs": r.tolist()}).encode(),
                                      "application/json") for r in rows]}
            npz = []
            for r in rows:
                buf = io.BytesIO()
                np.savez(buf, **{name: r})
                npz.append((buf.getvalue(), "application/x-npz"))
            bodies["HTTP, .npz body"] = npz
            for path, items in bodies.items():
                ts = []
                for body, kind in items:
                    req = urllib.request.Request(url, data=body, headers={"content-type": kind})
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        resp.read()
                    ts.append(time.perf_counter() - t0)
                out["paths"][f"{path}, batch wait {wait:g} ms"] = _stats(ts)
            ts = []
            for r in rows:
                t0 = time.perf_counter()
                handle.predict.remote(r).result()
                ts.append(time.perf_counter() - t0)
            out["paths"][f"DeploymentHandle, batch wait {wait:g} ms"] = _stats(ts)
        serve.shutdown()
        ray.shutdown()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_overhead.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# A single-row request through eeopt serve: where the time goes", "",
             f"DemoCNN, one row per request, one request at a time, {out['requests']} timed "
             f"each; loopback, {out['machine']}. The DeploymentHandle skips Serve's HTTP proxy: "
             "any ingress (gRPC included) also crosses the proxy and then this path, so it is "
             "a floor for them. Rerun: `python benchmarks/serve_overhead.py`.", "",
             "| path | mean ms | p50 ms | p99 ms |", "|---|---|---|---|"]
    for k, s in out["paths"].items():
        lines.append(f"| {k} | {s['mean_ms']:.3f} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} |")
    (RESULTS / "serve_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
