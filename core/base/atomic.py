"""Writes that never leave a half-written file: write to a temporary sibling, then rename.

A temporary file is named ``.NAME.PID.RANDOM.tmp``. It is removed when the write fails or is
interrupted (Ctrl-C, and SIGTERM through ``core.base.errors.command_line``); one left by a process that
was killed outright (``kill -9``, a power cut) is removed by the next write to the same file, once
its process is gone.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.base.errors import OutputError

# mkstemp creates files readable only by their owner; give the result the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` whose writing process no longer exists."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match and not _process_alive(int(match.group(1))):
            try:
                sibling.unlink()
                removed.append(sibling)
            except FileNotFoundError:  # another writer removed it first
                pass
    return removed


def _temporary_sibling(path: Path) -> str:
    """A new empty file ``.NAME.PID.RANDOM.tmp`` beside ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary_sibling(path)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | Path, what: str) -> Path:
    """Make sure ``path`` can be written as a file (its folder is created), or raise an OutputError.

    Meant for the start of a long command, so a bad output location fails in a second rather than
    after the work. It writes and removes a probe file beside ``path``, the only test that holds for
    every cause (permissions, a read-only disk, a full disk, root's exemptions).

    ``what`` names the setting in the message, e.g. ``"submission"``.
    """
    path = Path(path)
    fix = f"Fix: set {what} to a file path in a folder you can write to"
    if path.is_dir():
        raise OutputError(f"{what}={path} is a folder, not a file. {fix} (e.g. {path / 'submission.csv'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.unlink(_temporary_sibling(path))
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{what}={path}: a file stands where its folder should be ({_first_file(path.parent)}). "
                          f"{fix}") from None
    except OSError as e:
        raise OutputError(f"cannot write {what}={path}: {e.strerror or e}. {fix}") from None
    return path


def _first_file(folder: Path) -> Path:
    """The first ancestor of ``folder`` (itself included) that exists and is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return folder
