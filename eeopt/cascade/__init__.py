"""Network-selection cascades (Bolukbasi et al., ICML 2017): a chain of separate models, cheapest
first, compiled as one early-exit program (``compile_cascade``). ``merge_models`` builds the one
ONNX graph the compiler cuts; ``reference_run`` computes the same policy the plain way."""

from __future__ import annotations

from eeopt.cascade.merge import (
    ModelLike,
    compile_cascade,
    merge_models,
    model_prefix,
    reference_run,
)

__all__ = ["ModelLike", "compile_cascade", "merge_models", "model_prefix", "reference_run"]
