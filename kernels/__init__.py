"""Fused gate kernels. ``reference`` (numpy) is the truth every implementation is tested against."""

from __future__ import annotations

from eeopt.kernels.reference import GATE_FEATURES, gate_decision, gate_features

__all__ = ["GATE_FEATURES", "gate_decision", "gate_features"]
