"""Writing outputs so that a failure leaves nothing behind: every directory eeopt writes (a
compiled program, a training run) and every result file goes to a temporary sibling first and
is renamed into place once complete. ``check_new_output`` is the one "already exists" check,
made before any expensive work: it also says at once when the place cannot be written, and it
lets ``force`` replace only what eeopt itself wrote there (or an empty folder), never a folder
of someone's files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from eeopt.errors import UsageError

__all__ = ["PROGRAM_MARKER", "check_new_output", "write_dir", "write_file"]

T = TypeVar("T")

#: the file that makes a folder an eeopt program, which ``force`` may replace
PROGRAM_MARKER = "manifest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writable(dest: Path) -> None:
    """Raise one line when nothing can be created where ``dest`` would go: its nearest existing
    ancestor must take a new entry (tried, not guessed from permission bits)."""
    here = dest.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise UsageError(f"cannot write {dest}: {here} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".eeopt-probe-", dir=here))
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {here}: {exc.strerror or exc}") from None


def check_new_output(path: str | os.PathLike[str], *, force: bool, directory: bool = True,
                     marker: str = PROGRAM_MARKER) -> Path:
    """``path`` as a Path, once it is clear that it may be written: it does not exist, or
    ``force`` allows replacing it. A directory output may replace only an empty folder or one
    that holds ``marker`` (what eeopt writes there: a program's ``manifest.json``), and never
    the current folder or one that contains it; a file output never replaces a folder. The
    place must be writable."""
    dest = Path(path)
    here = Path.cwd().resolve()
    full = dest.resolve()
    if directory and (full == here or full in here.parents):
        raise UsageError(f"{{out}} {dest} is the current folder or contains it; name a new "
                         "folder for the output")
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists; pass {{force=True}} to replace it")
    if dest.exists() and directory:
        if not dest.is_dir():
            raise UsageError(f"{dest} exists and is not a directory; choose another {{out}}")
        if not (dest / marker).is_file() and any(dest.iterdir()):
            raise UsageError(
                f"{dest} holds files eeopt did not write (it has no {marker}); {{force}} "
                f"replaces only an earlier output or an empty folder: choose another {{out}}")
    if dest.exists() and not directory and dest.is_dir():
        raise UsageError(f"{dest} is a folder; name a file to write")
    _writable(dest)
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
              force: bool = False, marker: str = PROGRAM_MARKER) -> T:
    """Call ``fill(tmpdir)`` on a temporary sibling of ``out``, then rename it into place;
    returns what ``fill`` returned. The folder gets the mode ``mkdir`` would give it.

    If ``fill`` raises (or the process is interrupted), nothing is left behind. An existing
    ``out`` is replaced only with ``force`` (see ``check_new_output``; ``marker``: the file
    that marks an earlier output), and only after ``fill`` succeeded.
    """
    dest = check_new_output(out, force=force, marker=marker)
    with _tmp_sibling(dest) as tmp:
        result = fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
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
    temporary sibling of ``path`` and rename it into place (replacing any file there), with
    the mode ``open`` would give it. ``suffix``: the temporary file's own (``np.savez``
    appends ``.npz`` to a name without it). A place that cannot be written is one line."""
    dest = check_new_output(path, force=True, directory=False)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        if callable(content):
            content(Path(tmp))
        elif isinstance(content, bytes):
            Path(tmp).write_bytes(content)
        else:
            Path(tmp).write_text(content)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, dest)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
