"""The Debian package, built by scripts/build-deb.sh and installed on this machine with dpkg, as a sysadmin would.

Root only, and it changes the machine (the hanna-sync user, /etc/hanna-sync, /var/lib/hanna-sync, /opt/hanna-sync):
CI runs it on a throwaway machine; elsewhere it runs only where no hanna-sync is installed, and purges what it
installed. What it proves: the installed command, units, man page and completion; what postinst sets up; a pass
run as the unit runs it, as the hanna-sync user, through the installed config, against the sandbox Dovecot;
`dpkg -r` keeping the data, a reinstall finding it, `dpkg -P` deleting what it says; an upgrade backing the
database up before migrating it, once.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from hanna_sync import __version__
from hanna_sync.db.schema import migrations
from tests.helpers import deliver_sample

ROOT = Path(__file__).resolve().parent.parent
ETC = Path("/etc/hanna-sync")
STATE = Path("/var/lib/hanna-sync")
CONFIG = ETC / "config.toml"
DATABASE = STATE / "hanna-sync.db"
KEY = ETC / "secrets.key"
UNITS = ("hanna-sync.service", "hanna-sync.timer", "hanna-sync-web.service")


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "installs a package: needs root"
    if not shutil.which("dpkg-deb") or not Path("/usr/bin/python3").exists():
        return "needs dpkg-deb and Debian's /usr/bin/python3"
    if subprocess.run(["dpkg-query", "-W", "-f=${Status}", "hanna-sync"], capture_output=True,
                      text=True).stdout.startswith("install ok") or ETC.exists() or STATE.exists():
        return "hanna-sync is installed (or its data is) on this machine: not touching it"
    return None


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    reason = _unusable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run(["bash", str(ROOT / "scripts" / "build-deb.sh"), str(out)], capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.name == f"hanna-sync_{__version__}_{_arch()}.deb"
    return path


@pytest.fixture
def purged_after():
    """Whatever a test installs is purged again, and the user it made removed: the next test starts clean."""
    yield
    subprocess.run(["dpkg", "--purge", "hanna-sync"], capture_output=True)
    subprocess.run(["userdel", "hanna-sync"], capture_output=True)
    subprocess.run(["groupdel", "hanna-sync"], capture_output=True)


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert done.returncode == 0, f"dpkg {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def as_service_user(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A command as the units run it: the hanna-sync user, none of this test process's variables."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8"}  # systemd's
    return subprocess.run(["/usr/sbin/runuser", "-u", "hanna-sync", "--", *argv], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def hanna(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = as_service_user("/usr/bin/hanna-sync", *args, stdin=stdin)
    assert done.returncode == 0, f"hanna-sync {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def unit_command(unit: str) -> list[str]:
    """ExecStart= of an installed unit, split as systemd splits it."""
    text = Path("/usr/lib/systemd/system", unit).read_text()
    assert "User=hanna-sync" in text
    return shlex.split(next(line for line in text.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):])


def add_sandbox_mailbox(user, dovecot) -> None:
    ca = ETC / "sandbox-ca.pem"
    shutil.copyfile(dovecot.ca_file, ca)
    ca.chmod(0o644)
    (STATE / "customers.csv").write_text("id,name,email,domain,contacts\n"
                                         "C-1001,UAB Ąžuolas,info@azuolas.lt,azuolas.lt,ruta@azuolas.lt\n")
    os.chown(STATE / "customers.csv", pwd.getpwnam("hanna-sync").pw_uid, -1)
    hanna("import", "customers", str(STATE / "customers.csv"))
    hanna("add-mailbox", "--user", "jonas", "--email", user.login, "--imap-host", "127.0.0.1",
          "--imap-port", str(dovecot.imaps_port), "--imap-security", "ssl", "--ca-file", str(ca), "--no-smtp",
          "--folder", "INBOX", "--folder", "Išsiųsti", "--password-stdin", stdin=user.password + "\n")


def linked_letters() -> list[dict]:
    return json.loads(hanna("--config", str(CONFIG), "letters", "--customer", "C-1001", "--json").stdout)


def test_install_pass_remove_reinstall_purge(deb, purged_after, imap_user, dovecot):
    # -- install: postinst sets up the user, the directories, the config and the key, and starts no timer
    installed = dpkg("-i", str(deb))
    said = installed.stdout + installed.stderr
    assert "hanna-sync.timer not started: no mailbox yet" in said, said
    assert "add-mailbox" in said

    # The command, its version, the units, the man page and the completion, where Debian looks for them.
    version = subprocess.run(["/usr/bin/hanna-sync", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"hanna-sync, version {__version__}"
    assert subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                          text=True).stdout.strip() == __version__
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no",
                               *(f"/usr/lib/systemd/system/{u}" for u in UNITS)], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    assert unit_command("hanna-sync.service") == ["/usr/bin/hanna-sync", "--config", str(CONFIG), "run"]
    for unit in UNITS:
        assert Path("/usr/lib/systemd/user", unit).is_file()
    assert subprocess.run(["man", "-w", "hanna-sync"], capture_output=True,
                          text=True).stdout.strip() == "/usr/share/man/man1/hanna-sync.1.gz"
    rendered = subprocess.run(["man", "-P", "cat", "hanna-sync"], capture_output=True, text=True,
                              env={**os.environ, "MANWIDTH": "100"})
    assert "setup-service" in rendered.stdout and "migrate" in rendered.stdout
    completion = subprocess.run(
        ["bash", "-c", "source /usr/share/bash-completion/completions/hanna-sync; COMP_WORDS=(hanna-sync setu);"
                       " COMP_CWORD=1; _hanna_sync_completion hanna-sync; printf '%s\\n' \"${COMPREPLY[@]}\""],
        capture_output=True, text=True)
    assert {"setup-guide", "setup-service"} <= set(completion.stdout.split()), completion.stderr
    assert Path("/usr/share/zsh/vendor-completions/_hanna-sync").is_file()
    assert Path("/usr/share/fish/vendor_completions.d/hanna-sync.fish").is_file()
    for doc in ("README.md", "config.example.toml", "changelog.gz", "copyright"):
        assert Path("/usr/share/doc/hanna-sync", doc).is_file()

    assert pwd.getpwnam("hanna-sync").pw_shell == "/usr/sbin/nologin"
    assert owner(STATE) == ("hanna-sync", "hanna-sync", 0o700)
    assert owner(ETC) == ("root", "hanna-sync", 0o750)
    assert owner(CONFIG) == ("root", "hanna-sync", 0o640)
    assert owner(KEY) == ("hanna-sync", "hanna-sync", 0o600)
    key = KEY.read_bytes()
    loaded = as_service_user("/opt/hanna-sync/bin/python", "-c", "from hanna_sync.config import load_config; "
                             f"c = load_config({str(CONFIG)!r}); print(c.database, c.secrets_key_file)")
    assert loaded.stdout.split() == [str(DATABASE), str(KEY)], loaded.stderr
    assert not DATABASE.exists()  # nothing scanned, nothing made

    # -- a pass, as the unit runs it, as the hanna-sync user, against the sandbox Dovecot
    deliver_sample(imap_user)
    add_sandbox_mailbox(imap_user, dovecot)
    ran = as_service_user(*unit_command("hanna-sync.service"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    letters = linked_letters()
    assert letters, "the pass linked nothing to C-1001"
    assert owner(DATABASE)[:2] == ("hanna-sync", "hanna-sync")
    # setup-service again now that a mailbox exists: everything kept; the timer would now start.
    again = subprocess.run(["/usr/bin/hanna-sync", "setup-service", "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = {s["step"]: s for s in json.loads(again.stdout)["steps"]}
    assert steps["config"]["outcome"] == "kept" and steps["secrets-key"]["outcome"] == "kept"
    # It found the mailbox; systemd does not run on this machine, so the timer is left with how to start it.
    assert steps["timer"]["outcome"] == "left" and "systemd is not running here" in steps["timer"]["detail"]

    # -- remove: the program goes, the data, config and key stay
    removed = dpkg("-r", "hanna-sync")
    assert "Kept: /etc/hanna-sync (config, secrets key) and /var/lib/hanna-sync" in removed.stdout
    assert not Path("/usr/bin/hanna-sync").exists() and not Path("/opt/hanna-sync").exists()
    assert DATABASE.exists() and KEY.read_bytes() == key and CONFIG.exists()

    # -- reinstall: it finds them; the stored password still decrypts (the key was never replaced)
    dpkg("-i", str(deb))
    assert KEY.read_bytes() == key
    assert linked_letters() == letters
    dovecot.deliver(imap_user.login, "INBOX", _late_letter())
    ran = as_service_user(*unit_command("hanna-sync.service"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(linked_letters()) == len(letters) + 1

    # -- purge: says what it deletes, deletes it, keeps the user as it says
    purged = dpkg("-P", "hanna-sync")
    assert "Deleting:" in purged.stdout
    for path in (ETC, STATE):
        assert str(path) in purged.stdout and not path.exists()
    assert "Not deleted: the system user and group hanna-sync" in purged.stdout
    assert pwd.getpwnam("hanna-sync")


def _late_letter() -> bytes:
    return (b"From: =?utf-8?q?R=C5=ABta?= <ruta@azuolas.lt>\r\nTo: jonas@imone.lt\r\n"
            b"Subject: After the reinstall\r\nMessage-ID: <after-reinstall@azuolas.lt>\r\n"
            b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nStill archived.\r\n")


@pytest.fixture(scope="module")
def newer_deb(deb, tmp_path_factory) -> tuple[Path, str]:
    """The same tree as the next release: its version bumped, built the same way."""
    tree = tmp_path_factory.mktemp("next")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (tree / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name.decode())
    major, minor, patch = (int(x) for x in __version__.split("."))
    newer = f"{major}.{minor}.{patch + 1}"
    init = tree / "hanna_sync" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{newer}"'))
    built = subprocess.run(["bash", str(tree / "scripts" / "build-deb.sh"), str(tree / "out")], capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.strip().splitlines()[-1]), newer


def test_an_upgrade_backs_the_database_up_then_migrates_it_once(deb, newer_deb, purged_after):
    package, newer = newer_deb
    dpkg("-i", str(deb))
    # The database an older release wrote: its schema stops three migrations short of this one's.
    names = [m.name for m in migrations._migrations]
    old = names[:-3]
    subprocess.run(["/opt/hanna-sync/bin/python", "-c", f"""
