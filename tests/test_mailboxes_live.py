"""add-mailbox, folders, set-password and edit-mailbox verifying against the real Dovecot."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli


@pytest.fixture
def hanna(tmp_path, monkeypatch):
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n[network]\ntimeout = 5\n')

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)

    invoke.db = tmp_path / "hs.db"
    return invoke


def add_args(user, *extra: str, security: str = "ssl") -> list[str]:
    dc = user.dovecot
    port = dc.imaps_port if security == "ssl" else dc.imap_port
    return ["add-mailbox", "--user", "staff", "--email", user.login, "--imap-host", dc.host,
            "--imap-port", str(port), "--imap-security", security, "--ca-file", str(dc.ca_file),
            "--password-stdin", *extra]


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_add_mailbox_verifies_and_finds_the_sent_folder(hanna, imap_user, security):
    imap_user.dovecot.create_folder(imap_user.login, "Sent")
    result = hanna(*add_args(imap_user, "--json", security=security), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    box = json.loads(result.stdout)
    assert box["folders"] == ["INBOX", "Sent"]
    assert box["imap_security"] == security
    assert imap_user.password.encode() not in hanna.db.read_bytes()


def test_wrong_password_is_one_line_and_saves_nothing(hanna, imap_user):
    result = hanna(*add_args(imap_user), input="not-the-password\n")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"Error: 127.0.0.1 refused the login for {imap_user.login} "
                                    "([AUTHENTICATIONFAILED] Authentication failed.); check the password")
    assert "not-the-password" not in result.output
    assert json.loads(hanna("list-mailboxes", "--json").stdout) == []


def test_missing_folder_is_refused_with_the_folders_the_server_has(hanna, imap_user):
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    result = hanna(*add_args(imap_user, "--folder", "INBOX", "--folder", "Sent"), input=imap_user.password + "\n")
    assert result.exit_code == 1
    assert "has no folder 'Sent'" in result.output and "Išsiųsti" in result.output
    assert json.loads(hanna("list-mailboxes", "--json").stdout) == []


def test_untrusted_certificate_is_named_and_ca_file_fixes_it(hanna, imap_user):
    args = [a for a in add_args(imap_user) if a not in ("--ca-file", str(imap_user.dovecot.ca_file))]
    result = hanna(*args, input=imap_user.password + "\n")
    assert result.exit_code == 1
    assert "certificate of 127.0.0.1 is not trusted" in result.output and "--ca-file" in result.output


def test_implicit_tls_on_the_plain_port_says_use_starttls(hanna, imap_user):
    args = add_args(imap_user)
    args[args.index("--imap-port") + 1] = str(imap_user.dovecot.imap_port)
    result = hanna(*args, input=imap_user.password + "\n")
    assert result.exit_code == 1
    assert "does not speak implicit TLS: it answered in plaintext" in result.output
    assert "use --imap-security starttls with this port (usually 143; the server offers STARTTLS)" in result.output


def test_folders_lists_decoded_names_with_counts(hanna, imap_user):
    dc = imap_user.dovecot
    dc.create_folder(imap_user.login, "Išsiųsti")
    dc.deliver(imap_user.login, "Išsiųsti", b"Subject: a\r\n\r\nx\r\n")
    dc.deliver(imap_user.login, "INBOX", b"Subject: b\r\n\r\ny\r\n", flags="S")
    assert hanna(*add_args(imap_user, "--folder", "INBOX", "--folder", "Išsiųsti"),
                 input=imap_user.password + "\n").exit_code == 0
    rows = {r["name"]: r for r in json.loads(hanna("folders", "1", "--json").stdout)}
    assert rows["Išsiųsti"]["messages"] == 1 and rows["Išsiųsti"]["selected"] is True
    assert rows["INBOX"]["messages"] == 1
    table = hanna("folders", "1").output
    assert "Išsiųsti" in table and "I&AWE-si" not in table


def test_set_password_verifies_before_storing(hanna, imap_user):
    assert hanna(*add_args(imap_user), input=imap_user.password + "\n").exit_code == 0
    result = hanna("set-password", "1", "--password-stdin", input="wrong\n")
    assert result.exit_code == 1 and "refused the login" in result.output
    # The good password is still the stored one: folders can log in.
    assert hanna("folders", "1").exit_code == 0
    assert hanna("set-password", "1", "--password-stdin", input=imap_user.password + "\n").exit_code == 0


def test_edit_mailbox_reverifies_a_connection_change(hanna, imap_user):
    assert hanna(*add_args(imap_user), input=imap_user.password + "\n").exit_code == 0
    result = hanna("edit-mailbox", "1", "--folder", "Nope")
    assert result.exit_code == 1 and "has no folder 'Nope'" in result.output
    assert json.loads(hanna("list-mailboxes", "--json").stdout)[0]["folders"] == ["INBOX"]
    result = hanna("edit-mailbox", "1", "--imap-security", "starttls", "--imap-port",
                   str(imap_user.dovecot.imap_port), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imap_security"] == "starttls"
