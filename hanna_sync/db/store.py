"""The open database: one SQLite file, opened with its pragmas, migrated, backed up and compacted.

`Store` is the one object the rest of the code holds. Its queries live in mixins grouped by concern
(directory.py, scanstate.py, skipindex.py, archive.py, links.py, reading.py), all sharing this one
connection, its writer lock and its transactions (connection.py), so every caller keeps writing
`store.letter(...)` whatever file the query is in. The schema is schema.py's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import sqlite_utils

from hanna_sync.db.archive import ArchiveQueries, participants_of
from hanna_sync.db.connection import utcnow
from hanna_sync.db.directory import DirectoryQueries
from hanna_sync.db.errors import DatabaseBusy, DatabaseError, database_error
from hanna_sync.db.links import LinkQueries
from hanna_sync.db.reading import ReadingQueries, fts_query
from hanna_sync.db.scanstate import ScanStateQueries
from hanna_sync.db.schema import migrations
from hanna_sync.db.skipindex import SkipIndexQueries
from hanna_sync.db.tokens import TokenQueries
from hanna_sync.errors import InputError
from hanna_sync.mail.filenames import file_kind
from hanna_sync.models import AppliedMigration, Backup

# The names other packages import from this module: it stays the database's one front door.
__all__ = [
    "DatabaseBusy", "DatabaseError", "Store", "database_error", "fts_query", "migrations", "participants_of",
    "utcnow",
]


def _regular_or_missing(target: Path) -> None:
    """A backup replaces a regular file or makes a new one; anything else (a FIFO, a device such as
    /dev/null, a socket) is refused, never renamed over: SQLite's copy needs a real file, and replacing
    a device with a file breaks whatever uses it."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot look at {target}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{target} is {file_kind(st.st_mode)}: a backup is an SQLite file, written to a temp file"
                         " and renamed into place, so name a regular file (e.g. /var/backups/hanna-sync/hanna-sync.db)")


