"""The eeopt version, recorded in every manifest it writes."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
