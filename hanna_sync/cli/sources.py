"""The CRM's sources: `sync-directory` refreshes the configured ones now, `directory-token` keeps a URL
source's token (or user:password) in the secrets store."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json
from hanna_sync.errors import ConfigError, ExitCode, InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App

ENTITY_TYPES = {"customers": "customer", "leads": "lead"}


@click.command("sync-directory")
@click.option("--dry-run", is_flag=True, help="Read the sources and show what would change; write nothing.")
@click.option("--force", is_flag=True,
              help="Apply a snapshot even when it removes more than directory.max_removed_percent.")
@json_option
@click.pass_obj
def sync_directory(app: App, *, dry_run: bool, force: bool, as_json: bool) -> None:
    """Refresh every source of [directory] (customers, leads) now, each as a snapshot, and relink.

    What `run` does by itself when a source's last refresh is older than directory.refresh_minutes:
    entities gone from the source are removed (their letters relinked; letters that concern nobody
    any more stay archived), new ones added, changed ones updated. A snapshot that would remove more
    than directory.max_removed_percent of them (or any, from an empty source) is refused unless
    --force: a truncated export must not empty the directory.

    \b
    Exit codes: 0 every source refreshed, 1 a source failed or was refused (nothing of it written;
    the others are still refreshed), 2 no source configured.
    Examples:
      hanna-sync sync-directory --dry-run
      hanna-sync sync-directory --json
    """
    from hanna_sync.scan.directory_refresh import configured_sources, refresh_directory

    if not configured_sources(app.config):
        raise ConfigError("no CRM source configured: set customers and/or leads in [directory] of the config"
                          " (a path, an https:// URL or cmd:COMMAND); 'hanna-sync import' loads a file by hand")
    outcomes = refresh_directory(app.store, app.config, app.secrets, only_due=False, dry_run=dry_run, force=force)
    relinked = None
    if any(o.changed for o in outcomes):
        from hanna_sync.linking.relink import relink_or_defer

        relinked = relink_or_defer(app.store, app.config, app.secrets)
    ok = all(o.ok for o in outcomes)
    if as_json:
        emit_json({"ok": ok, "dry_run": dry_run, "sources": [o.as_dict() for o in outcomes],
                   "relink": relinked.as_dict() if relinked else None})
    else:
        for outcome in outcomes:
            if not outcome.ok:
                continue
            click.echo(("Dry run: " if dry_run else "") + outcome.summary()[0].upper() + outcome.summary()[1:] + ".")
            if outcome.removed:
                more = f" and {len(outcome.removed) - 10} more" if len(outcome.removed) > 10 else ""
                click.echo(f"  removed: {', '.join(outcome.removed[:10])}{more}")
            for lead, customer in outcome.converted:
                click.echo(f"  converted: lead {lead} -> customer {customer}")
        if relinked is not None:
            from hanna_sync.linking.relink import summary_line

            click.echo(summary_line(relinked))
        elif any(o.changed for o in outcomes):
            click.echo("Relink: a pass is running; it relinks the archive at its end.")
    for outcome in outcomes:
        if not outcome.ok:
            click.echo(f"Error: {outcome.summary()}", err=True)
    if not ok:
        sys.exit(ExitCode.FAILURE)


@click.command("directory-token")
@click.argument("which", type=click.Choice(sorted(ENTITY_TYPES)))
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the token from the first line of standard input.")
@click.option("--clear", is_flag=True, help="Remove the stored token.")
@click.pass_obj
def directory_token(app: App, *, which: str, from_stdin: bool, clear: bool) -> None:
    """Keep the token of an https:// customers or leads source in the secrets store.

    Sent as "Authorization: Bearer TOKEN"; a value "user:password" is sent as basic auth instead.
    Asked for with a hidden prompt (or the first line of stdin with --stdin): never on the command
    line, in the config or in a log.

    \b
    Examples:
      hanna-sync directory-token customers
      printf '%s\\n' "$CRM_TOKEN" | hanna-sync directory-token leads --stdin
      hanna-sync directory-token leads --clear
    """
    from hanna_sync.remote.crm_source import kind, secret_ref

    ref = secret_ref(ENTITY_TYPES[which])
    if clear:
        if from_stdin:
            raise InputError("--clear and --stdin: give one")
        if app.secrets.get(ref) is None:
            click.echo(f"No token of the {which} source is stored: nothing removed.")
            return
        app.secrets.delete(ref)
        click.echo(f"Removed the {which} source's token from the secrets store.")
        return
    if from_stdin:
        token = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        token = click.prompt(f"Token (or user:password) for the {which} source", hide_input=True, err=True)
    else:
        raise InputError("no terminal to ask for the token on: give --stdin and pipe it")
    token = token.strip()
    if not token:
        raise InputError("the token is empty: nothing stored")
    if any(c in token for c in "\r\n\0"):
        raise InputError("the token holds a line break or a NUL: nothing stored")
    app.secrets.set(ref, token)
    how = "basic auth (user:password)" if ":" in token else "a bearer token"
    click.echo(f"Stored the {which} source's credentials in the secrets store, sent as {how}.")
    source = getattr(app.config.directory, which)
    if source and kind(source) != "https":
        click.echo(f"Note: [directory] {which} is not an https:// URL: the token is only sent to one.", err=True)


COMMANDS = (sync_directory, directory_token)
