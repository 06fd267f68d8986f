"""Unattended operation: the lock, the time budget, parallel mailboxes, hung servers, status, back-off,
the gap check, journald logging and the systemd units."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as pysecrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync import scan
from hanna_sync.cli import JournalFormatter, cli
from hanna_sync.demo import sample
from hanna_sync.lock import PassBusy, pass_lock
from tests.helpers import Env, deliver_sample

ROOT = Path(__file__).resolve().parent.parent


def fill(user, letters: int) -> None:
    for i in range(letters):
        user.dovecot.deliver(user.login, "INBOX", sample.letter(
            "Rūta <ruta@azuolas.lt>", sample.STAFF, f"Laiškas {i}", f"Tekstas {i}", message_id=f"<f{i}@azuolas.lt>"))


def test_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    lock = tmp_path / "hs.db"  # the lock of the pass over this database
    with pass_lock(lock), pytest.raises(PassBusy, match=rf"another pass is running \(pid {os.getpid()}"), \
            pass_lock(lock):
        pass
    # A holder killed with SIGKILL leaves no stale lock.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from hanna_sync.lock import pass_lock\n"
        f"with pass_lock(Path({str(lock)!r})):\n print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(PassBusy), pass_lock(lock):
        pass
    holder.kill()
    holder.wait()
    with pass_lock(lock):
        pass


def test_a_second_run_exits_75_while_one_runs_and_nothing_is_duplicated(tmp_path, imap_user):
    fill(imap_user, 600)
    env = Env(tmp_path, batch_size=5)
    env.add(imap_user, folders=("INBOX",), email=sample.STAFF)
    config = env.config_file()
    command = [sys.executable, "-m", "hanna_sync", "--config", str(config), "run"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    lock = env.config.database.parent / "hanna-sync.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.01)
    second = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert first.wait(120) == 0
    assert second.returncode == 75, second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("Error: another pass is running (pid ")
    assert env.store.db["letters"].count == 600
    assert env.store.db.execute("SELECT count(*) FROM letter_locations").fetchone()[0] == 600


class SteppingClock:
    """time.monotonic for the pass's budget clock (scan.context) that moves one second per look: a budget of N seconds
    runs out after a fixed number of steps, whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            self.now += 1
            return self.now


def test_time_budget_stops_mid_backfill_and_the_next_pass_completes(tmp_path, imap_user, dovecot, monkeypatch):
    fill(imap_user, 300)
    twin = dovecot.add_user(f"twin-{pysecrets.token_hex(4)}@example.test", imap_user.password)
    fill(twin, 300)
    reference = Env(tmp_path / "reference", batch_size=10)
    reference.add(twin, folders=("INBOX",))
    reference.run()

    env = Env(tmp_path / "budget", batch_size=10)
    env.add(imap_user, folders=("INBOX",))
    env.config = replace(env.config, scan=replace(env.config.scan, time_budget_minutes=0.2))  # 12 clock steps
    monkeypatch.setattr(scan.context, "time", SteppingClock())
    passes = []
    while not passes or passes[-1].budget_exhausted:
        passes.append(env.run())
        assert len(passes) < 20, "no progress"
    assert passes[0].budget_exhausted and 0 < passes[0].mailboxes[0].archived < 300
    assert passes[0].ok, "running out of time is not a failure"
    assert sum(p.mailboxes[0].archived for p in passes) == 300
    assert "time budget spent, continuing next pass" in passes[0].summary_line()

    def archive(e):
        return sorted(e.store.db.execute(
            "SELECT l.identity, p.uid, k.rule FROM letters l JOIN letter_locations p ON p.letter_id = l.id"
            " JOIN links k ON k.letter_id = l.id").fetchall())

    assert archive(env) == archive(reference)


