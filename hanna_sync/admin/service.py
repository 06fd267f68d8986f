"""`hanna-sync setup-service [--user]`: the timer-driven service set up in one idempotent command.

The same code serves the Debian package's postinst and a pip/pipx install, so both end the same way: a
system user, its state directory, a config naming the database and a key file kept apart from it, the key
made once, the units, and the timer enabled only once a mailbox exists (a pass over no mailbox is a failed
pass every 10 minutes). Nothing that exists is ever overwritten: a sysadmin's edited unit or config wins,
and the step says how to see the difference instead. Every path comes from a layout, so the whole system
mode runs against a temp tree in the tests.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import re
import shlex
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

from hanna_sync.admin.setup_guide import example_config, executable, systemd_unit
from hanna_sync.config import (
    DATABASE_NAME,
    SYSTEM_CONFIG_DIR,
    SYSTEM_STATE_DIR,
    Config,
    load_config,
)
from hanna_sync.credentials.keyfile import create_key_file
from hanna_sync.credentials.private_files import publish_new
from hanna_sync.errors import ConfigError, NoPermission, SecretsError

DONE, KEPT, LEFT, FAILED = "done", "kept", "left", "failed"
UNIT_FILES = {"service": "hanna-sync.service", "timer": "hanna-sync.timer", "web": "hanna-sync-web.service"}
# ProtectHome=yes hides these from both units: a hanna-sync installed under them cannot be their ExecStart.
HIDDEN_FROM_UNITS = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True)
class SystemLayout:
    """Every path and command the system mode touches: the real ones by default, a temp tree in tests."""

    user: str = "hanna-sync"
    etc_dir: Path = SYSTEM_CONFIG_DIR
    state_dir: Path = SYSTEM_STATE_DIR  # also the user's home
    unit_dir: Path = Path("/etc/systemd/system")
    vendor_unit_dir: Path = Path("/usr/lib/systemd/system")  # where the Debian package puts its units
    systemd_marker: Path = Path("/run/systemd/system")  # exists while systemd runs (sd_booted(3))
    systemctl: tuple[str, ...] = ("systemctl",)
    exe: str = field(default_factory=executable)

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "config.toml"

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME

    @property
    def key_file(self) -> Path:
        return self.etc_dir / "secrets.key"


@dataclass(frozen=True)
class UserLayout:
    """The same for --user: the user's own config and unit directories (XDG_CONFIG_HOME honoured)."""

    config_file: Path
    unit_dir: Path
    vendor_unit_dir: Path = Path("/usr/lib/systemd/user")
    systemctl: tuple[str, ...] = ("systemctl", "--user")
    loginctl: tuple[str, ...] = ("loginctl",)
    exe: str = field(default_factory=executable)

    @classmethod
    def from_environment(cls) -> UserLayout:
        """Where the user's shell and a user unit find the config first (before /etc/hanna-sync)."""
        xdg = os.environ.get("XDG_CONFIG_HOME")
        base = Path(xdg) if xdg else Path.home() / ".config"
        return cls(config_file=base / "hanna-sync" / "config.toml", unit_dir=base / "systemd" / "user")


@dataclass
class Step:
    """One step's outcome: done, kept (already there and right), left (on purpose, with the command) or
    failed (with the fix; the steps after it are not attempted)."""

    step: str
    outcome: str
    detail: str
    path: str | None = None


class _Stop(Exception):
    """A step failed: the steps that depend on it are not attempted."""


@dataclass
class ServiceReport:
    """What setup-service did, step by step, for its lines and its --json; a failed step ends it."""

    mode: str  # "system" or "user"
    steps: list[Step] = field(default_factory=list)

    def add(self, step: str, outcome: str, detail: str, path: Path | str | None = None) -> None:
        self.steps.append(Step(step, outcome, detail, None if path is None else str(path)))

    def fail(self, step: str, detail: str, path: Path | str | None = None) -> NoReturn:
        """Record a failed step and stop: the steps after it depend on it."""
        self.add(step, FAILED, detail, path)
        raise _Stop

    @property
    def failed(self) -> bool:
        return any(s.outcome == FAILED for s in self.steps)

    @property
    def timer(self) -> str:
        enabled = any(s.step == "timer" and s.outcome in (DONE, KEPT) for s in self.steps)
        return "enabled" if enabled else "not-enabled"

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "steps": [asdict(s) for s in self.steps], "timer": self.timer}


