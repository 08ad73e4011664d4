"""Emit an ONNX Runtime program: stage files + manifest, written to a temporary directory,
verified against the original model, and renamed into place (``backend="onnxruntime"``)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from eeopt.build.analyse import AnalysedModel
from eeopt.build.stages import build_onnx_stages
from eeopt.build.verify import verify_exits
from eeopt.kernels.onnx_learned_gate import LearnedGate
from eeopt.program import Manifest, PlanRecord, StageSpec, save_manifest, sha256_file, write_dir
from eeopt.runtime import OrtProgram, load, make_session, ort_version
from eeopt.version import __version__

__all__ = ["emit_onnx", "verify_onnx"]

logger = logging.getLogger(__name__)


def verify_onnx(program: OrtProgram, model: AnalysedModel,
                batches: Sequence[int] = (3, 1)) -> float:
    """The program's chained stages against the original model on ONNX Runtime."""
    session = make_session(model.graph.model.SerializeToString())
    names = model.graph.output_names
    return verify_exits(program.run_all, lambda x: session.run(names, x),
                        [(b, model.feeds(b, seed=1000 + i)) for i, b in enumerate(batches)],
                        exits=[repr(n) for n in names])


def emit_onnx(
    model: AnalysedModel,
    dest: str | os.PathLike[str],
    thresholds: Sequence[float],
    policy: str,
    *,
    threads: int | None,
    verify: bool,
    force: bool = False,
    plan: PlanRecord | None = None,
    source: dict[str, Any] | None = None,
    gates: Sequence[LearnedGate] | None = None,
    settings_extra: dict[str, Any] | None = None,
) -> OrtProgram:
    """Write an analysed model's program directory (thresholds already checked) and load it.
    ``gates``: learned gates, one per early exit (learned policies only)."""
    built = build_onnx_stages(model, thresholds, policy, gates)
    source = source if source is not None else {"outputs": model.graph.output_names}

    def fill(tmp: Path) -> None:
        stages = []
        for stage_model, spec in built:
            path = tmp / spec.file
            onnx.save(stage_model, os.fspath(path))
            stages.append(StageSpec(**{**spec.__dict__, "sha256": sha256_file(path)}))
        manifest = Manifest(
            eeopt_version=__version__,
            backend=OrtProgram.backend,
            backend_version=ort_version(),
            onnx_opset=model.graph.opset,
            inputs=model.inputs,
            num_classes=model.num_classes,
            stages=tuple(stages),
            source=source,
            plan=plan,
            sequence=model.sequence,
            settings={
                "policy": policy,
                "thresholds": list(thresholds),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "onnx_version": onnx.__version__,
                "threads": threads,
                **(settings_extra or {}),
            },
        )
        save_manifest(manifest, tmp)
        if verify:
            worst = verify_onnx(OrtProgram(tmp, manifest, threads), model)
            logger.info("verified: stages reproduce every exit (max abs error %.2e)", worst)

    write_dir(dest, fill, force=force)
    program = load(dest, threads)
    assert isinstance(program, OrtProgram)
    return program
