"""eeopt serve on a local Ray instance (2 CPUs, its files in the test's temp dir), on loopback:
round trips equal to `eeopt run`, grouped requests, bad requests refused alone, /healthz and
/metrics, the DeploymentHandle, and a graceful shutdown of the CLI on SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("ray.serve")

import eeopt  # noqa: E402
from eeopt.cli import main  # noqa: E402
from eeopt.serve import RequestError, parse_request  # noqa: E402

import topologies as T  # noqa: E402

SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes, kind: str = "application/json") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"content-type": kind})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _json(feeds: dict[str, np.ndarray]) -> bytes:
    return json.dumps({"inputs": {k: v.tolist() for k, v in feeds.items()}}).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ray import serve

    from eeopt.serve import build_app, start_ray

    d = tmp_path_factory.mktemp("serve")
    progs = {
        "masked": eeopt.compile(T.make("masked", 4), d / "masked",
                                example_inputs=T.example("masked", 4, 0), threshold=0.5),
        "longskip": eeopt.compile(T.make("longskip", 4), d / "longskip",
                                  example_inputs=T.example("longskip", 4, 0), threshold=0.4),
    }
    torch.manual_seed(3)
    progs["text"] = eeopt.compile(T.TinyEncoder(layers=4).eval(), d / "text",
                                  example_inputs=T.token_batch(4, 37, 1), dynamic_shapes=SEQ,
                                  threshold=0.4)
    # 4 logical CPUs on any machine: the replicas, a Ray Data actor and its write tasks fit
    ray = start_ray(num_cpus=4, temp_dir=str(tmp_path_factory.mktemp("ray")))
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    import onnx

    from eeopt.frontend import export_torch

    onnx.save(export_torch(T.make("longskip", 4), *T.example("longskip", 4, 0)),
              d / "longskip.onnx")
    handles = {}
    for name, prog in progs.items():
        app = build_app(prog.path, max_batch=8, batch_wait_ms=50.0, max_body_mb=0.05,
                        max_rows=256, cpus_per_replica=0.25)
        handles[name] = serve.run(app, name=name, route_prefix=f"/{name}")
    plain = build_app(progs["longskip"].path, plain_onnx=d / "longskip.onnx",
                      cpus_per_replica=0.25, name="plain")
    handles["plain"] = serve.run(plain, name="plain", route_prefix="/plain")
    yield {"progs": progs, "url": f"http://127.0.0.1:{port}", "handles": handles, "dir": d}
    serve.shutdown()
    ray.shutdown()


def test_a_round_trip_equals_eeopt_run(served: Any, tmp_path: Path) -> None:
    prog = served["progs"]["masked"]
    x, mask = (t.numpy() for t in T.example("masked", 9, 5))
    feeds = {prog.input_specs[0].name: x, prog.input_specs[1].name: mask}
    np.savez(tmp_path / "in.npz", **feeds)
    assert main(["run", str(prog.path), "--input", str(tmp_path / "in.npz"), "--output",
                 str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        want_exit, want_logits = z["exit"], z["logits"]
    url = served["url"] + "/masked"
    buf = io.BytesIO()
    np.savez(buf, **feeds)
    for body, kind in ((_json(feeds), "application/json"), (buf.getvalue(), "application/x-npz")):
        status, out = _post(url, body, kind)
        assert status == 200, out
        np.testing.assert_array_equal(out["exit"], want_exit)
        np.testing.assert_allclose(np.array(out["logits"], np.float32), want_logits, rtol=0,
                                   atol=1e-6)
        assert out["exit_name"] == [prog.exit_names[k] for k in want_exit]
    one = served["progs"]["longskip"]  # one input: a plain array, JSON or .npy
    x1 = T.example("longskip", 5, 2)[0].numpy()
    npy = io.BytesIO()
    np.save(npy, x1)
    for body, kind in ((json.dumps({"inputs": x1.tolist()}).encode(), "application/json"),
                       (npy.getvalue(), "application/octet-stream")):
        status, out = _post(served["url"] + "/longskip", body, kind)
        assert status == 200 and out["exit"] == one.run(x1).exit.tolist()


def test_the_plain_model_behind_the_same_front_end(served: Any) -> None:
    prog = served["progs"]["longskip"]
    x1 = T.example("longskip", 6, 9)[0].numpy()
    status, out = _post(served["url"] + "/plain", json.dumps({"inputs": x1.tolist()}).encode())
    final = prog.run(x1, thresholds=[float("inf")] * len(prog.thresholds))
    assert status == 200 and out["exit"] == [prog.num_exits - 1] * 6
    np.testing.assert_allclose(np.array(out["logits"], np.float32), final.logits, rtol=0,
                               atol=1e-5)


def test_the_handle_answers_as_http_does(served: Any) -> None:
    prog = served["progs"]["longskip"]
    x1 = T.example("longskip", 6, 8)[0].numpy()
    out = served["handles"]["longskip"].predict.remote(x1).result()
    assert out["exit"] == prog.run(x1).exit.tolist()
    with pytest.raises(Exception, match="input 'x'"):
        served["handles"]["longskip"].predict.remote(x1[:, :3]).result()


def test_concurrent_text_requests_of_any_length_share_a_batch(served: Any) -> None:
    prog = served["progs"]["text"]
    reqs = []
    for i in range(12):  # lengths differ: the group is padded, then re-trimmed
        ids, mask = T.token_batch(1 + i % 3, 8 + 3 * i, seed=40 + i)
        reqs.append({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    before = _metric(served, "text", "eeopt_batches_total")
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda f: _post(served["url"] + "/text", _json(f)), reqs))
    for feeds, (status, out) in zip(reqs, got, strict=True):
        assert status == 200, out
        want = prog.run(feeds)
        np.testing.assert_array_equal(out["exit"], want.exit)
        np.testing.assert_allclose(np.array(out["logits"], np.float32), want.logits, rtol=0,
                                   atol=1e-5)
    assert _metric(served, "text", "eeopt_batches_total") - before < 12  # grouped


def _metric(served: Any, app: str, name: str) -> float:
    with urllib.request.urlopen(served["url"] + f"/{app}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_bad_requests_are_refused_alone_and_the_server_stays_up(served: Any) -> None:
    url = served["url"] + "/masked"
    prog = served["progs"]["masked"]
    names = [s.name for s in prog.input_specs]
    x, mask = (t.numpy() for t in T.example("masked", 3, 6))
    good = {names[0]: x, names[1]: mask}
    bad = [
        (json.dumps({"inputs": {names[0]: x.tolist()}}).encode(), "application/json", 400,
         "missing input"),
        (json.dumps({"inputs": {names[0]: x[:, :2].tolist(), names[1]: mask.tolist()}})
         .encode(), "application/json", 400, "axis"),
        (json.dumps({"inputs": {names[0]: [["a"]], names[1]: mask.tolist()}}).encode(),
         "application/json", 400, "numbers"),
        (b"not json", "application/json", 400, "not JSON"),
        (b"x" * 60_000, "application/json", 413, "limit"),
        (b"<xml/>", "text/xml", 415, "content type"),
    ]
    with ThreadPoolExecutor(len(bad) + 4) as pool:  # bad ones arrive with good ones
        futures = [pool.submit(_post, url, _json(good)) for _ in range(4)]
        bad_futures = [pool.submit(_post, url, body, kind) for body, kind, _, _ in bad]
        for f in futures:
            status, out = f.result()
            assert status == 200 and out["exit"] == prog.run(good).exit.tolist()
        for f, (_, _, code, words) in zip(bad_futures, bad, strict=True):
            status, out = f.result()
            assert status == code and words in out["error"], out
            assert "\n" not in out["error"]
    with urllib.request.urlopen(served["url"] + "/masked/healthz", timeout=30) as r:
        assert json.loads(r.read())["status"] == "ok"
    assert _metric(served, "masked", "eeopt_bad_requests_total") >= len(bad)
    rows = _metric(served, "masked", "eeopt_rows_total")
    assert _metric(served, "masked", "eeopt_exit_rows_total") == rows > 0


def test_parse_request_checks_what_it_converts() -> None:
    from eeopt.program import TensorSpec

    specs = [TensorSpec("ids", "int64", ("N", "seq"))]
    feeds = parse_request(b'{"inputs": [[1, 2], [3, 4]]}', "application/json", specs,
                          max_bytes=1000, max_rows=8)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (2, 2)
    for body, code in ((b'{"inputs": [[1.5, 2]]}', 400), (b'{"inputs": [[1], [2, 3]]}', 400),
                       (b'{"inputs": []}', 400), (b'{"x": 1}', 400),
                       (json.dumps({"inputs": [[1]] * 9}).encode(), 413)):
        with pytest.raises(RequestError) as info:
            parse_request(body, "application/json", specs, max_bytes=1000, max_rows=8)
        assert info.value.status == code


def test_eeopt_serve_stops_cleanly_on_sigterm(served: Any, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "eeopt", "serve",
                             str(served["progs"]["longskip"].path), "--port", str(port),
                             "--num-cpus", "1", "--adapt", "--budget", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        else:
            pytest.fail("eeopt serve did not come up in 120 s")
        assert "eeopt_adapt_level" in text and "eeopt_adapt_budget_pp" in text
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-2000:]
        assert "shutting down" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ray_data_scoring_equals_eeopt_run(served: Any, tmp_path: Path) -> None:
    """`eeopt run --ray` over two .npz files and eeopt.ray.map_batches give, row by row, what
    `eeopt run` gives; every row keeps its id."""
    import pyarrow.parquet as pq
    import ray

    import eeopt.ray

    prog = served["progs"]["masked"]
    names = [s.name for s in prog.input_specs]
    parts = []
    for i, n in enumerate((13, 21)):
        x, mask = (t.numpy() for t in T.example("masked", n, 70 + i))
        parts.append({names[0]: x, names[1]: mask})
        np.savez(tmp_path / f"part{i}.npz", **parts[-1])
    allx = {k: np.concatenate([p[k] for p in parts]) for k in names}
    want = prog.run(allx)
    out = tmp_path / "scored"
    assert main(["run", str(prog.path), "--input", str(tmp_path / "part*.npz"), "--output",
                 str(out), "--ray", "--batch-size", "8"]) == 0
    table = pq.read_table(out).to_pandas().sort_values("row")
    assert table["row"].tolist() == list(range(34))
    np.testing.assert_array_equal(table["exit"].to_numpy(), want.exit)
    logits = table[[f"logit_{c}" for c in range(prog.num_classes)]].to_numpy(np.float32)
    np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-6)
    assert table["exit_name"].tolist() == [prog.exit_names[k] for k in want.exit]
    assert main(["run", str(prog.path), "--input", str(tmp_path / "part*.npz"), "--output",
                 str(out), "--ray"]) == 2  # exists: refused, kept
    one = served["progs"]["longskip"]  # .npy files feed a one-input program
    xs = [T.example("longskip", n, 80 + i)[0].numpy() for i, n in enumerate((5, 9))]
    for i, x1 in enumerate(xs):
        np.save(tmp_path / f"one{i}.npy", x1)
    assert main(["run", str(one.path), "--input", str(tmp_path / "one*.npy"), "--output",
                 str(tmp_path / "scored1"), "--ray"]) == 0
    t1 = pq.read_table(tmp_path / "scored1").to_pandas().sort_values("row")
    assert t1["exit"].tolist() == one.run(np.concatenate(xs)).exit.tolist()
    ds = ray.data.from_items([{"row": 100 + i, names[0]: allx[names[0]][i],
                               names[1]: allx[names[1]][i]} for i in range(34)])
    got = sorted(eeopt.ray.map_batches(ds, prog.path, batch_size=16, num_cpus=0.25).take_all(),
                 key=lambda r: r["row"])
    assert [r["row"] for r in got] == list(range(100, 134))
    assert [r["exit"] for r in got] == want.exit.tolist()
