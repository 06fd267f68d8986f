"""Every file holding secret material is created 0600 from the start, written whole, and made durable."""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path


def create_private(path: Path) -> int:
    """Create `path` exclusively with mode 0600 and return the fd.

    The mode is given to ``open(2)`` rather than applied with chmod afterwards, so there is no
    moment at which another user could open the file; O_EXCL means we never write into (or
    through a symlink to) a file someone else prepared.
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` and fsync, because ``os.write`` may write less than asked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename/link in `directory` durable; best effort (not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside `path`, so that os.replace/os.link stay on one filesystem."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def unlink_quietly(path: Path) -> None:
    """Remove a temp file on the way out of an error; its absence is not a problem."""
    with suppress(OSError):
        os.unlink(path)