def test_parallel_pass_over_20_mailboxes_equals_the_serial_pass(tmp_path, dovecot):
    users = []
    for i in range(20):
        user = dovecot.add_user(f"par{i}-{pysecrets.token_hex(3)}@example.test", pysecrets.token_urlsafe(8))
        deliver_sample(user)
        dovecot.deliver(user.login, "INBOX", sample.letter(
            "info@azuolas.lt", user.login, f"Asmeninis {i}", "x", message_id=f"<own-{i}-{user.login}>"))
        users.append(user)
    serial, parallel = Env(tmp_path / "serial", concurrency=1), Env(tmp_path / "parallel", concurrency=4)
    for env in (serial, parallel):
        for user in users:
            env.add(user)
    serial_result, parallel_result = serial.run(), parallel.run()
    assert serial_result.ok and parallel_result.ok
    for part, (a, b) in enumerate(zip(serial.snapshot(), parallel.snapshot(), strict=True)):
        assert a == b, f"part {part}: {set(a) ^ set(b)}"
    assert sum(m.archived for m in parallel_result.mailboxes) == 8 + 20


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung or firewalled server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_hung_servers_do_not_hold_up_the_others_beyond_their_timeout(tmp_path, imap_user, silent_server):
    deliver_sample(imap_user)
    env = Env(tmp_path, concurrency=3)
    env.config = replace(env.config, network=replace(env.config.network, timeout=2.0))
    for n in range(2):
        hung = env.add(imap_user, email=f"hung{n}@imone.lt", verify=False)
        env.store.update_mailbox(replace(hung, imap_port=silent_server), allow_duplicate=True)  # two, on purpose
    env.add(imap_user)
    started = time.monotonic()
    result = env.run()
    elapsed = time.monotonic() - started
    hung1, hung2, good = result.mailboxes
    assert good.ok and good.archived == 8
    assert not hung1.ok and "did not answer within 2 s" in hung1.errors[0]
    assert not hung2.ok
    assert elapsed < 3.8, f"{elapsed:.1f} s: the hung servers were waited for one after the other"


