"""`hanna-sync token`: who may read the archive over HTTP (`serve` is hanna_sync.web.command's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json, table

if TYPE_CHECKING:
    from hanna_sync.cli import App


@click.group("token")
def token_group() -> None:
    """Create, list and revoke the web API's tokens.

    \b
    Examples:
      hanna-sync token create crm
      hanna-sync token create anna --admin
      hanna-sync token revoke crm
    """


@token_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May also read /api/status (mailbox health).")
@click.pass_obj
def token_create(app: App, *, name: str, admin: bool) -> None:
    """Make a token and print it, once: only its hash is kept.

    \b
    Example:
      hanna-sync token create crm
    """
    click.echo(app.store.create_token(name, admin=admin))
    if not app.quiet:
        click.echo(f"Token '{name}'{' (admin)' if admin else ''} created: it is shown only now.", err=True)


@token_group.command("list")
@json_option
@click.pass_obj
def token_list(app: App, *, as_json: bool) -> None:
    """List the tokens: name, admin, created, last used (never the tokens themselves)."""
    rows = app.store.tokens()
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("No tokens: 'hanna-sync token create NAME' makes one.")
    else:
        table(None, ["Name", "Admin", "Created", "Last used"],
              [[r["name"], "yes" if r["admin"] else "no", r["created_at"], r["last_used_at"] or "never"]
               for r in rows])


@token_group.command("revoke")
@click.argument("name")
@click.pass_obj
def token_revoke(app: App, *, name: str) -> None:
    """Delete a token: the server refuses it from its next request. Unknown NAME: exit 3.

    \b
    Example:
      hanna-sync token revoke crm
    """
    app.store.revoke_token(name)
    if not app.quiet:
        click.echo(f"Token '{name}' revoked.")


COMMANDS = (token_group,)
