"""`hanna-sync test`: try a mailbox's IMAP and SMTP servers stage by stage; say why it fails and what to do.

"Cannot connect to IMAP server" has a dozen causes, each with its own fix: a typo in the server name, a
firewall, implicit TLS chosen for a STARTTLS port or the reverse, an untrusted certificate, a Gmail
password where an app password is needed, SMTP AUTH switched off in Office 365... So every stage does one
thing (resolve, connect, shake hands, greet, log in, open the folders), is timed, and on failure names
the cause and the fix, keyed on what the server actually said. A protocol stops at its first failure:
the later stages need the earlier ones. add-mailbox's verification (`mailboxes.verify`) runs the IMAP
stages, so it refuses a mailbox with the same explanation.

Name resolution, the TCP connection, TLS and the certificate are handled here, on sockets of our own; the
IMAP and SMTP conversations then go through the transports (`imap.client_on_socket`,
`smtp.session_on_socket`) on those sockets.
"""

from __future__ import annotations

import ipaddress
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync.admin import mailboxes
from hanna_sync.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ExitCode,
    HannaError,
    InputError,
)
from hanna_sync.mail.message import text_codec
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap, smtp
from hanna_sync.remote.graph import GraphClient
from hanna_sync.remote.oauth import (
    GRAPH,
    IMAP,
    SMTP,
    Resource,
    SignInLost,
    Token,
    TokenRefused,
)
from hanna_sync.remote.providers import IMAP_PORTS, PROVIDERS, SMTP_PORTS

if TYPE_CHECKING:
    from hanna_sync.remote.oauth import MicrosoftSignIn

# The exit code of a failed stage, unless the failure names another family (e.g. a greeting that never
# comes because the port waits for a TLS handshake is a TLS setting, 12).
FAMILIES: dict[str, ExitCode] = {
    "charset": ExitCode.CHARSET,
    "token": ExitCode.AUTH,  # Office 365: no token for the mailbox (sign-in gone, consent missing, app disabled)
    "claims": ExitCode.AUTH,  # Office 365: a token for the wrong audience, user or without the permission
    "dns": ExitCode.CONNECT,
    "tcp": ExitCode.CONNECT,
    "tls": ExitCode.TLS,
    "greeting": ExitCode.SERVER,
    "capabilities": ExitCode.SERVER,
    "ehlo": ExitCode.SERVER,
    "auth": ExitCode.AUTH,
    "folders": ExitCode.FOLDER,
    "folder": ExitCode.FOLDER,
    "send": ExitCode.SEND,
}

# Seconds of silence after connecting before checking, on a second connection, whether the port is
# waiting for a TLS handshake (starttls chosen for port 993): long enough for a slow greeting, short
# enough that the classic mistake is named at once rather than after the whole timeout.
GREETING_PATIENCE = 2.0

LABELS = {"graph": "Graph", "imap": "IMAP", "smtp": "SMTP"}


@dataclass
class Stage:
    """One line of the report: what was tried, how long it took, what came of it and, on failure, the fix.

    A passed stage may carry a hint too: advice rather than a failure (no TLS, no Sent folder found).
    """

    protocol: str  # imap or smtp
    stage: str  # charset, dns, tcp, tls, greeting, capabilities, ehlo, auth, folders, folder, send, host
    ok: bool
    seconds: float
    detail: str
    hint: str | None = None
    skipped: bool = False
    exit_code: int = ExitCode.OK  # the failure's family (see FAMILIES); 0 when it passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "stage": self.stage, "ok": self.ok, "skipped": self.skipped,
            "seconds": round(self.seconds, 3), "detail": self.detail, "hint": self.hint,
        }

    def error(self) -> HannaError:
        """This failure as the one-line error add-mailbox shows: the cause, then the fix."""
        message = f"{self.detail}; {self.hint}" if self.hint else self.detail
        if self.stage == "charset":
            return InputError(message)
        if self.exit_code == ExitCode.AUTH:
            return AuthError(message)
        return ConnectError(message)


@dataclass
class Report:
    mailbox: Mailbox
    stages: list[Stage] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # the IMAP folders examined, defaults filled in

    @property
    def failure(self) -> Stage | None:
        """The first failed stage: it decides the exit code."""
        return next((s for s in self.stages if not s.ok), None)

    @property
    def exit_code(self) -> int:
        failure = self.failure
        return failure.exit_code if failure else ExitCode.OK

    def summary(self) -> str:
        parts = []
        for protocol, label in LABELS.items():
            stages = [s for s in self.stages if s.protocol == protocol]
            failed = [s.stage for s in stages if not s.ok]
            if failed:
                parts.append(f"{label} failed at {failed[0]}")
            elif [s.stage for s in stages] == ["host"]:
                parts.append(f"{label} not configured")
            elif stages and all(s.skipped for s in stages):
                parts.append(f"{label} not tested")
            elif stages:
                parts.append(f"{label} passed")
        code = self.exit_code
        return "; ".join(parts) + (f" (exit code {code})." if code else ".")

    def as_dict(self) -> dict[str, Any]:
        m = self.mailbox

        def server(protocol: str) -> str | None:
            host = getattr(m, f"{protocol}_host")
            if not host:
                return None
            return f"{host}:{getattr(m, f'{protocol}_port')} {getattr(m, f'{protocol}_security')}"

        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "mailbox": {"id": m.id, "email": m.email, "kind": m.kind, "login": m.login_name, "imap": server("imap"),
                        "smtp": server("smtp")},
            "stages": [s.as_dict() for s in self.stages],
        }


@dataclass(frozen=True)
class Options:
    timeout: float = 30.0  # seconds before a silent server is given up on, per step
    insecure: bool = False  # go on past an untrusted certificate (the TLS stage still fails)
    send_to: str | None = None  # send a real test message there
    trace: Callable[[str], None] | None = None  # gets "IMAP C: ..." lines, secrets masked
    on_stage: Callable[[Stage], None] | None = None  # gets each stage as it completes


def check(mailbox: Mailbox, password: str, options: Options) -> Report:
    """Every stage of IMAP, then of SMTP (skipped when the mailbox has no SMTP server)."""
    report = Report(mailbox)
    _ImapRun(mailbox, password, options, report).run()
    _SmtpRun(mailbox, password, options, report).run()
    return report


def check_imap(mailbox: Mailbox, password: str, options: Options) -> Report:
    """The IMAP stages alone: what add-mailbox's verification needs."""
    report = Report(mailbox)
    _ImapRun(mailbox, password, options, report).run()
    return report


def check_o365(mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, scanning_only: bool = False) -> Report:
    """An Office 365 mailbox: per protocol a token, got as a scan gets it, and what it holds (decoded here, not
    verified), then the protocol's own stages with it: Graph's folders (o365-scan), or IMAP and SMTP with
    XOAUTH2 (o365-client). `scanning_only` leaves SMTP out: add-mailbox's verification."""
    report = Report(mailbox)
    if mailbox.kind == "o365-scan":
        _GraphRun(mailbox, sign_in, options, report).run()
    else:
        _OAuthImapRun(mailbox, sign_in, options, report).run()
        if not scanning_only:
            _OAuthSmtpRun(mailbox, sign_in, options, report).run()
    return report


# -- how a protocol's stages run --------------------------------------------------------------

class _StageFailed(Exception):
    def __init__(self, detail: str, hint: str | None = None, exit_code: ExitCode | None = None) -> None:
        super().__init__(detail)
        self.detail, self.hint, self.exit_code = detail, hint, exit_code


