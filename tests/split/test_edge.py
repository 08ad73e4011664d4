"""Split runs on loopback, the two halves in two processes (``eeopt edge`` in a subprocess on
127.0.0.1): identical to the single-process program with the lossless codec at every split;
the edge going down mid-stream (one line, or the device finishing locally when asked); a
program the edge does not serve; a request over the edge's bound; ``eeopt run --edge``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("grpc")
pytest.importorskip("zstandard")

import eeopt  # noqa: E402
from eeopt.errors import BackendUnavailableError, DataError, ManifestError, UsageError  # noqa: E402

import topologies as T  # noqa: E402


def _compile(root: Path, name: str, seed: int) -> eeopt.Program:
    return eeopt.compile(T.make("masked", seed), root / name,
                         example_inputs=T.example("masked", 4, 0), threshold=0.5)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> tuple[eeopt.Program, eeopt.Program]:
    root = tmp_path_factory.mktemp("split")
    return _compile(root, "p", 3), _compile(root, "other", 4)


def _feeds(rows: int, seed: int) -> dict[str, np.ndarray]:
    x, mask = T.example("masked", rows, seed)
    return {"x": x.numpy(), "mask": mask.numpy()}


class Edge:
    """``eeopt edge DIR --listen 127.0.0.1:0`` in a subprocess; ``address`` from its line."""

    def __init__(self, program_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eeopt", "edge", str(program_dir), "--listen",
             "127.0.0.1:0", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"on (127\.0\.0\.1:\d+);", line)
        if m is None:
            self.proc.kill()
            raise AssertionError(f"eeopt edge did not start: {line}{self.proc.stdout.read()}")
        self.address = m.group(1)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture
def edge(programs: Any) -> Iterator[Edge]:
    e = Edge(programs[0].path)
    yield e
    if e.proc.poll() is None:
        e.stop()


@pytest.mark.parametrize("rows", [1, 37])
def test_lossless_split_runs_are_the_single_process_run_at_every_split(
        programs: Any, edge: Edge, rows: int) -> None:
    prog = programs[0]
    feeds = _feeds(rows, seed=rows)
    whole = prog.run(feeds)
    assert rows == 1 or len(set(whole.exit.tolist())) > 1  # rows leave on both sides
    for split in range(prog.num_exits + 1):
        client = prog.connect_edge(edge.address, split=split, codec="lossless")
        got = prog.run(feeds, edge=edge.address)
        np.testing.assert_array_equal(got.exit, whole.exit)
        np.testing.assert_array_equal(got.logits, whole.logits)
        # only the rows that did not exit before the split crossed
        crossed = int((whole.exit >= split).sum()) if split < prog.num_exits else 0
        assert client.stats["rows_sent"] == crossed
        assert client.stats["requests"] == (1 if crossed else 0)
    out = edge.stop()
    assert re.search(r"stopped after \d+ requests", out)


def test_lossy_split_runs_stay_close(programs: Any, edge: Edge) -> None:
    prog = programs[0]
    feeds = _feeds(64, seed=9)
    whole = prog.run(feeds)
    prog.connect_edge(edge.address, split=1, codec="lossy")
    got = prog.run(feeds, edge=edge.address)
    assert (got.exit == whole.exit).mean() >= 0.9
    same = got.exit == whole.exit
    assert np.abs(got.logits[same] - whole.logits[same]).max() < 0.1


def test_the_edge_going_down_mid_stream(programs: Any, edge: Edge) -> None:
    prog = programs[0]
    feeds = [_feeds(16, seed=s) for s in range(4)]
    strict = prog.connect_edge(edge.address, split=1, timeout_s=1.0, retries=1)
    lenient = eeopt.load(prog.path).connect_edge(edge.address, split=1, timeout_s=1.0,
                                                 retries=1, fallback="local")
    for f in feeds[:2]:
        np.testing.assert_array_equal(strict.run(f).exit, prog.run(f).exit)
        lenient.run(f)
    assert lenient.stats["local_fallbacks"] == 0
    edge.stop(signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"did not answer .* after 2 tries.*"
                       r"eeopt edge PROGRAM_DIR --listen") as info:
        strict.run(feeds[2])
    assert time.monotonic() - t0 < 10 and "\n" not in str(info.value)
    for f in feeds[2:]:  # the device finishes the rows itself: the same result
        got, want = lenient.run(f), prog.run(f)
        np.testing.assert_array_equal(got.exit, want.exit)
        np.testing.assert_array_equal(got.logits, want.logits)
    assert lenient.stats["local_fallbacks"] == 2


def test_an_edge_that_is_not_there(programs: Any) -> None:
    with pytest.raises(BackendUnavailableError, match="did not answer"):
        programs[0].connect_edge("127.0.0.1:9", split=1, timeout_s=0.5, retries=0)
    client = programs[0].connect_edge("127.0.0.1:9", split=1, timeout_s=0.5, retries=0,
                                      fallback="local")
    f = _feeds(8, seed=1)
    np.testing.assert_array_equal(client.run(f).exit, programs[0].run(f).exit)


def test_another_programs_tensors_are_refused(programs: Any, edge: Edge) -> None:
    with pytest.raises(ManifestError, match=r"the edge .* serves program [0-9a-f]{12} \(p\), "
                       r"not [0-9a-f]{12}: start the edge with the device's program"):
        programs[1].connect_edge(edge.address, split=1)
    out = edge.stop()
    assert "refused: program 1" in out


def test_an_oversized_request_is_refused(programs: Any) -> None:
    e = Edge(programs[0].path, "--max-request-mb", "0.01")  # 10 KB
    try:
        client = programs[0].connect_edge(e.address, split=0, codec="lossless")
        small = _feeds(2, seed=1)
        np.testing.assert_array_equal(client.run(small).exit, programs[0].run(small).exit)
        big = {k: np.repeat(v, 400, axis=0) for k, v in _feeds(8, seed=2).items()}
        big["x"] = np.random.default_rng(0).standard_normal(big["x"].shape).astype(np.float32)
        with pytest.raises(DataError, match=r"refused a request of [\d,]+ bytes .*fewer rows"):
            client.run(big)
        np.testing.assert_array_equal(client.run(small).exit, programs[0].run(small).exit)
    finally:
        e.stop()


def test_a_port_in_use_is_one_line(programs: Any, edge: Edge) -> None:
    busy = subprocess.run([sys.executable, "-m", "eeopt", "edge", str(programs[0].path),
                           "--listen", edge.address], capture_output=True, text=True,
                          timeout=60)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1
    assert "cannot listen on" in busy.stderr and "--listen" in busy.stderr


def test_bad_client_settings_are_one_line(programs: Any) -> None:
    prog = programs[0]
    for kw, msg in [({"split": 9}, "split"), ({"split": 1, "codec": "zip"}, "codec"),
                    ({"split": 1, "fallback": "cloud"}, "fallback"),
                    ({}, "no split plan")]:
        with pytest.raises(UsageError, match=msg):
            prog.connect_edge("127.0.0.1:9", **kw)
    with pytest.raises(UsageError, match="host:port"):
        prog.connect_edge("nowhere", split=1)


def test_eeopt_run_with_an_edge(programs: Any, edge: Edge, tmp_path: Path) -> None:
    prog = programs[0]
    f = _feeds(50, seed=4)
    np.savez(tmp_path / "x.npz", **f)
    cmd = [sys.executable, "-m", "eeopt", "run", str(prog.path), "--input",
           str(tmp_path / "x.npz"), "--batch-size", "16"]
    done = subprocess.run([*cmd, "--output", str(tmp_path / "out.npz"), "--edge", edge.address,
                           "--split", "1", "--codec", "lossless"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"split run with .*: 4 requests, \d+ rows crossed", done.stdout)
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["exit"], prog.run(f).exit)
    edge.stop()
    down = subprocess.run([*cmd, "--output", str(tmp_path / "down.npz"), "--edge",
                           edge.address, "--split", "1", "--edge-timeout", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and not (tmp_path / "down.npz").exists()
    assert down.stderr.count("\n") == 1 and "did not answer" in down.stderr
    assert "--fallback" in down.stderr  # the flag, not the library's setting name
    local = subprocess.run([*cmd, "--output", str(tmp_path / "local.npz"), "--edge",
                            edge.address, "--split", "1", "--edge-timeout", "0.5",
                            "--fallback", "local"], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    with np.load(tmp_path / "local.npz") as z:
        np.testing.assert_array_equal(z["exit"], prog.run(f).exit)
