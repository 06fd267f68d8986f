"""The CRM directory: import customers and leads, list them, and relink the archive after a change."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json, table
from hanna_sync.errors import ExitCode, InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App
    from hanna_sync.linking.directory import ImportResult


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
    [directory.columns] in the config maps a CRM's own column names to these.

    \b
    --snapshot: SOURCE is the whole list; those absent are removed, their links
    with them, and the archive relinked (letters left linked to nobody stay, listed).
    A bad row or a repeated id refuses the whole snapshot (exit 2); removing more
    than directory.max_removed_percent, or any from an empty SOURCE, is refused
    (exit 1) without --force. A removed lead whose address a customer has is
    reported "converted": its letters move to the customer.

    \b
    Example:
      hanna-sync import customers crm-customers.csv --snapshot --dry-run
    """


def read_source(source: str, fmt: str | None, *, app: App, entity_type: str
                ) -> tuple[Path | None, bytes | None, str | None, str | None]:
    """What `import` reads from SOURCE: (path, data, name for errors, format). A path is read by
    import_entities itself; `-` is standard input, read here as bytes.

    THE ONE PLACE a SOURCE string is turned into data: live sources (https:// URLs, cmd:COMMAND) are
    read by remote/crm_source.py, returning (None, the bytes they gave, the SOURCE as errors should name
    it, the format they declared)."""
    from hanna_sync.remote.crm_source import fetch, kind

    if kind(source) in ("https", "url", "command"):
        got = fetch(source, entity_type, secrets=app.secrets, timeout=app.timeout, fmt=fmt)
        return None, got.data, got.name, got.fmt
    if source == "-":
        if not fmt:
            raise InputError("reading standard input: give --format csv or --format json")
        return None, sys.stdin.buffer.read(), None, fmt
    return Path(source), None, None, fmt


def _import(app: App, *, entity_type: str, source: str, fmt: str | None, as_json: bool, allow_conflicts: bool,
            snapshot: bool, dry_run: bool, force: bool) -> None:
    from hanna_sync.linking.directory import LinksWouldGo, import_entities

    path, data, name, fmt = read_source(source, fmt, app=app, entity_type=entity_type)
    try:
        result = import_entities(app.store, entity_type, path, fmt=fmt, stdin_data=data, config=app.config,
                                 allow_conflicts=allow_conflicts, snapshot=snapshot, dry_run=dry_run, force=force,
                                 source_name=name)
    except LinksWouldGo as exc:
        for line in exc.details:
            click.echo(f"  {line}", err=True)
        raise
    show_result(app, result, entity_type=entity_type, as_json=as_json)
    if result.rejected:
        sys.exit(ExitCode.FAILURE)


def show_result(app: App, result: ImportResult, *, entity_type: str, as_json: bool) -> None:
    """Relink after a change that was written, and print what changed (or, in a dry run, what would)."""
    relinked = None
    changed = result.added or result.updated or result.removed
    if changed and not result.dry_run:
        from hanna_sync.linking.relink import relink_or_defer

        relinked = relink_or_defer(app.store, app.config, app.secrets)
    if as_json:
        emit_json({**result.as_dict(), "relink": relinked.as_dict() if relinked else None})
        return
    from hanna_sync.linking.directory import describe_removed

    click.echo(result.summary(entity_type))
    if result.dry_run:
        click.echo(f"Links that would change: {result.links_added} added, {len(result.removed_links)} removed,"
                   f" {len(result.orphaned)} letters left linked to nobody (they stay archived).")
    elif relinked:
        from hanna_sync.linking.relink import summary_line

        click.echo(summary_line(relinked))
    elif changed:
        click.echo("Relink: a pass is running; it relinks the archive at its end.")
    if result.removed:
        click.echo(f"  removed: {_listed(result.removed)}", err=True)
    for lead, customer in result.converted:
        click.echo(f"  converted: lead {lead} is customer {customer}: its letters move to the customer", err=True)
    if result.orphaned:
        click.echo(f"  letters now linked to nobody (kept; retention decides): {_listed(result.orphaned)}", err=True)
    for error in result.rejected:
        click.echo(f"  line {error.line}: {error.message}", err=True)
    for conflict in result.conflicts:
        click.echo(f"  conflict: {conflict}", err=True)
    for line in describe_removed(result.removed_links):
        click.echo(f"  {line}", err=True)
    if result.ignored_columns:
        click.echo(f"  ignored columns: {', '.join(result.ignored_columns)}", err=True)


