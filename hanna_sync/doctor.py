"""`hanna-sync doctor`: is the archive sound, and can nobody else read it or the passwords?

The archive holds every customer letter and the secrets store every mailbox password, so two things
are worth checking on a schedule, before they matter: that SQLite finds the database file sound
(`PRAGMA quick_check`), and that the state directory, the database and the secrets files are private
to the user hanna-sync runs as (0700 / 0600). Each check says what it found and, when it fails, the fix.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hanna_sync.config import Config
from hanna_sync.credentials import DEFAULT_CREDENTIAL_NAME
from hanna_sync.errors import ExitCode
from hanna_sync.store import DatabaseError, Store


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


def _integrity(path: Path) -> Check:
    """SQLite reads every page of the file and checks its structure."""
    try:
        store = Store(path)
    except DatabaseError as exc:
        return Check("database", False, str(exc), "restore the last backup ('hanna-sync backup FILE' makes them)")
    try:
        damage = store.quick_check()
        if damage:
            return Check("database", False, f"{path} is damaged: {'; '.join(damage[:3])}",
                         "stop the timer, keep a copy of the damaged file, and restore the last backup")
        letters = store.db.execute("SELECT count(*) FROM letters").fetchone()[0]
        mailboxes = store.db.execute("SELECT count(*) FROM mailboxes").fetchone()[0]
        return Check("database", True, f"quick_check ok: {letters} letters, {mailboxes} mailboxes")
    except DatabaseError as exc:
        return Check("database", False, str(exc), "restore the last backup")
    finally:
        store.close()


def _secrets_files(config: Config) -> list[Check]:
    """The encrypted passwords and their key: private, and the key present whenever passwords are stored."""
    checks = []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / DEFAULT_CREDENTIAL_NAME).exists():
        checks.append(Check("secrets key", True, f"from the systemd credential {DEFAULT_CREDENTIAL_NAME}"))
    elif config.secrets_key_file.exists():
        checks.append(_private(config.secrets_key_file, "secrets key"))
    elif config.secrets_file.exists():
        checks.append(Check("secrets key", False, f"{config.secrets_key_file} is missing, so the passwords in"
                            f" {config.secrets_file} cannot be read", "restore the key file from your backup, or"
                            " set every password again with 'hanna-sync set-password ID'"))
    else:
        checks.append(Check("secrets key", True, "none yet: made when the first password is stored"))
    if config.secrets_file.exists():
        checks.append(_private(config.secrets_file, "secrets file"))
    return checks
