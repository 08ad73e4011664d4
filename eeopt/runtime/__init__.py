"""The runtime: load a compiled program and run it with per-sample exits.

    program = eeopt.load("program/")        # verified: manifest, sha256 of every stage file
    result = program.run(x)                 # result.logits [N, C], result.exit [N]

It imports only ``eeopt.program``, ``eeopt.errors`` and ``eeopt.kernels.reference``, never the
compiler, the graph passes, onnx or torch: an application that runs programs needs none of
them (torch is imported only to run an ``aoti`` or ``tensorrt`` program). ``load`` finds the
backend's loader by the manifest's ``backend`` name; ``register_loader`` adds one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from eeopt.errors import ManifestError
from eeopt.program import Manifest, load_manifest
from eeopt.runtime.aoti import TorchProgram, load_aoti, load_torch
from eeopt.runtime.base import InputChecker, Inputs, Program, Result, StageCall, check_inputs
from eeopt.runtime.ort import OrtProgram, load_ort
from eeopt.runtime.sessions import (
    configure_threads,
    fast_run,
    global_threads,
    make_session,
    ort_version,
)
from eeopt.runtime.tensorrt import TrtProgram, load_tensorrt

__all__ = [
    "LOADERS",
    "InputChecker",
    "Inputs",
    "Loader",
    "OrtProgram",
    "Program",
    "Result",
    "StageCall",
    "TorchProgram",
    "TrtProgram",
    "check_inputs",
    "configure_threads",
    "fast_run",
    "global_threads",
    "load",
    "load_torch",
    "make_session",
    "ort_version",
    "register_loader",
]

#: ``loader(directory, verified manifest, threads) -> Program``
Loader = Callable[[Path, Manifest, "int | None"], Program]

#: backend name (the manifest's ``backend``) -> its loader
LOADERS: dict[str, Loader] = {}


def register_loader(backend: str, loader: Loader) -> None:
    """Make ``eeopt.load`` open programs whose manifest says ``backend`` with ``loader``."""
    LOADERS[backend] = loader


register_loader("onnxruntime", load_ort)
register_loader("aoti", load_aoti)
register_loader("tensorrt", load_tensorrt)


def load(path: str | os.PathLike[str], threads: int | None = None) -> Program:
    """Load and verify a compiled program directory (manifest, sha256 of every stage file)."""
    p = Path(path)
    manifest = load_manifest(p)
    loader = LOADERS.get(manifest.backend)
    if loader is None:
        raise ManifestError(
            f"{p} was compiled for backend {manifest.backend!r}; this runtime runs "
            f"{', '.join(repr(b) for b in LOADERS)} programs")
    return loader(p, manifest, threads)
