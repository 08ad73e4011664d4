"""Split computing (CN111445026A, embodiment 3): the first stages on a device, the rest on an
edge server, with only the rows that did not exit crossing the link, compressed.

So far: the codec for the crossing tensors (``eeopt.split.codec``): lossless (sparse layout +
zstd) for low-entropy maps, int8 per channel + zstd for dense ones, the entropy threshold placed
by ``calibrate_threshold`` where the fewest bytes fit an accuracy budget. Not yet: the planner,
the gRPC edge, link adaptation (issue "Split computing").
"""

from __future__ import annotations

from eeopt.split.codec import (
    CodecStats,
    calibrate_threshold,
    choose,
    decode,
    encode,
    entropy_bits,
    tensor_stats,
)

__all__ = ["CodecStats", "calibrate_threshold", "choose", "decode", "encode", "entropy_bits",
           "tensor_stats"]
