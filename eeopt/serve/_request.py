"""What ``eeopt serve`` accepts and answers, without Ray: request bodies (JSON, ``.npy``,
``.npz``) parsed and checked against the program's inputs, and results as JSON. A bad request
is one ``RequestError`` (an HTTP status and one line); it never reaches a batch."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from eeopt.errors import DataError
from eeopt.program import TensorSpec
from eeopt.runtime import Result, check_inputs

__all__ = ["RequestError", "check_feeds", "concat_requests", "parse_request", "result_json"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _to_array(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    want = np.dtype(spec.dtype)
    try:
        arr = np.asarray(value)
    except ValueError:
        raise RequestError(400, f"input {name!r} is not a rectangular array") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise RequestError(400, f"input {name!r} must hold numbers ({spec.describe()})")
    if arr.dtype == want:
        return arr
    if want.kind in "iub" and arr.dtype.kind == "f" and (
            not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))):
        raise RequestError(400, f"input {name!r} must hold integers ({spec.describe()})")
    if want.kind == "b" and arr.dtype.kind not in "biu":
        raise RequestError(400, f"input {name!r} must hold booleans ({spec.describe()})")
    return arr.astype(want)


def parse_request(body: bytes, content_type: str, specs: Sequence[TensorSpec], *,
                  max_bytes: int, max_rows: int) -> dict[str, np.ndarray]:
    """The feeds of one request, checked against ``specs`` (names, dtypes, fixed dims, rows).

    Bodies: JSON ``{"inputs": array}`` (one input) or ``{"inputs": {name: array}}``; or a
    binary ``.npy`` (one input) or ``.npz`` (by name). Numbers are converted to each input's
    dtype when that loses nothing (JSON integers for an int64 input, floats for float32)."""
    if len(body) > max_bytes:
        raise RequestError(413, f"the body is {len(body):,} bytes, over the server's limit of "
                                f"{max_bytes:,}: send fewer rows per request")
    if not body:
        raise RequestError(400, 'the body is empty: send JSON {"inputs": ...}, .npy or .npz')
    kind = content_type.split(";")[0].strip().lower()
    names = [s.name for s in specs]
    raw: dict[str, Any]
    if body.startswith(_NPY_MAGIC) or body.startswith(_ZIP_MAGIC):
        try:
            loaded = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise RequestError(400, f"the binary body is not a valid .npy/.npz: {exc}") from None
        if isinstance(loaded, np.ndarray):
            if len(names) != 1:
                raise RequestError(400, f"this program has inputs {', '.join(names)}: send an "
                                        ".npz with one array per name")
            raw = {names[0]: loaded}
        else:
            with loaded:
                raw = {k: loaded[k] for k in loaded.files}
    elif kind in ("application/json", "text/json", "", "application/x-www-form-urlencoded"):
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, 'the body is not JSON: send {"inputs": ...}') from None
        if not isinstance(obj, dict) or "inputs" not in obj:
            raise RequestError(400, 'the JSON has no "inputs": send {"inputs": array} or '
                                    '{"inputs": {name: array}}')
        inputs = obj["inputs"]
        if isinstance(inputs, dict):
            raw = dict(inputs)
        elif len(names) == 1:
            raw = {names[0]: inputs}
        else:
            raise RequestError(400, f"this program has inputs {', '.join(names)}: send "
                                    '{"inputs": {name: array, ...}}')
    else:
        raise RequestError(415, f"content type {kind!r} is not served: send application/json, "
                                "or a .npy/.npz body")
    return check_feeds(raw, specs, max_rows=max_rows)


def check_feeds(raw: dict[str, Any], specs: Sequence[TensorSpec], *,
                max_rows: int) -> dict[str, np.ndarray]:
    """``raw`` (name -> array-like) as the program's feeds: converted to each input's dtype
    where that loses nothing, then checked (names, dtypes, fixed dims, 1..max_rows rows)."""
    by_name = {s.name: s for s in specs}
    feeds = {}
    for name, value in raw.items():
        spec = by_name.get(name)
        if spec is None:
            raise RequestError(400, f"unknown input {name!r}; the program expects: "
                                    + ", ".join(s.describe() for s in specs))
        feeds[name] = np.ascontiguousarray(_to_array(name, value, spec))
    try:
        rows = check_inputs(specs, feeds, what="program")
    except DataError as exc:
        raise RequestError(400, str(exc)) from None
    if rows < 1:
        raise RequestError(400, "the request has no rows")
    if rows > max_rows:
        raise RequestError(413, f"the request has {rows} rows, over the server's limit of "
                                f"{max_rows}: split it")
    return feeds


def concat_requests(requests: Sequence[dict[str, np.ndarray]], specs: Sequence[TensorSpec],
                    pad_axes: dict[str, int]) -> tuple[dict[str, np.ndarray], list[int]]:
    """One batch of several requests' rows, and each request's row count. Inputs with a
    sequence axis (``pad_axes``) are right-padded with zeros to the longest request first
    (the program's attention mask marks the padding; the runtime trims it again)."""
    sizes = [int(next(iter(r.values())).shape[0]) for r in requests]
    out = {}
    for s in specs:
        parts = [r[s.name] for r in requests]
        ax = pad_axes.get(s.name)
        if ax is not None and len({p.shape[ax] for p in parts}) > 1:
            longest = max(p.shape[ax] for p in parts)
            padded = []
            for p in parts:
                width = [(0, 0)] * p.ndim
                width[ax] = (0, longest - p.shape[ax])
                padded.append(np.pad(p, width))
            parts = padded
        out[s.name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return out, sizes


def result_json(res: Result, exit_names: Sequence[str]) -> dict[str, Any]:
    """``{"logits": [[...]], "exit": [...], "exit_name": [...]}``."""
    exits = res.exit.tolist()
    return {"logits": res.logits.tolist(), "exit": exits,
            "exit_name": [exit_names[k] for k in exits]}