def hanna(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def test_status_states_and_auth_back_off(tmp_path, imap_user, dovecot):
    good_user = dovecot.add_user(f"ok-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(8))
    deliver_sample(good_user)
    env = Env(tmp_path)
    good = env.add(good_user)
    bad = env.add(imap_user, folders=("INBOX",))
    env.secrets.set(bad.secret_ref, "wrong")
    paused = env.add(good_user, email="paused@imone.lt", scan_active=False)

    report = json.loads(hanna(env, "status", "--json").stdout)
    assert [m["state"] for m in report["mailboxes"]] == ["new", "new", "paused"]
    assert report["last_pass"] is None

    first = env.run()
    assert not first.ok
    report = json.loads(hanna(env, "status", "--json").stdout)
    states = {m["id"]: m for m in report["mailboxes"]}
    assert states[good.id]["state"] == "ok"
    assert states[good.id]["archived_today"] == 8 and states[good.id]["skipped_total"] == 3
    assert states[bad.id]["state"] == "auth failed"
    assert states[bad.id]["retry_after"] is not None and "set-password" in states[bad.id]["detail"]
    assert states[paused.id]["state"] == "paused"
    assert report["alert"] is False  # failing for less than --fail-after
    assert report["last_pass"]["outcome"] == "failed"

    # Backed off: the next timer pass does not try the login again...
    second = env.run()
    (backing_off,) = [m for m in second.mailboxes if m.mailbox_id == bad.id]
    assert backing_off.backing_off_until is not None
    assert env.store.mailbox(bad.id).consecutive_failures == 1
    # ...but naming it does, and a longer streak doubles the wait.
    env.run(mailbox_ids=[bad.id])
    again = env.store.mailbox(bad.id)
    assert again.consecutive_failures == 2 and again.retry_after > env.store.mailbox(bad.id).last_error_at

    # Failing long enough makes status an alert (exit 1), a monitoring check.
    env.store.db.execute("UPDATE mailboxes SET failing_since = '2020-01-01T00:00:00+00:00' WHERE id = ?", [bad.id])
    result = hanna(env, "status", "--fail-after", "60")
    assert result.exit_code == 1
    assert f"Error: mailbox {bad.id} ({imap_user.login}) auth failed: login refused 2 time(s)" in result.output

    # A new password ends the back-off, and the next pass logs in.
    env.secrets.set(bad.secret_ref, imap_user.password)
    env.store.clear_backoff(bad.id)
    assert env.run().ok
    report = json.loads(hanna(env, "status", "--json").stdout)
    assert {m["state"] for m in report["mailboxes"]} == {"ok", "paused"}
    assert hanna(env, "status").exit_code == 0


def test_status_shows_backfill_progress_and_staleness(tmp_path, imap_user, monkeypatch):
    fill(imap_user, 100)
    env = Env(tmp_path, batch_size=10)
    box = env.add(imap_user, folders=("INBOX",))
    env.config = replace(env.config, scan=replace(env.config.scan, time_budget_minutes=0.15))
    monkeypatch.setattr(scan.context, "time", SteppingClock())
    assert env.run().budget_exhausted
    report = json.loads(hanna(env, "status", "--json").stdout)
    (mailbox,) = report["mailboxes"]
    assert mailbox["state"] == "backfilling" and 0 < mailbox["backfill_percent"] < 100
    assert report["last_pass"]["budget_exhausted"] is True

    env.store.db.execute("UPDATE mailboxes SET last_success_at = '2020-01-01T00:00:00+00:00' WHERE id = ?", [box.id])
    result = hanna(env, "status", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["mailboxes"][0]["state"] == "stale"


def test_gap_check_finds_and_reads_letters_never_looked_at(tmp_path, imap_user):
    deliver_sample(imap_user)
    env = Env(tmp_path)
    box = env.add(imap_user, folders=("INBOX",))
    env.run()
    total = env.store.db["letters"].count
    # Forget two letters as if a FETCH had silently left them out, and make the check due.
    state = env.store.folder_state(box.id, "INBOX")
    victims = env.store.db.execute(
        "SELECT letter_id FROM letter_locations WHERE mailbox_id = ? ORDER BY uid LIMIT 2", [box.id]).fetchall()
    uids = [u for (u,) in env.store.db.execute("SELECT uid FROM letter_locations ORDER BY uid LIMIT 2")]
    for (letter_id,) in victims:
        env.store.db.execute("DELETE FROM letters WHERE id = ?", [letter_id])
    from hanna_sync.uidset import UidSet

    seen = UidSet.parse(state.seen_uids)
    remaining = UidSet()
    remaining.add(u for u in range(1, state.last_uid + 1) if u in seen and u not in uids)
    env.store.save_folder_state(replace(state, seen_uids=str(remaining), gap_checked_at="2020-01-01T00:00:00+00:00"))

    result = env.run().mailboxes[0]
    assert result.gaps == 2 and result.archived == 2
    assert env.store.db["letters"].count == total
    assert env.store.folder_state(box.id, "INBOX").gap_found == 2
    assert "gap check found 2 letter(s)" in json.loads(hanna(env, "status", "--json").stdout)["mailboxes"][0]["detail"]
    # Checked: the next pass costs one STATUS again.
    assert env.run().mailboxes[0].new == 0


def test_journald_lines_carry_syslog_priorities():
    import logging

    formatter = JournalFormatter("%(message)s")
    record = logging.LogRecord("hanna_sync", logging.ERROR, __file__, 1, "mailbox %s failed", (3,), None)
    assert formatter.format(record) == "<3>mailbox 3 failed"
    record.levelno = logging.INFO
    assert formatter.format(record).startswith("<6>")


def test_run_under_journald_logs_one_summary_line(tmp_path, imap_user):
    """JOURNAL_STREAM naming stderr switches to priority-prefixed lines and no table on stdout."""
    deliver_sample(imap_user)
    env = Env(tmp_path)
    env.add(imap_user)
    log_path = tmp_path / "journal.txt"
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        proc = subprocess.run(
            [sys.executable, "-m", "hanna_sync", "--config", str(env.config_file()), "run"],
            stdout=log, stderr=log, cwd=ROOT, timeout=60,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        )
    assert proc.returncode == 0
    lines = log_path.read_text().splitlines()
    assert lines[-1].startswith("<6>pass ok: mailboxes 1 ok, 0 failed, 0 server busy, 0 backing off; letters 11 new, 8 archived")
    assert all(line.startswith("<") for line in lines), lines


UNIT_FILES = {"service": "hanna-sync.service", "timer": "hanna-sync.timer", "web": "hanna-sync-web.service"}


def test_the_web_unit_is_hardened_like_the_scan_unit_and_the_steps_start_it():
    """hanna-sync-web.service: the scan unit's user, state directory and every hardening line, and more (no
    secrets, loopback only), restarted when it fails; the steps save and enable it, system-wide and --user."""
    from hanna_sync.admin.setup_guide import systemd_steps, systemd_unit

    scan, web = systemd_unit("service", False, "/x/hanna-sync"), systemd_unit("web", False, "/x/hanna-sync")
    hardening = scan[scan.index("# Hardening"):].splitlines()[1:]
    assert len(hardening) > 15 and all(line in web.splitlines() for line in hardening)
    for line in ("User=hanna-sync", "Group=hanna-sync", "StateDirectory=hanna-sync", "UMask=0077"):
        assert line in scan.splitlines() and line in web.splitlines(), line
    for line in ("ExecStart=/x/hanna-sync --config /etc/hanna-sync/config.toml serve --host 127.0.0.1 --port 8025"
                 " --trusted-proxy 127.0.0.1",
                 "Restart=on-failure", "IPAddressDeny=any", "IPAddressAllow=localhost", "WantedBy=multi-user.target",
                 "InaccessiblePaths=-/etc/hanna-sync/secrets.key -/var/lib/hanna-sync/secrets.key -/var/lib/hanna-sync/secrets.enc"):
        assert line in web.splitlines(), line
    user_web = systemd_unit("web", True, "/x/hanna-sync").splitlines()
    assert "ExecStart=/x/hanna-sync serve --host 127.0.0.1 --port 8025" in user_web and "Restart=on-failure" in user_web
    exe = shlex.quote(str(Path(sys.executable).parent / "hanna-sync"))
    steps, user_steps = systemd_steps(False), systemd_steps(True)
    assert f"{exe} setup-guide systemd --unit web | sudo tee /etc/systemd/system/hanna-sync-web.service" in steps
    assert "sudo systemctl enable --now hanna-sync-web.service" in steps
    assert f"{exe} setup-guide systemd --user --unit web > ~/.config/systemd/user/hanna-sync-web.service" in user_steps
    assert "systemctl --user enable --now hanna-sync-web.service" in user_steps


def test_the_user_web_units_command_serves(tmp_path):
    """Its ExecStart as a shell runs it (the port made 0: any free one) starts the server."""
    from hanna_sync.admin.setup_guide import systemd_unit

    command = unit_command(systemd_unit("web", True))
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "8025"]
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command[:-1], "0"], stdout=out, stderr=subprocess.STDOUT, env=shell_env(home),
                                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while "Serving the archive on http://127.0.0.1:" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def _verify(units: list[Path], user: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if user:
        runtime = units[0].parent / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *(["--user"] if user else []), *map(str, units)],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="systemd-analyze not installed (CI installs systemd)")
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_generated_units_pass_systemd_analyze_verify_as_printed(tmp_path, user):
    """The units exactly as `setup-guide systemd --unit` prints them: ExecStart is this installed
    hanna-sync by its absolute path, so verify finds it with no editing (issue 14, item 16)."""
    units = []
    for name, file_name in UNIT_FILES.items():
        result = CliRunner().invoke(cli, ["setup-guide", "systemd", *(["--user"] if user else []), "--unit", name])
        assert result.exit_code == 0, result.output
        assert "Documentation=" not in result.output  # nothing installs a file it could point at
        (tmp_path / file_name).write_text(result.output)
        units.append(tmp_path / file_name)
    for unit in (units[0], units[2]):
        exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
        assert shlex.split(exec_start.removeprefix("ExecStart="))[0] == str(Path(sys.executable).parent / "hanna-sync")
    verified = _verify(units, user)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr  # unknown keys are only warnings: allow none


