"""Every exception eeopt raises on purpose. Each message names the node, file or setting and says
how to fix it.

A message names a setting (a keyword argument of ``eeopt.compile`` and friends) as ``{name}``,
``{name=value}`` or ``{name METAVAR}``, never as a command-line flag: ``str(error)`` shows it as
Python reads it (``budget``, ``force=True``, ``budget=PP``), and the command line shows its own
flag instead (``error.render({"budget": "--budget"})``: ``--budget``, ``--force``,
``--budget PP``). Only ``eeopt.cli`` knows the flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "EEOptError",
    "UnsupportedModelError",
    "PreconditionError",
    "PassError",
    "BackendUnavailableError",
    "ManifestError",
    "DataError",
    "UsageError",
    "VerificationError",
    "first_line",
]

#: ``{name}``, ``{name=value}`` or ``{name METAVAR}``: a setting named in a message
_SETTING = re.compile(r"\{([a-z][a-z0-9_]*)(?:(=)([^{}]*)|( )([^{} ][^{}]*))?\}")


class EEOptError(Exception):
    """Base class of every error eeopt raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.template = message
        """The message with its settings still marked (``{name}``, ``{name=value}``,
        ``{name METAVAR}``)."""

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with each marked setting shown as ``names[setting]`` (a command-line
        flag, say), or as Python spells it where ``names`` has no entry."""
        def show(m: re.Match[str]) -> str:
            name, value, metavar = m.group(1), m.group(3), m.group(5)
            if names is not None and name in names:
                return names[name] + (f" {metavar}" if metavar else "")
            return name + (f"={value}" if value is not None else f"={metavar}" if metavar
                           else "")

        return _SETTING.sub(show, self.template)

    def __str__(self) -> str:
        return self.render()


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
    """A setting or argument is out of range; the CLI exits with status 2."""


class VerificationError(EEOptError):
    """The compiled stages do not reproduce the original model."""


def first_line(exc: BaseException) -> str:
    """An exception's first line (or its type's name): what a one-line error shows of a
    library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
