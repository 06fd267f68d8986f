"""add-mailbox, folders, set-password and edit-mailbox verifying against the real Dovecot."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.demo.sandbox import DOVECOT_BIN, CertificateAuthority, Dovecot
from hanna_sync.remote import imap


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


@pytest.fixture(scope="module")
def courier():
    """A second sandbox Dovecot naming folders as Courier-IMAP does: INBOX.Sent, INBOX.Drafts."""
    if not os.path.exists(DOVECOT_BIN):
        pytest.skip(f"{DOVECOT_BIN} not found")
    with Dovecot(courier=True) as dc:
        yield dc


@pytest.fixture
def courier_user(courier):
    return courier.add_user(f"c{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(12))


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


# -- the default folders: INBOX and the Sent folder, found by its flag or by its name ------------------------

def saved(hanna) -> list[dict]:
    return json.loads(hanna("list-mailboxes", "--json").stdout)


def test_an_unflagged_sent_folder_is_found_by_its_name(hanna, imap_user):
    """The sandbox flags no folder \\Sent (no SPECIAL-USE), as many hosting servers: the one folder with a Sent
    name is scanned, whatever its case and accents, add-mailbox says so, and `test` does not claim --folder."""
    dc = imap_user.dovecot
    for folder in ("Archyvas", "ISSIUSTI LAISKAI", "Juodraščiai"):  # "Išsiųsti laiškai", typed without accents
        dc.create_folder(imap_user.login, folder)
    result = hanna(*add_args(imap_user), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert saved(hanna)[0]["folders"] == ["INBOX", "ISSIUSTI LAISKAI"]
    assert saved(hanna)[0]["folders_chosen"] is False
    assert ("Note: 'ISSIUSTI LAISKAI' is taken for the Sent folder by its name (no folder is flagged \\Sent)"
            in result.stderr)

    test = hanna("test", "1", "--no-smtp")
    assert test.exit_code == 0, test.output
    folders_line = next(line for line in test.stdout.splitlines() if line.split()[:2] == ["IMAP", "folders"])
    assert "(found by default when the mailbox was saved: INBOX and the Sent folder)" in folders_line
    assert "chosen with --folder" not in test.stdout


def test_a_courier_style_server_has_its_sent_folder_under_inbox(hanna, courier_user):
    dc = courier_user.dovecot
    for folder in ("INBOX.Drafts", "INBOX.Sent", "INBOX.Trash"):
        dc.create_folder(courier_user.login, folder)
    result = hanna(*add_args(courier_user, "--json"), input=courier_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["folders"] == ["INBOX", "INBOX.Sent"]
    assert "'INBOX.Sent' is taken for the Sent folder by its name" in result.stderr


@pytest.mark.parametrize("folders, why", [
    (["Archyvas"], "none flagged \\Sent, none with a Sent folder's name such as 'Sent', 'Sent Items' or 'Išsiųsti'"),
    (["Sent", "Sent Items"], "none flagged \\Sent, and 2 have a Sent folder's name: Sent, Sent Items"),
])
def test_no_single_sent_folder_is_said_at_add_time_and_by_test(hanna, imap_user, folders, why):
    dc = imap_user.dovecot
    for folder in folders:
        dc.create_folder(imap_user.login, folder)
    result = hanna(*add_args(imap_user), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert saved(hanna)[0]["folders"] == ["INBOX"]
    listing = ", ".join(sorted(["INBOX", *folders]))
    assert (f"Note: no Sent folder found ({why}): add yours with --folder so sent letters are archived too"
            f" (the server has: {listing})") in result.stderr

    # `test` of the saved mailbox says so too, and how to add one; once there is one, which.
    test = hanna("test", "1", "--no-smtp")
    assert "add yours with 'hanna-sync edit-mailbox 1 --folder ...'" in test.stdout
    if folders == ["Archyvas"]:
        dc.create_folder(imap_user.login, "Išsiųsti")
        test = hanna("test", "1", "--no-smtp")
        assert ("no Sent folder was found when the mailbox was saved, and 'Išsiųsti' is one now: add it with"
                " 'hanna-sync edit-mailbox 1 --folder INBOX --folder \"Išsiųsti\"'") in test.stdout


def test_folders_given_are_said_to_be_chosen(hanna, imap_user):
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    assert hanna(*add_args(imap_user, "--folder", "INBOX"), input=imap_user.password + "\n").exit_code == 0
    assert saved(hanna)[0]["folders"] == ["INBOX"] and saved(hanna)[0]["folders_chosen"] is True
    test = hanna("test", "1", "--no-smtp")
    assert "(chosen with --folder)" in test.stdout and "no Sent folder" not in test.stdout


def test_a_folder_typed_in_decomposed_unicode_is_the_servers_composed_one(hanna, imap_user):
    composed = "Išsiųsti"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    imap_user.dovecot.create_folder(imap_user.login, composed)
    result = hanna(*add_args(imap_user, "--folder", "INBOX", "--folder", decomposed), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert saved(hanna)[0]["folders"] == ["INBOX", composed]  # as the server spells it: what SELECT needs
    assert "differs from the server's 'Išsiųsti' only in its Unicode form" in result.stderr

    # A name that differs in case or accents is not taken, but the error points at the near one.
    result = hanna("edit-mailbox", "1", "--folder", "INBOX", "--folder", "issiusti")
    assert result.exit_code == 1
    assert "has no folder 'issiusti' ('issiusti' differs from the server's 'Išsiųsti' in case or accents)" in result.output


# -- the same folder, the same account ----------------------------------------------------------------------

def test_the_same_folder_twice_is_merged_with_a_note_and_scanned_once(hanna, imap_user):
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    nfd = unicodedata.normalize("NFD", "Išsiųsti")
    result = hanna(*add_args(imap_user, "--folder", "INBOX", "--folder", "inbox", "--folder", "Išsiųsti",
                             "--folder", nfd), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert saved(hanna)[0]["folders"] == ["INBOX", "Išsiųsti"]
    assert ("folder 'inbox' was given twice (INBOX is the same folder in any case): it is scanned once, as 'INBOX'"
            in result.stderr)
    assert "folder 'Išsiųsti' was given twice: it is scanned once, as 'Išsiųsti'" in result.stderr
    run = json.loads(hanna("run", "--json").stdout)
    assert run["mailboxes"][0]["folders_checked"] == 2

    # Without verification too (names other than INBOX are compared exactly there: no server to ask).
    result = hanna("edit-mailbox", "1", "--no-verify", "--folder", "Inbox", "--folder", "INBOX", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["folders"] == ["INBOX"]
    assert "folder 'INBOX' was given twice" in result.stderr


def test_the_same_account_twice_is_refused_unless_allowed(hanna, imap_user):
    assert hanna(*add_args(imap_user), input=imap_user.password + "\n").exit_code == 0
    # Another staff member, the login in other case, the same server: the same account.
    args = add_args(imap_user)
    args[args.index("--user") + 1] = "ona"
    args[args.index("--email") + 1] = imap_user.login.upper()
    result = hanna(*args, input=imap_user.password + "\n")
    assert result.exit_code == 2
    assert result.output == (f"Error: mailbox 1 ({imap_user.login} of staff) is already login {imap_user.login} on"
                             f" 127.0.0.1:{imap_user.dovecot.imaps_port}: a second one would scan every letter twice;"
                             " change that one with 'hanna-sync edit-mailbox 1', or give --allow-duplicate to keep"
                             " both\n")
    assert len(saved(hanna)) == 1

    # A mailbox on the other port is not that account; changing it into a duplicate is refused the same way.
    result = hanna(*args, "--imap-security", "starttls", "--imap-port", str(imap_user.dovecot.imap_port),
                   input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    result = hanna("edit-mailbox", "2", "--imap-security", "ssl", "--imap-port", str(imap_user.dovecot.imaps_port))
    assert result.exit_code == 2 and "mailbox 1 (" in result.output and "--allow-duplicate" in result.output
    assert saved(hanna)[1]["imap_security"] == "starttls"
    result = hanna("edit-mailbox", "2", "--imap-security", "ssl", "--imap-port", str(imap_user.dovecot.imaps_port),
                   "--allow-duplicate")
    assert result.exit_code == 0, result.output
    # Kept as a duplicate on purpose, it stays editable without repeating the option.
    assert hanna("edit-mailbox", "2", "--no-sync-leads").exit_code == 0
    assert hanna(*add_args(imap_user, "--allow-duplicate"), input=imap_user.password + "\n").exit_code == 2  # user+address


# -- IMAP-only mailboxes: --no-smtp -------------------------------------------------------------------------

def test_an_imap_only_mailbox_has_smtp_not_configured_and_can_get_it_back(hanna, imap_user):
    dc = imap_user.dovecot
    result = hanna(*add_args(imap_user, "--no-smtp", "--json"), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    box = json.loads(result.stdout)
    assert (box["smtp_host"], box["smtp_port"], box["smtp_security"]) == (None, None, None)

    # `test` passes: SMTP is not configured, not failed (the custom preset would point it at the IMAP host).
    test = hanna("test", "1")
    assert test.exit_code == 0, test.output
    assert test.stdout.splitlines()[-1] == "IMAP passed; SMTP not configured."
    data = json.loads(hanna("test", "1", "--json").stdout)
    assert data["ok"] is True and data["mailbox"]["smtp"] is None
    assert [(s["stage"], s["ok"], s["skipped"]) for s in data["stages"] if s["protocol"] == "smtp"] == [
        ("host", True, True)]
    assert next(s["detail"] for s in data["stages"] if s["protocol"] == "smtp").startswith("not configured")

    # edit-mailbox adds an SMTP server again (the preset's security and port), and drops it.
    result = hanna("edit-mailbox", "1", "--smtp-host", dc.host, "--json")
    assert result.exit_code == 0, result.output
    box = json.loads(result.stdout)
    assert (box["smtp_host"], box["smtp_port"], box["smtp_security"]) == (dc.host, 465, "ssl")
    result = hanna("edit-mailbox", "1", "--no-smtp", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["smtp_host"] is None



# -- a CA trusted through SSL_CERT_FILE in the admin's shell ------------------------------------------------

def test_a_ca_trusted_only_through_ssl_cert_file_is_kept_as_the_mailboxs_ca_file(hanna, imap_user, monkeypatch):
    """The timer's environment has no SSL_CERT_FILE: without the CA kept, every pass would fail "not trusted"."""
    ca = str(imap_user.dovecot.ca_file)
    args = [a for a in add_args(imap_user, "--no-smtp", "--json") if a not in ("--ca-file", ca)]
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    imap._ssl_context.cache_clear()  # contexts are cached per process; this one must see the variable
    result = hanna(*args, input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    kept = json.loads(result.stdout)["ca_file"]
    assert kept.startswith(f"{hanna.db.parent}/ca/{imap_user.login}-") and kept.endswith(".pem")
    assert (f"Note: the certificate of 127.0.0.1 is trusted only through SSL_CERT_FILE, which the timer does not"
            f" have: a copy of {ca}, {kept}, is saved as this mailbox's --ca-file") in result.stderr
    # A copy beside the database, which the service reads: the original may be under /home or /tmp, out of
    # the system unit's reach. Only its owner reads it.
    assert Path(kept).read_bytes() == imap_user.dovecot.ca_file.read_bytes()
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600

    # As the timer runs it: without the variable (and without the context cached while it was set).
    monkeypatch.delenv("SSL_CERT_FILE")
    imap._ssl_context.cache_clear()
    test = hanna("test", "1")
    assert test.exit_code == 0, test.output

    # Not verified, nothing can be found out: a warning instead.
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    result = hanna("add-mailbox", "--user", "ona", "--email", "ona@example.test", "--imap-host", "127.0.0.1",
                   "--no-verify", "--password-stdin", input="pw\n")
    assert result.exit_code == 0, result.output
    assert ("Note: SSL_CERT_FILE is set here but not for the timer, and the mailbox was not verified: if its server's"
            " certificate is trusted only through it, give --ca-file") in result.stderr
    imap._ssl_context.cache_clear()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the hashed CA directory")
def test_ssl_cert_file_is_not_kept_when_the_trust_came_from_ssl_cert_dir(hanna, imap_user, monkeypatch, tmp_path):
    """SSL_CERT_FILE set as well, but another CA: saving it would make every pass of the timer refuse the server."""
    ca = str(imap_user.dovecot.ca_file)
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-subject_hash", "-noout", "-in", ca], check=True,
                                  capture_output=True, text=True).stdout.strip()
    shutil.copyfile(ca, cert_dir / f"{subject_hash}.0")
    other = CertificateAuthority(tmp_path / "other", name="another CA").ca_file
    monkeypatch.setenv("SSL_CERT_DIR", str(cert_dir))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    imap._ssl_context.cache_clear()
    try:
        args = [a for a in add_args(imap_user, "--no-smtp", "--json") if a not in ("--ca-file", ca)]
        result = hanna(*args, input=imap_user.password + "\n")
    finally:
        imap._ssl_context.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ca_file"] is None
    assert ("Note: the certificate of 127.0.0.1 is trusted only through SSL_CERT_FILE and SSL_CERT_DIR, which the"
            " timer does not have, so its passes will refuse it: give --ca-file") in result.stderr
    assert not (hanna.db.parent / "ca").exists()
