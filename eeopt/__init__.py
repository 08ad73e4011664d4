"""eeopt: a compiler and runtime for early-exit deep neural networks.

    program = eeopt.compile("model.onnx", "program/", threshold=0.9)
    result = eeopt.load("program/").run(x)    # result.logits [N, C], result.exit [N]
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "compile", "compile_cascade", "load", "Program", "Result"]


def __getattr__(name: str) -> Any:
    # Lazy: `import eeopt` stays cheap and never imports torch.
    if name == "compile":
        from eeopt.compiler import compile

        return compile
    if name == "compile_cascade":
        from eeopt.cascade import compile_cascade

        return compile_cascade
    if name in ("load", "Program", "Result"):
        from eeopt import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'eeopt' has no attribute {name!r}")
