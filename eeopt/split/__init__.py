"""Split computing (CN111445026A, embodiment 3): the first stages on a device, the rest on an
edge server, with only the rows that did not exit crossing the link, compressed.

- ``codec``: the crossing tensors' coding: lossless (sparse layout + zstd) for low-entropy
  maps, int8 per channel + zstd for dense ones, the entropy threshold placed by
  ``calibrate_threshold`` where the fewest bytes fit the codec's share of the budget.
- ``plan``: a row's expected latency at each split for a link (``SplitCosts``), and the plan a
  manifest keeps (``SplitPlan``: its choices, the best one per bandwidth).
- ``joint``: exits, thresholds and split chosen together on calibration data
  (``measure_split``, ``plan_split_program``, ``record_split``; ``eeopt plan-split``).
- ``edge``: the edge half on gRPC (``EdgeServer``, ``eeopt edge``).
- ``device``: the device half (``EdgeClient``; ``Program.run(x, edge=...)``,
  ``eeopt run --edge``), with bounded retries, a local fallback, and a split that follows the
  measured link (``LinkMonitor``, ``SplitChooser``).
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
from eeopt.split.joint import (
    SplitMeasurement,
    measure_split,
    plan_split_program,
    record_split,
)
from eeopt.split.plan import (
    OBJECTIVES,
    SplitChoice,
    SplitCosts,
    SplitPlan,
    boundaries,
    expected_ms,
    latency_ms,
    plan_split,
    row_latencies,
)

__all__ = ["OBJECTIVES", "CodecStats", "EdgeClient", "EdgeServer", "LinkMonitor", "SplitChoice",
           "SplitChooser", "SplitCosts", "SplitMeasurement", "SplitPlan", "boundaries",
           "calibrate_threshold", "choose", "connect_edge", "decode", "encode", "entropy_bits",
           "expected_ms", "latency_ms", "measure_split", "plan_split", "plan_split_program",
           "record_split", "row_latencies", "serve_edge", "tensor_stats"]
