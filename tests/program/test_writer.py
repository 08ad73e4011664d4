"""The one atomic writer and the one "already exists" check."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeopt.errors import UsageError
from eeopt.program import check_new_output, write_dir, write_file


def test_check_new_output(tmp_path: Path) -> None:
    assert check_new_output(tmp_path / "new", force=False) == tmp_path / "new"
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="dir already exists; pass force=True"):
        check_new_output(tmp_path / "dir", force=False)
    assert check_new_output(tmp_path / "dir", force=True) == tmp_path / "dir"
    with pytest.raises(UsageError, match="exists and is not a directory; choose another out"):
        check_new_output(tmp_path / "file", force=True)
    assert check_new_output(tmp_path / "file", force=True, directory=False)


def test_write_dir_renames_into_place_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert write_dir(out, lambda d: (d / "a").write_text("1")) == 1
    assert (out / "a").read_text() == "1"

    def fail(d: Path) -> None:
        (d / "b").write_text("2")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_dir(out, fail, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # the old one, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
    write_dir(out, lambda d: (d / "c").write_text("3"), force=True)
    assert sorted(p.name for p in out.iterdir()) == ["c"]


def test_write_file(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "r.json"
    write_file(dest, "{}\n")
    write_file(dest, b"[]\n")
    assert dest.read_text() == "[]\n"
    write_file(dest, lambda p: p.write_text("42"))
    assert dest.read_text() == "42"

    def fail(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_file(dest, fail)
    assert dest.read_text() == "42" and sorted(p.name for p in dest.parent.iterdir()) == ["r.json"]
