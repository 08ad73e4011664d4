"""Errors name settings, never flags: Python's spelling in str(), the command line's in render."""

from __future__ import annotations

import pytest

from eeopt.cli.common import FLAGS
from eeopt.errors import DataError, EEOptError, UsageError, first_line


@pytest.mark.parametrize("template,python,cli", [
    ("the planner needs both {calib DATA} and {budget PP}",
     "the planner needs both calib=DATA and budget=PP",
     "the planner needs both --calib DATA and --budget PP"),
    ("out already exists; pass {force=True} to replace it",
     "out already exists; pass force=True to replace it",
     "out already exists; pass --force to replace it"),
    ("{budget} -1.0 must be >= 0", "budget -1.0 must be >= 0", "--budget -1.0 must be >= 0"),
    ("{lam} 2 is out of range", "lam 2 is out of range", "--lambda 2 is out of range"),
    ("shape {'a': 1} at {3}", "shape {'a': 1} at {3}", "shape {'a': 1} at {3}"),
])
def test_settings_render_as_python_and_as_flags(template: str, python: str, cli: str) -> None:
    exc = UsageError(template)
    assert str(exc) == python
    assert exc.render(FLAGS) == cli
    assert exc.template == template


def test_a_setting_the_flags_do_not_know_keeps_pythons_spelling() -> None:
    assert DataError("pass {device=cuda}").render(FLAGS) == "pass device=cuda"


def test_first_line() -> None:
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(KeyError()) == "KeyError"
    assert isinstance(UsageError("x"), EEOptError)