@dataclass(frozen=True)
class _Passed:
    detail: str
    value: Any = None  # what the next stages need (a socket, a session, the folder names)
    hint: str | None = None
    failed: bool = False  # --insecure only: the stage failed and the run goes on anyway


@dataclass(frozen=True)
class _Server:
    protocol: str
    host: str
    port: int
    security: str  # ssl, starttls or none
    ca_file: str | None
    timeout: float

    @property
    def label(self) -> str:
        return LABELS[self.protocol]

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def option(self) -> str:
        return f"--{self.protocol}"

    def usual_port(self, security: str) -> int:
        return (IMAP_PORTS if self.protocol == "imap" else SMTP_PORTS)[security]

    @property
    def usual_ports(self) -> str:
        if self.protocol == "imap":
            return "IMAP uses 993 with ssl, 143 with starttls"
        return "SMTP uses 465 with ssl, 587 with starttls; 25 is for mail between servers"


class _Run:
    """One protocol's stages against one server, in order, each timed and recorded in the report."""

    protocol = ""

    def __init__(self, mailbox: Mailbox, password: str, options: Options, report: Report) -> None:
        self.mailbox, self.password, self.options, self.report = mailbox, password, options, report
        host = getattr(mailbox, f"{self.protocol}_host")
        security = getattr(mailbox, f"{self.protocol}_security") or "ssl"
        port = getattr(mailbox, f"{self.protocol}_port") or (IMAP_PORTS if self.protocol == "imap" else SMTP_PORTS)[security]
        self.server = _Server(self.protocol, host, int(port), security, mailbox.ca_file, options.timeout) if host else None
        self.addresses: list[tuple[int, Any]] = []
        self.address: tuple[int, Any] | None = None  # the (family, sockaddr) that answered
        self.resources = ExitStack()  # every socket and session opened, closed when the run ends

    def run(self) -> None:
        if self.server is None:
            self.skip("host", f"not configured: the mailbox has no {LABELS[self.protocol]} server"
                      + (" (--no-smtp: it is only read); --smtp-host adds one" if self.protocol == "smtp" else ""))
            return
        try:
            with self.resources:
                self.stages()
        except _StageFailed:
            pass  # recorded; the protocol stops here

    def stages(self) -> None:
        raise NotImplementedError

    # -- recording ----------------------------------------------------------------------------

    def stage(self, name: str, step: Callable[[], _Passed]) -> Any:
        started = time.perf_counter()
        try:
            result = step()
        except _StageFailed as failure:
            self._record(name, started, False, failure.detail, failure.hint, failure.exit_code)
            raise
        except (OSError, IMAPClientError, smtplib.SMTPException) as exc:  # the connection broke mid-stage
            detail, hint = self._broken(exc)
            self._record(name, started, False, detail, hint, None)
            raise _StageFailed(detail) from None
        self._record(name, started, not result.failed, result.detail, result.hint, None)
        return result.value

    def skip(self, name: str, detail: str) -> None:
        self._add(Stage(self.protocol, name, True, 0.0, detail, skipped=True))

    def _record(self, name: str, started: float, ok: bool, detail: str, hint: str | None,
                exit_code: ExitCode | None) -> None:
        family = ExitCode.OK if ok else (exit_code or FAMILIES[name])
        self._add(Stage(self.protocol, name, ok, time.perf_counter() - started, detail, hint, exit_code=family))

    def _add(self, stage: Stage) -> None:
        self.report.stages.append(stage)
        if self.options.on_stage:
            self.options.on_stage(stage)

    def said(self, reply: str | bytes) -> str:
        """A server's words for a detail: decoded, on one line, and without the password, were it echoed."""
        text = " ".join((reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).split())
        return text.replace(self.password, "***") if self.password else text

    def trace(self, direction: str, text: str) -> None:
        """The transports mask what they send; this last guard also covers what comes back."""
        if self.options.trace:
            masked = text.replace(self.password, "***") if self.password else text
            self.options.trace(f"{LABELS[self.protocol]} {direction}: {masked}")

    def _broken(self, exc: BaseException) -> tuple[str, str]:
        assert self.server is not None
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):  # smtplib wraps timeouts
            return (f"{self.server.where} stopped answering: nothing within {self.server.timeout:g} s",
                    "an overloaded server or network, or a firewall cutting the connection; try again, with a longer --timeout")
        reason = self.said(imap.server_text(exc) if isinstance(exc, IMAPClientError)
                           else getattr(exc, "strerror", None) or str(exc))
        return (f"the connection to {self.server.where} broke ({reason})",
                "the server closed it; its log says why (too many connections or a blocked address are common)")

    # -- stages both protocols share ------------------------------------------------------------

    def charset(self) -> _Passed:
        label = getattr(self.mailbox, f"{self.protocol}_charset")
        if not label:
            return _Passed("not set: " + ("letters with no or a wrong charset are read as UTF-8, then windows-1257, then latin-1"
                                          if self.protocol == "imap" else "UTF-8 is used when sending"))
        codec = text_codec(label)
        if codec is None:
            raise _StageFailed(
                f"{label!r} is not a text charset hanna-sync can use",
                f"set --{self.protocol}-charset to one such as utf-8, windows-1257 (Baltic) or iso-8859-13, or leave it unset",
            )
        return _Passed(f"{label} is a known charset (Python codec {codec})")

    def resolve(self) -> _Passed:
        assert self.server is not None
        host = self.server.host
        try:
            infos = socket.getaddrinfo(host, self.server.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _StageFailed(*self._dns_problem(exc)) from None
        addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
        if _is_ip(host):
            return _Passed(f"{host} is an IP address: nothing to resolve", addresses)
        ips = [sockaddr[0] for _, sockaddr in addresses]
        more = f" and {len(ips) - 4} more" if len(ips) > 4 else ""
        return _Passed(f"{host} resolves to {', '.join(ips[:4])}{more}", addresses)

    def _dns_problem(self, exc: socket.gaierror) -> tuple[str, str]:
        assert self.server is not None
        host = self.server.host
        if exc.errno == socket.EAI_AGAIN:
            return (f"the DNS server gave no answer for {host} ({exc.strerror})",
                    "check this machine's DNS settings (/etc/resolv.conf) and network, then try again")
        no_such_name = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        detail = f"{host} does not resolve: {'no such name' if no_such_name else exc.strerror}"
        hint = f"check {self.server.option}-host for a typo"
        if self.mailbox.provider == "serveriai" or host.endswith("serveriai.lt"):
            hint += ("; the serveriai.lt server name is different for every customer (e.g. imone.serveriai.lt):"
                     " see the email settings of your hosting account")
        return detail, hint

    def connect(self) -> _Passed:
        assert self.server is not None
        failures: list[tuple[str, OSError]] = []
        for family, sockaddr in self.addresses:
            try:
                sock = self._open(family, sockaddr)
            except OSError as exc:
                failures.append((sockaddr[0], exc))
                continue
            self.address = (family, sockaddr)
            return _Passed(f"connected to {sockaddr[0]} port {self.server.port}", sock)
        raise _StageFailed(*self._tcp_problem(failures))

    def _open(self, family: int, sockaddr: Any) -> socket.socket:
        assert self.server is not None
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.resources.callback(_close, sock)
        sock.settimeout(self.server.timeout)
        sock.connect(sockaddr)
        self.trace("*", f"connected to {sockaddr[0]} port {sockaddr[1]}")
        return sock

    def reconnect(self) -> socket.socket:
        """Another connection to the address that answered: for a probe, or a second handshake."""
        assert self.address is not None
        return self._open(*self.address)

    def _tcp_problem(self, failures: list[tuple[str, OSError]]) -> tuple[str, str]:
        assert self.server is not None
        s = self.server
        ip, exc = failures[0]
        where = f"{ip} port {s.port}"
        others = f" (and {len(failures) - 1} other address{'es' if len(failures) > 2 else ''})" if len(failures) > 1 else ""
        mismatch = "" if s.port == s.usual_port(s.security) else f"; with {s.security} the usual port is {s.usual_port(s.security)}"
        if isinstance(exc, ConnectionRefusedError):
            return (f"{where} refused the connection{others}",
                    f"nothing listens there, or a firewall rejects it: check {s.option}-port ({s.usual_ports}){mismatch}")
        if isinstance(exc, TimeoutError):
            return (f"no answer from {where} within {s.timeout:g} s{others}",
                    f"a firewall drops the connection (on this network, e.g. outgoing port {s.port} blocked, or at"
                    f" the server), or the server is down: try from another network, and check {s.option}-port"
                    f" ({s.usual_ports}){mismatch}")
        return (f"cannot reach {where}: {exc.strerror or exc}{others}",
                "no route to the server: check this machine's network (and IPv6, if the address is IPv6)")

    def implicit_tls(self, sock: socket.socket) -> _Passed:
        """The TLS stage of security ssl: the handshake right after connecting."""

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
            assert self.server is not None
            tls = context.wrap_socket(self.reconnect() if again else sock, server_hostname=self.server.host)
            self.resources.callback(_close, tls)
            return tls, tls

        return self.secure(attempt)

    def secure(self, attempt: Callable[[ssl.SSLContext, bool], tuple[Any, ssl.SSLSocket]]) -> _Passed:
        """The TLS stage's core, for ssl and starttls alike; `attempt(context, again)` does the handshake.

        With a verifying context first, as a scan would. When the certificate is refused, a second
        connection (a failed handshake ends the first) looks at it without verifying, to say what it is
        for and until when; with --insecure that connection is the one the later stages use.
        """
        assert self.server is not None
        try:
            context = imap.ssl_context(self.server.ca_file)
        except ConnectError as exc:
            raise _StageFailed(str(exc), "give --ca-file a readable PEM file with the CA's certificate") from None
        try:
            value, tls = attempt(context, False)
        except ssl.SSLCertVerificationError as exc:
            return self._untrusted(exc, attempt)
        except OSError as exc:  # ssl.SSLError, timeouts, resets
            raise _StageFailed(*self._handshake_problem(exc)) from None
        self.trace("*", f"{tls.version()} established")
        certificate = _Certificate.of(tls)
        return _Passed(f"{tls.version()}; {certificate.describe() if certificate else 'no certificate'}", value)

    def _untrusted(self, exc: ssl.SSLCertVerificationError,
                   attempt: Callable[[ssl.SSLContext, bool], tuple[Any, ssl.SSLSocket]]) -> _Passed:
        try:
            value, tls = attempt(_unverified_context(), True)
            certificate = _Certificate.of(tls)
        except (OSError, IMAPClientError, smtplib.SMTPException, _StageFailed):
            value, certificate = None, None
        detail, hint = self._certificate_problem(exc, certificate)
        if self.options.insecure and value is not None:
            return _Passed(f"{detail}; going on anyway (--insecure)", value, hint, failed=True)
        raise _StageFailed(detail, hint)

    def _certificate_problem(self, exc: ssl.SSLCertVerificationError,
                             cert: _Certificate | None) -> tuple[str, str]:
        assert self.server is not None
        host, option = self.server.host, self.server.option
        names = ", ".join(cert.names) if cert and cert.names else "no names"
        about = f"issued by {cert.issuer} for {names}" if cert else "could not be read"
        insecure = "" if self.options.insecure else "; --insecure goes on past this, for this test only"
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            name = next((n for n in cert.names if not n.startswith("*")), None) if cert else None
            use = f"{option}-host {name}" if name else f"{option}-host"
            return (f"the certificate of {self.server.where} is for {names}, not {host}",
                    f"connect with a name it is for ({use}); a hosting provider's certificate is often for its"
                    f" server's own name rather than your domain. Or have it reissued to include {host}{insecure}")
        if exc.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            when = f"{cert.not_after:%Y-%m-%d}" if cert else "some time ago"
            return (f"the certificate of {host} expired on {when} ({about})",
                    "the server's admin must renew it; if that date is still to come, this machine's clock is"
                    f" wrong (check it with date){insecure}")
        if exc.verify_code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return (f"the certificate of {host} is not valid yet ({about})",
                    f"this machine's clock is probably wrong: check it with date, and keep it synchronised (NTP){insecure}")
        if exc.verify_code == 18 or (cert and cert.self_signed):  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            return (f"the certificate of {host} is not trusted: it is self-signed ({about})",
                    "if the server is yours, trust its certificate for this mailbox with --ca-file CERT.pem;"
                    f" if it is not, the connection may be intercepted{insecure}")
        return (f"the certificate of {host} is not trusted ({exc.verify_message}): {about}",
                "for a private CA give --ca-file CA.pem (or SSL_CERT_FILE, or install it with update-ca-certificates);"
                f" a server that does not send its intermediate certificate causes this too{insecure}")

    def _handshake_problem(self, exc: OSError) -> tuple[str, str]:
        assert self.server is not None
        s = self.server
        if isinstance(exc, TimeoutError):
            return (f"{s.where} accepted the connection but did not answer the TLS handshake within {s.timeout:g} s",
                    "an overloaded server, or a firewall or proxy that intercepts the port; try again, and from another network")
        if s.security == "ssl" and (first := self._first_line()):
            return self._plaintext_port(first)
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
            return (f"{s.where} offers only old TLS versions that this machine refuses ({reason})",
                    "the server's TLS setup needs updating (TLS 1.2 or newer); ask its admin")
        if isinstance(exc, (ConnectionResetError, ssl.SSLEOFError)):
            return (f"{s.where} closed the connection during the TLS handshake",
                    f"it may not speak TLS there: check {s.option}-port and {s.option}-security ({s.usual_ports})")
        return (f"the TLS handshake with {s.where} failed: {reason}",
                f"check {s.option}-port and {s.option}-security ({s.usual_ports})")

    def _first_line(self) -> str | None:
        """What the port says first in plaintext, on a new connection; None when it stays silent."""
        assert self.server is not None
        try:
            sock = self.reconnect()
            sock.settimeout(min(self.server.timeout, GREETING_PATIENCE))
            data = sock.recv(512)
        except OSError:
            return None
        lines = data.decode("utf-8", "replace").splitlines()
        return lines[0].strip() if lines and lines[0].isprintable() else None

    def _plaintext_port(self, first: str) -> tuple[str, str]:
        assert self.server is not None
        s = self.server
        speaker = _speaker(first)
        if speaker and speaker != s.label:
            return (f"{s.where} is {_article(speaker)} {speaker} server, not {s.label}: it greets with {self.banner(first)!r}",
                    f"check {s.option}-port: {s.usual_ports}")
        offers = "; the server offers STARTTLS" if "STARTTLS" in first.upper() else ""
        return (f"{s.where} does not speak implicit TLS: it answered in plaintext ({self.banner(first)!r})",
                f"use {s.option}-security starttls with this port (usually {s.usual_port('starttls')}{offers}),"
                f" or keep ssl and use port {s.usual_port('ssl')}")

    def await_greeting(self, sock: socket.socket) -> None:
        """Wait on a plaintext socket for the server to speak first, and peek at whose greeting it is.

        A port that stays silent may be waiting for a TLS handshake (the classic: starttls with port
        993). After GREETING_PATIENCE a second connection tries one, to tell that from a slow server.
        """
        assert self.server is not None
        s = self.server
        patience = min(s.timeout, GREETING_PATIENCE)
        if not _readable(sock, patience):
            if self._speaks_tls():
                raise _StageFailed(
                    f"{s.where} speaks implicit TLS: it waits for a TLS handshake and sends no plaintext greeting",
                    f"use {s.option}-security ssl with this port (usually {s.usual_port('ssl')}),"
                    f" or {s.security} with port {s.usual_port(s.security)}",
                    exit_code=ExitCode.TLS,
                )
            if not _readable(sock, max(s.timeout - patience, 0.0)):
                raise _StageFailed(
                    f"{s.where} accepted the connection but sent no greeting within {s.timeout:g} s",
                    f"an overloaded server, or a firewall or proxy that intercepts the port, or not {_article(s.label)}"
                    f" {s.label} port: check {s.option}-port ({s.usual_ports})",
                )
        data = sock.recv(512, socket.MSG_PEEK)
        if not data:
            raise _StageFailed(
                f"{s.where} closed the connection without a greeting",
                "the server may refuse this machine's address (a blocklist, or fail2ban after failed logins); its log says why",
            )
        first = data.decode("utf-8", "replace").splitlines()[0].strip()
        speaker = _speaker(first)
        if speaker and speaker != s.label:
            raise _StageFailed(
                f"{s.where} is {_article(speaker)} {speaker} server, not {s.label}: it greets with {self.banner(first)!r}",
                f"check {s.option}-port: {s.usual_ports}",
            )

    def _speaks_tls(self) -> bool:
        assert self.server is not None
        try:
            with _unverified_context().wrap_socket(self.reconnect(), server_hostname=self.server.host):
                return True
        except OSError:
            return False

    def open_session(self, offers_starttls: Callable[[Any], bool | None]) -> Any:
        """The stages both protocols begin with: charset, DNS, TCP, TLS (implicit, STARTTLS, or the check
        that a plaintext session is allowed) and the greeting. Returns the greeted session."""
        assert self.server is not None
        self.stage("charset", self.charset)
        self.addresses = self.stage("dns", self.resolve)
        sock = self.stage("tcp", self.connect)
        if self.server.security == "ssl":
            sock = self.stage("tls", lambda: self.implicit_tls(sock))
        session = self.stage("greeting", lambda: self.greeting(sock))
        if self.server.security == "starttls":
            session = self.stage("tls", lambda: self.starttls(session))
        elif self.server.security == "none":
            self.stage("tls", lambda: self.plaintext(offers_starttls(session)))
        return session

    def greeting(self, sock: socket.socket) -> _Passed:
        raise NotImplementedError

    def starttls(self, session: Any) -> _Passed:
        raise NotImplementedError

    def plaintext(self, offers_starttls: bool | None) -> _Passed:
        """The TLS stage of security none: the password is not sent in clear unless the admin allowed it."""
        assert self.server is not None
        offers = " (it offers STARTTLS)" if offers_starttls else ""
        if not self.mailbox.allow_plaintext:
            raise _StageFailed("none: no TLS, so the password would cross the network unencrypted; not sent",
                               f"use {self.server.option}-security starttls or ssl{offers}; or, only on a network"
                               " you trust, allow it with --allow-plaintext")
        return _Passed("none: no TLS, so the password crosses the network unencrypted",
                       hint=f"use {self.server.option}-security starttls or ssl if the server offers them{offers}")

    def banner(self, line: str | bytes | None) -> str:
        """A greeting made readable: without the long [CAPABILITY ...] code, at most 160 characters."""
        text = self.said(re.sub(rb"\[CAPABILITY [^\]]*\]\s*", b"", line) if isinstance(line, bytes)
                         else re.sub(r"\[CAPABILITY [^\]]*\]\s*", "", line or ""))
        return text if len(text) <= 160 else text[:157] + "..."

    def refused_session(self, text: str) -> tuple[str, str]:
        """A greeting that turns the session down (BYE, 421, 554), or is not the protocol's at all."""
        assert self.server is not None
        s = self.server
        speaker = _speaker(text)
        if speaker and speaker != s.label:
            return (f"{s.where} is {_article(speaker)} {speaker} server, not {s.label}: it greets with {self.banner(text)!r}",
                    f"check {s.option}-port: {s.usual_ports}")
        if speaker is None:
            return (f"{s.where} does not greet like {_article(s.label)} {s.label} server: {self.banner(text)!r}",
                    f"check {s.option}-port: {s.usual_ports}")
        if text.startswith("554"):
            return (f"{s.host} refuses connections from this machine: {self.banner(text)}",
                    "its address may be on a blocklist, or the server takes mail only from its own network:"
                    " ask the mail admin, or send through the provider's port 587 or 465 with a login")
        return (f"{s.host} turned the session down: {self.banner(text)}",
                _explain(text, self) or "try again later; the server's log says why (maintenance, a blocked address)")

    def not_ascii(self) -> _StageFailed:
        """smtplib's AUTH sends ASCII only: a password with ą or š cannot get through (IMAP uses AUTHENTICATE PLAIN)."""
        assert self.server is not None
        what = "login name" if not self.mailbox.login_name.isascii() else "password"
        return _StageFailed(
            f"the {what} has characters outside ASCII (such as ą or š), which the {self.server.label} login cannot send",
            f"change the {what} at the provider to ASCII letters, digits and punctuation, then give hanna-sync the new one",
            exit_code=ExitCode.AUTH,
        )

    def auth_hint(self, text: str) -> str:
        """The fix for a refused login, keyed on what the server said, then on the provider."""
        assert self.server is not None
        if known := _explain(text, self):
            return known
        login = self.mailbox.login_name
        if self.mailbox.username is None:
            hint = (f"check the password; the login name sent was the email address {login}: if the server"
                    " expects another (e.g. the part before @), give it with --username")
        else:
            hint = f"check the password and the login name ({login}, from --username)"
        provider = _provider_of(self.mailbox, self.server.host)
        if provider == "gmail":
            hint += f"; with 2-step verification on, {_GOOGLE_APP_PASSWORD}"
        elif provider == "yahoo":
            hint += f"; {_YAHOO_APP_PASSWORD}"
        elif provider == "outlook" and self.protocol == "imap":
            hint += f"; {_OFFICE365_NO_PASSWORDS}"
        elif provider == "outlook":
            hint += f"; Office 365 also refuses a right password while {_office365_smtp_auth(login)}"
        return hint


# -- IMAP ---------------------------------------------------------------------------------------

class _ImapRun(_Run):
    protocol = "imap"

    def stages(self) -> None:
        client = self.open_session(lambda client: "STARTTLS" in _capabilities(client))
        self.stage("capabilities", lambda: self.capabilities(client))
        self.stage("auth", lambda: self.login(client))
        folders = self.stage("folders", lambda: self.folders(client))
        for name in folders:
            self.stage("folder", lambda name=name: self.examine(client, name))
        self.report.folders = folders
        with suppress(Exception):
            client.logout()

    def greeting(self, sock: socket.socket) -> _Passed:
        assert self.server is not None
        s = self.server
        if not isinstance(sock, ssl.SSLSocket):
            self.await_greeting(sock)
        try:
            client = imap.client_on_socket(sock, s.host, s.port, s.timeout, self.trace)
        except TimeoutError:
            raise _StageFailed(f"{s.where} sent no greeting (or no CAPABILITY reply) within {s.timeout:g} s",
                               f"an overloaded server, or not an IMAP port: check {s.option}-port ({s.usual_ports})") from None
        except IMAPClientError as exc:
            text = self.said(imap.server_text(exc))
            if "EOF" in text:
                raise _StageFailed(f"{s.where} closed the connection without a greeting",
                                   "the server may refuse this machine's address (a blocklist, or fail2ban after"
                                   " failed logins); its log says why") from None
            unexpected = re.fullmatch(r"unexpected response: b?(['\"])(.*)\1", text)
            raise _StageFailed(*self.refused_session(unexpected.group(2) if unexpected else text)) from None
        self.resources.callback(_close, client)
        return _Passed(self.banner(client.welcome), client)

    def starttls(self, client: IMAPClient) -> _Passed:
        assert self.server is not None
        s = self.server
        capabilities = _capabilities(client)
        if "STARTTLS" not in capabilities:
            raise _StageFailed(f"{s.host} does not offer STARTTLS (it offers: {' '.join(sorted(capabilities))})",
                               "use --imap-security ssl (usually port 993) if the server has it;"
                               " none would send the password unencrypted")

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[IMAPClient, ssl.SSLSocket]:
            session = client
            if again:
                session = imap.client_on_socket(self.reconnect(), s.host, s.port, s.timeout, self.trace)
                self.resources.callback(_close, session)
            try:
                session.starttls(context)
            except IMAPClientError as exc:
                raise _StageFailed(f"{s.host} refused STARTTLS ({self.said(imap.server_text(exc))})",
                                   "the server's TLS setup is broken; ask its admin, or use ssl on port 993") from None
            return session, session.socket()

        return self.secure(attempt)

    def capabilities(self, client: IMAPClient) -> _Passed:
        """What the server offers before the login: how to log in (the extensions come after it)."""
        assert self.server is not None
        capabilities = _capabilities(client)
        mechanisms = sorted(c[5:] for c in capabilities if c.startswith("AUTH="))
        detail = f"{' '.join(sorted(c for c in capabilities if c.startswith('IMAP4')))}, AUTH {' '.join(mechanisms) or '(none listed)'}"
        if "LOGINDISABLED" in capabilities:
            if self.server.security == "none":
                raise _StageFailed(f"{self.server.host} refuses LOGIN without TLS (LOGINDISABLED); {detail}",
                                   "use --imap-security starttls (usually port 143) or ssl (usually port 993)",
                                   exit_code=ExitCode.TLS)
            raise _StageFailed(f"{self.server.host} does not take LOGIN even over TLS (LOGINDISABLED); {detail}",
                               _OAUTH_ONLY if set(mechanisms) <= {"XOAUTH2", "OAUTHBEARER"}
                               else "ask the mail admin to allow password logins for IMAP")
        return _Passed(detail, capabilities)

    def login(self, client: IMAPClient) -> _Passed:
        assert self.server is not None
        login = self.mailbox.login_name
        try:
            reply = self.authenticate(client, login)
        except IMAPClientError as exc:  # LoginError, or BAD
            text = self.said(imap.server_text(exc)) or "no reason given"
            raise _StageFailed(f"{self.server.host} refused the login for {login} ({text})", self.auth_hint(text)) from None
        # Servers list their extensions in full only now (Dovecot); a scan uses these.
        capabilities = _capabilities(client)
        features = ", ".join(f"{name} {'yes' if name in capabilities else 'no'}" for name in ("IDLE", "CONDSTORE", "QRESYNC"))
        return _Passed(f"logged in as {login} ({self.banner(reply)}); {features}")

    def authenticate(self, client: IMAPClient, login: str) -> bytes:
        return imap.authenticate(client, login, self.password)

    def folders(self, client: IMAPClient) -> _Passed:
        assert self.server is not None
        infos = imap.list_folders(client)
        names = sorted(f.name for f in infos if f.selectable)
        listing = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        notes: list[str] = []
        if self.mailbox.folders:
            resolved = imap.resolved_folders(list(self.mailbox.folders), infos)
            if resolved.missing:
                near = [f"{name!r} differs from the server's {', '.join(repr(n) for n in resolved.near[name])}"
                        " in case or accents" for name in resolved.missing if resolved.near[name]]
                raise _StageFailed(
                    f"{self.server.host} has no folder {', '.join(repr(m) for m in resolved.missing)}"
                    + (f" ({'; '.join(near)})" if near else ""),
                    f"choose folders it has with --folder, named as shown (the server has: {listing});"
                    " 'hanna-sync folders ID' lists them with counts",
                )
            chosen, notes = resolved.names, resolved.notes
        else:
            chosen = mailboxes.default_folders(self.mailbox, infos)
        how = _how_chosen(self.mailbox, "INBOX and the Sent folder")
        if not self.mailbox.folders or (self.mailbox.folders_chosen is False and len(chosen) == 1):
            sent = imap.sent_folder(infos, PROVIDERS[self.mailbox.provider].sent_folder)
            if self.mailbox.folders:  # a saved mailbox whose default found no Sent folder then
                notes.append(self._sent_now(sent, listing))
            elif sent.name and not sent.flagged:
                how += f"; {sent.name} by its name"
                notes.append(f"{sent.name!r} is taken for the Sent folder by its name (no folder is flagged \\Sent):"
                             f" if the sent letters are elsewhere, choose the folders with --folder (the server has:"
                             f" {listing})")
            elif not sent.name:
                notes.append(self._no_sent(sent, listing))
        return _Passed(f"{len(infos)} folder{'' if len(infos) == 1 else 's'}; checking {', '.join(chosen)} ({how})",
                       chosen, "; ".join(notes) or None)

    def _no_sent(self, sent: imap.SentFolder, listing: str) -> str:
        if sent.candidates:
            why = (f"none flagged \\Sent, and {len(sent.candidates)} have a Sent folder's name:"
                   f" {', '.join(sent.candidates)}")
        else:
            why = "none flagged \\Sent, none with a Sent folder's name such as 'Sent', 'Sent Items' or 'Išsiųsti'"
        return (f"no Sent folder found ({why}): add yours with --folder so sent letters are archived too"
                f" (the server has: {listing})")

    def _sent_now(self, sent: imap.SentFolder, listing: str) -> str:
        """For a saved mailbox scanning INBOX only by default: whether the server has a Sent folder now."""
        which = self.mailbox.id if self.mailbox.id is not None else "ID"
        if sent.name:
            return (f"no Sent folder was found when the mailbox was saved, and {sent.name!r} is one now: add it"
                    f" with 'hanna-sync edit-mailbox {which} --folder INBOX --folder \"{sent.name}\"'")
        return self._no_sent(sent, listing).replace("add yours with --folder",
                                                    f"add yours with 'hanna-sync edit-mailbox {which} --folder ...'")

    def examine(self, client: IMAPClient, name: str) -> _Passed:
        try:
            status = client.select_folder(name, readonly=True)
        except IMAPClientError as exc:
            raise _StageFailed(f"cannot open {name!r} read-only: {self.said(imap.server_text(exc))}",
                               "the folder may have been renamed or deleted, or this login may not read it;"
                               " 'hanna-sync folders ID' lists what it can read") from None
        count = status.get(b"EXISTS", "?")
        parts = [f"{name}: {count} message{'' if count == 1 else 's'}", f"UIDVALIDITY {status.get(b'UIDVALIDITY', '?')}",
                 f"UIDNEXT {status.get(b'UIDNEXT', '?')}"]
        if b"HIGHESTMODSEQ" in status:
            parts.append(f"HIGHESTMODSEQ {status[b'HIGHESTMODSEQ']}")
        if b"READ-ONLY" in status:
            return _Passed(", ".join(parts) + ", opened read-only (EXAMINE)")
        return _Passed(", ".join(parts) + ", opened with EXAMINE",
                       hint="the server did not confirm [READ-ONLY]; scans read with BODY.PEEK, so no flag changes anyway")


# -- SMTP ---------------------------------------------------------------------------------------

class _SmtpRun(_Run):
    protocol = "smtp"

    def stages(self) -> None:
        session = self.open_session(lambda session: None)  # an SMTP server's STARTTLS shows only after EHLO
        self.stage("ehlo", lambda: self.ehlo(session))
        self.stage("auth", lambda: self.login(session))
        if self.options.send_to:
            self.stage("send", lambda: self.send(session))
        else:
            self.skip("send", "no test message sent: --send-to ADDRESS sends one")
        with suppress(Exception):
            session.quit()

    def greeting(self, sock: socket.socket) -> _Passed:
        assert self.server is not None
        s = self.server
        if not isinstance(sock, ssl.SSLSocket):
            self.await_greeting(sock)
        try:
            session = smtp.session_on_socket(sock, s.host, s.port, s.timeout, self.trace)
        except smtplib.SMTPConnectError as exc:
            code = f"{exc.smtp_code} " if exc.smtp_code > 0 else ""
            raise _StageFailed(*self.refused_session(f"{code}{self.said(exc.smtp_error)}")) from None
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):
                raise _StageFailed(f"{s.where} sent no greeting within {s.timeout:g} s",
                                   f"an overloaded server, or not an SMTP port: check {s.option}-port ({s.usual_ports})") from None
            raise _StageFailed(f"{s.where} closed the connection without a greeting",
                               "the server may refuse this machine's address (a blocklist, or fail2ban after failed"
                               " logins); its log says why") from None
        self.resources.callback(_close, session)
        assert session.greeting is not None
        code, text = session.greeting
        return _Passed(f"{code} {self.said(text)}", session)

    def _ehlo(self, session: smtplib.SMTP) -> None:
        assert self.server is not None
        code, reply = session.ehlo()
        if code != 250:
            raise _StageFailed(f"{self.server.host} refused EHLO ({code} {self.said(reply)})",
                               "the server does not accept this machine's greeting; its log says why",
                               exit_code=ExitCode.SERVER)

    def starttls(self, session: smtplib.SMTP) -> _Passed:
        assert self.server is not None
        s = self.server
        self._ehlo(session)
        if not session.has_extn("starttls"):
            raise _StageFailed(f"{s.host} does not offer STARTTLS (its EHLO lists: {_features(session)})",
                               "use --smtp-security ssl (usually port 465) if the server has it;"
                               " none would send the password unencrypted")

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[smtplib.SMTP, ssl.SSLSocket]:
            current = session
            if again:
                current = smtp.session_on_socket(self.reconnect(), s.host, s.port, s.timeout, self.trace)
                self.resources.callback(_close, current)
                current.ehlo()
            try:
                current.starttls(context=context)
            except smtplib.SMTPResponseException as exc:
                raise _StageFailed(f"{s.host} refused STARTTLS ({exc.smtp_code} {self.said(exc.smtp_error)})",
                                   "the server's TLS setup is broken; ask its admin, or use ssl on port 465") from None
            assert isinstance(current.sock, ssl.SSLSocket)
            return current, current.sock

        return self.secure(attempt)

    def ehlo(self, session: smtplib.SMTP) -> _Passed:
        self._ehlo(session)
        return _Passed(f"EHLO accepted: {_features(session)}")

    def login(self, session: smtplib.SMTP) -> _Passed:
        assert self.server is not None
        s = self.server
        login = self.mailbox.login_name
        if not session.has_extn("auth"):
            if s.security == "none":
                hint = "the server may offer a login only over TLS: use --smtp-security starttls (port 587) or ssl (port 465)"
            elif s.port == 25:
                hint = "port 25 is for mail between servers and has no login: use 587 (starttls) or 465 (ssl)"
            else:
                hint = "this port takes no login: ask the mail admin which port is for sending with a password (usually 587 or 465)"
            raise _StageFailed(f"{s.host} offers no login (no AUTH in its EHLO reply)", hint, exit_code=ExitCode.SERVER)
        try:
            code, reply = self.authenticate(session, login)
        except UnicodeEncodeError:
            raise self.not_ascii() from None
        except smtplib.SMTPAuthenticationError as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise _StageFailed(f"{s.host} refused the login for {login} ({text})", self.auth_hint(text)) from None
        except smtplib.SMTPServerDisconnected:
            raise  # silence or a dropped connection, not a refusal: stage() says which
        except smtplib.SMTPException:  # "No suitable authentication method found."
            mechanisms = " ".join(session.esmtp_features.get("auth", "").split())
            raise _StageFailed(f"{s.host} offers no password login hanna-sync can use (AUTH {mechanisms})",
                               _OAUTH_ONLY, exit_code=ExitCode.SERVER) from None
        return _Passed(f"logged in as {login} ({code} {self.said(reply)})")

    def authenticate(self, session: smtplib.SMTP, login: str) -> tuple[int, bytes]:
        return session.login(login, self.password)

    def send(self, session: smtplib.SMTP) -> _Passed:
        assert self.server is not None and self.options.send_to
        host, to = self.server.host, self.options.send_to
        message = smtp.diagnostic_message(self.mailbox.email, to, self.server.where, text_codec(self.mailbox.smtp_charset))
        try:
            session.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            text = f"{code} {self.said(reply)}"
            raise _StageFailed(f"{host} refused the recipient {to} ({text})", self.send_hint(text)) from None
        except smtplib.SMTPSenderRefused as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise _StageFailed(f"{host} refused the sender {self.mailbox.email} ({text})", self.send_hint(text)) from None
        except smtplib.SMTPResponseException as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise _StageFailed(f"{host} refused the test message ({text})", self.send_hint(text)) from None
        return _Passed(f"accepted a test message to {to} ({message['Message-ID']}): look for it there, and in spam")

    def send_hint(self, text: str) -> str:
        if known := _explain(text, self):
            return known
        if re.search(r"\b5\.1\.1\b|does not exist|unknown user|no such user", text, re.IGNORECASE):
            return "the recipient address does not exist: check --send-to"
        return "the server's reply says why; its log has more"


