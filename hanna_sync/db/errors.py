"""What a failed SQLite call means for whoever runs hanna-sync: one fix-it sentence instead of a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hanna_sync.errors import ExitCode, HannaError


class DatabaseError(HannaError):
    """The database cannot be used: not openable, damaged, disk full, an I/O error, or newer than this program."""

    exit_code = ExitCode.DATABASE


class DatabaseBusy(DatabaseError):
    """Another program held the write lock for longer than the busy timeout: nothing was written, try later."""

    exit_code = ExitCode.TEMPFAIL


# SQLite's result codes (Python 3.11+ names them on the exception; 3.10 only has the message) and what
# each means for whoever runs hanna-sync. Constraint violations and SQL errors are bugs, so not here.
_SQLITE_FAILURES = (
    (("SQLITE_BUSY", "SQLITE_LOCKED"), ("database is locked", "database table is locked"), "busy"),
    (("SQLITE_FULL",), ("database or disk is full",), "full"),
    (("SQLITE_CORRUPT", "SQLITE_NOTADB"), ("malformed", "file is not a database"), "damaged"),
    (("SQLITE_READONLY",), ("readonly database",), "readonly"),
    (("SQLITE_IOERR",), ("disk i/o error",), "io"),
    (("SQLITE_CANTOPEN", "SQLITE_PERM"), ("unable to open database file",), "cantopen"),
)


def database_error(exc: sqlite3.Error, path: Path) -> DatabaseError | None:
    """The one-line explanation of a failed SQLite call, or None when it is a bug rather than a condition.

    Why here: every command meets the same few conditions (another writer, a full disk, a damaged file),
    and each deserves the same fix-it sentence, not a traceback.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    kind = next((k for names, texts, k in _SQLITE_FAILURES
                 if any(name.startswith(n) for n in names) or any(t in text for t in texts)), None)
    if kind == "busy":
        return DatabaseBusy(f"database {path} is locked by another program (a long write, or a stuck process);"
                            " nothing was written: try again later")
    if kind == "full":
        return DatabaseError(f"database {path}: no space left ({exc}): free space on its file system;"
                             " nothing was half-written, and the next pass goes on from its last saved batch")
    if kind == "damaged":
        return DatabaseError(f"database {path} is damaged ({exc}): stop the timer, keep a copy of the file and"
                             " restore the last backup ('hanna-sync doctor' checks a database)")
    if kind == "readonly":
        return DatabaseError(f"database {path} cannot be written ({exc}): check the owner and permissions of it"
                             " and of its directory (hanna-sync doctor)")
    if kind == "io":
        return DatabaseError(f"database {path}: disk I/O error ({exc}): check the disk (dmesg) and free space")
    if kind == "cantopen":
        return DatabaseError(f"cannot open database {path} ({exc}): check that its directory exists and is"
                             " writable by the user hanna-sync runs as")
    return None
