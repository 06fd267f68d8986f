"""Secrets and privacy: no password anywhere it could be read, private files, certificates always checked,
and no password sent in clear unless the admin said so (and then only there)."""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hanna_sync.cli import cli
from hanna_sync.db.store import Store
from hanna_sync.remote import imap
from tests.faults import ImapProxy
from tests.helpers import Env, deliver_sample

ROOT = Path(__file__).resolve().parent.parent


class Hanna:
    """`hanna-sync` as a separate process with umask 022 (as a sysadmin's shell has), everything it says kept."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.said: list[str] = []
        self.argv_seen: list[bytes] = []

    def __call__(self, *args: str, input: str | None = None, watch: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "hanna_sync", "--config", str(self.config), *args]
        proc = subprocess.Popen(["sh", "-c", 'umask 022 && exec "$0" "$@"', *command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        if watch:  # what `ps` and /proc show other users while it runs
            threading.Thread(target=self._watch, args=(proc.pid,), daemon=True).start()
        out, err = proc.communicate(input, timeout=120)
        self.said += [out, err]
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def _watch(self, pid: int) -> None:
        for _ in range(2000):
            try:
                self.argv_seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
                self.argv_seen.append(Path(f"/proc/{pid}/environ").read_bytes())
            except OSError:
                return
            time.sleep(0.001)


def customers_csv(directory: Path) -> Path:
    """The sample customers as a CRM export."""
    import csv

    from hanna_sync.demo import sample

    path = directory / "customers.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "email", "domain", "contacts"])
        for c in sample.CUSTOMERS:
            writer.writerow([c.id, c.name, c.email or "", c.domain or "", "; ".join(k.email for k in c.contacts)])
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_password_in_the_database_files_logs_outputs_help_or_argv(tmp_path, imap_user):
    deliver_sample(imap_user)
    dc = imap_user.dovecot
    state = tmp_path / "state"  # not there yet: hanna-sync makes it
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{state / "hs.db"}"\n')
    hanna = Hanna(config)
    password, wrong = imap_user.password, "Wrong-" + imap_user.password[::-1]

    assert hanna("import", "customers", str(customers_csv(tmp_path))).returncode == 0
    added = hanna("-v", "add-mailbox", "--user", "staff", "--email", imap_user.login, "--provider", "custom",
                  "--imap-host", dc.host, "--imap-port", str(dc.imaps_port), "--ca-file", str(dc.ca_file),
                  "--folder", "INBOX", "--folder", "Išsiųsti", "--password-stdin", "--json", input=password + "\n")
    assert added.returncode == 0, added.stderr
    assert hanna("-v", "run", "--json", watch=True).returncode == 0
    assert any(b"hanna_sync" in seen for seen in hanna.argv_seen), "the watcher saw nothing"
    letters = json.loads(hanna("letters", "--json").stdout)
    assert letters, hanna.said
    letter = str(letters[0]["id"])
    for args in (["list-mailboxes", "--json"], ["list-mailboxes"], ["status", "--json"], ["letters"],
                 ["show", letter, "--json"], ["show", letter], ["folders", "1", "--json"], ["doctor", "--json"],
                 ["test", "1", "--json", "--trace"], ["test", "1", "--trace"],
                 ["backup", str(tmp_path / "backup.db")], ["export", letter, "-o", str(tmp_path / "letter.eml")]):
        result = hanna("-v", *args)
        assert result.returncode == (10 if args[0] == "test" else 0), (args, result.stderr)  # no SMTP server: 10
    assert hanna("set-password", "1", "--password-stdin", input=password + "\n").returncode == 0
    assert hanna("set-password", "1", "--password-stdin", input=wrong + "\n").returncode == 1  # refused: not saved
    assert hanna("set-password", "1", "--no-verify", "--password-stdin", input=wrong + "\n").returncode == 0
    failed = hanna("-v", "run", watch=True)
    assert failed.returncode == 1 and "refused the login" in failed.stderr
    for command in ["", *cli.commands, "import customers"]:  # the help texts (in-process: 20 commands)
        hanna.said.append(hanna_in_process(config, *command.split(), "--help").output)

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"hs.db", "secrets.enc", "secrets.key", "hanna-sync.lock", "backup.db",
                                       "letter.eml"}
    for secret in (password, wrong):
        for p in files:
            assert secret.encode() not in p.read_bytes(), p  # secrets.enc too: it is encrypted
        for text in hanna.said:
            assert secret not in text
        for seen in hanna.argv_seen:
            assert secret.encode() not in seen


def test_files_are_0600_and_the_state_directory_0700_whatever_the_umask(tmp_path, imap_user):
    deliver_sample(imap_user)
    dc = imap_user.dovecot
    state = tmp_path / "var" / "lib" / "hanna-sync"
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{state / "hs.db"}"\n')
    hanna = Hanna(config)
    assert hanna("import", "customers", str(customers_csv(tmp_path))).returncode == 0
    assert hanna("add-mailbox", "--user", "staff", "--email", imap_user.login, "--provider", "custom",
                 "--imap-host", dc.host, "--imap-port", str(dc.imaps_port), "--ca-file", str(dc.ca_file),
                 "--folder", "INBOX", "--password-stdin", input=imap_user.password + "\n").returncode == 0
    assert hanna("run").returncode == 0
    assert hanna("backup", str(tmp_path / "b.db")).returncode == 0
    assert hanna("export", json.loads(hanna("letters", "--json").stdout)[0]["id"].__str__(), "-o",
                 str(tmp_path / "l.eml")).returncode == 0
    assert mode(state) == 0o700
    store = Store(state / "hs.db")  # open: the -wal and -shm files exist now
    for name in ("hs.db", "hs.db-wal", "hs.db-shm", "secrets.enc", "secrets.key", "hanna-sync.lock"):
        assert mode(state / name) == 0o600, name
    store.close()
    assert mode(tmp_path / "b.db") == 0o600 and mode(tmp_path / "l.eml") == 0o600
    assert hanna("doctor").returncode == 0


# -- certificates ----------------------------------------------------------------------------------

def test_certificates_are_checked_by_default() -> None:
    context = imap.ssl_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_certificate_for_another_name_or_from_an_unknown_ca_is_refused_before_any_login(tmp_path, imap_user,
                                                                                          monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    deliver_sample(imap_user)
    dc = imap_user.dovecot
    env = Env(tmp_path)
    box = env.add(imap_user)
    with ImapProxy(dc, cert=dc.make_cert(["mail.other.example"])) as proxy:
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        m = env.run().mailboxes[0]
        assert not m.ok and m.errors == [(
            "the certificate of 127.0.0.1 is not trusted (IP address mismatch, certificate is not valid for"
            " '127.0.0.1'.); for a private CA pass --ca-file, or check the server name")]
        assert proxy.client_bytes == b""  # nothing, not even a greeting reply, went over it
    with ImapProxy(dc) as proxy:
        env.store.update_mailbox(replace(box, imap_port=proxy.port, ca_file=None))  # only the system's CAs
        m = env.run().mailboxes[0]
        assert not m.ok and "is not trusted (unable to get local issuer certificate)" in m.errors[0]
        assert proxy.client_bytes == b""
    assert env.store.db["letters"].count == 0


# -- passwords in clear ----------------------------------------------------------------------------

def hanna_in_process(config: Path, *args: str, input: str | None = None):
    from click.testing import CliRunner

    return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)


def test_security_none_is_refused_unless_allowed_and_then_only_sends_where_allowed(tmp_path, imap_user):
    deliver_sample(imap_user)
    dc = imap_user.dovecot
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n')
    with ImapProxy(dc, client_tls=False) as plain:  # a server without TLS
        add = ["add-mailbox", "--user", "staff", "--email", imap_user.login, "--provider", "custom",
               "--imap-host", "127.0.0.1", "--imap-port", str(plain.port), "--imap-security", "none",
               "--folder", "INBOX", "--password-stdin", "--json"]
        refused = hanna_in_process(config, *add, input=imap_user.password + "\n")
        assert refused.exit_code == 2
        assert refused.stderr.strip() == ("Error: --imap-security none would send the password unencrypted: use ssl or"
                                          " starttls, or give --allow-plaintext (only on a network you trust)")
        assert plain.client_bytes == b"" and not (tmp_path / "secrets.enc").exists()

        allowed = hanna_in_process(config, *add, "--allow-plaintext", input=imap_user.password + "\n")
        assert allowed.exit_code == 0, allowed.output
        box = json.loads(allowed.stdout)
        assert box["allow_plaintext"] is True
        assert hanna_in_process(config, "run").exit_code == 0
        assert imap_user.password.encode() in plain.client_bytes  # in clear, as allowed

        # A mailbox saved as none without the flag (before this version): the pass refuses, and says how to fix.
        store = Store(tmp_path / "hs.db")
        store.db.execute("UPDATE mailboxes SET allow_plaintext = 0")
        plain.reset()
        result = hanna_in_process(config, "run", "--json")
        assert result.exit_code == 1
        (error,) = json.loads(result.stdout)["mailboxes"][0]["errors"]
        assert error == (f"refusing to send the password for {imap_user.login} to 127.0.0.1:{plain.port} unencrypted"
                         f" (IMAP security none); fix: 'hanna-sync edit-mailbox {box['id']} --imap-security ssl'"
                         f" (or starttls), or on a network you trust 'hanna-sync edit-mailbox {box['id']}"
                         " --allow-plaintext'")
        assert imap_user.password.encode() not in plain.client_bytes and "LOGIN" not in plain.commands

        # `test` stops at its tls stage: the password is not sent there either.
        plain.reset()
        result = hanna_in_process(config, "test", str(box["id"]), "--json")
        assert result.exit_code == 12
        (failed,) = [s for s in json.loads(result.stdout)["stages"] if not s["ok"] and s["protocol"] == "imap"]
        assert failed["stage"] == "tls" and "--allow-plaintext" in failed["hint"]
        assert imap_user.password.encode() not in plain.client_bytes

        # Turning the flag off while the security stays none is refused; with TLS it is fine.
        result = hanna_in_process(config, "edit-mailbox", str(box["id"]), "--no-allow-plaintext", "--no-verify")
        assert result.exit_code == 2 and "--allow-plaintext" in result.stderr
        result = hanna_in_process(config, "edit-mailbox", str(box["id"]), "--imap-security", "ssl", "--imap-port",
                                  str(dc.imaps_port), "--ca-file", str(dc.ca_file), "--no-allow-plaintext", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["allow_plaintext"] is False
        assert hanna_in_process(config, "run").exit_code == 0


@pytest.fixture
def smtp_recorder():
    """A plaintext SMTP server that offers AUTH and keeps every byte a client sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"220 recorder ESMTP\r\n")
                file = conn.makefile("rb")
                for line in file:
                    received.extend(line)
                    if line.upper().startswith(b"EHLO"):
                        conn.sendall(b"250-recorder\r\n250 AUTH PLAIN LOGIN\r\n")
                    elif line.upper().startswith(b"QUIT"):
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"235 ok\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], received
    listener.close()


def test_smtp_without_tls_gets_no_password_unless_allowed(tmp_path, imap_user, smtp_recorder):
    port, received = smtp_recorder
    dc = imap_user.dovecot
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n')
    args = ["test", "--email", imap_user.login, "--imap-host", dc.host, "--imap-port", str(dc.imaps_port),
            "--ca-file", str(dc.ca_file), "--folder", "INBOX", "--smtp-host", "127.0.0.1", "--smtp-port", str(port),
            "--smtp-security", "none", "--password-stdin", "--json"]
    result = hanna_in_process(config, *args, input=imap_user.password + "\n")
    assert result.exit_code == 12, result.output
    failed = [s for s in json.loads(result.stdout)["stages"] if not s["ok"]]
    assert [(s["protocol"], s["stage"]) for s in failed] == [("smtp", "tls")]
    assert b"AUTH" not in received and imap_user.password.encode() not in received

    result = hanna_in_process(config, *args, "--allow-plaintext", input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert b"AUTH PLAIN" in received  # sent, because allowed
