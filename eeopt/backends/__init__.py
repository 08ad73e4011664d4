"""Execution backends: one ``Backend`` protocol, one module per engine."""

from __future__ import annotations

from eeopt.backends.base import Backend, CompiledSegment, check_inputs, get_backend

__all__ = ["Backend", "CompiledSegment", "check_inputs", "get_backend"]
