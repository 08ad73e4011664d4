"""Reference multi-exit models shipped with eeopt (the demo and test workloads).

torch is imported lazily: ``import eeopt.models`` works without it, and the first access to a
name below imports :mod:`eeopt.models.demo_cnn` (which needs torch).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eeopt.models.demo_cnn import DemoCNN, count_exit_macs, load_demo_cnn

__all__ = ["DemoCNN", "count_exit_macs", "load_demo_cnn"]

logger = logging.getLogger(__name__)

_LAZY = {name: "eeopt.models.demo_cnn" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