def _listed(values: list[Any], shown: int = 20) -> str:
    more = f" and {len(values) - shown} more" if len(values) > shown else ""
    return ", ".join(map(str, values[:shown])) + more


def import_command(entity_type: str) -> Callable[..., Any]:
    @click.argument("source", metavar="SOURCE")
    @click.option("--format", "fmt", type=click.Choice(["csv", "json"]), help="File format (default: by extension).")
    @click.option("--snapshot", is_flag=True,
                  help=f"SOURCE is the whole list: {entity_type}s absent from it are removed (with their links).")
    @click.option("--dry-run", is_flag=True, help="Show what would change (entities and links); write nothing.")
    @click.option("--force", is_flag=True,
                  help="Apply a snapshot even if it removes more than directory.max_removed_percent.")
    @click.option("--allow-conflicts", is_flag=True,
                  help="Import even when the relink would take links off archived letters (they are listed).")
    @json_option
    @click.pass_obj
    def command(app: App, *, source: str, fmt: str | None, as_json: bool, allow_conflicts: bool, snapshot: bool,
                dry_run: bool, force: bool) -> None:
        _import(app, entity_type=entity_type, source=source, fmt=fmt, as_json=as_json,
                allow_conflicts=allow_conflicts, snapshot=snapshot, dry_run=dry_run, force=force)

    command.__doc__ = (f"""Import {entity_type}s from SOURCE: a .csv or .json file, - (stdin, with --format),
    an https:// URL (token: 'hanna-sync directory-token {entity_type}s'), or cmd:COMMAND (its output).

    Without --snapshot the rows are upserted; with it SOURCE is the whole list and
    {entity_type}s absent from it are removed (refused above directory.max_removed_percent,
    or from an empty SOURCE, unless --force).

    \b
    Example:
      hanna-sync import {entity_type}s {entity_type}s.csv --snapshot --dry-run
      hanna-sync import {entity_type}s {entity_type}s.csv --snapshot
      hanna-sync import {entity_type}s https://crm.example.lt/export/{entity_type}s.csv --snapshot
      hanna-sync import {entity_type}s "cmd:psql --csv -c 'select * from {entity_type}s' crm" --snapshot""")
    return command


import_group.command("customers")(import_command("customer"))
import_group.command("leads")(import_command("lead"))


@click.command("remove-entity", short_help="Remove a customer or lead; relink its letters.")
@click.argument("entity_type", metavar="customer|lead", type=click.Choice(["customer", "lead"]))
@click.argument("entity_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def remove_entity_command(app: App, entity_type: str, entity_id: str, *, yes: bool, as_json: bool) -> None:
    """Remove one customer or lead: its contacts and links go, the archive is relinked (letters
    left linked to nobody stay archived, listed). Exit code 3 for an unknown ID. A later import
    that has the ID adds it again.

    \b
    Example:
      hanna-sync remove-entity lead L-17 --yes
    """
    from hanna_sync.linking.directory import remove_entity

    if not yes:
        preview = remove_entity(app.store, app.config, entity_type, entity_id, dry_run=True)
        letters = len({letter for letter, _ in preview.removed_links})
        click.confirm(f"Remove {entity_type} {entity_id} and its links to {letters} letters?", abort=True, err=True)
    result = remove_entity(app.store, app.config, entity_type, entity_id)
    show_result(app, result, entity_type=entity_type, as_json=as_json)


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
    from hanna_sync.admin import views

    if as_json:
        emit_json(views.entities(app.store, entity_type))
        return
    entities = app.store.entities(entity_type)
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


COMMANDS = (import_group, remove_entity_command, relink_command, customers, leads)
