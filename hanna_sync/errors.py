"""The small error tree the CLI turns into one line on stderr and an exit code.

Every *expected* failure (bad config, wrong password, unreachable server, bad input file) is a
`HannaError` carrying the message a sysadmin reads and the exit code a script checks. Anything else
is a bug and is shown with "rerun with -v" so the traceback can be reported.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (README, "Exit codes"). Scripts rely on these numbers."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3  # a mailbox, letter, customer, lead or user named on the command line does not exist
    TEMPFAIL = 75  # EX_TEMPFAIL: another pass holds the lock, try again later
    DATABASE = 74  # EX_IOERR: the database is damaged, the disk full, or it cannot be opened or written
    NO_PERMISSION = 77  # EX_NOPERM: setup-service without root (it sets up the system-wide service)
    # `hanna-sync test`: the family of the first failed stage, so a script knows what kind of fix is due
    # (spaced like imapsync's 10 connect, 12 TLS, 16 auth).
    CONNECT = 10  # DNS or TCP: the name does not resolve, the port refuses or stays silent
    TLS = 12  # handshake, certificate, STARTTLS, or port and --*-security disagree (implicit TLS vs plaintext)
    SERVER = 14  # greeting, capabilities or EHLO: not the expected server, session refused, no password login
    AUTH = 16  # the login was refused
    FOLDER = 18  # a chosen folder is missing or cannot be opened read-only
    SEND = 20  # --send-to: the test message was refused
    CHARSET = 22  # the IMAP or SMTP charset is not a usable text charset


class HannaError(Exception):
    """An expected failure: its message is shown as is, without a traceback."""

    exit_code: int = ExitCode.FAILURE


class ConfigError(HannaError):
    """The config file is unreadable, has an unknown key or a value of the wrong type."""

    exit_code = ExitCode.USAGE


class InputError(HannaError):
    """An option or input file the user gave is wrong (not a server's fault)."""

    exit_code = ExitCode.USAGE


class NotFound(HannaError):
    """A mailbox, letter, customer, lead or user named on the command line does not exist.

    One exit code for every command, so a script tells "no such id" from "found nothing" (exit 0, empty)."""

    exit_code = ExitCode.NOT_FOUND


class NoPermission(HannaError):
    """The command needs rights this user lacks (setup-service's system mode without root); nothing was done."""

    exit_code = ExitCode.NO_PERMISSION


class SecretsError(HannaError):
    """The secrets store cannot be read or written (locked keyring, wrong key, ...)."""


class ConnectError(HannaError):
    """A mail server could not be reached, refused the login or lacks a folder."""


class AuthError(ConnectError):
    """The server refused the credentials: retrying soon only risks locking the account."""


class ReauthRequired(AuthError):
    """A Microsoft sign-in is gone (refresh token expired or revoked, never signed in): only a person can
    fix it, with `hanna-sync login MAILBOX`, so the scan backs off instead of retrying every pass."""
