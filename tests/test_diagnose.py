"""`hanna-sync test`: every cause reproduced for real on 127.0.0.1, and its verdict and fix asserted.

Dovecot (the session sandbox) and aiosmtpd stand for the ordinary servers; a small scripted server says
what they cannot (Gmail's and Office 365's replies, LOGINDISABLED) and serves made-up certificates.
Nothing here changes the shared Dovecot: other certificates are served by servers of the test's own.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hanna_sync import diagnose
from hanna_sync.admin.mailboxes import new_mailbox
from hanna_sync.cli import cli
from hanna_sync.cli import diagnostics as cli_diagnostics
from hanna_sync.errors import ExitCode

TIMEOUT = 1.0  # what a silent server is given: short, so the timeout cases stay quick
OPTIONS = diagnose.Options(timeout=TIMEOUT)


# -- servers of the tests' own ---------------------------------------------------------------------

class Scripted(socketserver.ThreadingTCPServer):
    """A scripted IMAP server on 127.0.0.1: a greeting, canned tagged replies by command, optional TLS."""

    daemon_threads = True

    def __init__(self, greeting: str, replies: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.greeting, self.replies, self.tls = greeting, replies or {}, tls
        super().__init__(("127.0.0.1", 0), _ScriptedSession)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _ScriptedSession(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Scripted = self.server  # type: ignore[assignment]
        conn = self.request
        try:
            if server.tls:
                conn = server.tls.wrap_socket(conn, server_side=True)
            conn.sendall(server.greeting.encode() + b"\r\n")
            for raw in conn.makefile("rb"):
                tag, _, rest = raw.decode().strip().partition(" ")
                command = rest.split(" ")[0].upper()
                reply = server.replies.get(command, "{tag} BAD unknown command")
                conn.sendall(reply.replace("{tag}", tag).encode() + b"\r\n")
                if command == "LOGOUT":
                    return
        except OSError:  # the client went away: the test is over
            pass


def imap_replies(login: str = "{tag} OK Logged in", capabilities: str = "IMAP4rev1 AUTH=PLAIN") -> dict[str, str]:
    return {
        "CAPABILITY": f"* CAPABILITY {capabilities}\r\n{{tag}} OK done",
        "LOGIN": login,
        "LIST": '* LIST (\\HasNoChildren) "/" INBOX\r\n{tag} OK done',
        "EXAMINE": "* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 3] ok\r\n{tag} OK [READ-ONLY] done",
        "LOGOUT": "* BYE\r\n{tag} OK bye",
    }


@pytest.fixture
def scripted() -> Iterator:
    servers: list[Scripted] = []

    def start(*args, **kwargs) -> Scripted:
        servers.append(Scripted(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpServers:
    """aiosmtpd on STARTTLS and on implicit TLS; AUTH checks `users`, a refusal says `refusal`."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.users: dict[str, str] = {}
        self.refusal: str | None = None  # None: aiosmtpd's own "535 5.7.8 Authentication credentials invalid"
        self.silent = False  # no reply at all to a wrong password
        self.messages: list = []
        self.starttls = Controller(self, hostname="127.0.0.1", port=free_port(), tls_context=context,
                                   authenticator=self.authenticate)
        # aiosmtpd offers AUTH on implicit TLS only when not asked to require TLS (it does not count that TLS)
        self.implicit = Controller(self, hostname="127.0.0.1", port=free_port(), ssl_context=context,
                                   authenticator=self.authenticate, auth_require_tls=False)

    def authenticate(self, server, session, envelope, mechanism, data) -> AuthResult:
        if self.users.get(data.login.decode()) == data.password.decode():
            return AuthResult(success=True)
        return AuthResult(success=False, handled=self.silent, message=self.refusal)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 OK queued"


@pytest.fixture(scope="module")
def smtp_servers(dovecot) -> Iterator[SmtpServers]:
    cert, key = dovecot.make_cert(["127.0.0.1"])  # signed by the sandbox CA, like Dovecot's own
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    servers = SmtpServers(context)
    servers.starttls.start()
    servers.implicit.start()
    yield servers
    servers.starttls.stop()
    servers.implicit.stop()


@pytest.fixture
def smtp(smtp_servers, imap_user) -> SmtpServers:
    smtp_servers.users = {imap_user.login: imap_user.password}
    smtp_servers.refusal = None
    smtp_servers.silent = False
    smtp_servers.messages.clear()
    return smtp_servers


