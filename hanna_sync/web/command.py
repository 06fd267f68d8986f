"""`hanna-sync serve`: the web server's command. It sits in web/ (floor 6, beside cli/, which it may
not import); hanna_sync.__main__ adds it to the `hanna-sync` group."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import click

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip_address(value: str | None) -> str | None:
    """The proxy's address as waitress compares it with the peer's: an IP address, written as it writes one."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an IP address: the reverse proxy's, e.g. 127.0.0.1") from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="The port (0: any free one, printed on stderr).")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Requests served at once, each thread with its own read-only database connection.")
@click.option("--trusted-proxy", metavar="ADDRESS", callback=lambda ctx, param, value: _ip_address(value),
              help="The reverse proxy's address (e.g. 127.0.0.1): the client is then the last address its"
                   " X-Forwarded-For names, so the failed-login limit counts each client, not the proxy."
                   " Without it X-Forwarded-For is ignored.")
@click.pass_obj
def serve(app: Any, *, host: str, port: int, threads: int, trusted_proxy: str | None) -> None:
    """Serve the archive read-only over HTTP: pages for staff, the JSON API under /api/ for the CRM.

    Every request needs a token ('hanna-sync token create NAME'): the pages ask for it once in a login
    form, the API as 'Authorization: Bearer TOKEN'. Each thread reads the database through its own
    query_only SQLite connection, so a pass runs beside the server. Plain HTTP on loopback: put a reverse proxy with TLS
    (nginx or Caddy, see the README) in front before anyone else reaches it.

    \b
    Example:
      hanna-sync serve --port 8025        # then open http://127.0.0.1:8025/
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8025/api/customers
      hanna-sync serve --trusted-proxy 127.0.0.1   # behind nginx on the same host
    """
    from waitress.server import create_server

    from hanna_sync.web.app import WebApp

    app.store.close()  # opened read-write once: migrated (the tokens table) before serving read-only
    if not _loopback(host):
        log.warning("serve: listening on %s, not loopback: tokens and letters cross the network in plain HTTP"
                    " unless a reverse proxy with TLS is in front (README, \"TLS in front: nginx or Caddy\")", host)
    proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_headers": {"x-forwarded-for"},
             "trusted_proxy_count": 1} if trusted_proxy else {}
    server = create_server(WebApp(app.config), host=host, port=port, threads=threads, ident="hanna-sync",
                           clear_untrusted_proxy_headers=True, **proxy)
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    for bound_host, bound_port in listening:
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        click.echo(f"Serving the archive on http://{shown}:{bound_port}/ (pages; the JSON API under"
                   f" http://{shown}:{bound_port}/api/; Ctrl-C stops)", err=True)
    server.run()