# -- system mode ------------------------------------------------------------------------------------------

def setup_system(layout: SystemLayout, *, enable: bool = True) -> ServiceReport:
    """Set up the system-wide service as root; refused (nothing touched) for anyone else.

    enable=False (the package's postinst, on every install and upgrade): the timer is never enabled, so a
    timer the admin stopped or masked stays so; the step still says what to do."""
    if os.geteuid() != 0:
        raise NoPermission("setup-service sets up the system-wide service and needs root: run it with sudo,"
                           " or use --user to set up units for yourself")
    report = ServiceReport("system")
    try:
        uid, gid = _system_user(report, layout)
        _check_executable(report, layout.exe, layout.user)
        _directory(report, "state-dir", layout.state_dir, mode=0o700, owner=(uid, gid))
        _directory(report, "config-dir", layout.etc_dir, mode=0o750, owner=(0, gid))
        config = _config(report, layout.config_file, system_config_text(layout), owner=(0, gid))
        _secrets_key(report, config, owner=(uid, gid))
        wrote = _units(report, layout.unit_dir, layout.vendor_unit_dir, exe=layout.exe, user=False)
        running = layout.systemd_marker.is_dir()
        if wrote:
            _daemon_reload(report, layout.systemctl, running=running)
        as_user = ["runuser", "-u", layout.user, "--"]
        sudo_u = f"sudo -u {layout.user} {layout.exe} --config {layout.config_file}"
        _timer(report, layout.systemctl, down=None if running else "systemd is not running here",
               list_mailboxes=[*as_user, *_command(layout.exe, layout.config_file)],
               add_mailbox=f"{sudo_u} add-mailbox ...",
               again=f"sudo {layout.exe} setup-service", enable=f"systemctl enable --now {UNIT_FILES['timer']}",
               database=config.database, may_enable=enable)
        report.add("web", LEFT, f"{UNIT_FILES['web']} not enabled (setup-service never does): to serve the archive"
                   f" on 127.0.0.1:8025: systemctl enable --now {UNIT_FILES['web']}\n"
                   f"then make a token: {sudo_u} token create NAME")
    except _Stop:
        pass
    return report


def system_config_text(layout: SystemLayout) -> str:
    """The shipped example with the database in the state directory and the key file beside the config,
    apart from the database: a copy of /var/lib/hanna-sync is then no copy of the passwords."""
    text = "# Written by `hanna-sync setup-service` from the example; it never rewrites this file.\n" \
        + example_config()
    for key, value in (("database", layout.database), ("key_file", layout.key_file)):
        # The example has each as a comment line, once ("# database = ..."): uncommented, with our path.
        text, count = re.subn(rf"^# {key} = .*$", f"{key} = {json.dumps(str(value))}", text, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"config.example.toml lost its '# {key} = ...' line")
    return text


def _system_user(report: ServiceReport, layout: SystemLayout) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(layout.user)
    except KeyError:
        command = ["useradd", "--system", "--user-group", "--home-dir", str(layout.state_dir), "--no-create-home",
                   "--shell", "/usr/sbin/nologin", layout.user]
        made = _run(command)
        if made.returncode != 0:
            report.fail("user", f"cannot create the system user {layout.user}: {_last_line(made)};"
                        f" create it by hand: {shlex.join(command)}")
        entry = pwd.getpwnam(layout.user)
        report.add("user", DONE, f"system user {layout.user} (home {layout.state_dir}, no login shell)")
    else:
        report.add("user", KEPT, f"system user {layout.user} exists (uid {entry.pw_uid})")
    return entry.pw_uid, entry.pw_gid


# -- --user mode ------------------------------------------------------------------------------------------

