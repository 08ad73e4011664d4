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
    assert write_dir(out, lambda d: (d / "manifest.json").write_text("1")) == 1
    assert (out / "manifest.json").read_text() == "1"

    def fail(d: Path) -> None:
        (d / "b").write_text("2")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_dir(out, fail, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # the old one, untouched
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

    with pytest.raises(UsageError, match="cannot write .*r.json: disk full"):  # one line
        write_file(dest, fail)
    assert dest.read_text() == "42" and sorted(p.name for p in dest.parent.iterdir()) == ["r.json"]


def test_force_replaces_only_an_earlier_output_or_an_empty_folder(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """--force once deleted whatever the folder held, and left it mode 700."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="holds files eeopt did not write .it has no "
                                         "manifest.json.; force replaces only an earlier"):
        write_dir(mine, lambda d: None, force=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    write_dir(tmp_path / "empty", lambda d: (d / "x").write_text("1"), force=True)
    monkeypatch.chdir(mine)
    for here in (".", "..", str(tmp_path)):
        with pytest.raises(UsageError, match="is the current folder or contains it"):
            check_new_output(here, force=True)
    with pytest.raises(UsageError, match="is a folder; name a file"):
        write_file(tmp_path / "empty", "x")


def test_outputs_get_the_mode_mkdir_and_open_would_give(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_dir(tmp_path / "d", lambda d: None)
        write_file(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644


def test_a_place_that_cannot_be_written_is_one_line_before_any_work() -> None:
    for where in ("/proc/eeopt-out", "/proc/self/eeopt/deeper"):
        with pytest.raises(UsageError, match=f"cannot write {where}: "):
            check_new_output(where, force=False)
    with pytest.raises(UsageError, match="cannot write /proc/eeopt.json"):
        write_file("/proc/eeopt.json", "{}")