import sqlite3, sqlite_utils
from hanna_sync.db.schema import migrations
db = sqlite_utils.Database(sqlite3.connect({str(DATABASE)!r}, isolation_level=None))
migrations.apply(db, stop_before={names[len(old)]!r})
db.execute("INSERT INTO customers (id, name, email, updated_at) VALUES ('C-7', 'Senas, UAB', 'a@senas.lt', 'x')")
"""], check=True, user="hanna-sync")
    key = KEY.read_bytes()

    upgraded = dpkg("-i", str(package))  # prerm upgrade of the old, postinst configure OLD of the new
    assert f"Unpacking hanna-sync ({newer}) over ({__version__})" in upgraded.stdout, upgraded.stdout
    assert f"applied 3 migration(s) for hanna-sync {newer}" in upgraded.stdout, upgraded.stdout
    backups = list((STATE / "backups").iterdir())
    assert len(backups) == 1 and backups[0].name.startswith(f"hanna-sync-{__version__}-")
    assert str(backups[0]) in upgraded.stdout
    assert owner(backups[0]) == ("hanna-sync", "hanna-sync", 0o600)
    assert owner(STATE / "backups") == ("hanna-sync", "hanna-sync", 0o700)
    with sqlite3.connect(backups[0]) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")] == old
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Senas, UAB",)]
    with sqlite3.connect(DATABASE) as conn:
        rows = conn.execute("SELECT name, hanna_sync_version FROM _sqlite_migrations ORDER BY rowid").fetchall()
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Senas, UAB",)]
    assert [r[0] for r in rows] == names
    assert {r[1] for r in rows[len(old):]} == {newer}
    assert subprocess.run(["/usr/bin/hanna-sync", "--version"], capture_output=True,
                          text=True).stdout.strip() == f"hanna-sync, version {newer}"
    assert KEY.read_bytes() == key and "timer" in upgraded.stdout

    # Once: the same version again (and its postinst run again, as dpkg --configure would) finds nothing.
    again = dpkg("-i", str(package))
    assert "nothing to apply" in again.stdout
    rerun = subprocess.run(["/var/lib/dpkg/info/hanna-sync.postinst", "configure", __version__],
                           capture_output=True, text=True)
    assert rerun.returncode == 0 and "nothing to apply" in rerun.stdout, rerun.stdout + rerun.stderr
    assert list((STATE / "backups").iterdir()) == backups
