"""`hanna-sync serve` and `hanna-sync token`: the archive read over HTTP, and who may read it."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json, table

if TYPE_CHECKING:
    from hanna_sync.cli import App

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="The port (0: any free one, printed on stderr).")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Connections served at once (their database reads take turns).")
@click.pass_obj
def serve(app: App, *, host: str, port: int, threads: int) -> None:
    """Serve the archive's JSON API (read-only) over HTTP, for the CRM and staff.

    Every request needs a token ('hanna-sync token create NAME'). The database is read through a
    query_only SQLite connection, so a pass runs beside the server. Plain HTTP on loopback: put a reverse proxy
    with TLS (nginx, see the README) in front before anyone else reaches it.

    \b
    Example:
      hanna-sync serve --port 8025
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8025/api/customers
    """
    from waitress.server import create_server

    from hanna_sync.web.app import WebApp

    app.store.close()  # opened read-write once: migrated (the tokens table) before serving read-only
    if not _loopback(host):
        log.warning("serve: listening on %s, not loopback: tokens and letters cross the network in plain HTTP"
                    " unless a reverse proxy with TLS is in front (README, \"Reading the archive over HTTP\")", host)
    server = create_server(WebApp(app.config), host=host, port=port, threads=threads, ident="hanna-sync")
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    for bound_host, bound_port in listening:
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        click.echo(f"Serving the archive on http://{shown}:{bound_port}/api/ (Ctrl-C stops)", err=True)
    server.run()


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


COMMANDS = (serve, token_group)