def test_the_checkouts_systemd_units_are_what_setup_guide_prints_for_the_readme_install():
    """systemd/ in the checkout is no second copy to drift: it is setup-guide's output for the path the
    README's install steps create (/opt/hanna-sync/bin/hanna-sync)."""
    from hanna_sync.admin.setup_guide import README_EXECUTABLE, systemd_unit

    top = Path(__file__).resolve().parent.parent / "systemd"
    for user, folder in ((False, top), (True, top / "user")):
        assert sorted(p.name for p in folder.glob("*.*") if p.suffix != ".md") == sorted(UNIT_FILES.values())
        for name, file_name in UNIT_FILES.items():
            assert (folder / file_name).read_text() == systemd_unit(name, user, README_EXECUTABLE), (
                f"{folder / file_name}: regenerate it with setup-guide systemd --unit {name}")
    assert f"ExecStart={README_EXECUTABLE} --config /etc/hanna-sync/config.toml run" in (
        top / "hanna-sync.service").read_text()
    assert (f"ExecStart={README_EXECUTABLE} --config /etc/hanna-sync/config.toml serve --host 127.0.0.1 --port 8025"
            " --trusted-proxy 127.0.0.1") in (
        top / "hanna-sync-web.service").read_text()
    readme = (top.parent / "README.md").read_text()
    assert f"{README_EXECUTABLE} setup-guide systemd" in readme and "python3 -m venv /opt/hanna-sync" in readme


