"""Multiply-accumulates counted from the ONNX graph."""

from __future__ import annotations

from eeopt.analysis import count_macs
from eeopt.frontend import export_torch

import topologies as T


def test_count_macs_matches_layer_arithmetic() -> None:
    m = export_torch(T.make("longskip", 0), T.example("longskip", 2, 0))
    macs = count_macs(m)
    # 12->16 stem, 16->16 l1, l2, 32->16 l3, three 16->4 heads and a 16->4 final, at batch 1
    assert sum(macs.values()) == 12 * 16 + 2 * 16 * 16 + 32 * 16 + 4 * 16 * 4
