"""ONNX Runtime sessions, as eeopt makes them everywhere (runtime, compiler, profiler).

Every session eeopt creates shares ONE global intra-op thread pool. With default settings each
session spins its own pool, and a chain of sessions then runs several times slower than the
plain network; disabling spinning instead costs about 30%.
"""

from __future__ import annotations

import logging
import os

from eeopt.errors import BackendUnavailableError, DataError, UnsupportedModelError, first_line

__all__ = ["configure_threads", "fast_run", "global_threads", "make_session", "ort_version"]

logger = logging.getLogger(__name__)

_GLOBAL_THREADS: int | None = None


def _import_ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install it with `pip install onnxruntime`"
        ) from exc
    return ort


def global_threads() -> int | None:
    """The size of the process-wide intra-op pool, or None before the first session."""
    return _GLOBAL_THREADS


def configure_threads(threads: int | None) -> int:
    """Create the process-wide thread pool once (0 or None: one thread per physical core;
    None also means "keep whatever pool exists").

    ONNX Runtime cannot resize it later; asking for another size afterwards logs a warning.
    """
    global _GLOBAL_THREADS
    if threads is None and _GLOBAL_THREADS is not None:
        return _GLOBAL_THREADS  # no preference: keep the pool the process already has
    want = int(threads or 0)
    if want < 0:
        raise DataError(f"threads must be >= 0, got {want}")
    if _GLOBAL_THREADS is None:
        _import_ort()
        from onnxruntime.capi import _pybind_state as C

        try:
            C.set_global_thread_pool_sizes(want, 1)
        except Exception as exc:  # pools made earlier in this process, outside eeopt
            logger.warning("could not size ONNX Runtime's global thread pool: %s", exc)
        _GLOBAL_THREADS = want
    elif want != _GLOBAL_THREADS:
        logger.warning(
            "ONNX Runtime's global thread pool already has %s threads in this process; "
            "ignoring threads=%s (start a new process to change it)",
            _GLOBAL_THREADS or "default",
            want,
        )
    return _GLOBAL_THREADS


def make_session(model: bytes | str | os.PathLike[str], threads: int | None = None, *,  # type: ignore[no-untyped-def]
                 profile_prefix: str | None = None):
    """An InferenceSession on the shared global thread pool (with ORT's per-node profiler on,
    writing ``<profile_prefix>*.json``, when a prefix is given)."""
    ort = _import_ort()
    configure_threads(threads)
    so = ort.SessionOptions()
    so.use_per_session_threads = False
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    src = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)
        raise UnsupportedModelError(f"ONNX Runtime cannot load the model: {first}") from exc


def fast_run(session):  # type: ignore[no-untyped-def]
    """``session``'s run as ``f(output_names, feeds, run_options)``, without the Python
    wrapper's per-call re-validation of the feed (about 3 us a call at batch 1, a tenth of a
    small stage). Callers check their inputs themselves (``InputChecker``). Falls back to the
    public ``InferenceSession.run``, which takes the same arguments, if ONNX Runtime ever
    stops exposing its binding as ``_sess``."""
    raw = getattr(session, "_sess", None)
    run = getattr(raw, "run", None)
    return run if callable(run) else session.run


def ort_version() -> str:
    """The installed ONNX Runtime's version."""
    return str(_import_ort().__version__)
