"""Starting and stopping the Ray Serve application (``eeopt serve``)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from eeopt.errors import BackendUnavailableError, UsageError
from eeopt.program import load_manifest

__all__ = ["run_server", "start_ray"]

logger = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError('eeopt serve needs Ray Serve: pip install '
                                      '"ray[serve]==2.60.0"') from exc
    return ray


def start_ray(*, address: str | None = None, num_cpus: int | None = None,
              temp_dir: str | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local one
    with ``num_cpus`` CPUs and its files under ``temp_dir``. Returns the ``ray`` module."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, **kwargs)
    return ray


def run_server(program_dir: str | os.PathLike[str], *, host: str = "127.0.0.1",
               port: int = 8000, replicas: int = 1, threads: int = 1, max_batch: int = 32,
               batch_wait_ms: float = 2.0, max_body_mb: float = 64.0, max_rows: int = 4096,
               adapt: dict[str, Any] | None = None, address: str | None = None,
               num_cpus: int | None = None, temp_dir: str | None = None,
               blocking: bool = True, ready: threading.Event | None = None,
               plain_onnx: str | None = None) -> Any:
    """Serve ``program_dir`` at ``http://host:port/`` until SIGINT/SIGTERM (``blocking``), then
    shut Serve and Ray down; else return the application's DeploymentHandle."""
    manifest = load_manifest(Path(program_dir))  # a bad directory fails before Ray starts
    if manifest.backend not in ("onnxruntime",):
        raise UsageError(f"eeopt serve runs onnxruntime programs; {program_dir} is "
                         f"{manifest.backend}")
    if not 0 < port < 65536:
        raise UsageError(f"{{port}} {port} is not a port number")
    for name, v in (("replicas", replicas), ("max_batch", max_batch), ("threads", threads),
                    ("max_rows", max_rows)):
        if v < 1:
            raise UsageError(f"{{{name}}} must be >= 1, got {v}")
    if plain_onnx is not None and (adapt or not Path(plain_onnx).is_file()):
        raise UsageError(f"{{plain_onnx}} {plain_onnx}: give an existing ONNX file, without "
                         "{adapt}")
    if batch_wait_ms < 0 or max_body_mb <= 0:
        raise UsageError("{batch_wait_ms} must be >= 0 and {max_body_mb} > 0")
    ray = start_ray(address=address, num_cpus=num_cpus, temp_dir=temp_dir)
    from ray import serve

    from eeopt.serve._app import build_app

    stop = threading.Event()
    previous = {}
    if blocking:  # after ray.init, which sets its own: a SIGTERM from here on drains and stops
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                         signal.SIGTERM)}
    try:
        serve.start(http_options={"host": host, "port": int(port)})
        app = build_app(program_dir, replicas=replicas, threads=threads, max_batch=max_batch,
                        batch_wait_ms=batch_wait_ms, max_body_mb=max_body_mb,
                        max_rows=max_rows, adapt=adapt,
                        cpus_per_replica=min(1.0, float(threads)), plain_onnx=plain_onnx)
        handle = serve.run(app, name="eeopt", route_prefix="/", blocking=False)
        logger.info("serving %s at http://%s:%d/", program_dir, host, port)
        if not blocking:
            return handle
        if ready is not None:
            ready.set()
        print(f"serving {program_dir} at http://{host}:{port}/ (POST /, GET /healthz, "
              "GET /metrics); Ctrl-C stops", flush=True)
        stop.wait()
    finally:
        if blocking:
            for sig, h in previous.items():
                signal.signal(sig, h)
            print("shutting down: draining requests, then stopping Serve and Ray", flush=True)
            serve.shutdown()
            ray.shutdown()
    return None
