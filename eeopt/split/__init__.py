"""Split computing (CN111445026A, embodiment 3): the first stages on a device, the rest on an
edge server, with only the rows that did not exit crossing the link, compressed.

So far: the codec for the crossing tensors (``eeopt.split.codec``): lossless (sparse layout +
zstd) for low-entropy maps, int8 per channel + zstd for dense ones, the entropy threshold placed
by ``calibrate_threshold`` where the fewest bytes fit an accuracy budget; and the split choice
per bandwidth (``eeopt.split.plan``: expected latency of every split point, the bandwidths
where the best one changes). Not yet: choosing exits and split jointly, the gRPC edge and the
device half, link adaptation at run time (issue "Split computing").
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
from eeopt.split.device import EdgeClient, LinkMonitor, SplitChooser, connect_edge
from eeopt.split.edge import EdgeServer, serve_edge
from eeopt.split.plan import (
    SplitChoice,
    SplitCosts,
    SplitPlan,
    boundaries,
    expected_ms,
    plan_split,
)

__all__ = ["CodecStats", "EdgeClient", "EdgeServer", "LinkMonitor", "SplitChoice",
           "SplitChooser", "SplitCosts", "SplitPlan", "boundaries", "calibrate_threshold",
           "choose", "connect_edge", "decode", "encode", "entropy_bits", "expected_ms",
           "plan_split", "serve_edge", "tensor_stats"]