# -- what servers say, and what to do about it ---------------------------------------------------

_GOOGLE_APP_PASSWORD = (
    "Google wants an app password instead of the account password: Google Account -> Security -> App passwords"
    " (https://myaccount.google.com/apppasswords) -> Other (custom name) \"hanna-sync\" -> Generate ->"
    " use the 16-letter password it shows as this mailbox's password"
)
_YAHOO_APP_PASSWORD = (
    "Yahoo wants an app password for mail programs: Yahoo Account Info -> Account security ->"
    " Generate app password (Manage app passwords) -> \"hanna-sync\" -> Generate -> use that 16-letter password"
)
_OFFICE365_NO_PASSWORDS = (
    "Exchange Online no longer takes passwords for IMAP (basic authentication is off), even right ones:"
    " the mailbox needs OAuth2 sign-in: add it with --kind o365-client (IMAP with XOAUTH2) or o365-scan (Graph)"
)
_OAUTH_ONLY = (
    "the server takes only OAuth2 tokens (XOAUTH2/OAUTHBEARER), no password: as with Office 365 or a Google"
    " Workspace with passwords off; for Office 365 add the mailbox with --kind o365-client or o365-scan"
)
_SECURITY_DEFAULTS = (
    "the tenant's security defaults block password logins from mail programs: an admin can turn them off"
    " (Microsoft Entra admin center -> Identity -> Overview -> Properties -> Manage security defaults),"
    " where Conditional Access policies protect the tenant instead; otherwise the mailbox needs OAuth2 sign-in"
)
_TOO_MANY_CONNECTIONS = (
    "the server limits simultaneous connections per account (or per address) and this one is over it:"
    " close other mail programs on it (phones, Outlook, another hanna-sync) or wait a few minutes;"
    " Gmail allows 15, Dovecot's mail_max_userip_connections is 10 by default"
)
_TOO_MANY_FAILURES = (
    "too many failed logins: the server blocks this account or address for a while; wait (often 15 minutes to"
    " an hour), check the password, and stop other programs that still try an old one"
)
_GOOGLE_WEB_LOGIN = (
    "Google blocked the sign-in as unusual: sign in to Gmail in a browser, confirm the activity at"
    " https://myaccount.google.com/notifications, then try again (or use an app password)"
)


