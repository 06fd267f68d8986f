"""The CRM directory: import customers and leads, list them, and relink the archive after a change."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json, table
from hanna_sync.errors import ExitCode, InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App


@click.group("import")
def import_group() -> None:
    """Load Customers or Leads from a CRM export (CSV or JSON), upserting on their id.

    \b
    Columns (CSV header, or JSON object keys):
      id        the CRM's id (required; rows with the same id are updated)
      name      display name
      email     main email
      domain    the customer's email domain, e.g. acme.lt (customers only)
      contacts  contact persons: "a@x.lt; Ona <ona@x.lt>" in CSV, a list in JSON
    A column the file does not have keeps the values already stored. A row needs an
    address to link by (email, customer domain or contact). Bad rows are reported by line
    number and skipped; exit code 1 when any row was rejected. An import that would take
    links off archived letters lists them and is refused (exit 2) without --allow-conflicts.
    """


def _import(app: App, *, entity_type: str, file: str, fmt: str | None, as_json: bool, allow_conflicts: bool) -> None:
    from hanna_sync.linking.directory import (
        LinksWouldGo,
        describe_removed,
        import_entities,
    )

    path = None if file == "-" else Path(file)
    if path is None and not fmt:
        raise InputError("reading standard input: give --format csv or --format json")
    stdin_data = sys.stdin.buffer.read() if path is None else None
    try:
        result = import_entities(app.store, entity_type, path, fmt=fmt, stdin_data=stdin_data, config=app.config,
                                 allow_conflicts=allow_conflicts)
    except LinksWouldGo as exc:
        for line in exc.details:
            click.echo(f"  {line}", err=True)
        raise
    relinked = None
    if result.added or result.updated:
        from hanna_sync.linking.relink import relink_or_defer

        relinked = relink_or_defer(app.store, app.config, app.secrets)
    if as_json:
        emit_json({**result.as_dict(), "relink": relinked.as_dict() if relinked else None})
    else:
        click.echo(f"{entity_type.capitalize()}s: {result.added} added, {result.updated} updated,"
                   f" {result.unchanged} unchanged, {len(result.rejected)} rejected.")
        if relinked:
            from hanna_sync.linking.relink import summary_line

            click.echo(summary_line(relinked))
        elif result.added or result.updated:
            click.echo("Relink: a pass is running; it relinks the archive at its end.")
        for error in result.rejected:
            click.echo(f"  line {error.line}: {error.message}", err=True)
        for conflict in result.conflicts:
            click.echo(f"  conflict: {conflict}", err=True)
        for line in describe_removed(result.removed_links):
            click.echo(f"  {line}", err=True)
        if result.ignored_columns:
            click.echo(f"  ignored columns: {', '.join(result.ignored_columns)}", err=True)
    if result.rejected:
        sys.exit(ExitCode.FAILURE)


def import_command(entity_type: str) -> Callable[..., Any]:
    @click.argument("file", metavar="FILE")
    @click.option("--format", "fmt", type=click.Choice(["csv", "json"]), help="File format (default: by extension).")
    @click.option("--allow-conflicts", is_flag=True,
                  help="Import even when the relink would take links off archived letters (they are listed).")
    @json_option
    @click.pass_obj
    def command(app: App, *, file: str, fmt: str | None, as_json: bool, allow_conflicts: bool) -> None:
        _import(app, entity_type=entity_type, file=file, fmt=fmt, as_json=as_json, allow_conflicts=allow_conflicts)

    command.__doc__ = f"Import {entity_type}s from FILE (.csv or .json; - for stdin with --format)."
    return command


import_group.command("customers")(import_command("customer"))
import_group.command("leads")(import_command("lead"))


@click.command("relink")
@json_option
@click.pass_obj
def relink_command(app: App, as_json: bool) -> None:
    """Re-evaluate every archived letter's links against the directory, and mark for the next pass
    the letters it skipped that the directory now concerns.

    Imports run this by themselves. Run it after changing own_domains, free_mail_domains or
    [linking] in the config. Letters that lose their last link stay archived (retention decides).
    Exit code 75 while a pass is running (that pass relinks at its end).

    \b
    Example:
      hanna-sync relink && hanna-sync run
    """
    from hanna_sync.linking.relink import relink_or_defer, summary_line
    from hanna_sync.lock import PassBusy

    result = relink_or_defer(app.store, app.config, app.secrets)
    if result is None:
        raise PassBusy("a pass is running; it relinks the archive at its end")
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(summary_line(result))


def list_entities(app: App, entity_type: str, as_json: bool) -> None:
    entities = app.store.entities(entity_type)
    if as_json:
        out = []
        for e in entities:
            data = asdict(e)
            if entity_type == "lead":
                data.pop("domain")
            out.append(data)
        emit_json(out)
        return
    if not entities:
        click.echo(f"No {entity_type}s yet: load them with 'hanna-sync import {entity_type}s FILE'.")
        return
    columns = ["ID", "Name", "Email"] + (["Domain"] if entity_type == "customer" else []) + ["Contacts"]
    rows = []
    for e in entities:
        contacts = ", ".join(c.email for c in e.contacts)
        rows.append([e.id, e.name, e.email] + ([e.domain] if entity_type == "customer" else []) + [contacts])
    table(None, columns, rows)


@click.command("customers")
@json_option
@click.pass_obj
def customers(app: App, as_json: bool) -> None:
    """List the Customers letters are linked to, with their contact persons."""
    list_entities(app, "customer", as_json)


@click.command("leads")
@json_option
@click.pass_obj
def leads(app: App, as_json: bool) -> None:
    """List the Leads letters are linked to, with their contact persons."""
    list_entities(app, "lead", as_json)


COMMANDS = (import_group, relink_command, customers, leads)
