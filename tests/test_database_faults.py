"""The database under faults: another writer holding the lock, a full disk, a damaged file, and backups
taken while a pass writes. Each failure is one line with its exit code, and nothing is half-written."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.db.store import DatabaseBusy, DatabaseError, Store, database_error
from hanna_sync.demo import sample
from tests.faults import Fault, ImapProxy, archive, check_consistent
from tests.helpers import Env

ROOT = Path(__file__).resolve().parent.parent


def fill(user, count: int, body_size: int = 100) -> None:
    for i in range(count):
        user.dovecot.deliver(user.login, "INBOX", sample.letter(
            "Rūta <ruta@azuolas.lt>", sample.STAFF, f"Laiškas {i}", f"{i} " + "ą" * body_size,
            message_id=None if i % 7 == 0 else f"<db-{i}@azuolas.lt>"))


@pytest.fixture
def mailbox(tmp_path, imap_user):
    """40 letters to a customer, and the archive a clean pass makes of them."""
    fill(imap_user, 40, body_size=8000)
    clean = Env(tmp_path / "clean", batch_size=5)
    clean.add(imap_user, folders=("INBOX",))
    assert clean.run().ok
    return imap_user, archive(clean.store)


def hanna(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and result.exception is None or isinstance(result.exception, SystemExit)
    assert len([line for line in lines if line.startswith("Error:")]) == 1, result.stderr
    return next(line for line in lines if line.startswith("Error:"))


# -- another writer --------------------------------------------------------------------------------

def test_a_lock_held_by_another_writer_mid_pass_stops_it_cleanly_and_the_next_pass_completes(tmp_path, mailbox):
    user, reference = mailbox
    env = Env(tmp_path / "locked", batch_size=5)
    with ImapProxy(user.dovecot) as proxy:
        box = env.add(user, folders=("INBOX",))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        store = Store(env.config.database, busy_timeout_ms=300)
        other = sqlite3.connect(env.config.database, check_same_thread=False, isolation_level=None)
        # After the first commit: pipelined, several batches' FETCHes are answered before it.
        proxy.reset(Fault("call", at=55, kind="fetch", call=lambda: other.execute("BEGIN IMMEDIATE")))
        with pytest.raises(sqlite3.OperationalError) as caught:
            from hanna_sync.scan import run_pass
            run_pass(store, env.secrets, env.config)
        explained = database_error(caught.value, env.config.database)
        assert isinstance(explained, DatabaseBusy) and explained.exit_code == 75
        assert "locked by another program" in str(explained) and "try again later" in str(explained)
        other.execute("ROLLBACK")
        check_consistent(store, reference)
        assert 0 < len(archive(store).letters) < 40

        proxy.reset()
        assert run_pass(store, env.secrets, env.config).ok
        assert archive(store) == reference


def test_cli_exits_75_with_one_line_while_another_writer_holds_the_lock(tmp_path, imap_user, monkeypatch):
    fill(imap_user, 5)
    env = Env(tmp_path)
    env.add(imap_user, folders=("INBOX",))
    config = env.config_file()
    monkeypatch.setattr(Store.__init__, "__defaults__", (200,))  # the busy timeout, 10 s in real life
    other = sqlite3.connect(env.config.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for args in (["run"], ["import", "customers", str(write_csv(tmp_path))]):
            result = hanna(config, *args)
            assert result.exit_code == 75, (args, result.output)
            assert one_error_line(result).startswith(f"Error: database {env.config.database} is locked by another")
    finally:
        other.execute("ROLLBACK")
    assert env.store.db["letters"].count == 0 and env.store.db["scan_runs"].count == 0
    assert hanna(config, "run").exit_code == 0


def write_csv(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text("id,name,email\nC-9,Naujas,naujas@example.lt\n")
    return path


def test_a_pass_and_a_busy_second_writer_both_succeed(tmp_path, imap_user):
    """A CRM import writing while the timer's pass writes: each waits its turn, neither fails."""
    fill(imap_user, 300)
    env = Env(tmp_path, batch_size=5)
    env.add(imap_user, folders=("INBOX",))
    stop = threading.Event()
    writes: list[int] = []
    failures: list[Exception] = []

    def writer() -> None:  # reads, then writes, in one transaction: what save_entity and the scan do
        other = Store(env.config.database)
        while not stop.is_set():
            try:
                with other.transaction():
                    other.db.execute("SELECT count(*) FROM letters").fetchone()
                    other.db.execute("UPDATE customers SET name = name WHERE id = 'C-1001'")
                writes.append(1)
            except sqlite3.Error as exc:
                failures.append(exc)
        other.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "hanna_sync", "--config", str(env.config_file()), "run"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stderr
    assert not failures and len(writes) > 10, failures[:1]
    assert env.store.db["letters"].count == 300


