"""Serving a program on Ray Serve (``eeopt serve``): HTTP and DeploymentHandle requests grouped
by ``@serve.batch``, one ``Program.run`` per group, each replica loading the program once.

    eeopt serve program/ --port 8000 --replicas 2 --max-batch 32 --batch-wait-ms 2
    curl -s localhost:8000/ -d '{"inputs": [[...], ...]}'    # {"logits", "exit", "exit_name"}
    curl -s localhost:8000/metrics                            # Prometheus text

    from eeopt.serve import build_app
    handle = ray.serve.run(build_app("program/"))
    handle.predict.remote(x).result()

    eeopt.ray.map_batches(dataset, "program/")        # batch scoring on Ray Data
    eeopt run program/ --input 'data/*.npz' --output scored/ --ray   # Parquet shards

Requests are parsed and checked before they join a batch (``parse_request``), so a bad one is
refused alone (4xx, one line) and never fails the others. Ray is imported only here, by
``build_app`` and ``run_server``.
"""

from __future__ import annotations

import importlib
from typing import Any

from eeopt.serve._data import ROW, Scorer, input_files, map_batches, score_parts
from eeopt.serve._request import (
    RequestError,
    check_feeds,
    concat_requests,
    parse_request,
    result_json,
)
from eeopt.serve._server import run_server, start_ray

__all__ = ["ROW", "RequestError", "Scorer", "build_app", "check_feeds", "concat_requests",
           "input_files", "map_batches", "parse_request", "result_json", "run_server",
           "score_parts", "start_ray"]


def __getattr__(name: str) -> Any:  # the Ray application loads on first use (it imports ray)
    if name in ("build_app", "EEOptServer"):
        return getattr(importlib.import_module("eeopt.serve._app"), name)
    raise AttributeError(f"module 'eeopt.serve' has no attribute {name!r}")
