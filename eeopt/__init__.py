"""eeopt: a compiler and runtime for early-exit deep neural networks.

    program = eeopt.compile("model.onnx", "program/", threshold=0.9)
    result = eeopt.load("program/").run(x)    # result.logits [N, C], result.exit [N]

The names below load on first use, so that ``import eeopt`` stays cheap and an application
that only runs programs (``eeopt.load``) imports the runtime alone: no compiler, no onnx, no
torch. The packages, lowest layer first: errors, program and kernels; runtime; frontend;
analysis; passes; build and planning; measure; compiler; gates; bench, cascade and train; cli.
``eeopt.export`` (one ONNX graph of a program) sits beside the runtime and needs onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

from eeopt.version import __version__

__all__ = ["__version__", "adapt", "compile", "compile_cascade", "connect_edge", "export_onnx",
           "load", "Program", "Result"]

#: public name -> the module that defines it (imported on first use)
_LAZY = {
    "adapt": "eeopt.online",
    "compile": "eeopt.compiler",
    "compile_cascade": "eeopt.cascade",
    "connect_edge": "eeopt.split",
    "export_onnx": "eeopt.export",
    "load": "eeopt.runtime",
    "Program": "eeopt.runtime",
    "Result": "eeopt.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eeopt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
