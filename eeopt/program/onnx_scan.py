"""Finds tensors with external data in a serialized ONNX model, without importing onnx.

An ONNX tensor may keep its values in another file (``data_location: EXTERNAL``, with a
``location`` entry). ONNX Runtime resolves that path itself, and for a model loaded from bytes it
resolves it against the current directory: a stage file could then read a file the program's
sha256 does not cover, from wherever ``eeopt run`` was started. eeopt never writes external
data, so a stage that has any is refused at load (``load_manifest``).

The scan walks the protobuf wire format along every path that can hold a ``TensorProto``:
the graph's initializers and sparse initializers, node attributes (``t``, ``tensors``, sparse
tensors, and the subgraphs of ``If``/``Loop``/``Scan``), model-local functions and training
graphs. Field numbers are those of ``onnx.proto`` (IR version 10), which keeps them stable.
"""

from __future__ import annotations

__all__ = ["MalformedModel", "external_data_tensors"]


class MalformedModel(ValueError):
    """The bytes are not a protobuf message (ONNX Runtime would refuse them too)."""


# message -> {field number: message type of that (length-delimited) field}
_MODEL, _GRAPH, _NODE, _ATTR, _FUNC, _SPARSE, _TENSOR, _TRAINING = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNC},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNC: {7: _NODE, 11: _ATTR},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _TENSOR: {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
#: protobuf's own default recursion limit
_MAX_DEPTH = 100


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedModel("a varint runs past its message")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _walk(buf: memoryview, pos: int, end: int, kind: int, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedModel("messages nest deeper than protobuf allows")
    children = _CHILDREN[kind]
    name = ""
    external = False
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if kind == _TENSOR and number == _TENSOR_DATA_LOCATION and value != 0:
                external = True
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise MalformedModel("a field runs past its message")
            child = children.get(number)
            if child is not None:
                _walk(buf, pos, pos + size, child, depth + 1, found)
            elif kind == _TENSOR and number == _TENSOR_EXTERNAL_DATA:
                external = True
            elif kind == _TENSOR and number == _TENSOR_NAME:
                name = bytes(buf[pos : pos + size]).decode("utf-8", "replace")
            pos += size
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise MalformedModel(f"wire type {wire} in field {number}")
        if pos > end:
            raise MalformedModel("a field runs past its message")
    if external:
        found.append(name or "<unnamed>")


def external_data_tensors(data: bytes) -> list[str]:
    """Names of the tensors in the serialized ONNX model ``data`` that keep their values in an
    external file (empty for a self-contained model). Raises ``MalformedModel`` if ``data`` is
    not a protobuf message."""
    found: list[str] = []
    buf = memoryview(data)
    _walk(buf, 0, len(buf), _MODEL, 0, found)
    return found
