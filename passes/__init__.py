"""Graph passes: every rewrite of a ``ModelGraph`` is a ``Pass`` (requires -> call -> ensures)
that returns everything in its ``PassResult``; pipelines are explicit lists run by a
``PassManager``. One pass per file, named ``<verb>_<object>.py``.

- ``NameNodes``, ``RemoveDeadNodes``, ``CheckModel``: clean-up and validation;
- ``KeepOutputs`` (``cut_to_outputs``): the model restricted to some outputs;
- ``ExposeTensors``: intermediate tensors as extra outputs;
- ``ExtractStage``, ``ExtractHead``: one stage (or one exit head) of the model alone;
- ``FuseGate``: the exit's gate appended to its stage.

The analyses they take as arguments (exit heads, cuts) are in ``eeopt.analysis``.
"""

from __future__ import annotations

from eeopt.passes._infra import Pass, PassManager, PassResult
from eeopt.passes.check_model import CheckModel
from eeopt.passes.expose_tensors import ExposeTensors
from eeopt.passes.extract_head import ExtractHead
from eeopt.passes.extract_stage import (
    ExtractStage,
    stage_logits_name,
    stage_model,
    value_info_from_spec,
)
from eeopt.passes.fuse_gate import FuseGate
from eeopt.passes.keep_outputs import KeepOutputs, cut_to_outputs
from eeopt.passes.name_nodes import NameNodes
from eeopt.passes.remove_dead_nodes import RemoveDeadNodes

__all__ = [
    "CheckModel",
    "ExposeTensors",
    "ExtractHead",
    "ExtractStage",
    "FuseGate",
    "KeepOutputs",
    "NameNodes",
    "Pass",
    "PassManager",
    "PassResult",
    "RemoveDeadNodes",
    "cut_to_outputs",
    "stage_logits_name",
    "stage_model",
    "value_info_from_spec",
]
