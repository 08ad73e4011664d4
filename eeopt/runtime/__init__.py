"""The runtime: load a compiled program and run it with per-sample exits.

    program = eeopt.load("program/")        # verified: manifest, sha256 of every stage file
    result = program.run(x)                 # result.logits [N, C], result.exit [N]

It imports only ``eeopt.program``, ``eeopt.errors`` and ``eeopt.kernels.reference``, never the
compiler, the graph passes, onnx or torch: an application that runs programs needs none of
them (torch is imported only to run an ``aoti`` or ``tensorrt`` program). ``load`` finds the
backend's loader by the manifest's ``backend`` name; ``register_loader`` adds one.

Trust: a program directory is untrusted input. ``load`` verifies the manifest and every stage
file's sha256 (integrity: the files are the ones the manifest names, not who wrote them).
Loading an onnxruntime program runs no code from the directory. ``aoti`` and ``tensorrt``
programs carry native code (the shared library in each ``.pt2``, TensorRT engines) that loading
runs, so ``load`` refuses them unless the caller opts in with ``allow_native=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from eeopt.errors import ManifestError
from eeopt.program import Manifest, load_manifest
from eeopt.runtime.aoti import TorchProgram, load_aoti, load_torch
from eeopt.runtime.base import (
    InputChecker,
    Inputs,
    Part,
    Program,
    Result,
    StageCall,
    check_inputs,
)
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
    "NATIVE",
    "InputChecker",
    "Inputs",
    "Loader",
    "OrtProgram",
    "Part",
    "Program",
    "Result",
    "StageCall",
    "TorchProgram",
    "TrtProgram",
    "check_inputs",
    "check_native",
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
#: the backends whose programs carry native code that loading runs
NATIVE: set[str] = set()


def register_loader(backend: str, loader: Loader, *, native: bool = False) -> None:
    """Make ``eeopt.load`` open programs whose manifest says ``backend`` with ``loader``;
    ``native``: its programs carry native code that loading runs (``allow_native``)."""
    LOADERS[backend] = loader
    if native:
        NATIVE.add(backend)
    else:
        NATIVE.discard(backend)


register_loader("onnxruntime", load_ort)
register_loader("aoti", load_aoti, native=True)
register_loader("tensorrt", load_tensorrt, native=True)


def check_native(path: Path, backend: str, allow_native: bool) -> None:
    """Refuse a program that carries native code unless the caller trusts it."""
    if backend in NATIVE and not allow_native:
        raise ManifestError(
            f"{path} is a {backend!r} program: its stage files hold native code that loading "
            "runs, and eeopt cannot tell who built them (the sha256 checks integrity, not "
            "origin); load it only if you trust it, with {allow_native=True}")


def load(path: str | os.PathLike[str], threads: int | None = None, *,
         allow_native: bool = False) -> Program:
    """Load and verify a compiled program directory (manifest, sha256 of every stage file).
    ``threads``: ONNX Runtime's intra-op threads; by default the count the program was
    compiled and priced for (its ``settings.threads``), else ONNX Runtime's own default.
    ``allow_native``: also load programs whose stages carry native code (``aoti``,
    ``tensorrt``), which loading runs; refused by default."""
    p = Path(path)
    manifest = load_manifest(p)
    if threads is None:
        recorded = manifest.settings.get("threads")
        threads = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) \
            and recorded >= 0 else None
    loader = LOADERS.get(manifest.backend)
    if loader is None:
        raise ManifestError(
            f"{p} was compiled for backend {manifest.backend!r}; this runtime runs "
            f"{', '.join(repr(b) for b in LOADERS)} programs")
    check_native(p, manifest.backend, allow_native)
    return loader(p, manifest, threads)