def issue(directory: Path, names: list[str], *, expired: bool = False, ca: tuple | None = None,
          authority: bool = False) -> tuple:
    """A certificate for `names` (a CA's with `authority`): self-signed, or signed by `ca` (cert, key).

    Returns (cert, key, cert_path, key_path); the files are named after names[0] in `directory`.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer_cert, issuer_key = ca if ca else (None, key)
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(days=60), now - timedelta(days=1)) if expired else (now - timedelta(hours=1), now + timedelta(days=30))
    is_ca = authority
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=is_ca,
                                     crl_sign=is_ca, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if not is_ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{names[0]}.pem", directory / f"{names[0]}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key, cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


# -- running the stages -----------------------------------------------------------------------------

@pytest.fixture
def box(imap_user):
    """A mailbox (not saved) on the sandbox Dovecot over implicit TLS, with the given settings changed."""
    dc = imap_user.dovecot

    def make(provider: str = "custom", **settings):
        values = {"imap_host": dc.host, "imap_port": dc.imaps_port, "imap_security": "ssl",
                  "ca_file": str(dc.ca_file),
                  # the scripted servers speak plaintext: these tests are about what comes after TLS
                  "allow_plaintext": "none" in (settings.get("imap_security"), settings.get("smtp_security")),
                  **settings}
        return new_mailbox("staff", imap_user.login, provider, values)

    return make


def failed(report: diagnose.Report) -> diagnose.Stage:
    assert report.failure is not None, [s.as_dict() for s in report.stages]
    return report.failure


def names(report: diagnose.Report, protocol: str = "imap") -> list[str]:
    return [s.stage for s in report.stages if s.protocol == protocol]


def test_every_imap_stage_passes_with_the_right_password(box, imap_user):
    dc = imap_user.dovecot
    dc.create_folder(imap_user.login, "Sent")
    dc.deliver(imap_user.login, "INBOX", b"Subject: a\r\n\r\nx\r\n")
    report = diagnose.check_imap(box(), imap_user.password, OPTIONS)
    assert report.failure is None and report.exit_code == 0
    assert names(report) == ["charset", "dns", "tcp", "tls", "greeting", "capabilities", "auth", "folders",
                             "folder", "folder"]
    by_stage = {s.stage: s.detail for s in report.stages}
    assert "certificate for localhost, 127.0.0.1 from hanna-sync sandbox CA" in by_stage["tls"]
    assert by_stage["greeting"].startswith("* OK Dovecot") and "CAPABILITY" not in by_stage["greeting"]
    assert "IDLE yes, CONDSTORE yes, QRESYNC yes" in by_stage["auth"]
    folders = [s.detail for s in report.stages if s.stage == "folder"]
    assert folders[0].startswith("INBOX: 1 message, UIDVALIDITY ") and "opened read-only (EXAMINE)" in folders[0]
    assert folders[1].startswith("Sent: 0 messages")
    assert report.folders == ["INBOX", "Sent"]


def test_starttls_on_the_plain_port_runs_tls_after_the_greeting(box, imap_user):
    report = diagnose.check_imap(box(imap_security="starttls", imap_port=imap_user.dovecot.imap_port),
                                 imap_user.password, OPTIONS)
    assert report.failure is None
    assert names(report)[:6] == ["charset", "dns", "tcp", "greeting", "tls", "capabilities"]


def test_wrong_password_names_the_login_and_the_username_option(box, imap_user):
    report = diagnose.check_imap(box(), "not-the-password", OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("auth", ExitCode.AUTH)
    assert stage.detail == f"127.0.0.1 refused the login for {imap_user.login} ([AUTHENTICATIONFAILED] Authentication failed.)"
    assert stage.hint.startswith("check the password; the login name sent was the email address")
    assert "--username" in stage.hint


def test_implicit_tls_on_the_starttls_port_says_use_starttls(box, imap_user):
    report = diagnose.check_imap(box(imap_port=imap_user.dovecot.imap_port), imap_user.password, OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("tls", ExitCode.TLS)
    assert "does not speak implicit TLS: it answered in plaintext ('* OK Dovecot" in stage.detail
    assert stage.hint.startswith("use --imap-security starttls with this port (usually 143; the server offers STARTTLS)")


def test_starttls_on_the_implicit_tls_port_says_use_ssl_without_waiting_out_the_timeout(box, imap_user):
    report = diagnose.check_imap(box(imap_security="starttls"), imap_user.password, diagnose.Options(timeout=5))
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("greeting", ExitCode.TLS)
    assert "speaks implicit TLS: it waits for a TLS handshake" in stage.detail
    assert stage.hint.startswith("use --imap-security ssl with this port (usually 993)")
    assert stage.seconds < 4  # named after GREETING_PATIENCE, not after the 5 s timeout


def test_untrusted_certificate_names_its_issuer_and_ca_file(box, imap_user):
    report = diagnose.check_imap(box(ca_file=None), imap_user.password, OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("tls", ExitCode.TLS)
    assert stage.detail == ("the certificate of 127.0.0.1 is not trusted (unable to get local issuer certificate):"
                            " issued by hanna-sync sandbox CA for localhost, 127.0.0.1")
    assert "--ca-file" in stage.hint and "--insecure" in stage.hint
    assert names(report)[-1] == "tls"  # stopped there


def test_insecure_goes_on_past_the_certificate_but_still_fails_the_tls_stage(box, imap_user):
    report = diagnose.check_imap(box(ca_file=None), imap_user.password, diagnose.Options(timeout=TIMEOUT, insecure=True))
    tls = next(s for s in report.stages if s.stage == "tls")
    assert not tls.ok and tls.detail.endswith("going on anyway (--insecure)")
    assert "--insecure goes on" not in tls.hint
    assert [s.stage for s in report.stages if not s.ok] == ["tls"]
    assert "auth" in names(report) and report.exit_code == ExitCode.TLS


def test_certificate_for_another_host_name_says_which_names(box, imap_user, scripted):
    cert, key = imap_user.dovecot.make_cert(["mail.example.test", "imap.example.test"])
    server = scripted("* OK ready", imap_replies(), tls=server_context(cert, key))
    stage = failed(diagnose.check_imap(box(imap_port=server.port), imap_user.password, OPTIONS))
    assert stage.stage == "tls"
    assert stage.detail == f"the certificate of 127.0.0.1:{server.port} is for mail.example.test, imap.example.test, not 127.0.0.1"
    assert stage.hint.startswith("connect with a name it is for (--imap-host mail.example.test)")


def test_self_signed_and_expired_certificates_are_named_so(box, imap_user, scripted, tmp_path):
    _, _, cert, key = issue(tmp_path, ["localhost"])
    server = scripted("* OK ready", imap_replies(), tls=server_context(cert, key))
    stage = failed(diagnose.check_imap(box(imap_port=server.port, imap_host="localhost"), imap_user.password, OPTIONS))
    assert stage.detail.startswith("the certificate of localhost is not trusted: it is self-signed (issued by localhost")
    assert "--ca-file CERT.pem" in stage.hint

    ca = issue(tmp_path, ["Test CA"], authority=True)
    (tmp_path / "expired").mkdir()
    _, _, cert, key = issue(tmp_path / "expired", ["localhost"], expired=True, ca=ca[:2])
    server = scripted("* OK ready", imap_replies(), tls=server_context(cert, key))
    mailbox = box(imap_port=server.port, imap_host="localhost", ca_file=str(ca[2]))
    stage = failed(diagnose.check_imap(mailbox, imap_user.password, OPTIONS))
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    assert stage.detail.startswith(f"the certificate of localhost expired on {yesterday} (issued by Test CA for localhost)")
    assert "renew" in stage.hint and "clock" in stage.hint


def test_closed_port_is_refused_and_names_the_usual_ports(box, imap_user):
    with socket.socket() as bound:  # bound, never listening: the kernel refuses connections
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        report = diagnose.check_imap(box(imap_port=port), imap_user.password, OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("tcp", ExitCode.CONNECT)
    assert stage.detail == f"127.0.0.1 port {port} refused the connection"
    assert "IMAP uses 993 with ssl, 143 with starttls" in stage.hint and "the usual port is 993" in stage.hint


def test_a_port_that_never_completes_the_connection_times_out(box, imap_user):
    # A listener whose accept queue is full drops new SYNs, like a firewall that drops packets.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full, socket.create_connection(full.getsockname()):
        port = full.getsockname()[1]
        stage = failed(diagnose.check_imap(box(imap_port=port), imap_user.password, OPTIONS))
    assert stage.stage == "tcp" and stage.exit_code == ExitCode.CONNECT
    assert stage.detail == f"no answer from 127.0.0.1 port {port} within 1 s"
    assert stage.hint.startswith("a firewall drops the connection")


@pytest.mark.parametrize("security, stage_name, detail", [
    ("ssl", "tls", "accepted the connection but did not answer the TLS handshake within 1 s"),
    ("starttls", "greeting", "accepted the connection but sent no greeting within 1 s"),
])
def test_a_port_that_accepts_and_never_answers(box, imap_user, security, stage_name, detail):
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:  # connections complete, nobody speaks
        port = silent.getsockname()[1]
        stage = failed(diagnose.check_imap(box(imap_port=port, imap_security=security), imap_user.password, OPTIONS))
    assert stage.stage == stage_name
    assert stage.detail == f"127.0.0.1:{port} {detail}"
    assert "firewall or proxy" in stage.hint


def test_a_name_that_does_not_resolve(box, imap_user):
    report = diagnose.check_imap(box("serveriai", imap_host="imone.serveriai.invalid"), imap_user.password, OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("dns", ExitCode.CONNECT)
    assert stage.detail == "imone.serveriai.invalid does not resolve: no such name"
    assert stage.hint.startswith("check --imap-host for a typo; the serveriai.lt server name is different for every customer")


def test_a_missing_folder_lists_the_ones_the_server_has(box, imap_user):
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    report = diagnose.check_imap(box(folders=["INBOX", "Sent"]), imap_user.password, OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("folders", ExitCode.FOLDER)
    assert stage.detail == "127.0.0.1 has no folder 'Sent'"
    assert "(the server has: INBOX, Išsiųsti)" in stage.hint


def test_a_charset_parsing_would_ignore_fails_its_stage(box, imap_user):
    report = diagnose.check_imap(box(imap_charset="base64"), imap_user.password, OPTIONS)  # a codec, not a charset
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("charset", ExitCode.CHARSET)
    assert "'base64' is not a text charset" in stage.detail and "windows-1257" in stage.hint
    assert diagnose.check_imap(box(imap_charset="Windows-1257"), imap_user.password, OPTIONS).failure is None


def test_a_password_with_lithuanian_letters_is_named_not_crashed_on(box, imap_user, smtp):
    report = diagnose.check(smtp_box(box, smtp), "slaptažodis", OPTIONS)
    failures = [(s.protocol, s.stage, s.exit_code) for s in report.stages if not s.ok]
    assert failures == [("imap", "auth", ExitCode.AUTH), ("smtp", "auth", ExitCode.AUTH)]
    # IMAP sends it with AUTHENTICATE PLAIN in UTF-8 (and the server judges it); smtplib cannot send it at all.
    assert "refused the login" in report.failure.detail
    smtp_auth = [s for s in report.stages if s.protocol == "smtp" and s.stage == "auth"][0]
    assert smtp_auth.detail == "the password has characters outside ASCII (such as ą or š), which the SMTP login cannot send"
    assert not any("slaptažodis" in f"{s.detail} {s.hint}" for s in report.stages)


# -- what providers say, from a scripted server ---------------------------------------------------------

@pytest.mark.parametrize("provider, reply, expected", [
    ("gmail", "NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
     "the account has 2-step verification on, so Google wants an app password instead of the account password:"
     " Google Account -> Security -> App passwords"),
    ("gmail", "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", "Other (custom name) \"hanna-sync\" -> Generate"),
    ("yahoo", "NO [AUTHENTICATIONFAILED] LOGIN Invalid credentials", "Yahoo wants an app password"),
    ("outlook", "NO LOGIN failed.", "Exchange Online no longer takes passwords for IMAP"),
    ("custom", "NO AUTHENTICATE failed.", "IMAP.AccessAsUser.All"),
    ("custom", "NO [ALERT] Too many simultaneous connections. (Failure)", "close other mail programs"),
])
def test_provider_replies_to_login_get_their_fix(box, imap_user, scripted, provider, reply, expected):
    server = scripted("* OK Gimap ready", imap_replies(login="{tag} " + reply))
    report = diagnose.check_imap(box(provider, imap_port=server.port, imap_security="none"), "pw", OPTIONS)
    stage = failed(report)
    # A server over its connection limit is busy (the session refused, 14), never a wrong password (16).
    busy = "Too many simultaneous connections" in reply
    assert (stage.stage, report.exit_code) == ("auth", ExitCode.SERVER if busy else ExitCode.AUTH)
    assert not busy or "not a password problem" in stage.hint
    assert reply.removeprefix("NO ") in stage.detail
    assert expected in stage.hint


def test_the_app_password_steps_are_spelled_out(box, imap_user, scripted):
    server = scripted("* OK Gimap ready", imap_replies(login="{tag} NO [ALERT] Application-specific password required"))
    stage = failed(diagnose.check_imap(box("gmail", imap_port=server.port, imap_security="none"), "pw", OPTIONS))
    assert ("Google Account -> Security -> App passwords (https://myaccount.google.com/apppasswords) ->"
            " Other (custom name) \"hanna-sync\" -> Generate -> use the 16-letter password") in stage.hint


def test_a_bye_greeting_is_the_session_refused(box, imap_user, scripted):
    server = scripted("* BYE Too many connections from your IP address, try again later")
    stage = failed(diagnose.check_imap(box(imap_port=server.port, imap_security="none"), "pw", OPTIONS))
    assert (stage.stage, stage.exit_code) == ("greeting", ExitCode.SERVER)
    assert stage.detail == "127.0.0.1 turned the session down: * BYE Too many connections from your IP address, try again later"
    assert "close other mail programs" in stage.hint


def test_logindisabled_before_tls_says_use_tls(box, imap_user, scripted):
    server = scripted("* OK ready", imap_replies(capabilities="IMAP4rev1 STARTTLS LOGINDISABLED"))
    report = diagnose.check_imap(box(imap_port=server.port, imap_security="none"), "pw", OPTIONS)
    stage = failed(report)
    assert (stage.stage, report.exit_code) == ("capabilities", ExitCode.TLS)
    assert stage.detail.startswith("127.0.0.1 refuses LOGIN without TLS (LOGINDISABLED)")
    assert stage.hint == "use --imap-security starttls (usually port 143) or ssl (usually port 993)"
    assert "it offers STARTTLS" in next(s.hint for s in report.stages if s.stage == "tls")


def test_starttls_not_offered(box, imap_user, scripted):
    server = scripted("* OK ready", imap_replies())
    stage = failed(diagnose.check_imap(box(imap_port=server.port, imap_security="starttls"), "pw", OPTIONS))
    assert (stage.stage, stage.exit_code) == ("tls", ExitCode.TLS)
    assert stage.detail == "127.0.0.1 does not offer STARTTLS (it offers: AUTH=PLAIN IMAP4REV1)"
    assert stage.hint.startswith("use --imap-security ssl (usually port 993)")


def test_an_smtp_server_on_the_imap_port_is_named(box, imap_user, smtp):
    stage = failed(diagnose.check_imap(box(imap_port=smtp.starttls.port, imap_security="starttls"), "pw", OPTIONS))
    assert (stage.stage, stage.exit_code) == ("greeting", ExitCode.SERVER)
    assert stage.detail.startswith(f"127.0.0.1:{smtp.starttls.port} is an SMTP server, not IMAP: it greets with '220 ")


# -- SMTP against aiosmtpd -----------------------------------------------------------------------------

def smtp_box(box, smtp, security="starttls", **settings):
    port = smtp.starttls.port if security == "starttls" else smtp.implicit.port
    return box(**{"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": security, **settings})


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_smtp_stages_pass_and_send_a_real_test_message(box, imap_user, smtp, security):
    lines: list[str] = []
    options = diagnose.Options(timeout=TIMEOUT, send_to="ona@example.test", trace=lines.append)
    report = diagnose.check(smtp_box(box, smtp, security), imap_user.password, options)
    assert report.failure is None, report.summary()
    expected = (["charset", "dns", "tcp", "greeting", "tls", "ehlo", "auth", "send"] if security == "starttls"
                else ["charset", "dns", "tcp", "tls", "greeting", "ehlo", "auth", "send"])
    assert names(report, "smtp") == expected
    [message] = smtp.messages
    assert (message.mail_from, message.rcpt_tos) == (imap_user.login, ["ona@example.test"])
    assert b"Subject: hanna-sync test message" in message.content
    assert "SMTP C: AUTH PLAIN ***" in lines
    assert any(line.startswith("IMAP C: ") and line.endswith(f" LOGIN {imap_user.login} ***") for line in lines)
    assert not any(imap_user.password in line for line in lines)


def test_no_test_message_unless_asked(box, imap_user, smtp):
    report = diagnose.check(smtp_box(box, smtp), imap_user.password, OPTIONS)
    send = report.stages[-1]
    assert (send.stage, send.ok, send.skipped) == ("send", True, True) and smtp.messages == []


@pytest.mark.parametrize("refusal, expected", [
    (None, "check the password"),
    ("534-5.7.9 Application-specific password required. For more information, go to\r\n"
     "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor d2sm123 - gsmtp",
     "Other (custom name) \"hanna-sync\" -> Generate -> use the 16-letter password"),
    ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
     " Visit https://aka.ms/smtp_auth_disabled for more information.",
     "Microsoft 365 admin center -> Users -> Active users -> the user -> Mail -> Manage email apps -> Authenticated SMTP"),
    ("535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy."
     " Contact your administrator.", "Manage security defaults"),
    ("535 5.7.8 Error: authentication failed: Too many failed login attempts", "too many failed logins"),
])
def test_smtp_login_refusals_get_their_fix(box, imap_user, smtp, refusal, expected):
    smtp.refusal = refusal
    report = diagnose.check(smtp_box(box, smtp), "wrong-password", OPTIONS)
    stage = next(s for s in report.stages if s.protocol == "smtp" and not s.ok)
    assert stage.stage == "auth" and stage.exit_code == ExitCode.AUTH
    assert stage.detail.startswith(f"127.0.0.1 refused the login for {imap_user.login} (5")
    assert expected in stage.hint


def test_a_server_silent_after_auth_is_a_timeout_not_a_refusal(box, imap_user, smtp):
    smtp.silent = True
    report = diagnose.check(smtp_box(box, smtp), "wrong-password", OPTIONS)
    stage = report.stages[-1]
    assert (stage.protocol, stage.stage, stage.ok) == ("smtp", "auth", False)
    assert stage.detail == f"127.0.0.1:{smtp.starttls.port} stopped answering: nothing within 1 s"


def test_office365_smtp_auth_hint_has_the_powershell_and_the_link(box, imap_user, smtp):
    smtp.refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox."
    report = diagnose.check(smtp_box(box, smtp), "wrong-password", OPTIONS)
    hint = report.stages[-1].hint
    assert f"Set-CASMailbox -Identity {imap_user.login} -SmtpClientAuthenticationDisabled $false" in hint
    assert "Set-TransportConfig -SmtpClientAuthenticationDisabled $false" in hint
    assert "https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission" in hint


def test_smtp_implicit_tls_on_the_starttls_port_says_use_starttls(box, imap_user, smtp):
    mailbox = smtp_box(box, smtp, "ssl", smtp_port=smtp.starttls.port)
    stage = next(s for s in diagnose.check(mailbox, imap_user.password, OPTIONS).stages if not s.ok)
    assert (stage.protocol, stage.stage, stage.exit_code) == ("smtp", "tls", ExitCode.TLS)
    assert "does not speak implicit TLS: it answered in plaintext ('220 " in stage.detail
    assert stage.hint.startswith("use --smtp-security starttls with this port (usually 587)")


def test_an_imap_only_mailbox_reports_smtp_as_not_configured(box, imap_user):
    mailbox = box(no_smtp=True)  # the custom preset would otherwise send through the IMAP host
    assert (mailbox.smtp_host, mailbox.smtp_port, mailbox.smtp_security) == (None, None, None)
    report = diagnose.check(mailbox, imap_user.password, OPTIONS)
    assert report.exit_code == 0
    smtp_stages = [s for s in report.stages if s.protocol == "smtp"]
    assert [(s.stage, s.ok, s.skipped) for s in smtp_stages] == [("host", True, True)]
    assert smtp_stages[0].detail.startswith("not configured: the mailbox has no SMTP server (--no-smtp")
    assert report.summary() == "IMAP passed; SMTP not configured."
    assert report.as_dict()["mailbox"]["smtp"] is None


# -- the command --------------------------------------------------------------------------------------

@pytest.fixture
def hanna(tmp_path, monkeypatch):
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n[network]\ntimeout = {TIMEOUT}\n')

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)

    return invoke


def adhoc_args(user, smtp, *extra: str) -> list[str]:
    dc = user.dovecot
    return ["test", "--email", user.login, "--imap-host", dc.host, "--imap-port", str(dc.imaps_port),
            "--smtp-port", str(smtp.starttls.port), "--smtp-security", "starttls", "--ca-file", str(dc.ca_file),
            "--password-stdin", *extra]


def test_cli_json_shape_and_exit_code(hanna, imap_user, smtp):
    result = hanna(*adhoc_args(imap_user, smtp, "--json"), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "exit_code", "mailbox", "stages"} and data["ok"] is True and data["exit_code"] == 0
    assert data["mailbox"] == {"id": None, "email": imap_user.login, "kind": "imap", "login": imap_user.login,
                               "imap": f"127.0.0.1:{imap_user.dovecot.imaps_port} ssl",
                               "smtp": f"127.0.0.1:{smtp.starttls.port} starttls"}
    assert all(set(s) == {"protocol", "stage", "ok", "skipped", "seconds", "detail", "hint"} for s in data["stages"])
    assert [s["stage"] for s in data["stages"] if s["protocol"] == "smtp"][-1] == "send"

    result = hanna(*adhoc_args(imap_user, smtp, "--json"), input="wrong-password\n")
    assert result.exit_code == ExitCode.AUTH
    assert json.loads(result.stdout)["exit_code"] == 16


def test_cli_plain_lines_for_a_saved_mailbox_and_another_password(hanna, imap_user, smtp):
    add = ["add-mailbox", "--user", "staff", *adhoc_args(imap_user, smtp)[1:]]
    assert hanna(*add, input=imap_user.password + "\n").exit_code == 0
    result = hanna("test", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["IMAP", "charset", "ok"]
    assert any(line.split()[:3] == ["SMTP", "send", "skipped"] for line in lines)
    assert lines[-1] == "IMAP passed; SMTP passed."

    result = hanna("test", "1", "--password-stdin", input="wrong-password\n")
    assert result.exit_code == ExitCode.AUTH
    assert "IMAP auth         FAILED" in result.stdout and "fix: check the password" in result.stdout
    assert result.stdout.splitlines()[-1] == "IMAP failed at auth; SMTP failed at auth (exit code 16)."

    # A setting given with MAILBOX is tried without being saved.
    result = hanna("test", "1", "--imap-security", "starttls")
    assert result.exit_code == ExitCode.TLS and "speaks implicit TLS" in result.stdout
    assert json.loads(hanna("list-mailboxes", "--json").stdout)[0]["imap_security"] == "ssl"


def test_cli_trace_masks_the_password(hanna, imap_user, smtp):
    result = hanna(*adhoc_args(imap_user, smtp, "--trace"), input=imap_user.password + "\n")
    assert result.exit_code == 0, result.output
    assert "IMAP C: " in result.stderr and f"LOGIN {imap_user.login} ***" in result.stderr
    assert "SMTP C: AUTH PLAIN ***" in result.stderr
    assert imap_user.password not in result.output


def test_cli_table_on_a_terminal(hanna, imap_user, smtp, monkeypatch):
    monkeypatch.setattr(cli_diagnostics, "stdout_is_terminal", lambda: True)
    result = hanna(*adhoc_args(imap_user, smtp), input="wrong-password\n")
    assert result.exit_code == ExitCode.AUTH
    assert "hanna-sync test: " in result.stdout and "FAILED" in result.stdout
    assert "Fix: check the password" in result.stdout
    assert "[AUTHENTICATIONFAILED]" in result.stdout  # server text is not taken for rich markup


@pytest.mark.parametrize("args, message", [
    (["--send-to", "not-an-address"], "--send-to 'not-an-address' is not an email address"),
    (["--email", "a@example.test", "1"], "--email and --provider are for a mailbox not saved yet: leave out MAILBOX to try one"),
    (["--email", "a@example.test", "--imap-host", "127.0.0.1", "--password-stdin"], "the password is empty"),
])
def test_cli_usage_errors(hanna, args, message):
    result = hanna("test", *args, input="\n")
    assert result.exit_code == ExitCode.USAGE
    assert result.output == f"Error: {message}\n"