def setup_user(layout: UserLayout, *, enable: bool = True) -> ServiceReport:
    """Set up the user units for the user running it (no root): config, database directory, key, units."""
    report = ServiceReport("user")
    login = pwd.getpwuid(os.getuid()).pw_name
    try:
        config = _config(report, layout.config_file, example_config(), owner=None)
        _directory(report, "state-dir", config.database.parent, mode=0o700, owner=None, fix=False)
        _secrets_key(report, config, owner=None)
        wrote = _units(report, layout.unit_dir, layout.vendor_unit_dir, exe=layout.exe, user=True)
        reload = [*layout.systemctl, "daemon-reload"]
        reached = _run(reload)
        if reached.returncode != 0:
            report.add("daemon-reload", LEFT, f"no user manager reachable ({_last_line(reached)}): the units are"
                       f" written; log in to a session of {login} and run: {shlex.join(reload)}")
        elif wrote:
            report.add("daemon-reload", DONE, f"{shlex.join(reload)}")
        _timer(report, layout.systemctl,
               down=None if reached.returncode == 0 else f"no user manager is reachable for {login}",
               list_mailboxes=_command(layout.exe, layout.config_file),
               add_mailbox=f"{layout.exe} add-mailbox ...", again=f"{layout.exe} setup-service --user",
               enable=f"systemctl --user enable --now {UNIT_FILES['timer']}", database=config.database,
               may_enable=enable)
        report.add("web", LEFT, f"{UNIT_FILES['web']} not enabled (setup-service never does): to serve the archive"
                   f" on 127.0.0.1:8025: systemctl --user enable --now {UNIT_FILES['web']}\n"
                   f"then make a token: {layout.exe} token create NAME")
        _linger(report, layout.loginctl, login)
    except _Stop:
        pass
    return report


def _linger(report: ServiceReport, loginctl: Sequence[str], login: str) -> None:
    """A user manager stops at logout, and the timer with it, unless the user lingers."""
    shown = _run([*loginctl, "show-user", login, "-p", "Linger"])
    if shown.returncode == 0 and shown.stdout.strip() == "Linger=yes":
        report.add("linger", KEPT, f"{login} lingers: the timer runs while {login} is logged out")
    else:
        report.add("linger", LEFT, f"the timer runs only while {login} is logged in; to run it always:"
                   f" loginctl enable-linger {login}  (or, if refused: sudo loginctl enable-linger {login})")


# -- the steps both modes share ---------------------------------------------------------------------------