def _office365_smtp_auth(login: str) -> str:
    return (
        "SMTP AUTH is disabled for this mailbox or the whole tenant: turn on Authenticated SMTP in the Microsoft 365"
        " admin center -> Users -> Active users -> the user -> Mail -> Manage email apps -> Authenticated SMTP,"
        f" or in Exchange Online PowerShell: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false"
        " (tenant-wide: Set-TransportConfig -SmtpClientAuthenticationDisabled $false); changes can take an hour."
        " See https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission"
    )


def _explain(text: str, run: _Run) -> str | None:
    """The fix for a server reply we recognise, provider-specific texts first; None for the others."""
    login = run.mailbox.login_name
    option = f"--{run.protocol}"

    def says(pattern: str) -> bool:
        return re.search(pattern, text, re.IGNORECASE) is not None

    if says(r"Application-specific password required|\b5\.7\.9\b|InvalidSecondFactor"):
        return f"the account has 2-step verification on, so {_GOOGLE_APP_PASSWORD}"
    if says(r"SmtpClientAuthentication is disabled"):
        return _office365_smtp_auth(login)
    if says(r"security defaults"):
        return _SECURITY_DEFAULTS
    if says(r"\b5\.7\.30\b|Basic authentication is not supported"):
        return (
            "Exchange Online has basic authentication (passwords) off for SMTP in this tenant: an admin may allow it"
            f" for this user where Microsoft still permits it (an authentication policy with AllowBasicAuthSmtp,"
            f" and SMTP AUTH on: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false);"
            " otherwise the mailbox needs OAuth2 sign-in: --kind o365-client or o365-scan"
        )
    if says(r"User is authenticated but not connected"):
        return imap.APP_ONLY_HINT.format(login=login)
    if says(r"AUTHENTICATE failed"):
        return (
            "the OAuth2 token was refused (AUTHENTICATE XOAUTH2): the app registration needs the IMAP.AccessAsUser.All"
            " (IMAP) or SMTP.Send (SMTP) permission with admin consent and a token for this mailbox, and IMAP must be"
            " on for it: Microsoft 365 admin center -> Users -> Active users -> the user -> Mail -> Manage email apps"
            f" -> IMAP, or Set-CASMailbox -Identity {login} -ImapEnabled $true"
        )
    if says(r"too many (bad |failed |invalid )?(auth\w*|login\w*|log-?in) (attempts|failures)"):
        return _TOO_MANY_FAILURES
    if says(r"too many (simultaneous |concurrent )?connections|maximum number of connections|connection limit"):
        return _TOO_MANY_CONNECTIONS
    if says(r"WEBALERT|Web login required|log in via your web browser"):
        return _GOOGLE_WEB_LOGIN
    if says(r"STARTTLS|PRIVACYREQUIRED|Encryption required"):
        usual = "587" if run.protocol == "smtp" else "143"
        return f"the server wants TLS before the login: use {option}-security starttls (usually port {usual}) or ssl"
    if says(r"SendAsDenied|\b5\.7\.60\b"):
        return (f"this login may not send as {run.mailbox.email}: send from the mailbox's own address, or give the"
                " login Send As rights for it")
    if says(r"relay"):
        return "the server will not relay this: it wants a login that may send to outside addresses (log in first)"
    return None


