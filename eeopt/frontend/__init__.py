"""Frontends: a model as eeopt's compiler sees it.

- ``onnx``: an ONNX file, ``onnx.ModelProto``, bytes or torch module -> ``ModelGraph``
  (``capture``), and the model's input specs;
- ``torch_export``: a multi-exit torch module -> ONNX with a dynamic batch;
- ``fx``: a torch module -> its ``torch.export`` FX graph (``capture_fx``), for AOTInductor;
- ``view``: ``CutView``, what the cut analysis reads of either graph;
- ``samples``: sample inputs that fit a model's input specs.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

from eeopt.frontend.fx import (
    MAX_BATCH,
    FxGraph,
    StageNodes,
    capture_fx,
    stage_module,
    tile_tensors,
    torch_dtype_name,
)
from eeopt.frontend.graph import ModelGraph, node_inputs, subgraph_inputs
from eeopt.frontend.onnx import capture, input_specs, load_onnx, onnx_dtype, value_dims
from eeopt.frontend.samples import example_feeds, random_inputs, tile_inputs
from eeopt.frontend.torch_export import example_args, export_torch, quiet_torch_export
from eeopt.frontend.view import CutView, cut_view, shape_only_nodes

__all__ = [
    "MAX_BATCH",
    "CutView",
    "FxGraph",
    "ModelGraph",
    "StageNodes",
    "capture",
    "capture_fx",
    "cut_view",
    "example_args",
    "example_feeds",
    "export_torch",
    "input_specs",
    "load_onnx",
    "node_inputs",
    "onnx_dtype",
    "quiet_torch_export",
    "random_inputs",
    "shape_only_nodes",
    "stage_module",
    "subgraph_inputs",
    "tile_inputs",
    "tile_tensors",
    "torch_dtype_name",
    "value_dims",
]
