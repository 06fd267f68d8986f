"""SMTP's own stages after the greeting: STARTTLS, EHLO, the login and, when asked, a real test message."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from contextlib import suppress

from hanna_sync.diagnose.hints import OAUTH_ONLY, explain
from hanna_sync.diagnose.network import NetworkRun
from hanna_sync.diagnose.run import Passed, StageFailed, close_quietly
from hanna_sync.errors import ExitCode
from hanna_sync.mail.message import text_codec
from hanna_sync.remote import smtp


class SmtpRun(NetworkRun):
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

    def greeting(self, sock: socket.socket) -> Passed:
        assert self.server is not None
        s = self.server
        if not isinstance(sock, ssl.SSLSocket):
            self.await_greeting(sock)
        try:
            session = smtp.session_on_socket(sock, s.host, s.port, s.timeout, trace=self.trace)
        except smtplib.SMTPConnectError as exc:
            number = f"{exc.smtp_code} " if exc.smtp_code > 0 else ""
            raise StageFailed(*self.refused_session(f"{number}{self.said(exc.smtp_error)}")) from None
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):
                raise StageFailed(f"{s.where} sent no greeting within {s.timeout:g} s",
                                  f"an overloaded server, or not an SMTP port: check {s.option}-port"
                                  f" ({s.usual_ports})") from None
            raise StageFailed(f"{s.where} closed the connection without a greeting",
                               "the server may refuse this machine's address (a blocklist, or fail2ban after failed"
                               " logins); its log says why") from None
        self.resources.callback(close_quietly, session)
        assert session.greeting is not None
        code, text = session.greeting
        return Passed(f"{code} {self.said(text)}", session)

    def _ehlo(self, session: smtplib.SMTP) -> None:
        assert self.server is not None
        code, reply = session.ehlo()
        if code != 250:
            raise StageFailed(f"{self.server.host} refused EHLO ({code} {self.said(reply)})",
                               "the server does not accept this machine's greeting; its log says why",
                               exit_code=ExitCode.SERVER)

    def starttls(self, session: smtplib.SMTP) -> Passed:
        assert self.server is not None
        s = self.server
        self._ehlo(session)
        if not session.has_extn("starttls"):
            raise StageFailed(f"{s.host} does not offer STARTTLS (its EHLO lists: {_features(session)})",
                               "use --smtp-security ssl (usually port 465) if the server has it;"
                               " none would send the password unencrypted")

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[smtplib.SMTP, ssl.SSLSocket]:
            current = session
            if again:
                current = smtp.session_on_socket(self.reconnect(), s.host, s.port, s.timeout, trace=self.trace)
                self.resources.callback(close_quietly, current)
                current.ehlo()
            try:
                current.starttls(context=context)
            except smtplib.SMTPResponseException as exc:
                raise StageFailed(f"{s.host} refused STARTTLS ({exc.smtp_code} {self.said(exc.smtp_error)})",
                                   "the server's TLS setup is broken; ask its admin, or use ssl on port 465") from None
            assert isinstance(current.sock, ssl.SSLSocket)
            return current, current.sock

        return self.secure(attempt)

    def ehlo(self, session: smtplib.SMTP) -> Passed:
        self._ehlo(session)
        return Passed(f"EHLO accepted: {_features(session)}")

    def login(self, session: smtplib.SMTP) -> Passed:
        assert self.server is not None
        s = self.server
        login = self.mailbox.login_name
        if not session.has_extn("auth"):
            if s.security == "none":
                hint = ("the server may offer a login only over TLS: use --smtp-security starttls (port 587)"
                        " or ssl (port 465)")
            elif s.port == 25:
                hint = "port 25 is for mail between servers and has no login: use 587 (starttls) or 465 (ssl)"
            else:
                hint = ("this port takes no login: ask the mail admin which port is for sending with a password"
                        " (usually 587 or 465)")
            raise StageFailed(f"{s.host} offers no login (no AUTH in its EHLO reply)", hint, exit_code=ExitCode.SERVER)
        try:
            code, reply = self.authenticate(session, login)
        except UnicodeEncodeError:
            raise self.not_ascii() from None
        except smtplib.SMTPAuthenticationError as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise StageFailed(f"{s.host} refused the login for {login} ({text})", self.auth_hint(text)) from None
        except smtplib.SMTPServerDisconnected:
            raise  # silence or a dropped connection, not a refusal: stage() says which
        except smtplib.SMTPException:  # "No suitable authentication method found."
            mechanisms = " ".join(session.esmtp_features.get("auth", "").split())
            raise StageFailed(f"{s.host} offers no password login hanna-sync can use (AUTH {mechanisms})",
                               OAUTH_ONLY, exit_code=ExitCode.SERVER) from None
        return Passed(f"logged in as {login} ({code} {self.said(reply)})")

    def authenticate(self, session: smtplib.SMTP, login: str) -> tuple[int, bytes]:
        return session.login(login, self.password)

    def xoauth2(self, session: smtplib.SMTP, login: str, *, fix: str) -> tuple[int, bytes]:
        """AUTH XOAUTH2 with the token, for a kind that logs in with one; `fix` says which server it sends
        through when this one does not offer it."""
        assert self.server is not None
        mechanisms = session.esmtp_features.get("auth", "").upper().split()
        if "XOAUTH2" not in mechanisms:
            raise StageFailed(f"{self.server.host} does not offer XOAUTH2 (AUTH {' '.join(mechanisms) or 'none'})",
                              fix, exit_code=ExitCode.SERVER)
        return smtp.xoauth2(session, login, self.password)

    def send(self, session: smtplib.SMTP) -> Passed:
        assert self.server is not None and self.options.send_to
        host, to = self.server.host, self.options.send_to
        charset = text_codec(self.mailbox.smtp_charset)
        message = smtp.diagnostic_message(self.mailbox.email, to, self.server.where, charset)
        try:
            session.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            text = f"{code} {self.said(reply)}"
            raise StageFailed(f"{host} refused the recipient {to} ({text})", self.send_hint(text)) from None
        except smtplib.SMTPSenderRefused as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise StageFailed(f"{host} refused the sender {self.mailbox.email} ({text})",
                              self.send_hint(text)) from None
        except smtplib.SMTPResponseException as exc:
            text = f"{exc.smtp_code} {self.said(exc.smtp_error)}"
            raise StageFailed(f"{host} refused the test message ({text})", self.send_hint(text)) from None
        return Passed(f"accepted a test message to {to} ({message['Message-ID']}): look for it there, and in spam")

    def send_hint(self, text: str) -> str:
        if known := explain(text, self.mailbox, self.protocol):
            return known
        if re.search(r"\b5\.1\.1\b|does not exist|unknown user|no such user", text, re.IGNORECASE):
            return "the recipient address does not exist: check --send-to"
        return "the server's reply says why; its log has more"

    def not_ascii(self) -> StageFailed:
        """smtplib's AUTH sends ASCII only: a password with ą or š cannot get through (IMAP uses AUTHENTICATE PLAIN)."""
        assert self.server is not None
        what = "login name" if not self.mailbox.login_name.isascii() else "password"
        return StageFailed(
            f"the {what} has characters outside ASCII (such as ą or š), which the {self.server.label} login"
            " cannot send",
            f"change the {what} at the provider to ASCII letters, digits and punctuation, then give hanna-sync"
            " the new one",
            exit_code=ExitCode.AUTH,
        )


def _features(session: smtplib.SMTP) -> str:
    features = session.esmtp_features.items()
    return "; ".join(" ".join(f"{name.upper()} {value}".split()) for name, value in features) or "no extensions"