def _provider_of(mailbox: Mailbox, host: str) -> str:
    """gmail, yahoo or outlook by preset or by server name (a Google Workspace domain is 'custom'), else ''."""
    host = host.lower()
    if mailbox.provider == "gmail" or host.endswith((".gmail.com", ".googlemail.com", ".google.com")):
        return "gmail"
    if mailbox.provider == "yahoo" or host.endswith(".yahoo.com"):
        return "yahoo"
    if mailbox.provider == "outlook" or host.endswith((".office365.com", ".outlook.com")):
        return "outlook"
    return ""


# -- small helpers --------------------------------------------------------------------------------

def _how_chosen(mailbox: Mailbox, defaults: str) -> str:
    """Where the folders being checked come from: --folder, the defaults found now, or those found when the
    mailbox was saved (a list saved before hanna-sync recorded which is "as saved")."""
    if not mailbox.folders:
        return f"by default: {defaults}"
    if mailbox.folders_chosen:
        return "chosen with --folder"
    if mailbox.folders_chosen is None:
        return "as saved"
    return f"found by default when the mailbox was saved: {defaults}"


@dataclass(frozen=True)
class _Certificate:
    """What a server's certificate says: the names it is for, who issued it, until when."""

    names: tuple[str, ...]
    issuer: str
    self_signed: bool
    not_after: datetime

    @classmethod
    def of(cls, sock: ssl.SSLSocket) -> _Certificate | None:
        der = sock.getpeercert(binary_form=True)
        if not der:
            return None
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
        except x509.ExtensionNotFound:
            names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(tuple(names), str(issuer[0].value) if issuer else cert.issuer.rfc4514_string(),
                   cert.issuer == cert.subject, cert.not_valid_after_utc)

    def describe(self) -> str:
        return f"certificate for {', '.join(self.names) or 'no names'} from {self.issuer}, valid until {self.not_after:%Y-%m-%d}"


