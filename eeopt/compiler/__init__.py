"""The compiler: ``compile()`` turns a multi-exit model into a verified program directory.

- ``settings``: ``CompileSettings``, every option of a compile in one object, checked once;
- ``api``: ``compile`` (keyword arguments) and ``compile_with`` (a ``CompileSettings``);
- ``backends``: the compile backends by name (``onnxruntime``, ``aoti``, ``tensorrt``);
- ``planner``: profile -> calibrate -> plan -> closed loop, for the fixed policies;
- ``learned``: the same with learned gates (``eeopt.gates``).

It composes the layers below it (build, planning, measure, gates) and is what ``eeopt.cascade``,
``eeopt.bench`` and the command line call.
"""

from __future__ import annotations

from eeopt.compiler.api import compile, compile_with
from eeopt.compiler.backends import BACKENDS, Backend, get_backend, register_backend
from eeopt.compiler.planner import PlannedProgram, closed_loop, plan_program, plan_record
from eeopt.compiler.settings import CompileSettings, check_threshold_values, resolve_thresholds

__all__ = [
    "BACKENDS",
    "Backend",
    "CompileSettings",
    "PlannedProgram",
    "check_threshold_values",
    "closed_loop",
    "compile",
    "compile_with",
    "get_backend",
    "plan_program",
    "plan_record",
    "register_backend",
    "resolve_thresholds",
]
