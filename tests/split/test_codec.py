"""The split codec: lossless frames give tensors back bit for bit, lossy ones within half a
channel's scale; the entropy rule and its calibrated threshold; bad frames refused in one
line before any large allocation."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytest.importorskip("zstandard")

from eeopt.errors import DataError  # noqa: E402
from eeopt.split import (  # noqa: E402
    CodecStats,
    calibrate_threshold,
    choose,
    decode,
    encode,
    entropy_bits,
    tensor_stats,
)


def _relu_map(seed: int, shape: tuple[int, ...] = (8, 16, 14, 14)) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.maximum(x - 0.6, 0.0)  # about 73% zeros, as after a ReLU


@pytest.mark.parametrize("arr", [
    _relu_map(0),
    np.random.default_rng(1).standard_normal((4, 7, 33)).astype(np.float32),
    np.random.default_rng(2).integers(-5, 5, (6, 9)).astype(np.int64),
    np.random.default_rng(3).random((5, 3)) > 0.7,
    np.zeros((0, 4), np.float32),
    np.random.default_rng(4).standard_normal((3, 5)).astype(np.float16),
], ids=["relu", "dense", "int64", "bool", "empty", "float16"])
def test_lossless_frames_are_bit_for_bit(arr: np.ndarray) -> None:
    for method in ("lossless", "raw"):
        frame = encode({"t": arr}, {"t": method})
        got = decode(frame)["t"]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert got.tobytes() == arr.tobytes()
    # raw carries the bytes with no coder: the frame is the header plus exactly those bytes
    assert arr.nbytes < len(encode({"t": arr}, {"t": "raw"})) < arr.nbytes + 200


@pytest.mark.parametrize("shape", [(4, 8, 6, 6), (3, 10, 16), (5, 12)])
def test_lossy_frames_stay_within_half_a_channel_scale(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    x[:, 0] *= 100.0  # channels of very different ranges each get their own scale
    got = decode(encode({"t": x}, {"t": "lossy"}))["t"]
    axis = 1 if x.ndim >= 4 else x.ndim - 1
    peak = np.abs(np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)).max(axis=1)
    bound = np.moveaxis(np.broadcast_to((peak / 127.0 / 2.0 + 1e-6).reshape(
        (-1,) + (1,) * (x.ndim - 1)), np.moveaxis(x, axis, 0).shape), 0, axis)
    assert (np.abs(got - x) <= bound).all()
    assert got.dtype == np.float32 and got.shape == x.shape


def test_the_entropy_rule_and_the_coders_sizes() -> None:
    sparse, dense = _relu_map(6), np.random.default_rng(7).standard_normal(
        (8, 16, 14, 14)).astype(np.float32)
    assert entropy_bits(np.ones(10)) == 0.0
    assert entropy_bits(np.arange(256.0)) == pytest.approx(8.0)
    assert entropy_bits(sparse) < entropy_bits(dense)
    s, d = tensor_stats("s", sparse), tensor_stats("d", dense)
    assert s.raw_bytes / s.lossless_bytes > 2.0  # the sparse layout pays
    assert d.raw_bytes / d.lossy_bytes > 3.5 and d.lossy_bytes < d.lossless_bytes
    assert choose(sparse, 4.0) == "lossless" and choose(dense, 4.0) == "lossy"
    assert choose(np.arange(10), 0.0) == "lossless"  # integers never go lossy


def test_the_threshold_sends_fewest_bytes_within_the_accuracy_budget() -> None:
    def st(h: float, lossless: float, lossy: float, cost: float) -> CodecStats:
        return CodecStats("t", h, 0.0, 100.0, lossless, lossy, cost)

    sparse = st(2.7, 30.0, 12.0, 0.25)  # precision matters: costly to code lossy
    dense = st(7.9, 98.0, 26.0, 0.05)
    assert calibrate_threshold([sparse, dense], budget_pp=0.1) == pytest.approx((2.7 + 7.9) / 2)
    assert calibrate_threshold([sparse, dense], budget_pp=1.0) == 0.0  # all lossy: fewest bytes
    assert calibrate_threshold([sparse, dense], budget_pp=0.0) > 8.0  # exact only
    assert calibrate_threshold([], budget_pp=0.3) > 8.0


def test_bad_frames_are_refused_in_one_line() -> None:
    good = encode({"a": _relu_map(8), "b": np.arange(6)}, {"a": "lossless", "b": "lossless"})
    for bad, words in ((b"XXXX" + good[4:], "magic"), (good[:-5], "truncated"),
                       (good[:6], "magic")):
        with pytest.raises(DataError, match=words):
            decode(bad)
    (hlen,) = struct.unpack("<I", good[4:8])
    header = json.loads(good[8:8 + hlen])
    header[0]["shape"] = [10**6, 10**6]
    head = json.dumps(header).encode()
    huge = good[:4] + struct.pack("<I", len(head)) + head + good[8 + hlen:]
    with pytest.raises(DataError, match="over the limit"):
        decode(huge, max_bytes=1 << 20)
    corrupt = bytearray(good)
    corrupt[8 + hlen + 10] ^= 0xFF
    with pytest.raises(DataError):
        decode(bytes(corrupt))
    with pytest.raises(DataError, match="unknown codec method"):
        encode({"a": np.ones(3, np.float32)}, {"a": "magic"})
