"""Writing outputs so that a failure leaves nothing behind: every directory eeopt writes (a
compiled program, a training run) and every result file goes to a temporary sibling first and
is renamed into place once complete. ``check_new_output`` is the one "already exists" check,
made before any expensive work."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from eeopt.errors import UsageError

__all__ = ["check_new_output", "write_dir", "write_file"]

T = TypeVar("T")


def check_new_output(path: str | os.PathLike[str], *, force: bool,
                     directory: bool = True) -> Path:
    """``path`` as a Path, once it is clear that it may be written: it does not exist, or
    ``force`` allows replacing it (a directory output must then be a directory)."""
    dest = Path(path)
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists; pass {{force=True}} to replace it")
    if directory and dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory; choose another {{out}}")
    return dest


@contextlib.contextmanager
def _tmp_sibling(out: Path) -> Iterator[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_dir(out: str | os.PathLike[str], fill: Callable[[Path], T], *,
              force: bool = False) -> T:
    """Call ``fill(tmpdir)`` on a temporary sibling of ``out``, then rename it into place;
    returns what ``fill`` returned.

    If ``fill`` raises, nothing is left behind. An existing ``out`` is replaced only with
    ``force``, and only after ``fill`` succeeded.
    """
    dest = check_new_output(out, force=force)
    with _tmp_sibling(dest) as tmp:
        result = fill(tmp)
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, trash / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    return result


def write_file(path: str | os.PathLike[str], content: bytes | str | Callable[[Path], Any], *,
               suffix: str = "") -> Path:
    """Write ``content`` (bytes, text, or a function that writes the file it is given) to a
    temporary sibling of ``path`` and rename it into place (replacing any file there).
    ``suffix``: the temporary file's own (``np.savez`` appends ``.npz`` to a name without
    it)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        if callable(content):
            content(Path(tmp))
        elif isinstance(content, bytes):
            Path(tmp).write_bytes(content)
        else:
            Path(tmp).write_text(content)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
