"""The archive's commands: list, show, search and thread letters, link and unlink them by hand, export
their originals, purge them."""

from __future__ import annotations

import itertools
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import check_entities, interactive, json_option, since_date
from hanna_sync.cli.render import emit_json, progress_reporter, short_date, table
from hanna_sync.errors import InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App
    from hanna_sync.db.rows import LetterSummary
    from hanna_sync.linking.manual import ByHand


@click.command("letters")
@click.option("--customer", metavar="ID", help="Letters linked to this customer (its profile card).")
@click.option("--lead", metavar="ID", help="Letters linked to this lead.")
@click.option("--mailbox", "mailbox_id", type=int, metavar="ID", help="Letters seen in this mailbox.")
@click.option("--since", metavar="DATE", help="Letters dated on or after DATE (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many, newest first.")
@json_option
@click.pass_obj
def letters(app: App, *, customer: str | None, lead: str | None, mailbox_id: int | None, since: str | None,
            limit: int | None, as_json: bool) -> None:
    """List archived letters, newest first, with the rule that linked them.

    \b
    Example (a customer's profile card):
      hanna-sync letters --customer C-1001 --since 2025-01-01
    """
    since = since_date(since)
    from hanna_sync.admin import views

    # An unknown id is an error, not "No letters."
    rows = views.letters(app.store, customer=customer, lead=lead, mailbox_id=mailbox_id, since=since, limit=limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No letters.")
        return

    def rule_of(row: LetterSummary) -> str:
        wanted = [link for link in row["links"]
                  if (customer and link["entity_id"] == customer and link["entity_type"] == "customer")
                  or (lead and link["entity_id"] == lead and link["entity_type"] == "lead")] or row["links"]
        return ", ".join(f"{link['entity_type']} {link['entity_id']}: {link['rule']}" for link in wanted)

    table(None, ["ID", "Date (UTC)", "From", "Subject", "Linked by"],
          [[r["id"], short_date(r["date_utc"]), r["from_addr"], r["subject"], rule_of(r)] for r in rows])



@click.command("show")
@click.argument("letter_id", metavar="LETTER", type=int)
@json_option
@click.pass_obj
def show(app: App, letter_id: int, as_json: bool) -> None:
    """Show one archived letter: headers, links, where it was seen, and its text.

    A link made by hand reads "by manual"; a link taken off by hand reads "Unlinked by hand"
    (--json: the "unlinked" list).

    \b
    Example:
      hanna-sync show 42
    """
    from hanna_sync.admin import views

    letter = views.letter(app.store, letter_id)
    if as_json:
        emit_json(letter)
        return
    lines = [
        f"Letter {letter['id']}",
        f"Date:       {letter['date_utc'] or '-'}",
        f"From:       {letter['from_name'] + ' ' if letter['from_name'] else ''}<{letter['from_addr'] or '-'}>",
        f"To:         {', '.join(letter['to_addrs']) or '-'}",
        f"Cc:         {', '.join(letter['cc_addrs']) or '-'}",
        f"Subject:    {letter['subject']}",
        f"Message-ID: {letter['message_id'] or '-'}",
    ]
    for link in letter["links"]:
        address = "" if link["rule"] == "manual" else f" ({link['address']})"
        lines.append(f"Linked:     {link['entity_type']} {link['entity_id']} by {link['rule']}{address}")
    for unlinked in letter["unlinked"]:
        lines.append(f"Unlinked by hand: {unlinked['entity_type']} {unlinked['entity_id']} (was {unlinked['rule']},"
                     f" {unlinked['unlinked_at']})")
    api_of = {m.id: "Gmail id" if m.kind == "google-scan" else "Graph id" for m in app.store.mailboxes()}
    for loc in letter["locations"]:
        gone = f", gone since {loc['gone_at']}" if loc["gone_at"] else ""
        api = api_of.get(loc["mailbox_id"], "message id")  # a mailbox removed since: its kind is not known
        where = f"{api} {loc['graph_id']}" if loc["graph_id"] else f"UID {loc['uid']}"
        lines.append(f"Seen in:    mailbox {loc['mailbox_id']} {loc['folder']} {where}{gone}")
    for att in letter["attachments"]:
        lines.append(f"Attachment: {att['filename'] or '(no name)'} {att['content_type']} {att['size']} bytes")
    click.echo("\n".join(lines))
    click.echo()
    if letter["body_skipped"]:
        click.echo("[body not archived: the letter is larger than scan.max_letter_size_mb]")
    else:
        click.echo(letter["body_text"])


class WordsCommand(click.Command):
    """A command whose arguments are words to search for, where a word may start with '-'.

    `search -2025 sąskaita` and `search - x` are queries, not unknown options: every token that is
    not one of the command's own options (or its value) goes to the arguments. An unknown --long
    option is still an error, so a typo such as --limt is not searched for.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {o for p in self.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
        known = {o for p in self.params for o in p.opts + p.secondary_opts} | set(ctx.help_option_names)
        options: list[str] = []
        words: list[str] = []
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                words.extend(tokens)
            elif token.split("=", 1)[0] in known or token.startswith("--"):
                options.append(token)
                if token in takes_value:  # its value follows, whatever it looks like
                    options.extend(list(itertools.islice(tokens, 1)))
            else:
                words.append(token)
        return super().parse_args(ctx, options + ["--", *words])


def _by_hand_options(f):
    f = click.option("--lead", metavar="ID", help="The lead.")(f)
    f = click.option("--customer", metavar="ID", help="The customer.")(f)
    return click.argument("letter_id", metavar="LETTER", type=int)(f)


def _report(app: App, done: ByHand, as_json: bool) -> None:
    from hanna_sync.linking.relink import summary_line

    if as_json:
        emit_json(done.as_dict())
        return
    click.echo(done.message())
    if done.relink is not None and not app.quiet:
        click.echo(summary_line(done.relink))
    elif done.relink_due:
        click.echo("Relink: a pass is running; it relinks the archive at its end.")


@click.command("link")
@_by_hand_options
@json_option
@click.pass_obj
def link_command(app: App, *, letter_id: int, customer: str | None, lead: str | None, as_json: bool) -> None:
    """Link a letter to a customer or lead by hand (rule "manual").

    The link stays whatever the rules say later: no relink, import or pass takes it off (removing
    the customer or lead from the directory does). A link the rules made becomes manual; an
    earlier unlink of it is undone. Replies to the letter inherit the link (rule "thread"). Linking
    what is linked by hand already says so and exits 0. Unknown letter or entity: exit 3.

    \b
    Example:
      hanna-sync link 42 --customer C-1001
    """
    from hanna_sync.linking import manual

    app.store.letter(letter_id)  # an unknown letter first (exit 3), then the options
    done = manual.link(app.store, app.config, app.secrets, letter_id=letter_id,
                       entity=manual.entity_option(customer, lead))
    _report(app, done, as_json)


@click.command("unlink")
@_by_hand_options
@json_option
@click.pass_obj
def unlink_command(app: App, *, letter_id: int, customer: str | None, lead: str | None, as_json: bool) -> None:
    """Take a letter's link to a customer or lead off by hand, for good.

    Whatever made the link (a rule, a thread, or `link`), it goes and is remembered: no relink,
    import or pass links the letter to that entity again, and its replies no longer inherit it
    through it; `hanna-sync link` undoes it. The letter stays archived (retention decides). Unlinking
    what is not linked says so and exits 0. Unknown letter or entity: exit 3.

    \b
    Example:
      hanna-sync unlink 42 --customer C-1002
    """
    from hanna_sync.linking import manual

    app.store.letter(letter_id)  # an unknown letter first (exit 3), then the options
    done = manual.unlink(app.store, app.config, app.secrets, letter_id=letter_id,
                         entity=manual.entity_option(customer, lead))
    _report(app, done, as_json)


@click.command("search", cls=WordsCommand)
@click.argument("words", metavar="QUERY...", nargs=-1, required=True)
@click.option("--customer", metavar="ID", help="Only letters linked to this customer.")
@click.option("--lead", metavar="ID", help="Only letters linked to this lead.")
@click.option("--since", metavar="DATE", help="Only letters dated on or after DATE (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="At most this many, best first.")
@json_option
@click.pass_obj
def search(app: App, *, words: tuple[str, ...], customer: str | None, lead: str | None, since: str | None, limit: int,
           as_json: bool) -> None:
    """Find letters by words in the subject, text, addresses or attachment names, best match first.

    Every word must occur; "..." is a phrase; a trailing * matches a beginning (sąsk*). Accents
    do not matter: saskaita finds sąskaita. QUERY may be one quoted argument or several words; a
    word may start with '-' (search -2025 sąskaita) without being read as an option.

    \b
    Examples:
      hanna-sync search 'sąskaita 2025-03'
      hanna-sync search '"ąžuolinės lentos"' --customer C-1001
    """
    since = since_date(since)
    from hanna_sync.admin import views

    rows = views.search(app.store, " ".join(words), customer=customer, lead=lead, since=since, limit=limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No letters match.")
        return
    table(None, ["ID", "Date (UTC)", "From", "Subject", "Found"],
          [[r["id"], short_date(r["date_utc"]), r["from_addr"], r["subject"], r["snippet"]] for r in rows],
          below=("Found",))


@click.command("thread")
@click.argument("letter_id", metavar="LETTER", type=int)
@json_option
@click.pass_obj
def thread(app: App, letter_id: int, as_json: bool) -> None:
    """Show the conversation a letter belongs to, oldest first, from every mailbox.

    Letters belong together when their Message-ID, In-Reply-To and References headers connect them,
    or (read through Graph or from Gmail) Outlook's conversation or Gmail's thread (X-GM-THRID) does.
    """
    from hanna_sync.admin import views

    rows = views.thread(app.store, letter_id)
    if as_json:
        emit_json(rows)
        return
    table(f"Conversation of letter {letter_id}: {len(rows)} letter(s)",
          ["ID", "Date (UTC)", "From", "Subject", "Seen in", "Linked to"],
          [[f"{r['id']}*" if r["id"] == letter_id else r["id"], short_date(r["date_utc"]), r["from_addr"],
            r["subject"], ", ".join(r["mailboxes"]),
            ", ".join(f"{link['entity_type']} {link['entity_id']}" for link in r["links"])] for r in rows])


@click.command("export")
@click.argument("letter_ids", metavar="[LETTER]...", type=int, nargs=-1)
@click.option("--customer", metavar="ID", help="Every letter linked to this customer.")
@click.option("--lead", metavar="ID", help="Every letter linked to this lead.")
@click.option("--search", "query", metavar="QUERY",
              help="Every letter 'hanna-sync search QUERY' finds (with --customer/--lead: only theirs).")
@click.option("--since", metavar="DATE",
              help="With --customer, --lead or --search: dated on or after DATE (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["eml", "mbox"]), default="eml", show_default=True,
              help="eml: one file per letter; mbox: one mboxrd file.")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="eml: the file for one LETTER, else a directory (created 0700); mbox: the file."
                   " Default: stdout (one LETTER, or mbox).")
@click.option("--attachments", "attachments_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Also extract the letters' attachments, to DIR/<letter id>/<name>.")
@json_option
@click.pass_obj
def export(app: App, *, letter_ids: tuple[int, ...], customer: str | None, lead: str | None, query: str | None,
           since: str | None, fmt: str, output: Path | None, attachments_dir: Path | None, as_json: bool) -> None:
    """Write archived letters byte for byte as the server had them: .eml files or one mbox.

    One LETTER goes to -o FILE or to stdout. Several LETTERs, or a customer's, a lead's or a
    search's letters, go to a directory (-o DIR), one <id>-<date>-<subject>.eml each, or with
    --format mbox into one mboxrd file: lines starting with ">*From " get one more ">", so
    unquoting gives back each original exactly. Every file is 0600 and written whole or not at all;
    attachments never leave DIR/<letter id>/ and never overwrite a file (" (2)" is added). Only
    regular files are replaced: -o naming a FIFO or character device (/dev/stdout) writes into it.

    \b
    Examples:
      hanna-sync export 42 -o letter-42.eml
      hanna-sync export --customer C-1001 -o c-1001/ --attachments c-1001/attachments
      hanna-sync export --search 'sąskaita' --since 2025-01-01 --format mbox -o invoices.mbox
    """
    from hanna_sync.admin import export as exporting

    since = since_date(since)
    check_entities(app, customer, lead)
    if as_json and output is None:
        raise InputError("--json prints the summary on stdout: write the letters elsewhere with -o PATH")
    ids = exporting.select(app.store, list(letter_ids), customer=customer, lead=lead, query=query, since=since)
    bar, report = progress_reporter(sys.stderr.isatty() and not as_json and not app.quiet and len(ids) > 1)
    with bar or nullcontext():
        result = exporting.export_letters(
            app.store, ids, fmt=fmt, output=output, attachments=attachments_dir, one_file=len(letter_ids) == 1,
            progress=report,
            stdout=None if output else sys.stdout.buffer,
        )
    if as_json:
        emit_json(result.as_dict())
        return
    if output and not app.quiet:
        what = f"{result.bytes} bytes" if len(ids) == 1 else f"{len(ids)} letters ({result.bytes} bytes)"
        click.echo(f"Wrote {what} to {output}.", err=True)
    if result.attachments and not app.quiet:
        click.echo(f"Extracted {len(result.attachments)} attachment(s) to {attachments_dir}.", err=True)
    if result.headers_only:
        click.echo(f"Note: letter(s) {', '.join(map(str, result.headers_only))} were archived with their headers"
                   " only (larger than scan.max_letter_size_mb): their bodies are not in the export.", err=True)


@click.command("purge")
@click.argument("letter_ids", metavar="[LETTER]...", type=int, nargs=-1)
@click.option("--customer", metavar="ID", help="Also every letter linked to this customer.")
@click.option("--lead", metavar="ID", help="Also every letter linked to this lead.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-vacuum", is_flag=True, help="Do not VACUUM afterwards, even when a quarter of the file is free.")
@json_option
@click.pass_obj
def purge(app: App, *, letter_ids: tuple[int, ...], customer: str | None, lead: str | None, yes: bool,
          no_vacuum: bool, as_json: bool) -> None:
    """Delete letters for good, for a privacy request: the named LETTERs and/or a customer's or lead's.

    Each letter's row, original bytes, links, locations, search index entries and thread ids go,
    the freed bytes are overwritten with zeros, and a hash of the letter's identity stays behind so
    that no later pass archives it again. Asks first on a terminal; elsewhere give --yes. Refused
    while a scan pass runs (exit 75). When a quarter of the database file is then free, it is
    VACUUMed (the file shrinks; --no-vacuum skips it).

    \b
    Examples:
      hanna-sync purge 42 43
      hanna-sync purge --lead L-2001 --yes --json
    """
    from hanna_sync.db import retention

    # No _check_entities: a customer already deleted from the CRM may still have letters to purge.
    ids = retention.purge_selection(app.store, list(letter_ids), customer, lead)
    if not yes:
        if not interactive():
            raise InputError("give --yes to purge without a terminal to confirm on")
        rows = [app.store.letter(letter_id) for letter_id in ids[:10]]
        table(f"{len(ids)} letter(s) to delete for good" + (" (the first 10)" if len(ids) > 10 else ""),
              ["ID", "Date (UTC)", "From", "Subject"],
              [[r["id"], short_date(r["date_utc"]), r["from_addr"], r["subject"]] for r in rows])
        click.confirm(f"Delete these {len(ids)} letter(s) and all trace of them? This cannot be undone", abort=True)
    removal = retention.purge(app.store, app.config, ids, vacuum=not no_vacuum)
    if as_json:
        emit_json(removal.as_dict())
    elif not app.quiet:
        vacuumed = "; the database was VACUUMed" if removal.vacuumed else ""
        click.echo(f"Purged {len(removal.letters)} letter(s){vacuumed}.")


COMMANDS = (letters, show, link_command, unlink_command, search, thread, export, purge)
