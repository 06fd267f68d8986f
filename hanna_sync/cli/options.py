"""What several command families read alike: --json, a password, a confirmation, --since, --user, --customer.

A mistyped id is an error here rather than an empty list, which would look like "nothing found".
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hanna_sync.errors import InputError, NotFound

if TYPE_CHECKING:
    from hanna_sync.cli import App


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (and nothing else) on stdout.")(f)


def interactive() -> bool:
    """Whether there is a terminal to ask on; without one a prompt would hang a cron job."""
    return sys.stdin.isatty()


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True)
    raise InputError("no password given: pipe it with --password-stdin, or run on a terminal to be asked")


def since_date(since: str | None) -> str | None:
    """--since as the ISO date the archive compares date_utc with."""
    from datetime import date

    if not since:
        return None
    try:
        return date.fromisoformat(since).isoformat()
    except ValueError:
        raise InputError(f"--since '{since}' is not a date: use YYYY-MM-DD") from None


def check_entities(app: App, customer: str | None, lead: str | None) -> None:
    """A mistyped --customer or --lead is an error, not an empty list that looks like "no letters"."""
    for entity_type, entity_id in (("customer", customer), ("lead", lead)):
        if entity_id is not None:
            app.store.existing_entity(entity_type, entity_id)


def check_user(app: App, user: str | None) -> None:
    """A mistyped --user is an error, not an empty list that looks like "no mailboxes"."""
    if user is not None and not app.store.user_exists(user):
        raise NotFound(f"no user '{user}'; 'hanna-sync list-mailboxes' shows every mailbox's user")
