"""What crosses between the device and the edge, on gRPC (PyPI ``grpcio``) with raw-bytes
messages: no generated stubs, one service ``eeopt.split.Edge`` with two unary methods.

- ``Hello``: the device's program hash in, the edge's program hash and stage count out (the
  device checks it serves the same program, and times the round trip).
- ``Run``: a codec frame (``eeopt.split.codec``) of the tensors carried into stage ``start``
  plus ``ROWS`` (the device's row ids, int64), with the metadata ``eeopt-program`` (the
  program hash), ``eeopt-start`` and ``eeopt-thresholds``; the answer is a frame of
  ``logits``, ``exit`` and ``ROWS`` (lossless), with the trailing metadata ``eeopt-edge-ms``
  (the edge's own time on the request).

The program hash is the sha256 of the program's ``manifest.json``, which holds every stage
file's sha256: two processes with the same hash run the same program."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from eeopt.errors import BackendUnavailableError

SERVICE = "eeopt.split.Edge"
HELLO = f"/{SERVICE}/Hello"
RUN = f"/{SERVICE}/Run"
ROWS = "__rows__"
#: gRPC metadata keys
PROGRAM, START, THRESHOLDS, EDGE_MS = ("eeopt-program", "eeopt-start", "eeopt-thresholds",
                                       "eeopt-edge-ms")
#: a request larger than this is refused by the edge unless configured otherwise
DEFAULT_MAX_REQUEST = 64 << 20


def program_hash(path: str | Path) -> str:
    """The sha256 of ``path``'s ``manifest.json``."""
    return hashlib.sha256((Path(path) / "manifest.json").read_bytes()).hexdigest()


def grpc_module() -> Any:
    try:
        import grpc
    except ImportError as exc:
        raise BackendUnavailableError("split runs need PyPI grpcio: pip install "
                                      "'eeopt[split]'") from exc
    return grpc