class Store(DirectoryQueries, ScanStateQueries, SkipIndexQueries, ArchiveQueries, LinkQueries, ReadingQueries,
            TokenQueries):
    """The open database. One per process; SQLite's WAL lets a reader run beside the writer."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000, *, read_only: bool = False,
                 migrate: bool = True) -> None:
        """read_only (the web server): never creating, migrating or writing the database, which must exist
        and be migrated by this hanna-sync already. It is SQLite's query_only on an ordinary connection,
        not mode=ro: a mode=ro connection beside WAL writers in other processes failed with "disk I/O
        error" when their last connection had checkpointed the write-ahead log away.
        migrate=False (backup, migrate): the schema as found, so a backup taken before an upgrade's
        migrations is the database the older version wrote."""
        self.path = path
        self.lock = threading.RLock()
        if read_only:
            self._open_read_only(busy_timeout_ms)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the state dir: private, like its files
            # Created 0600 before SQLite opens it: letters and the directory are private. SQLite gives
            # the -wal and -shm files the same permissions as the database file.
            # Only when missing (O_EXCL): closing a descriptor of an existing database would drop every
            # POSIX lock this process's other connections hold on it, and another process's last connection
            # could then checkpoint the write-ahead log away under them ("disk I/O error", lost reads).
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            # isolation_level=None: no implicit transactions. A statement outside `transaction()` commits
            # at once, and `transaction()` is the only place a transaction starts, so nothing written can
            # be left waiting for a commit that never comes.
            conn = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open database {path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            if migrate:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            explained = database_error(exc, path)
            if explained is None or "not a database" in str(exc):  # e.g. --config naming another file
                raise DatabaseError(f"{path} is not a usable hanna-sync database: {exc}") from None
            raise explained from None

    def _open_read_only(self, busy_timeout_ms: int) -> None:
        from urllib.parse import quote

        try:
            conn = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=rw", uri=True,
                                   timeout=busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.db.execute("PRAGMA query_only = ON")
            applied = {m.name for m in migrations.applied(self.db)}
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {self.path} read-only: {exc}") from None
        missing = {m.name for m in migrations._migrations} - applied
        if missing:
            raise DatabaseError(f"{self.path} is not migrated to this hanna-sync ({sorted(missing)[0]} missing):"
                                " run any hanna-sync command that writes (e.g. 'hanna-sync doctor') first")

    def _migrate(self) -> None:
        applied = {m.name for m in migrations.applied(self.db)}
        unknown = applied - {m.name for m in migrations._migrations}
        if unknown:
            raise DatabaseError(
                f"{self.path} was written by a newer hanna-sync (migration {sorted(unknown)[0]}); upgrade hanna-sync"
            )
        migrations.apply(self.db)

    def pending_migrations(self) -> list[str]:
        """The migrations this hanna-sync would apply, read without writing (not even the record's table)."""
        table = migrations.migrations_table
        applied: set[str] = set()
        if self.db[table].exists():
            applied = {row[0] for row in self.db.execute(
                f"SELECT name FROM [{table}] WHERE migration_set = ?", [migrations.name]).fetchall()}
        return [m.name for m in migrations._migrations if m.name not in applied]

    def apply_migrations(self) -> list[str]:
        """Apply what is pending (each migration in its own transaction); the names applied."""
        pending = self.pending_migrations()
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise database_error(exc, self.path) or DatabaseError(f"cannot migrate {self.path}: {exc}") from None
        return pending

    def close(self) -> None:
        self.db.close()

    def applied_migrations(self) -> list[AppliedMigration]:
        """The migration record in the order applied, each with the hanna-sync version that applied it."""
        rows = self.db.execute(
            f"SELECT name, applied_at, {migrations.VERSION_COLUMN} FROM {migrations.migrations_table}"
            " WHERE migration_set = ? ORDER BY rowid", [migrations.name]).fetchall()
        return [AppliedMigration(*row) for row in rows]

    def quick_check(self) -> list[str]:
        """What SQLite finds damaged ([] when sound), at most 20 lines.

        quick_check rather than integrity_check: it still reads every page, but skips comparing each index
        with its table, so it takes seconds, not minutes, on a large archive.
        """
        with self.lock:
            found = [str(row[0]) for row in self.db.execute("PRAGMA quick_check(20)").fetchall()]
        return [] if found == ["ok"] else found

    def backup(self, target: Path) -> Backup:
        """A consistent copy of the database at `target`, taken with SQLite's online backup API.

        In one step, so it is one snapshot even while a pass (another process) writes: WAL readers do not
        block the writer. The copy goes to a 0600 temp file beside `target`, is checked (quick_check),
        made a self-contained rollback-journal file, fsynced and renamed into place, so `target` is
        always the previous backup or the new one, never half of one. Only a regular file is ever renamed
        over (through a symlink: the file it names); a FIFO, device or socket is refused.
        """
        started = time.monotonic()
        target = target.expanduser()
        if target.is_dir():
            raise InputError(f"{target} is a directory: name the backup file, e.g. {target / 'hanna-sync.db'}")
        _regular_or_missing(target)
        target = Path(os.path.realpath(target))  # a symlink: the file it names is replaced, the link stays
        if not target.parent.is_dir():
            raise InputError(f"{target.parent} does not exist: create it first, or back up somewhere else")
        if target.resolve() in {Path(f"{self.path.resolve()}{suffix}") for suffix in ("", "-wal", "-shm")}:
            raise InputError(f"{target} is the database itself: back it up to another file")
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            copy = sqlite3.connect(temp, isolation_level=None)
            try:
                with self.lock:  # no transaction of this process's threads is half-way through
                    self.db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
                damage = [str(row[0]) for row in copy.execute("PRAGMA quick_check(20)").fetchall()]
                has_letters = copy.execute("SELECT 1 FROM sqlite_master WHERE name = 'letters'").fetchone()
                letters = int(copy.execute("SELECT count(*) FROM letters").fetchone()[0]) if has_letters else 0
            finally:
                copy.close()
            if damage != ["ok"]:
                raise DatabaseError(f"the copy of {self.path} fails its check ({damage[0]}): the database itself"
                                    " may be damaged; run 'hanna-sync doctor'")
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _regular_or_missing(target)  # again: a FIFO or device made meanwhile is not renamed over either
            os.replace(temp, target)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, (OSError, sqlite3.Error)) and not isinstance(exc, sqlite3.ProgrammingError):
                reason = getattr(exc, "strerror", None) or exc
                raise DatabaseError(f"cannot write the backup {target}: {reason}") from None
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        return Backup(target, target.stat().st_size, letters, time.monotonic() - started)

    def free_share(self) -> float:
        """The share of the file's pages that are free (on SQLite's freelist): what VACUUM would give back."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        return self.db.execute("PRAGMA freelist_count").fetchone()[0] / pages if pages else 0.0

    def vacuum(self) -> None:
        """Rewrite the file without its free pages, then truncate the write-ahead log.

        Under the store's lock and outside any transaction (VACUUM cannot run inside one). In WAL mode a
        reader in another process keeps reading its snapshot meanwhile; a writer waits for the busy timeout.
        """
        with self.lock:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
