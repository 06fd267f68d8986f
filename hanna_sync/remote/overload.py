"""A server too busy to log us in is not a wrong password.

Why: at 128 connections at once Dovecot's login process answered `Connection queue full`, imapclient turned
that into a LoginError, and the mailboxes went on auth back-off as if their passwords were wrong. Those
answers are temporary: the mailbox fails "busy" and is tried again later. Only an answer about the whole
server gives its host fewer connections: one account at its own limit (Gmail's 15 sessions) says nothing
about the others. A connection dropped before the login says nothing by itself either (a TLS mismatch, a ban
of this address, a server that drops a wrong password): the pass calls it busy only when the same host was
busy or logged another mailbox in during the pass (scan/__init__.py).
"""

from __future__ import annotations

import re

from hanna_sync.errors import ConnectError

# What servers say when they are short of something, not when a password is wrong (compared case-insensitively).
# The whole server (or our address) is at its limit:
HOST_TEXTS = (
    "[UNAVAILABLE]",  # RFC 5530 3: a temporary failure (Dovecot: auth backend down; Gmail, Yahoo)
    "[LIMIT]",  # RFC 5530 3: the operation ran into a resource limit
    # Dovecot login-common: the oldest waiting login is dropped when a login process is full (client_limit)
    "Connection queue full",
    "Maximum connection limit reached",  # Courier's couriertcpd: MAXPERIP / MAXDAEMONS reached
    "Too many connections",  # Cyrus, Zimbra, hosting providers' per-IP limits
)
# One account is at its limit (checked first: Dovecot prefixes its per-user one with [UNAVAILABLE]):
ACCOUNT_TEXTS = (
    # Dovecot login-common: "Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)"
    "Maximum number of connections from user",
    "Too many simultaneous connections",  # Gmail: 15 at once per account ("[ALERT] ... (Failure)")
)
# Office 365's "User is authenticated but not connected" (with "Server Unavailable") is not here: Exchange says it
# to an app-only token whose app was not given the mailbox, a permission only an admin can grant (imap.APP_ONLY_HINT).

# The words of imaplib and OpenSSL for a connection the server ended (EOF, reset) before the client was logged in.
# Dovecot with its login process full drops the oldest waiting client wherever it is: in the TLS handshake
# (UNEXPECTED_EOF_WHILE_READING), before the greeting (socket error: EOF), or with a BYE (tests/test_overload.py).
_LOST = re.compile(r"socket error|\bEOF\b|unexpected_eof|connection reset|broken pipe|errno 104|errno 32",
                   re.IGNORECASE)

# What a connect or login error says of its server's load (`load_of`):
HOST_BUSY = "host"  # the server said it is overloaded: busy, and its host gets fewer connections
ACCOUNT_BUSY = "account"  # this account is at its connection limit: busy, the host's limit stays
LOST = "lost"  # the connection was dropped before the login: busy only with evidence from the same host


class ServerBusy(ConnectError):
    """The server refused the login for want of room: temporary, never counted as a refusal."""


class ConnectionLost(ConnectError):
    """The connection ended during the login, the server's reason unsaid: a connect failure with the usual
    hint, unless the pass sees its host busy or working (then `busy_text`, and the mailbox is tried again)."""

    def __init__(self, host: str | None, reason: object) -> None:
        super().__init__(
            f"connection to {host} closed during the login ({reason}); not a refused password: if it keeps"
            " happening, 'hanna-sync test' shows the cause (TLS settings, the port, this address blocked)"
        )
        self.busy_text = busy_text(host, reason)


def is_overload(text: str) -> bool:
    """Whether a server's answer says it is overloaded (or temporarily unable), rather than refusing the login."""
    return _says(text, HOST_TEXTS) or _says(text, ACCOUNT_TEXTS)


def _says(text: str, phrases: tuple[str, ...]) -> bool:
    folded = text.casefold()
    return any(p.casefold() in folded for p in phrases)


def is_lost(text: str) -> bool:
    """Whether an error's text says the server ended the connection (EOF or reset) rather than answered."""
    return _LOST.search(text) is not None


def busy_text(host: str | None, reason: object) -> str:
    """A dropped connection's error once its host has shown it is overloaded."""
    return f"{host} is busy: the connection was closed before the login ended ({reason}); tried again later"


def busy_login(host: str | None, login_name: str, text: str) -> None:
    """Raise ServerBusy for a login refused by an overloaded server, ConnectionLost for a connection cut off."""
    if is_overload(text):
        raise ServerBusy(f"{host} is busy: it did not log {login_name} in ({text}); tried again later") from None
    if is_lost(text):
        raise ConnectionLost(host, text) from None


def lost_during_login(host: str | None, reason: object) -> ConnectionLost:
    """A connection reset or closed while logging in: an overloaded server (or its load balancer) does it, and
    so do a ban and a server that drops wrong passwords."""
    return ConnectionLost(host, reason)


def load_of(exc: BaseException) -> str | None:
    """What an IMAP mailbox's failure to connect or log in says of its server's load: HOST_BUSY, ACCOUNT_BUSY,
    LOST (connect's closed greeting or TLS handshake, a login cut off) or None. A scan's own errors come as
    IMAPClientError or OSError, never as a ConnectError."""
    if not isinstance(exc, ConnectError):
        return None
    text = str(exc)
    if isinstance(exc, ConnectionLost):
        return LOST
    if _says(text, ACCOUNT_TEXTS):
        return ACCOUNT_BUSY
    if isinstance(exc, ServerBusy) or _says(text, HOST_TEXTS):
        return HOST_BUSY
    return LOST if is_lost(text) else None
