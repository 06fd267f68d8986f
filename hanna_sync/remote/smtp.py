"""SMTP transport: a session on a socket connected beforehand, traced with credentials masked.

hanna-sync archives mail and sends none itself, but the CRM sends with a mailbox's SMTP settings and
password, so `hanna-sync test` checks them: greeting, EHLO, STARTTLS, AUTH and, when asked, a real
test message. Like the IMAP side, the caller resolves, connects and shakes hands, so each stage is timed
and explained on its own; smtplib does the talking from the greeting on.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

Trace = Callable[[str, str], None]
"""Gets each protocol line as ("C", what was sent) or ("S", what came back), credentials masked."""


class _SMTPOnSocket(smtplib.SMTP):
    """smtplib on a connected socket; keeps the greeting and traces every command and reply line.

    What follows a 334 reply is a login exchange and is masked, as is what follows AUTH's mechanism
    name (smtplib sends PLAIN's credentials right there); the message after a 354 is shown as its size.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float, *, trace: Trace | None) -> None:
        self._connected = sock
        self._trace = trace
        self._last_code = 0
        self.greeting: tuple[int, bytes] | None = None
        super().__init__(host, port, timeout=timeout)  # reads the greeting: SMTPConnectError unless 220

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._connected

    def send(self, s: str | bytes) -> None:  # type: ignore[override]  # smtplib only ever sends str or bytes
        if self._trace:
            self._trace("C", self._masked(s))
        super().send(s)

    def _masked(self, s: str | bytes) -> str:
        if self._last_code == 354:
            return f"(the message, {len(s)} bytes)"
        if self._last_code == 334:
            return "***"
        text = (s.decode("utf-8", "replace") if isinstance(s, bytes) else s).rstrip("\r\n")
        words = text.split()
        if len(words) > 2 and words[0].upper() == "AUTH":
            return f"{words[0]} {words[1]} ***"
        return text

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        self._last_code = code
        if self.greeting is None:
            self.greeting = (code, message)
        if self._trace:
            lines = message.decode("utf-8", "replace").split("\n")
            for i, line in enumerate(lines):
                self._trace("S", f"{code}{'-' if i < len(lines) - 1 else ' '}{line}" if code > 0 else line)
        return code, message


def session_on_socket(
    sock: socket.socket, host: str, port: int, timeout: float, *, trace: Trace | None = None
) -> _SMTPOnSocket:
    """An smtplib session on a connected socket, its greeting read (a 220, else `SMTPConnectError`).

    The greeting is kept as `.greeting` (code, text); a silent or vanished server raises
    `SMTPServerDisconnected`, with the `TimeoutError` as its context when it was silence.
    """
    return _SMTPOnSocket(sock, host, port, timeout, trace=trace)


def xoauth2(session: smtplib.SMTP, user: str, token: str) -> tuple[int, bytes]:
    """AUTH XOAUTH2 with the SASL string as the initial response; an error challenge (334) gets an empty
    reply, after which the server sends its refusal (`SMTPAuthenticationError`)."""
    sasl = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return session.auth("XOAUTH2", lambda challenge=None: sasl if challenge is None else "", initial_response_ok=True)


def diagnostic_message(sender: str, recipient: str, server: str, charset: str | None) -> EmailMessage:
    """What `hanna-sync test --send-to` sends: it says what it is, so the recipient need not wonder."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "hanna-sync test message"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("hanna-sync", domain=sender.rpartition("@")[2] or None)
    message.set_content(
        f"This message was sent by 'hanna-sync test' to check that {sender} can send mail through {server}.\n"
        "It needs no reply.\n",
        charset=charset or "utf-8",
    )
    return message
