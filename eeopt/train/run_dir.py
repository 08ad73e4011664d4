"""A training run's directory: ``checkpoint.pt`` (the state dict), ``model.onnx`` (the
multi-exit model, ready for `eeopt compile`), any extra files, and ``metrics.json``; written to a
temporary sibling and renamed into place (``eeopt.program.write_dir``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch

from eeopt.frontend import export_torch
from eeopt.program import write_dir

__all__ = ["RUN_MARKER", "write_run"]

#: the file that makes a folder a training run, which ``force`` may replace
RUN_MARKER = "metrics.json"


def write_run(out: str | os.PathLike[str], model: torch.nn.Module, example: Any, *,
              report: dict[str, Any], started: float, force: bool = False,
              extra_files: Callable[[Path], None] | None = None) -> Path:
    """Write ``model`` (exported to ONNX at ``example``'s shape) and ``report`` to ``out``.
    ``metrics.json`` is ``report`` with the wall time since ``started``, the time it finished
    and the torch version added before its ``metrics``. A model with ``export_spec(example)``
    (e.g. ``eeopt.models.minilm.TextBatch``) says what to export: a module, its example
    inputs and their dynamic axes."""
    spec = getattr(model, "export_spec", None)
    if callable(spec):
        module, args, dynamic = spec(example)
        proto = export_torch(module.eval(), args, dynamic_shapes=dynamic)
    else:
        proto = export_torch(model.eval(), example)

    def fill(tmp: Path) -> None:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        torch.save(state, tmp / "checkpoint.pt")
        onnx.save(proto, os.fspath(tmp / "model.onnx"))
        if extra_files is not None:
            extra_files(tmp)
        record = {k: v for k, v in report.items() if k != "metrics"}
        record.update(wall_seconds=round(time.time() - started, 2),
                      finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      torch_version=torch.__version__, metrics=report.get("metrics"))
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    write_dir(out, fill, force=force, marker=RUN_MARKER)
    return Path(out)
