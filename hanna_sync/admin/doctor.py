"""`hanna-sync doctor`: is the archive sound, and can nobody else read it or the passwords?

The archive holds every customer letter and the secrets store every mailbox password, so two things
are worth checking on a schedule, before they matter: that SQLite finds the database file sound
(`PRAGMA quick_check`), that the state directory, the database and the secrets files are private to the
user hanna-sync runs as (0700 / 0600), and that every stored secret decrypts with the key. Each check says
what it found and, when it fails, the fix.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hanna_sync.config import Config
from hanna_sync.credentials import (
    DEFAULT_CREDENTIAL_NAME,
    EncryptedFileKeyring,
    existing_key,
)
from hanna_sync.db.store import DatabaseError, Store
from hanna_sync.errors import ExitCode, SecretsError


@dataclass(frozen=True)
class Check:
    """One thing looked at: what was found and, when it is wrong, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def exit_code(self) -> int:
        """74 when the database itself is unusable (restore a backup), 1 for anything else wrong."""
        if any(c.name == "database" for c in self.problems):
            return ExitCode.DATABASE
        return ExitCode.FAILURE if self.problems else ExitCode.OK

    def as_dict(self) -> dict[str, object]:
        return {"ok": not self.problems, "exit_code": int(self.exit_code), "checks": [asdict(c) for c in self.checks]}


def examine(config: Config) -> Report:
    """Every check, in the order an admin would fix things: directory, files, then the database's content."""
    report = Report()
    database = config.database
    report.checks.append(_private(database.parent, "state directory", directory=True))
    if not database.exists():
        report.checks.append(Check("database", False, f"{database} does not exist: nothing has been imported or"
                                   " scanned with this config", "check 'database' in the config (or --config)"))
        return report
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        if path.exists():
            report.checks.append(_private(path, "database file"))
    report.checks.append(_integrity(database))
    if report.checks[-1].ok:
        report.checks.append(_migrations(database))
    if config.secrets.store == "file":
        report.checks.extend(_secrets_files(config))
    return report


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _private(path: Path, name: str, directory: bool = False) -> Check:
    """Nobody but the owner may read (or, for a directory, list and enter) it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(name, False, f"{path} does not exist", "it is created by the first command that needs it")
    except OSError as exc:
        return Check(name, False, f"cannot look at {path}: {exc.strerror}", "check the permissions of its parents")
    wanted = "700" if directory else "600"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return Check(name, False, f"{path} has mode {_mode(st)}: other users can read it", f"chmod {wanted} {path}")
    if not os.access(path, os.R_OK | os.W_OK | (os.X_OK if directory else 0)):
        return Check(name, False, f"{path} (mode {_mode(st)}, owner uid {st.st_uid}) is not usable by this user"
                     f" (uid {os.geteuid()})", "run hanna-sync as its owner, or chown it to the service user")
    return Check(name, True, f"{path}: mode {_mode(st)}, owner uid {st.st_uid}")


def _restore_steps(path: Path) -> str:
    """What to do about a damaged database, spelled out: doctor is where an admin is sent to find out."""
    return (f"stop the timer (systemctl stop hanna-sync.timer) or cron job, keep a copy of the damaged {path},"
            " restore the last backup ('hanna-sync backup FILE' makes them): copy it over the damaged file and"
            f" delete {path}-wal and {path}-shm, then run 'hanna-sync doctor' again")


def _integrity(path: Path) -> Check:
    """SQLite reads every page of the file and checks its structure; then the archive must open and count.

    The check runs first and on a plain read-only connection, not through `Store`: a damaged page that the
    opening pragmas or migrations touch would otherwise end doctor with the same one-line "is damaged"
    every other command prints, instead of with what is damaged and how to restore.
    """
    damage = _damage(path)
    if damage:
        return Check("database", False, f"{path} is damaged: {'; '.join(damage[:3])}", _restore_steps(path))
    try:
        store = Store(path)
    except DatabaseError as exc:  # sound but unusable (written by a newer hanna-sync, ...): the message has the fix
        return Check("database", False, str(exc))
    try:
        letters = store.db.execute("SELECT count(*) FROM letters").fetchone()[0]
        mailboxes = store.db.execute("SELECT count(*) FROM mailboxes").fetchone()[0]
        return Check("database", True, f"quick_check ok: {letters} letters, {mailboxes} mailboxes")
    except sqlite3.DatabaseError as exc:
        return Check("database", False, f"{path} cannot be read: {exc}", _restore_steps(path))
    finally:
        store.close()


def _migrations(path: Path) -> Check:
    """Which hanna-sync versions shaped the database: after an upgrade or a restored backup, the first
    question about a database that behaves oddly. Informational: it never fails."""
    store = Store(path)
    try:
        applied = store.applied_migrations()
    finally:
        store.close()
    by_version: dict[str, int] = {}
    for migration in applied:
        key = migration.version or "unrecorded"
        by_version[key] = by_version.get(key, 0) + 1
    versions = ", ".join(f"{version} ({count})" for version, count in by_version.items())
    last = applied[-1]
    return Check("migrations", True, f"{len(applied)} applied, the last {last.name} on {last.applied_at[:10]}"
                 f" by hanna-sync {last.version or 'before 0.1.0 (unrecorded)'}; by version: {versions}")


def _damage(path: Path) -> list[str]:
    """What `PRAGMA quick_check` finds ([] when sound), read-only and without any of Store's set-up.

    When SQLite cannot even run the check ("database disk image is malformed": a table's page is
    unreadable), each table is checked on its own, so the report names the damaged tables.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"SQLite cannot open it: {exc}"]
    try:
        try:
            found = [_line(row[0]) for row in conn.execute("PRAGMA quick_check(20)")]
            return [] if found == ["ok"] else found
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                return [f"it is not an SQLite database ({exc})"]
            whole = f"SQLite cannot read it: {exc}"
        try:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        except sqlite3.DatabaseError as exc:
            return [f"its schema (page 1) cannot be read: {exc}"]
        found = []
        for table in tables:
            quoted = table.replace('"', '""')
            try:
                rows = [_line(row[0]) for row in conn.execute(f'PRAGMA quick_check("{quoted}")')]
            except sqlite3.DatabaseError as exc:
                rows = [str(exc)]
            if rows != ["ok"]:
                found.append(f"table {table}: {', '.join(rows[:3])}")
        return found or [whole]
    finally:
        conn.close()


