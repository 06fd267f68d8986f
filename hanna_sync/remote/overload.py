"""A server too busy to log us in is not a wrong password.

Why: at 128 connections at once Dovecot's login process answered `Connection queue full`, imapclient turned
that into a LoginError, and the mailboxes went on auth back-off as if their passwords were wrong. Those
answers are temporary: the mailbox fails "busy", is tried again later, and its host gets fewer connections.
"""

from __future__ import annotations

import re

from hanna_sync.errors import ConnectError

# What servers say when they are short of something, not when a password is wrong (compared case-insensitively):
OVERLOAD_TEXTS = (
    "[UNAVAILABLE]",  # RFC 5530 3: a temporary failure (Dovecot: auth backend down, user+IP limit; Gmail, Yahoo)
    "[LIMIT]",  # RFC 5530 3: the operation ran into a resource limit
    # Dovecot login-common: the oldest waiting login is dropped when a login process is full (client_limit)
    "Connection queue full",
    # Dovecot login-common: "Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)"
    "Maximum number of connections",
    "Too many simultaneous connections",  # Gmail: 15 at once per account ("[ALERT] ... (Failure)")
    "Maximum connection limit reached",  # Courier's couriertcpd: MAXPERIP / MAXDAEMONS reached
    "Too many connections",  # Cyrus, Zimbra, hosting providers' per-IP limits
)
# Office 365's "User is authenticated but not connected" (with "Server Unavailable") is not here: Exchange says it
# to an app-only token whose app was not given the mailbox, a permission only an admin can grant (imap.APP_ONLY_HINT).

# The words of imaplib and OpenSSL for a connection the server ended (EOF, reset) before the client was logged in.
# Dovecot with its login process full drops the oldest waiting client wherever it is: in the TLS handshake
# (UNEXPECTED_EOF_WHILE_READING), before the greeting (socket error: EOF), or with a BYE (tests/test_overload.py).
_LOST = re.compile(r"socket error|\bEOF\b|unexpected_eof|connection reset|broken pipe|errno 104|errno 32",
                   re.IGNORECASE)


class ServerBusy(ConnectError):
    """The server refused or dropped the connection for want of room: temporary, never counted as a refusal."""


def is_overload(text: str) -> bool:
    """Whether a server's answer says it is overloaded (or temporarily unable), rather than refusing the login."""
    folded = text.casefold()
    return any(t.casefold() in folded for t in OVERLOAD_TEXTS)


def is_lost(text: str) -> bool:
    """Whether an error's text says the server ended the connection (EOF or reset) rather than answered."""
    return _LOST.search(text) is not None


def busy_login(host: str | None, login_name: str, text: str) -> None:
    """Raise ServerBusy when a refused login was the server's overload or a connection that went away."""
    if is_overload(text) or is_lost(text):
        raise ServerBusy(f"{host} is busy: it did not log {login_name} in ({text}); tried again later") from None


def lost_during_login(host: str | None, reason: object) -> ServerBusy:
    """A connection reset or closed while logging in: what an overloaded server (or its load balancer) does."""
    return ServerBusy(f"{host} is busy: the connection was closed during login ({reason}); tried again later")


def is_busy(exc: BaseException) -> bool:
    """Whether an IMAP mailbox's failure to connect or log in was its server's overload: ServerBusy, or an
    error whose text says so or says the connection ended (connect's `* BYE` or closed greeting, an XOAUTH2
    login cut off); a scan's own errors come as IMAPClientError or OSError, never as a ConnectError."""
    text = str(exc)
    return isinstance(exc, ServerBusy) or (isinstance(exc, ConnectError) and (is_overload(text) or is_lost(text)))