def shell_env(home: Path) -> dict[str, str]:
    """An admin's login shell: a HOME, no hanna-sync variables, no XDG overrides, no unit's variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "HANNA_SYNC_")) and k not in
           ("STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM")}
    return {**env, "HOME": str(home)}


def unit_command(text: str) -> list[str]:
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(exec_start.removeprefix("ExecStart="))


def test_the_user_unit_scans_the_database_add_mailbox_wrote_at_the_shell(tmp_path, imap_user):
    """With no config, `add-mailbox` at a shell and the user unit's pass use one database, whatever the
    unit's environment adds ($STATE_DIRECTORY once sent the timer to a new, empty one: issue 14, item 1)."""
    from hanna_sync.demo import _write_csv

    deliver_sample(imap_user)
    dc, home = imap_user.dovecot, tmp_path / "home"
    home.mkdir()
    shell = shell_env(home)
    exe = str(Path(sys.executable).parent / "hanna-sync")

    def at_shell(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=shell, cwd=tmp_path, timeout=60, **kw)

    _write_csv(tmp_path / "customers.csv", sample.CUSTOMERS, with_domain=True)
    assert at_shell("import", "customers", str(tmp_path / "customers.csv")).returncode == 0
    added = at_shell("add-mailbox", "--user", "staff", "--email", imap_user.login, "--provider", "custom",
                     "--imap-host", dc.host, "--imap-port", str(dc.imaps_port), "--ca-file", str(dc.ca_file),
                     "--folder", "INBOX", "--folder", "Išsiųsti", "--password-stdin", input=imap_user.password + "\n")
    assert added.returncode == 0, added.stderr

    unit = at_shell("setup-guide", "systemd", "--user", "--unit", "service").stdout
    assert not [line for line in unit.splitlines() if line.startswith(("Environment", "StateDirectory",
                                                                        "ConfigurationDirectory", "WorkingDirectory"))]
    # What systemd --user adds to a service's environment when a unit (or an older one) asks for it.
    unit_env = {**shell, "STATE_DIRECTORY": str(home / ".local/state/hanna-sync"),
                "CONFIGURATION_DIRECTORY": str(home / ".config/hanna-sync"), "INVOCATION_ID": "0" * 32}
    passed = subprocess.run(unit_command(unit), capture_output=True, text=True, env=unit_env, cwd="/", timeout=60)
    assert passed.returncode == 0, passed.stderr
    assert "pass ok: mailboxes 1 ok" in passed.stderr and "no mailboxes configured" not in passed.stderr
    report = json.loads(at_shell("status", "--json").stdout)
    archived = int(re.search(r"letters \d+ new, (\d+) archived", passed.stderr).group(1))
    assert archived > 0 and report["mailboxes"][0]["archived_total"] == archived
    assert report["database_warning"] is None
    assert not (home / ".local/state/hanna-sync/hanna-sync.db").exists()


