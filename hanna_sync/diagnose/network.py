"""The stages IMAP and SMTP share, on sockets of our own: charset, DNS, TCP, TLS and its certificate, the greeting.

Each failure names its cause from what the network did (no such name, refused, silent, a handshake cut
short, a certificate for another name) and the fix; a second connection looks closer where one is needed
(a refused certificate, a silent port that may want TLS).
"""

from __future__ import annotations

import re
import select
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from imapclient.exceptions import IMAPClientError

from hanna_sync.diagnose.hints import explain, login_hint
from hanna_sync.diagnose.run import Passed, Run, StageFailed, close_quietly
from hanna_sync.errors import ConnectError, ExitCode
from hanna_sync.mail.addresses import is_ip_address
from hanna_sync.mail.message import text_codec
from hanna_sync.remote import imap

# Seconds of silence after connecting before checking, on a second connection, whether the port is
# waiting for a TLS handshake (starttls chosen for port 993): long enough for a slow greeting, short
# enough that the classic mistake is named at once rather than after the whole timeout.
GREETING_PATIENCE = 2.0


class NetworkRun(Run):
    """A password protocol's run (IMAP, SMTP): the shared stages up to the greeting, and the login's hint."""

    def charset(self) -> Passed:
        label = getattr(self.mailbox, f"{self.protocol}_charset")
        if not label:
            return Passed("not set: " + ("letters with no or a wrong charset are read as UTF-8, then windows-1257,"
                                         " then latin-1" if self.protocol == "imap" else "UTF-8 is used when sending"))
        codec = text_codec(label)
        if codec is None:
            raise StageFailed(
                f"{label!r} is not a text charset hanna-sync can use",
                f"set --{self.protocol}-charset to one such as utf-8, windows-1257 (Baltic) or iso-8859-13,"
                " or leave it unset",
            )
        return Passed(f"{label} is a known charset (Python codec {codec})")

    def resolve(self) -> Passed:
        assert self.server is not None
        host = self.server.host
        try:
            infos = socket.getaddrinfo(host, self.server.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise StageFailed(*self._dns_problem(exc)) from None
        addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
        if is_ip_address(host):
            return Passed(f"{host} is an IP address: nothing to resolve", addresses)
        ips = [str(sockaddr[0]) for _, sockaddr in addresses]
        more = f" and {len(ips) - 4} more" if len(ips) > 4 else ""
        return Passed(f"{host} resolves to {', '.join(ips[:4])}{more}", addresses)

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

    def connect(self) -> Passed:
        assert self.server is not None
        failures: list[tuple[str, OSError]] = []
        for family, sockaddr in self.addresses:
            try:
                sock = self._open(family, sockaddr)
            except OSError as exc:
                failures.append((sockaddr[0], exc))
                continue
            self.address = (family, sockaddr)
            return Passed(f"connected to {sockaddr[0]} port {self.server.port}", sock)
        raise StageFailed(*self._tcp_problem(failures))

    def _open(self, family: int, sockaddr: Any) -> socket.socket:
        assert self.server is not None
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.resources.callback(close_quietly, sock)
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
        others = ""
        if len(failures) > 1:
            others = f" (and {len(failures) - 1} other address{'es' if len(failures) > 2 else ''})"
        usual = s.usual_port(s.security)
        mismatch = "" if s.port == usual else f"; with {s.security} the usual port is {usual}"
        if isinstance(exc, ConnectionRefusedError):
            return (f"{where} refused the connection{others}",
                    f"nothing listens there, or a firewall rejects it: check {s.option}-port"
                    f" ({s.usual_ports}){mismatch}")
        if isinstance(exc, TimeoutError):
            return (f"no answer from {where} within {s.timeout:g} s{others}",
                    f"a firewall drops the connection (on this network, e.g. outgoing port {s.port} blocked, or at"
                    f" the server), or the server is down: try from another network, and check {s.option}-port"
                    f" ({s.usual_ports}){mismatch}")
        return (f"cannot reach {where}: {exc.strerror or exc}{others}",
                "no route to the server: check this machine's network (and IPv6, if the address is IPv6)")

    def implicit_tls(self, sock: socket.socket) -> Passed:
        """The TLS stage of security ssl: the handshake right after connecting."""

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
            assert self.server is not None
            tls = context.wrap_socket(self.reconnect() if again else sock, server_hostname=self.server.host)
            self.resources.callback(close_quietly, tls)
            return tls, tls

        return self.secure(attempt)

    def secure(self, attempt: Callable[[ssl.SSLContext, bool], tuple[Any, ssl.SSLSocket]]) -> Passed:
        """The TLS stage's core, for ssl and starttls alike; `attempt(context, again)` does the handshake.

        With a verifying context first, as a scan would. When the certificate is refused, a second
        connection (a failed handshake ends the first) looks at it without verifying, to say what it is
        for and until when; with --insecure that connection is the one the later stages use.
        """
        assert self.server is not None
        try:
            context = imap.ssl_context(self.server.ca_file)
        except ConnectError as exc:
            raise StageFailed(str(exc), "give --ca-file a readable PEM file with the CA's certificate") from None
        try:
            value, tls = attempt(context, False)
        except ssl.SSLCertVerificationError as exc:
            return self._untrusted(exc, attempt)
        except OSError as exc:  # ssl.SSLError, timeouts, resets
            raise StageFailed(*self._handshake_problem(exc)) from None
        self.trace("*", f"{tls.version()} established")
        certificate = _Certificate.of(tls)
        return Passed(f"{tls.version()}; {certificate.describe() if certificate else 'no certificate'}", value)

    def _untrusted(self, exc: ssl.SSLCertVerificationError,
                   attempt: Callable[[ssl.SSLContext, bool], tuple[Any, ssl.SSLSocket]]) -> Passed:
        try:
            value, tls = attempt(_unverified_context(), True)
            certificate = _Certificate.of(tls)
        except (OSError, IMAPClientError, smtplib.SMTPException, StageFailed):
            value, certificate = None, None
        detail, hint = self._certificate_problem(exc, certificate)
        if self.options.insecure and value is not None:
            return Passed(f"{detail}; going on anyway (--insecure)", value, hint, failed=True)
        raise StageFailed(detail, hint)

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
                    "this machine's clock is probably wrong: check it with date, and keep it synchronised"
                    f" (NTP){insecure}")
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
                    "an overloaded server, or a firewall or proxy that intercepts the port; try again, and from"
                    " another network")
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
            return self._other_protocol(speaker, first)
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
                raise StageFailed(
                    f"{s.where} speaks implicit TLS: it waits for a TLS handshake and sends no plaintext greeting",
                    f"use {s.option}-security ssl with this port (usually {s.usual_port('ssl')}),"
                    f" or {s.security} with port {s.usual_port(s.security)}",
                    exit_code=ExitCode.TLS,
                )
            if not _readable(sock, max(s.timeout - patience, 0.0)):
                raise StageFailed(
                    f"{s.where} accepted the connection but sent no greeting within {s.timeout:g} s",
                    f"an overloaded server, or a firewall or proxy that intercepts the port, or not {_article(s.label)}"
                    f" {s.label} port: check {s.option}-port ({s.usual_ports})",
                )
        data = sock.recv(512, socket.MSG_PEEK)
        if not data:
            raise StageFailed(
                f"{s.where} closed the connection without a greeting",
                "the server may refuse this machine's address (a blocklist, or fail2ban after failed logins);"
                " its log says why",
            )
        first = data.decode("utf-8", "replace").splitlines()[0].strip()
        speaker = _speaker(first)
        if speaker and speaker != s.label:
            raise StageFailed(*self._other_protocol(speaker, first))

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

    def greeting(self, sock: socket.socket) -> Passed:
        raise NotImplementedError

    def starttls(self, session: Any) -> Passed:
        raise NotImplementedError

    def plaintext(self, offers_starttls: bool | None) -> Passed:
        """The TLS stage of security none: the password is not sent in clear unless the admin allowed it."""
        assert self.server is not None
        offers = " (it offers STARTTLS)" if offers_starttls else ""
        if not self.mailbox.allow_plaintext:
            raise StageFailed("none: no TLS, so the password would cross the network unencrypted; not sent",
                               f"use {self.server.option}-security starttls or ssl{offers}; or, only on a network"
                               " you trust, allow it with --allow-plaintext")
        return Passed("none: no TLS, so the password crosses the network unencrypted",
                       hint=f"use {self.server.option}-security starttls or ssl if the server offers them{offers}")

    def banner(self, line: str | bytes | None) -> str:
        """A greeting made readable: without the long [CAPABILITY ...] code, at most 160 characters."""
        text = self.said(re.sub(rb"\[CAPABILITY [^\]]*\]\s*", b"", line) if isinstance(line, bytes)
                         else re.sub(r"\[CAPABILITY [^\]]*\]\s*", "", line or ""))
        return text if len(text) <= 160 else text[:157] + "..."

    def _other_protocol(self, speaker: str, line: str) -> tuple[str, str]:
        """A greeting in another protocol's words: the port is another service's."""
        assert self.server is not None
        s = self.server
        return (f"{s.where} is {_article(speaker)} {speaker} server, not {s.label}:"
                f" it greets with {self.banner(line)!r}", f"check {s.option}-port: {s.usual_ports}")

    def refused_session(self, text: str) -> tuple[str, str]:
        """A greeting that turns the session down (BYE, 421, 554), or is not the protocol's at all."""
        assert self.server is not None
        s = self.server
        speaker = _speaker(text)
        if speaker and speaker != s.label:
            return self._other_protocol(speaker, text)
        if speaker is None:
            return (f"{s.where} does not greet like {_article(s.label)} {s.label} server: {self.banner(text)!r}",
                    f"check {s.option}-port: {s.usual_ports}")
        if text.startswith("554"):
            return (f"{s.host} refuses connections from this machine: {self.banner(text)}",
                    "its address may be on a blocklist, or the server takes mail only from its own network:"
                    " ask the mail admin, or send through the provider's port 587 or 465 with a login")
        return (f"{s.host} turned the session down: {self.banner(text)}",
                explain(text, self.mailbox, self.protocol)
                or "try again later; the server's log says why (maintenance, a blocked address)")

    def auth_hint(self, text: str) -> str:
        assert self.server is not None
        return login_hint(text, self.mailbox, protocol=self.protocol, host=self.server.host)


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
            names = [*san.get_values_for_type(x509.DNSName),
                     *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
        except x509.ExtensionNotFound:
            names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(tuple(names), str(issuer[0].value) if issuer else cert.issuer.rfc4514_string(),
                   cert.issuer == cert.subject, cert.not_valid_after_utc)

    def describe(self) -> str:
        return (f"certificate for {', '.join(self.names) or 'no names'} from {self.issuer},"
                f" valid until {self.not_after:%Y-%m-%d}")


def _unverified_context() -> ssl.SSLContext:
    """For looking at a refused certificate, probing for TLS, and --insecure: never for a scan."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context



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



def _readable(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


