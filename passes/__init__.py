"""Graph passes and analyses, one per file; pipelines are explicit lists run by PassManager."""

from __future__ import annotations

from eeopt.passes._infra import Pass, PassManager, PassResult
from eeopt.passes.check_model import CheckModel
from eeopt.passes.compute_cuts import (
    CutPlan,
    CutView,
    StageCut,
    compute_cuts,
    cut_view,
    cuts_from_view,
    shape_only_nodes,
    with_shape_closure,
)
from eeopt.passes.extract_stages import (
    extract_head,
    extract_stages,
    stage_logits_name,
    value_info_from_spec,
)
from eeopt.passes.find_exit_heads import ExitHead, ExitHeads, find_exit_heads
from eeopt.passes.fuse_gate import GATE_PREFIX, THRESHOLD_INPUT, FuseGate, gate_prefix
from eeopt.passes.name_nodes import NameNodes
from eeopt.passes.probe_tensors import probe_tensors
from eeopt.passes.remove_dead_nodes import RemoveDeadNodes

__all__ = [
    "Pass",
    "PassManager",
    "PassResult",
    "CheckModel",
    "CutPlan",
    "StageCut",
    "compute_cuts",
    "CutView",
    "cut_view",
    "cuts_from_view",
    "shape_only_nodes",
    "with_shape_closure",
    "extract_head",
    "extract_stages",
    "stage_logits_name",
    "value_info_from_spec",
    "ExitHead",
    "ExitHeads",
    "find_exit_heads",
    "FuseGate",
    "GATE_PREFIX",
    "THRESHOLD_INPUT",
    "gate_prefix",
    "NameNodes",
    "probe_tensors",
    "RemoveDeadNodes",
]