def _unverified_context() -> ssl.SSLContext:
    """For looking at a refused certificate, probing for TLS, and --insecure: never for a scan."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _capabilities(client: IMAPClient) -> set[str]:
    return {c.decode("ascii", "replace").upper() if isinstance(c, bytes) else str(c).upper() for c in client.capabilities()}


def _features(session: smtplib.SMTP) -> str:
    return "; ".join(" ".join(f"{name.upper()} {value}".split()) for name, value in session.esmtp_features.items()) or "no extensions"


def _speaker(line: str) -> str | None:
    """Whose greeting this is, for "you reached an SMTP server, not IMAP"."""
    if re.match(r"\* (OK|PREAUTH|BYE)\b", line):
        return "IMAP"
    if re.match(r"(220|421|554)[ -]", line):
        return "SMTP"
    if line.startswith(("+OK", "-ERR")):
        return "POP3"
    if line.startswith("SSH-"):
        return "SSH"
    if line.startswith("HTTP/"):
        return "HTTP"
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "AEFHILMNORSX" else "a"  # said as letters: an IMAP, an SMTP, a POP3


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _readable(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


def _close(thing: Any) -> None:
    """Release a socket, IMAP or SMTP session however far it got (it may be gone already)."""
    with suppress(Exception):
        thing.shutdown() if isinstance(thing, IMAPClient) else thing.close()


# -- Office 365 -----------------------------------------------------------------------------------

class _TokenStages(_Run):
    """The stages an Office 365 protocol starts with: a token, got as a scan gets it, then what it holds."""

    resource: Resource
    sign_in: MicrosoftSignIn

    def token_stages(self) -> None:
        token: Token = self.stage("token", self.token)
        self.password = token.value  # masked in every detail and trace line from here on
        self.stage("claims", lambda: self.claims(token))

    def token(self) -> _Passed:
        try:
            token = self.sign_in.token(self.mailbox, self.resource)
        except (TokenRefused, SignInLost) as exc:
            raise _StageFailed(exc.said, exc.fix) from None
        except ConfigError as exc:
            raise _StageFailed(str(exc), exit_code=ExitCode.USAGE) from None
        except AuthError as exc:
            raise _StageFailed(str(exc)) from None
        except HannaError as exc:  # the identity platform unreachable, the secrets store unreadable
            raise _StageFailed(str(exc), exit_code=ExitCode.CONNECT) from None
        kind = "app-only" if token.app_only else "delegated"
        scope = self.resource.app_scope if token.app_only else self.resource.delegated_scope
        source = "from the token cache" if token.source == "cache" else "new from the identity platform"
        return _Passed(f"{kind} token for {self.resource.name} ({scope}), {source}", token)

    def claims(self, token: Token) -> _Passed:
        claims = token.claims
        if claims is None:
            return _Passed("the token is not a JWT: its audience and permissions cannot be read here",
                           hint="personal Microsoft accounts get opaque tokens; work or school accounts are needed")
        problems = claims.problems(self.resource, token.app_only, self.mailbox.login_name)
        if problems:
            what, fix = problems[0]
            raise _StageFailed(f"{what}; the token holds: {claims.describe()}", fix)
        return _Passed(f"{claims.describe()} (decoded here, not verified)")

    def lost_sign_in(self) -> str | None:
        """Why the server refused a token that looked right, when it is a sign-in gone since (revoked: Exchange
        refuses such a token at once, with the words it uses for a missing permission): a renewal says so."""
        try:
            self.sign_in.token(self.mailbox, self.resource, fresh=True)
        except (SignInLost, TokenRefused) as exc:
            return f"the token is no longer honoured: renewing it fails ({exc.said})" + (f"; {exc.fix}" if exc.fix else "")
        except HannaError:
            pass  # the identity platform unreachable: nothing learnt, the server's own words stand
        return None


class _OAuthImapRun(_TokenStages, _ImapRun):
    """IMAP as an o365-client scan uses it: AUTHENTICATE XOAUTH2 with a token for IMAP."""

    resource = IMAP

    def __init__(self, mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, report: Report) -> None:
        super().__init__(mailbox, "", options, report)
        self.sign_in = sign_in

    def stages(self) -> None:
        self.token_stages()
        super().stages()

    def capabilities(self, client: IMAPClient) -> _Passed:
        assert self.server is not None
        capabilities = _capabilities(client)
        mechanisms = sorted(c[5:] for c in capabilities if c.startswith("AUTH="))
        if "XOAUTH2" not in mechanisms:
            raise _StageFailed(f"{self.server.host} does not offer XOAUTH2 (AUTH {' '.join(mechanisms) or 'none'})",
                               "an o365-client mailbox logs in to Exchange Online (outlook.office365.com): check"
                               " --imap-host")
        return _Passed(f"AUTH {' '.join(mechanisms)}", capabilities)

    def authenticate(self, client: IMAPClient, login: str) -> bytes:
        lines = client.oauth2_login(login, self.password)  # the reply's lines
        client.noop()  # an app-only token without rights on the mailbox is accepted, then every command is BAD
        return b" ".join(lines)

    def auth_hint(self, text: str) -> str:
        return self.lost_sign_in() or _explain(text, self) or imap.XOAUTH2_HINT.format(login=self.mailbox.login_name)


class _OAuthSmtpRun(_TokenStages, _SmtpRun):
    """SMTP as the CRM sends with an o365-client mailbox: AUTH XOAUTH2 with a fresh token for SMTP."""

    resource = SMTP

    def __init__(self, mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, report: Report) -> None:
        super().__init__(mailbox, "", options, report)
        self.sign_in = sign_in

    def stages(self) -> None:
        self.token_stages()
        super().stages()

    def authenticate(self, session: smtplib.SMTP, login: str) -> tuple[int, bytes]:
        assert self.server is not None
        mechanisms = session.esmtp_features.get("auth", "").upper().split()
        if "XOAUTH2" not in mechanisms:
            raise _StageFailed(f"{self.server.host} does not offer XOAUTH2 (AUTH {' '.join(mechanisms) or 'none'})",
                               "an o365-client mailbox sends through Exchange Online (smtp.office365.com, port 587"
                               " starttls): check --smtp-host", exit_code=ExitCode.SERVER)
        return smtp.xoauth2(session, login, self.password)

    def auth_hint(self, text: str) -> str:
        login = self.mailbox.login_name
        return self.lost_sign_in() or _explain(text, self) or (
            "the token was refused: it needs SMTP.Send (delegated) or SMTP.SendAsApp with the Exchange service"
            f" principal (app-only), and Authenticated SMTP must be on: {_office365_smtp_auth(login)}"
        )


class _GraphRun(_TokenStages):
    """Microsoft Graph as an o365-scan scan uses it: a token for Graph, the mailbox's folders, the chosen ones."""

    protocol = "graph"
    resource = GRAPH

    def __init__(self, mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, report: Report) -> None:
        self.mailbox, self.password, self.options, self.report = mailbox, "", options, report
        self.sign_in = sign_in
        host = urlsplit(sign_in.settings.graph_url).hostname or sign_in.settings.graph_url
        self.server = _Server("graph", host, 443, "ssl", None, options.timeout)
        self.addresses, self.address = [], None
        self.resources = ExitStack()

    def stages(self) -> None:
        self.token_stages()
        graph = self.sign_in.graph(self.mailbox)
        self.resources.callback(graph.close)
        chosen = self.stage("folders", lambda: self.folders(graph))
        for path, total, unread in chosen:
            self.stage("folder", lambda path=path, total=total, unread=unread: _Passed(
                f"{path}: {total} message{'' if total == 1 else 's'}, {unread} unread"))
        self.report.folders = [path for path, _, _ in chosen]

    def folders(self, graph: GraphClient) -> _Passed:
        try:
            listing = graph.folders()
            how = _how_chosen(self.mailbox, "Inbox and Sent Items")
            if self.mailbox.folders:
                chosen = list(self.mailbox.folders)
            else:
                chosen = [graph.well_known("inbox").path, graph.well_known("sentitems").path]
        except HannaError as exc:  # Graph's answer, or the renewed token a 401 asked for
            raise _StageFailed(str(exc), exit_code=ExitCode.AUTH if isinstance(exc, AuthError) else ExitCode.CONNECT) from None
        by_path = {f.path.casefold(): f for f in listing}
        names = sorted(f.path for f in listing)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        missing = [path for path in chosen if path.casefold() not in by_path]
        if missing:
            raise _StageFailed(f"the mailbox has no folder {', '.join(repr(m) for m in missing)}",
                               f"choose folders it has with --folder, by their path as shown (it has: {shown});"
                               " 'hanna-sync folders ID' lists them with counts")
        found = [(path, by_path[path.casefold()].total, by_path[path.casefold()].unread) for path in chosen]
        return _Passed(f"{len(listing)} folder{'' if len(listing) == 1 else 's'}; checking {', '.join(chosen)} ({how})",
                       found)
