"""Building programs: from an analysed model to a verified program directory, per backend.

- ``analyse``: capture -> clean-up passes -> exit heads -> cuts -> probed specs
  (``analyse_model``, ``AnalysedModel``; ``SubModels``: the same for a subset of the exits);
- ``stages``: the ONNX stages, each one pass pipeline (extract, fuse the gate, clean up, check);
- ``verify``: the one verifier every backend's emit uses (``verify_exits``);
- ``onnx``, ``aoti``, ``tensorrt``: emit a program directory for each backend, atomically.

The compiler (``eeopt.compiler``) chooses what to build; this package builds it.
"""

from __future__ import annotations

from eeopt.build.analyse import (
    AnalysedModel,
    SubModels,
    analyse_model,
    probe_tensors,
    sample_feeds,
)
from eeopt.build.aoti import GATE_CHOICES, GATE_POLICIES, check_device, compile_aoti
from eeopt.build.onnx import emit_onnx, verify_onnx
from eeopt.build.stages import BuiltStage, build_onnx_stages
from eeopt.build.tensorrt import BATCH_PROFILE, build_engine, emit_tensorrt
from eeopt.build.verify import ATOL, RTOL, verify_exits

__all__ = [
    "ATOL",
    "BATCH_PROFILE",
    "GATE_CHOICES",
    "GATE_POLICIES",
    "RTOL",
    "AnalysedModel",
    "BuiltStage",
    "SubModels",
    "analyse_model",
    "build_engine",
    "build_onnx_stages",
    "check_device",
    "compile_aoti",
    "emit_onnx",
    "emit_tensorrt",
    "probe_tensors",
    "sample_feeds",
    "verify_exits",
    "verify_onnx",
]
