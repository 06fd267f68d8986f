"""One scan pass at a time: the lock a pass, a relink and a purge take, in one place beside the database."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hanna_sync.errors import ExitCode, HannaError


def lock_path(database: Path) -> Path:
    """The lock file of the pass over this database: beside it, so two databases never share one."""
    return database.parent / "hanna-sync.lock"


class PassBusy(HannaError):
    """Another pass holds the lock: not an error, just not now."""

    exit_code = ExitCode.TEMPFAIL


@contextmanager
def pass_lock(database: Path) -> Iterator[None]:
    """Hold the one-pass-at-a-time lock. An flock belongs to the open file, so it can never go stale:
    it is released when the process ends, however it ends (crash, kill, suspend and resume)."""
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PassBusy(f"another pass is running (pid {holder}, lock {path}); this one exits,"
                       " try again later") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
