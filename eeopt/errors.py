"""The exception hierarchy. Every message names the node, file or flag and says how to fix it."""

from __future__ import annotations

__all__ = [
    "EEOptError",
    "UnsupportedModelError",
    "PreconditionError",
    "PassError",
    "BackendUnavailableError",
    "ManifestError",
    "DataError",
    "UsageError",
]


class EEOptError(Exception):
    """Base class of every error eeopt raises on purpose."""


class UnsupportedModelError(EEOptError):
    """The model is not a multi-exit model eeopt can compile."""


class PreconditionError(EEOptError):
    """A pass or analysis was given a graph that does not meet its requirements."""


class PassError(EEOptError):
    """A graph pass failed; the message names the pass and the passes that ran before it."""


class BackendUnavailableError(EEOptError):
    """The requested backend cannot run here; the message says what to install."""


class ManifestError(EEOptError):
    """A compiled program directory is missing, tampered with or inconsistent."""


class DataError(EEOptError):
    """Input data has the wrong name, shape or dtype, or a data set cannot be found."""


class UsageError(EEOptError):
    """A flag or argument is out of range; the CLI exits with status 2."""