def _line(finding: object) -> str:
    """One finding on one line (SQLite's can span two: "*** in database main ***", "Page 5: ..."), as the
    error summary is one line."""
    return " ".join(str(finding).split())


def _secrets_files(config: Config) -> list[Check]:
    """The encrypted passwords and their key: private, the key present whenever passwords are stored, and
    every stored secret decrypting with it."""
    checks = []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / DEFAULT_CREDENTIAL_NAME).exists():
        checks.append(Check("secrets key", True, f"from the systemd credential {DEFAULT_CREDENTIAL_NAME}"))
    elif config.secrets_key_file.exists():
        checks.append(_private(config.secrets_key_file, "secrets key"))
    elif config.secrets_file.exists():
        checks.append(Check("secrets key", False, f"{config.secrets_key_file} is missing, so the passwords in"
                            f" {config.secrets_file} cannot be read", "restore the key file from your backup, or"
                            f" move {config.secrets_file} away and set every password again with"
                            " 'hanna-sync set-password ID'"))
    else:
        checks.append(Check("secrets key", True, "none yet: made when the first password is stored"))
    if config.secrets_file.exists():
        checks.append(_private(config.secrets_file, "secrets file"))
        if checks[0].ok:  # a missing or unusable key is the one problem to report, with its own fix
            checks.append(_decrypts(config))
    return checks


def _decrypts(config: Config) -> Check:
    """Every stored secret decrypts with the key: files that are present and private prove nothing when the
    store is garbled or the key is another one, and a pass would only find out at the next login."""
    fix = (f"restore the key file and {config.secrets_file.name} from the same backup, or move"
           f" {config.secrets_file} away and set every password again with 'hanna-sync set-password ID'")
    try:
        key, source = existing_key(config.secrets_key_file)
        count = EncryptedFileKeyring(config.secrets_file, key, key_source=source).verify()
    except FileNotFoundError:  # gone since the key check: that check said so
        return Check("secrets store", False, f"no key to decrypt {config.secrets_file} with", fix)
    except SecretsError as exc:
        return Check("secrets store", False, str(exc), fix)
    return Check("secrets store", True, f"{config.secrets_file}: {count} secret(s), each decrypts with the key")
