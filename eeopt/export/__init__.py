"""Export a compiled program as one standard ONNX model that any ONNX runtime serves.

    eeopt export program/ --format onnx --out program.onnx
    eeopt.load("program/").export_onnx("program.onnx")      # the same

The exported graph computes exactly what the program computes, per-sample exit and batch
compaction included, with standard operators only: stage ``k`` and its gate, then the rows that
stay are picked with ``NonZero`` and every carried tensor is cut to them with ``Gather``; the
next stage runs inside an ``If`` that is skipped when no row stays, and its results go back to
their rows with ``ScatterND``; nested, to the final stage. Inputs: the model's inputs plus
``thresholds`` (float32 ``[K]``, one per gated exit); outputs: ``logits`` ``[N, C]`` float32 and
``exit`` ``[N]`` int64. See ``docs/export.md``.
"""

from __future__ import annotations

from eeopt.export._onnx import THRESHOLDS, check_file_output, export_onnx, one_graph

__all__ = ["THRESHOLDS", "check_file_output", "export_onnx", "one_graph"]