def test_a_pass_over_a_database_with_no_mailbox_fails_loudly_and_names_the_other_database(tmp_path):
    """The trap's other half: a pass that opens a new, empty database says so in the journal (priority
    warning), exits 1 and leaves it on record for `status`, naming the known place that holds one."""
    from hanna_sync.admin import mailboxes
    from hanna_sync.db.store import Store

    home = tmp_path / "home"
    env = shell_env(home)
    current = home / ".local/share/hanna-sync/hanna-sync.db"
    elsewhere = home / ".local/state/hanna-sync/hanna-sync.db"  # where the old user unit put it
    Store(elsewhere).add_mailbox(mailboxes.new_mailbox("staff", "jonas@imone.lt", "custom", {"imap_host": "127.0.0.1"}))

    log_path = tmp_path / "journal.txt"
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        proc = subprocess.run([sys.executable, "-m", "hanna_sync", "run"], stdout=log, stderr=log, cwd=ROOT, timeout=60,
                              env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    lines = log_path.read_text().splitlines()
    assert proc.returncode == 1, lines
    assert lines[0].startswith(f"<4>no mailboxes configured in {current}, but another hanna-sync database exists:"
                               f" {elsewhere}"), lines
    assert lines[-1].startswith("<4>pass failed: mailboxes 0 ok") and f"no mailboxes configured in {current};" in lines[-1]

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hanna_sync", "status", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=60)

    as_json = status("--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["alert"] is True and report["last_pass"]["outcome"] == "failed"
    assert report["database_warning"]["database"] == str(current)
    assert str(elsewhere) in report["database_warning"]["other_databases"]
    shown = status()
    assert shown.returncode == 1 and f"Error: no mailboxes configured in {current}, but" in shown.stderr
    # Once the database in use has a mailbox, nothing is said any more.
    Store(current).add_mailbox(mailboxes.new_mailbox("staff", "ona@imone.lt", "custom", {"imap_host": "127.0.0.1"}))
    assert json.loads(status("--json").stdout)["database_warning"] is None


def test_an_archive_whose_mailboxes_were_all_removed_is_no_alarm(tmp_path, monkeypatch):
    """Letters kept, every mailbox removed on purpose, no other database around: a choice, so neither
    `run` nor `status` fails over it (a monitoring check would page forever)."""
    from hanna_sync.db.database_warning import database_warning
    from hanna_sync.db.store import Store
    from hanna_sync.mail.message import parse_letter

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    store = Store(tmp_path / "archive" / "hs.db")
    assert database_warning(store, store.path) is not None  # empty: the loud case
    raw = sample.letter("ruta@azuolas.lt", sample.STAFF, "Užsakymas", "Tekstas", message_id="<kept@azuolas.lt>")
    store.archive_letter("mid:kept@azuolas.lt", parse_letter(raw), raw, len(raw))
    assert database_warning(store, store.path) is None
