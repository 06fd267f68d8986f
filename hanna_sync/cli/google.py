"""Google's part of the mailbox commands: add-mailbox --kind google-scan / google-client, the consent, and
`login`'s options.

The consent is the installed-app flow: a URL to open, and the browser's redirect to a listener on
127.0.0.1; on a server without a browser, `--paste` reads back the address the browser was sent to, and
`--port` fixes the listener's port for an SSH port-forward (ssh -L PORT:127.0.0.1:PORT server).
"""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING, Any

import click

from hanna_sync.cli.options import interactive
from hanna_sync.errors import InputError

if TYPE_CHECKING:
    from hanna_sync.models import Mailbox
    from hanna_sync.remote.google_auth import Consent


def consent_from_options(*, paste: bool, port: int | None) -> Consent:
    """How the consent comes back: pasted (headless), or to the loopback listener (on --port, if given)."""
    from hanna_sync.remote.google_auth import Consent

    if paste and port:
        raise InputError("--paste and --port contradict each other: --paste needs no listener, --port is for one")

    def show(url: str) -> None:  # on stderr, so that --json output stays clean
        click.echo("Open this address in a browser and sign in as the mailbox's own Google account:", err=True)
        click.echo(url, err=True)
        if paste:
            click.echo("After allowing access the browser is sent to http://127.0.0.1:.../ (the page will not load:"
                       " that is expected); copy that whole address from its address bar.", err=True)
        else:
            click.echo("Waiting for the browser (on another machine: rerun with --paste, or forward the port"
                       " with ssh -L PORT:127.0.0.1:PORT and give --port PORT)...", err=True)

    def pasted() -> str:
        if interactive():
            return str(click.prompt("Address the browser was sent to", err=True))
        line = sys.stdin.readline()
        if not line.strip():
            raise InputError("--paste: no address on standard input")
        return line

    return Consent(show=show, paste=pasted if paste else None, port=port or 0)


def google_mailbox_from_options(*, user: str | None, email: str | None, provider: str | None, kind: str,
                                password_stdin: bool, settings: dict[str, Any]) -> Mailbox:
    """A new, unsaved Google mailbox from add-mailbox's (or test's) options: no password, no provider."""

    if password_stdin:
        raise InputError(f"a {kind} mailbox has no password: it signs in with Google (OAuth2)")
    if provider:
        raise InputError(f"--provider is for IMAP mailboxes: a {kind} mailbox is on Gmail")
    if not email:
        if not interactive():
            raise InputError("--email is required")
        email = click.prompt("Email")
    from hanna_sync.admin import google_mailboxes
    return google_mailboxes.new_mailbox(user or getpass.getuser(), email, settings, kind)
