"""Every file holding secret material is created 0600 from the start, written whole, and made durable."""

from __future__ import annotations

import errno
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



def publish_new(path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None) -> bool:
    """Make `path` hold `data` (with `mode` and `owner`) only while nothing is there; False when something is.

    Written to a private temp file first and hard-linked into place: link(2) fails if the name exists (like
    O_EXCL, and never through a symlink) and makes the complete file appear at once, so a concurrent reader
    never sees it half written. Filesystems without hard links fall back to a direct O_EXCL create.
    """
    def fill(fd: int) -> None:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        write_all(fd, data)

    tmp = temp_name(path)
    try:
        fd = create_private(tmp)
        try:
            fill(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            try:
                fd = create_private(path)
            except FileExistsError:
                return False
            try:
                fill(fd)
            finally:
                os.close(fd)
    finally:
        unlink_quietly(tmp)
    fsync_dir(path.parent)
    return True
