"""Fused gate kernels. ``reference`` (numpy) is the truth every implementation is tested against."""

from __future__ import annotations

from eeopt.kernels.reference import (
    GATE_FEATURES,
    NEVER,
    POLICIES,
    check_threshold,
    gate_decision,
    gate_features,
    gate_scores,
    patience_step,
)

__all__ = [
    "GATE_FEATURES",
    "NEVER",
    "POLICIES",
    "check_threshold",
    "gate_decision",
    "gate_features",
    "gate_scores",
    "patience_step",
]
