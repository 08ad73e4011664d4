"""CheckModel: run onnx.checker (full check) on the graph; an analysis that changes nothing."""

from __future__ import annotations

import onnx

from eeopt.errors import UnsupportedModelError, first_line
from eeopt.frontend import ModelGraph
from eeopt.passes._infra import Pass, PassResult

__all__ = ["CheckModel"]


class CheckModel(Pass):
    """Fail with the checker's first line if the model is not valid ONNX."""

    def __init__(self, what: str = "model") -> None:
        self.what = what

    def call(self, graph: ModelGraph) -> PassResult:
        try:
            onnx.checker.check_model(graph.model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            first = first_line(exc)
            raise UnsupportedModelError(f"{self.what} is not valid ONNX: {first}") from exc
        return PassResult(graph, False, {})