# -- a full disk -----------------------------------------------------------------------------------

def test_a_full_database_stops_the_pass_at_a_batch_boundary_and_the_next_pass_completes(tmp_path, mailbox):
    user, reference = mailbox
    env = Env(tmp_path / "full", batch_size=5)
    env.add(user, folders=("INBOX",))
    pages = env.store.db.execute("PRAGMA page_count").fetchone()[0]
    env.store.db.execute(f"PRAGMA max_page_count = {pages + 100}")  # SQLITE_FULL after ~400 KB of letters
    with pytest.raises(sqlite3.OperationalError) as caught:
        env.run()
    explained = database_error(caught.value, env.config.database)
    assert isinstance(explained, DatabaseError) and explained.exit_code == 74
    assert "no space left" in str(explained) and "nothing was half-written" in str(explained)
    stored = len(archive(env.store).letters)
    assert 0 < stored < 40
    check_consistent(env.store, reference)  # the state never ran ahead of the letters

    env.store.db.execute("PRAGMA max_page_count = 1073741823")
    assert env.run().ok
    assert archive(env.store) == reference


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` at `path` (root only; skipped elsewhere)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_cli_on_a_full_disk_exits_74_with_one_line_and_resumes_when_there_is_room(tmp_path, mailbox):
    user, reference = mailbox
    with small_disk(tmp_path / "disk", "1m") as disk:  # room for the schema, not for the letters
        env = Env(disk, batch_size=5)
        env.add(user, folders=("INBOX",))
        env.store.close()
        config = env.config_file()
        proc = subprocess.run([sys.executable, "-m", "hanna_sync", "--config", str(config), "run"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
        assert proc.returncode == 74, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"Error: database {env.config.database}: no space left"), proc.stderr
        assert "Traceback" not in proc.stderr
        store = Store(env.config.database)
        check_consistent(store, reference)
        assert 0 < len(archive(store).letters) < 40
        store.close()

        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        proc = subprocess.run([sys.executable, "-m", "hanna_sync", "--config", str(config), "run"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        store = Store(env.config.database)
        assert archive(store) == reference
        store.close()


# -- a damaged file --------------------------------------------------------------------------------

def test_a_damaged_database_is_named_by_doctor_and_by_every_command(tmp_path, mailbox):
    user, _ = mailbox
    env = Env(tmp_path / "damaged")
    env.add(user, folders=("INBOX",))
    assert env.run().ok
    config = env.config_file()
    assert hanna(config, "doctor").exit_code == 0
    page_size = env.store.db.execute("PRAGMA page_size").fetchone()[0]
    root = env.store.db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'letters'").fetchone()[0]
    env.store.close()  # checkpoints the WAL into the file
    with open(env.config.database, "r+b") as f:  # a bad sector in the letters table
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * 64)

    result = hanna(config, "doctor")
    assert result.exit_code == 74, result.output
    assert "FAILED database" in result.stdout and "is damaged" in result.stdout
    assert "restore the last backup" in result.stdout
    assert one_error_line(result).startswith("Error: 1 problem(s); first: database:")

    result = hanna(config, "letters")
    assert result.exit_code == 74
    assert one_error_line(result).startswith(f"Error: database {env.config.database} is damaged (")

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not SQLite" * 100)
    other = tmp_path / "other.toml"
    other.write_text(f'database = "{garbage}"\n')
    result = hanna(other, "letters")
    assert result.exit_code == 74
    assert one_error_line(result) == (f"Error: {garbage} is not a usable hanna-sync database: file is not a"
                                      " database")


def damage_page(database: Path, where: str) -> None:
    """Overwrite 256 bytes of one page: the schema's (page 1, after the file header) or a table's root page."""
    store = Store(database)
    page_size = store.db.execute("PRAGMA page_size").fetchone()[0]
    page = 1 if where == "schema" else store.db.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = ?", [where]).fetchone()[0]
    store.close()  # checkpoints the WAL into the file
    offset = (page - 1) * page_size + (100 if page == 1 else 0)
    with open(database, "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 64)


@pytest.mark.parametrize("where, finding", [
    ("schema", "its schema (page 1) cannot be read: database disk image is malformed"),
    ("_sqlite_migrations", "table _sqlite_migrations: database disk image is malformed"),  # read on opening
    ("mailboxes", "table mailboxes: database disk image is malformed"),  # quick_check itself fails on it
])
def test_doctor_reports_damage_that_stops_the_database_from_opening(tmp_path, where, finding):
    """Damage SQLite cannot even run quick_check over, or that the opening migrations read: doctor still
    prints its whole report, names what is damaged and how to restore, and exits 74."""
    env = Env(tmp_path / "damaged")
    env.store.close()
    env.config.database.parent.chmod(0o700)
    config = env.config_file()
    assert hanna(config, "doctor").exit_code == 0
    damage_page(env.config.database, where)

    result = hanna(config, "doctor")
    assert result.exit_code == 74, result.output
    database = env.config.database
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok     state directory") and lines[1].startswith("ok     database file")
    assert lines[2] == f"FAILED database         {database} is damaged: {finding}"
    assert lines[3].strip() == (
        f"fix: stop the timer (systemctl stop hanna-sync.timer) or cron job, keep a copy of the damaged {database},"
        " restore the last backup ('hanna-sync backup FILE' makes them): copy it over the damaged file and delete"
        f" {database}-wal and {database}-shm, then run 'hanna-sync doctor' again")
    assert lines[4].startswith("ok     secrets key")  # the report goes on after the database
    assert "checks a database" not in result.output  # not the line that sends you to doctor
    assert one_error_line(result) == f"Error: 1 problem(s); first: database: {database} is damaged: {finding}"

    report = __import__("json").loads(hanna(config, "doctor", "--json").stdout)
    assert report["exit_code"] == 74 and [c["name"] for c in report["checks"] if not c["ok"]] == ["database"]


def test_doctor_names_loose_permissions_with_their_fix(tmp_path, imap_user):
    env = Env(tmp_path / "perm")
    env.add(imap_user, folders=("INBOX",))
    config = env.config_file()
    assert hanna(config, "doctor").exit_code == 0
    env.config.database.parent.chmod(0o755)
    env.config.secrets_key_file.chmod(0o644)
    result = hanna(config, "doctor", "--json")
    assert result.exit_code == 1
    report = __import__("json").loads(result.stdout)
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert set(failed) == {"state directory", "secrets key"}
    assert failed["state directory"]["fix"] == f"chmod 700 {env.config.database.parent}"
    assert failed["secrets key"]["fix"] == f"chmod 600 {env.config.secrets_key_file}"


# -- backups ---------------------------------------------------------------------------------------

def test_backups_taken_while_a_pass_writes_are_consistent_private_and_atomic(tmp_path, imap_user):
    fill(imap_user, 400)
    env = Env(tmp_path / "live", batch_size=5)
    target = tmp_path / "backups" / "hanna-sync.db"
    target.parent.mkdir()
    config = env.config_file()

    def backup() -> int:
        result = hanna(config, "backup", str(target))
        assert result.exit_code == 0, result.output
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(p.name for p in target.parent.iterdir()) == ["hanna-sync.db"]  # no temp file left
        copy = Store(target)
        try:
            assert copy.quick_check() == []
            check_consistent(copy)
            return copy.db["letters"].count
        finally:
            copy.close()

    with ImapProxy(imap_user.dovecot) as proxy:
        box = env.add(imap_user, folders=("INBOX",))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        held, release = threading.Event(), threading.Event()
        proxy.reset(Fault("call", at=300, kind="fetch", call=lambda: (held.set(), release.wait(30))))
        proc = subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(config), "run"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        assert held.wait(60), "the pass never got half-way"
        # The pass is half-way (150 letters in) and holds its lock: the copy is a snapshot of that moment.
        assert 0 < backup() < 400
        release.set()
        while proc.poll() is None:  # and while it writes
            backup()
        assert proc.wait(60) == 0, proc.stderr.read()
    assert backup() == 400
    copy = Store(target)
    assert archive(copy) == archive(env.store)
    copy.close()

    assert hanna(config, "backup", str(tmp_path)).exit_code == 2
    assert hanna(config, "backup", str(tmp_path / "missing" / "x.db")).exit_code == 2
    assert hanna(config, "backup", str(env.config.database)).exit_code == 2


def test_backup_refuses_a_fifo_device_or_socket_and_follows_a_symlink(tmp_path):
    """An SQLite backup needs a regular file: anything else is refused (exit 2), never renamed over."""
    env = Env(tmp_path / "src")
    config = env.config_file()
    targets = tmp_path / "targets"
    targets.mkdir()
    os.mkfifo(targets / "fifo", 0o600)
    kinds = {"fifo": "a FIFO (named pipe)", "sock": "a socket"}
    try:
        os.mknod(targets / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a /dev/null of our own
        kinds["null"] = "a character device"
    except PermissionError:
        pass  # not root: the FIFO and the socket still stand for every file that is not a regular one
    server = __import__("socket").socket(__import__("socket").AF_UNIX)
    server.bind(str(targets / "sock"))
    try:
        for name, kind in kinds.items():
            before = os.lstat(targets / name)
            result = hanna(config, "backup", str(targets / name))
            assert result.exit_code == 2, (name, result.output)
            assert one_error_line(result) == (
                f"Error: {targets / name} is {kind}: a backup is an SQLite file, written to a temp file and"
                " renamed into place, so name a regular file (e.g. /var/backups/hanna-sync/hanna-sync.db)")
            after = os.lstat(targets / name)
            assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    finally:
        server.close()
    assert sorted(p.name for p in targets.iterdir()) == sorted(kinds)  # no temp file left

    # A symlink (to the previous backup, say) is followed: the file it names is replaced, the link stays.
    real = targets / "real.db"
    real.write_bytes(b"the previous backup")
    (targets / "latest.db").symlink_to(real)
    result = hanna(config, "backup", str(targets / "latest.db"))
    assert result.exit_code == 0, result.output
    assert (targets / "latest.db").is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    copy = Store(real)
    assert copy.quick_check() == [] and copy.db["customers"].count == env.store.db["customers"].count > 0
    copy.close()


def test_a_backup_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path, mailbox):
    user, _ = mailbox
    env = Env(tmp_path / "src", batch_size=5)
    env.add(user, folders=("INBOX",))
    assert env.run().ok
    config = env.config_file()
    with small_disk(tmp_path / "disk", "700k") as disk:
        target = disk / "hanna-sync.db"
        target.write_bytes(b"the previous backup")
        result = hanna(config, "backup", str(target))
        assert result.exit_code == 74, result.output
        assert one_error_line(result).startswith(f"Error: cannot write the backup {target}: ")
        assert target.read_bytes() == b"the previous backup"
        assert [p.name for p in disk.iterdir()] == ["hanna-sync.db"]