def _owner_text(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def _fix_mode_owner(fd: int, *, mode: int, owner: tuple[int, int] | None) -> str | None:
    """Give the open file `fd` `mode` (and `owner`); what it had before, or None when it had them already.

    Through the descriptor, never the path: between a look and a chmod the path could become a symlink
    (the service user owns the state directory), and root would then hand it another file."""
    st = os.fstat(fd)
    was_mode, was_owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    if was_mode == mode and owner in (None, was_owner):
        return None
    os.fchmod(fd, mode)
    if owner is not None:
        os.fchown(fd, *owner)
    return f"{was_mode:04o}" + (f" {_owner_text(*was_owner)}" if owner is not None else "")


def _directory(report: ServiceReport, name: str, path: Path, *, mode: int, owner: tuple[int, int] | None,
               fix: bool = True) -> None:
    """Make the directory, or make it `mode` and `owner`; `fix=False` (a directory the user's config named,
    maybe their home): only made, a mode other than `mode` said, never changed."""
    wanted = f"{mode:04o}" + (f" {_owner_text(*owner)}" if owner else "")
    if not os.path.lexists(path):
        try:
            path.mkdir(parents=True, mode=mode)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _fix_mode_owner(fd, mode=mode, owner=owner)  # mkdir's mode is cut by the umask
            finally:
                os.close(fd)
        except OSError as exc:
            report.fail(name, f"cannot create {path}: {exc.strerror}; create it: install -d -m {mode:04o}"
                        + (" -o {} -g {}".format(*_owner_text(*owner).split(":")) if owner else "") + f" {path}", path)
        report.add(name, DONE, f"{path} ({wanted})", path)
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        report.fail(name, f"{path} is not a directory it can use ({exc.strerror}): move it away and run"
                    " setup-service again", path)
    try:
        if not fix:
            have = stat.S_IMODE(os.fstat(fd).st_mode)
            if have & 0o077:
                report.add(name, KEPT, f"{path} (mode {have:04o}: others may read the database there; to close it:"
                           f" chmod 700 {path})", path)
            else:
                report.add(name, KEPT, f"{path} ({have:04o})", path)
            return
        try:
            was = _fix_mode_owner(fd, mode=mode, owner=owner)
        except OSError as exc:
            report.fail(name, f"{path} is not {wanted} and cannot be made so: {exc.strerror}", path)
    finally:
        os.close(fd)
    if was is None:
        report.add(name, KEPT, f"{path} ({wanted})", path)
    else:
        report.add(name, DONE, f"{path}: was {was}, now {wanted}", path)


def _config(report: ServiceReport, path: Path, text: str, *, owner: tuple[int, int] | None) -> Config:
    """Write the config once; an existing one is the admin's and is only read (later steps follow it)."""
    mode = 0o640 if owner else 0o600
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        wrote = not os.path.lexists(path) and publish_new(path, text.encode(), mode=mode, owner=owner)
    except OSError as exc:
        report.fail("config", f"cannot write {path}: {exc.strerror}", path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        report.fail("config", f"{exc}; fix it (setup-service never rewrites it), then run it again", path)
    if wrote:
        where = f"database {config.database}, key file {config.secrets_key_file}"
        report.add("config", DONE, f"{path} ({mode:04o}{' ' + _owner_text(*owner) if owner else ''}; {where})", path)
    else:
        report.add("config", KEPT, f"{path} (never overwritten; database {config.database})", path)
    return config


def _secrets_key(report: ServiceReport, config: Config, *, owner: tuple[int, int] | None) -> None:
    """The store's key, made once before any password, so that it is there to back up from the start."""
    if config.secrets.store != "file":
        report.add("secrets-key", LEFT, f'[secrets] store = "{config.secrets.store}" in {config.source}: the'
                   " passwords go to a desktop keyring, no key file is made")
        return
    key_file, wanted = config.secrets_key_file, "0600" + (f" {_owner_text(*owner)}" if owner else "")
    try:
        made = None if os.path.lexists(key_file) else create_key_file(key_file, config.secrets_file, owner=owner)
        if made is not None:
            report.add("secrets-key", DONE, f"{key_file} ({wanted}): back it up apart from the database; without"
                       " it the stored passwords cannot be read", key_file)
            return
        fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                report.fail("secrets-key", f"{key_file} is not a regular file: name the key file itself in key_file",
                            key_file)
            was = _fix_mode_owner(fd, mode=0o600, owner=owner)
        finally:
            os.close(fd)
    except SecretsError as exc:
        report.fail("secrets-key", str(exc), key_file)
    except OSError as exc:
        reason = "a symbolic link (root does not follow one here)" if exc.errno == errno.ELOOP else exc.strerror
        report.fail("secrets-key", f"{key_file}: {reason}; it must be a file {wanted}", key_file)
    if was is None:
        report.add("secrets-key", KEPT, f"{key_file} (never overwritten)", key_file)
    else:
        report.add("secrets-key", DONE, f"{key_file} (content kept): was {was}, now {wanted}", key_file)


def _check_executable(report: ServiceReport, exe: str, user: str) -> None:
    """The units' ExecStart must start as the service user: a hanna-sync (or its Python) under /home or /root
    (`pip install --user`, pipx as root, pyenv) is hidden from the units by ProtectHome=yes, and /root is
    closed to other users anyway; a pass that cannot start fails every 10 minutes, so say so now."""
    program = Path(shlex.split(exe)[0])
    used = [program.resolve()]
    try:
        with open(program, "rb") as fh:
            first = fh.readline(512)
        if first.startswith(b"#!") and first[2:].split():
            used.append(Path(first[2:].split()[0].decode(errors="replace")).resolve())
    except OSError:
        pass
    fix = ("install hanna-sync for all users, e.g. sudo PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx"
           " install hanna-sync, and run that one: sudo /usr/local/bin/hanna-sync setup-service")
    for path in used:
        hidden = next((top for top in HIDDEN_FROM_UNITS if path.is_relative_to(top)), None)
        if hidden is not None:
            report.fail("executable", f"the units would run {exe}, which needs {path}, under {hidden}: hidden from"
                        f" them by ProtectHome=yes; {fix}", path)
    command = ["runuser", "-u", user, "--", *shlex.split(exe), "--version"]
    ran = _run(command)
    if ran.returncode != 0:
        report.fail("executable", f"{exe} does not start as the user {user} ({_last_line(ran)}); {fix}", program)


def _units(report: ServiceReport, unit_dir: Path, vendor_dir: Path, *, exe: str, user: bool) -> bool:
    """Write the three units where none is; whether any was written (then systemd must reload)."""
    if (vendor_dir / UNIT_FILES["service"]).exists():
        report.add("units", KEPT, f"the package's units in {vendor_dir}", vendor_dir)
        return False
    wrote = False
    flag, sudo = ("--user ", "") if user else ("", "sudo ")
    for name, file_name in UNIT_FILES.items():
        path, text = unit_dir / file_name, systemd_unit(name, user, exe)
        try:
            unit_dir.mkdir(parents=True, exist_ok=True)
            current = path.read_text(encoding="utf-8") if path.exists() else None
            written = current is None and publish_new(path, text.encode(), mode=0o644)
        except (OSError, UnicodeDecodeError) as exc:
            report.fail("units", f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}", path)
        if written:
            wrote = True
            report.add("units", DONE, str(path), path)
        elif current is None or current == text:
            report.add("units", KEPT, f"{path} (as this hanna-sync writes it)", path)
        else:
            printed = f"{exe} setup-guide systemd {flag}--unit {name}"
            report.add("units", LEFT, f"{path} differs from what this hanna-sync writes (edited by hand? never"
                       f" overwritten); the difference: {printed} | diff -u {path} -\n"
                       f"to replace it: {printed} | {sudo}tee {path} >/dev/null", path)
    return wrote


def _daemon_reload(report: ServiceReport, systemctl: Sequence[str], *, running: bool) -> None:
    """systemd reads a new unit only after a reload; where it does not run, the files wait for it."""
    reload = [*systemctl, "daemon-reload"]
    if not running:
        report.add("daemon-reload", LEFT, f"systemd is not running here: the units are written; where it runs:"
                   f" {shlex.join(reload)}")
        return
    done = _run(reload)
    if done.returncode != 0:
        report.fail("daemon-reload", f"{shlex.join(reload)} failed: {_last_line(done)}")
    report.add("daemon-reload", DONE, shlex.join(reload))


def _command(exe: str, config_file: Path) -> list[str]:
    """list-mailboxes through the config the units name: what the timer's pass would find."""
    return [*shlex.split(exe), "--config", str(config_file), "list-mailboxes", "--json"]


def _timer(report: ServiceReport, systemctl: Sequence[str], *, down: str | None, list_mailboxes: list[str],
           add_mailbox: str, again: str, enable: str, database: Path, may_enable: bool = True) -> None:
    """Enable the timer once a mailbox exists: before that every pass would fail ("no mailbox configured").

    Asked as the service user, through the config its units use: root must not create files in the state
    directory, and no database means no mailbox (it is not created just to look)."""
    timer = UNIT_FILES["timer"]
    state = ""
    if down is None:
        state = _run([*systemctl, "is-enabled", timer]).stdout.strip()
        if state == "enabled":
            report.add("timer", KEPT, f"{timer} is enabled")
            return
        if state.startswith("masked"):  # the admin's choice: an enable would fail, and should
            report.add("timer", LEFT, f"{timer} is masked (kept so); to run passes: systemctl unmask {timer}"
                       f" && {enable}")
            return
    mailboxes: list[object] = []
    if database.exists():
        listed = _run(list_mailboxes)
        if listed.returncode != 0:
            report.fail("timer", f"cannot list the mailboxes as the units would ({shlex.join(list_mailboxes)}):"
                        f" {_last_line(listed)}")
        try:
            mailboxes = json.loads(listed.stdout)
        except ValueError:
            report.fail("timer", f"{shlex.join(list_mailboxes)} printed no JSON list: {listed.stdout[:200]!r}")
    if not mailboxes:
        report.add("timer", LEFT, f"{timer} not started: no mailbox yet. Add one: {add_mailbox}\n"
                   f"then run `{again}` again (or: {enable})")
    elif down is not None:
        report.add("timer", LEFT, f"{timer} not started: {down}; then: {enable}")
    elif not may_enable:
        report.add("timer", LEFT, f"{timer} is {state or 'not enabled'} (kept so: --no-enable); to run passes"
                   f" every 10 minutes: {enable}")
    else:
        command = [*systemctl, "enable", "--now", timer]
        enabled = _run(command)
        if enabled.returncode != 0:
            report.fail("timer", f"{shlex.join(command)} failed: {_last_line(enabled)}")
        report.add("timer", DONE, f"{timer} enabled and started ({len(mailboxes)} mailbox(es))")


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a system command (from / : the service user may not enter the caller's directory); a command
    that is not installed is a failed run saying so, like a shell's 127."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
    except FileNotFoundError:
        return subprocess.CompletedProcess(command, 127, "", f"{command[0]}: command not found")


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"
