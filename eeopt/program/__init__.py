"""The compiled program as an artifact: a directory with ``manifest.json`` and one file per stage.

A leaf of eeopt's layers (it imports only ``eeopt.errors``): the runtime, the compiler and the
command line all read and write programs through it.

- ``manifest``: the versioned schema (``Manifest``, ``StageSpec``, ``TensorSpec``,
  ``GateSpec``), ``load_manifest`` (verifies every field, every stage file's sha256, that no
  path leaves the directory, and that no ONNX stage reads external data), the names a stage
  gives its gate's tensors;
- ``onnx_scan``: finds tensors with external data in ONNX bytes, without importing onnx;
- ``plan``: the planner's record (``PlanRecord``, with its cost model), typed and checked;
- ``writer``: the one atomic writer (``write_dir``, ``write_file``) and the one "already
  exists" check (``check_new_output``).
"""

from __future__ import annotations

from eeopt.program.manifest import (
    BATCH,
    GATE_PREFIX,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    THRESHOLD_INPUT,
    GateSpec,
    Manifest,
    SequenceSpec,
    StageSpec,
    TensorSpec,
    gate_prefix,
    load_manifest,
    manifest_from_dict,
    resolve_in_dir,
    save_manifest,
    sha256_file,
)
from eeopt.program.plan import CostModelRecord, CostRecord, PlanRecord
from eeopt.program.writer import check_new_output, write_dir, write_file

__all__ = [
    "BATCH",
    "GATE_PREFIX",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "THRESHOLD_INPUT",
    "CostModelRecord",
    "CostRecord",
    "GateSpec",
    "Manifest",
    "PlanRecord",
    "SequenceSpec",
    "StageSpec",
    "TensorSpec",
    "check_new_output",
    "gate_prefix",
    "load_manifest",
    "manifest_from_dict",
    "resolve_in_dir",
    "save_manifest",
    "sha256_file",
    "write_dir",
    "write_file",
]
