"""``python -m eeopt``: the command line."""

from __future__ import annotations

from eeopt.cli import main

raise SystemExit(main())
