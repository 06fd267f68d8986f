"""The `hanna-sync` command: parse options, call the core, render the result.

No logic lives here beyond prompting and presentation; every command is a few lines over a function of
the core library, whose `HannaError`s become one line on stderr and a documented exit code.
"""

from __future__ import annotations

import getpass
import itertools
import json
import logging
import sqlite3
import sys
import traceback
from contextlib import nullcontext
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import click

from hanna_sync import __version__
from hanna_sync.errors import ExitCode, HannaError, InputError, NotFound

log = logging.getLogger("hanna_sync")


class App:
    """What every command needs, opened on first use so `--help` and usage errors stay instant."""

    def __init__(self, config_path: str | None, verbose: int, quiet: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.quiet = quiet

    @cached_property
    def config(self):  # type: ignore[no-untyped-def]
        from hanna_sync.config import load_config

        config = load_config(self.config_path)
        if not self.verbose and not self.quiet:
            logging.getLogger("hanna_sync").setLevel(config.log_level.upper())
        return config

    @cached_property
    def store(self):  # type: ignore[no-untyped-def]
        from hanna_sync.db.store import Store

        return Store(self.config.database)

    @cached_property
    def secrets(self):  # type: ignore[no-untyped-def]
        from hanna_sync.credentials import open_secret_store

        c = self.config
        return open_secret_store(c.secrets.store, c.secrets_file, c.secrets_key_file, c.secrets.timeout)

    @cached_property
    def sign_in(self):  # type: ignore[no-untyped-def]
        from hanna_sync.remote.oauth import MicrosoftSignIn

        return MicrosoftSignIn.for_config(self.config, self.secrets)

    @property
    def timeout(self) -> float:
        return self.config.network.timeout


class HannaGroup(click.Group):
    """Turns expected failures into one line and an exit code, and bugs into a hint to rerun with -v."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except HannaError as exc:
            self.fail(ctx, exc)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `hanna-sync letters | head`: the reader has gone; nothing left to say, and nobody to say it to.
            sys.stderr.close()
            ctx.exit(ExitCode.FAILURE)
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) and ctx.obj is not None:
                # Another writer, a full disk, a damaged file: conditions with a fix, not bugs.
                from hanna_sync.db.store import database_error

                explained = database_error(exc, ctx.obj.config.database)
                if explained is not None:
                    self.fail(ctx, explained)
            if ctx.obj and ctx.obj.verbose:
                traceback.print_exc()
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc} (rerun with -v for the traceback, and report it)",
                err=True,
            )
            ctx.exit(ExitCode.FAILURE)

    @staticmethod
    def fail(ctx: click.Context, exc: HannaError) -> None:
        if ctx.obj and ctx.obj.verbose:
            traceback.print_exc()
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(exc.exit_code)


def under_journal(stream: Any) -> bool:
    """Whether this stream is connected to journald (systemd sets JOURNAL_STREAM to its device:inode)."""
    import os

    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """`<3>message`: journald reads the syslog priority from the prefix, so levels survive."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITIES.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(level: int) -> None:
    """journald gets priority-prefixed lines, a terminal gets rich, anything else plain timestamped lines."""
    handler: logging.Handler
    if under_journal(sys.stderr):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(message)s"))
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console_err(), show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.getLogger("hanna_sync").setLevel(level)
    root.setLevel(logging.WARNING)  # other libraries' chatter only when it matters
    # MSAL logs its failures with tracebacks; hanna-sync says each in one line (all of it with -v).
    logging.getLogger("msal").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console()


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, below: tuple[str, ...] = ()) -> None:
    """A table that stays readable on an 80-column terminal: a header breaks only between its words,
    and the long free-text columns named in `below` move under the table, one entry per row, when the
    table would not fit with them (a 300-character error folded into a 20-column cell is 15 lines)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = console()
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    moved = [i for i, name in enumerate(columns) if name in below] if _width(columns, cells) > out.width else []
    kept = [i for i in range(len(columns)) if i not in moved]

    def build(compact: bool) -> Table:
        # Compact: no vertical rules, for a table too wide for its borders (one column less of text per rule).
        t = Table(title=title, show_lines=False, box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                  pad_edge=not compact)
        for i in kept:
            t.add_column(columns[i], overflow="fold", min_width=max(len(word) for word in columns[i].split() or [""]))
        for row in cells:
            # Text, not str: a subject like "[/bold]" or "[link=...]" is what the sender wrote, not rich markup.
            t.add_row(*(Text(row[i]) for i in kept))
        return t

    t = build(compact=False)
    with out.capture() as capture:
        out.print(t)
    ruled = [line for line in Text.from_ansi(capture.get()).plain.splitlines() if line[:1] in "┏┃┡│└"]
    if any(line.rstrip()[-1:] not in "┓┃┩│┘" for line in ruled):  # rich cropped its right rule: too wide
        t = build(compact=True)
    out.print(t)
    for row in cells:
        for i in moved:
            if row[i]:
                out.print(Text(f"{columns[i]} {row[0]}: {row[i]}"))


def _width(columns: list[str], cells: list[list[str]]) -> int:
    """The width a table needs to show every cell on one line: rich's box adds 3 per column and 1."""
    from rich.cells import cell_len

    return 1 + sum(3 + max([cell_len(columns[i])] + [cell_len(line) for row in cells for line in row[i].splitlines()])
                   for i in range(len(columns)))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (and nothing else) on stdout.")(f)


@click.group(cls=HannaGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config", "config_path", metavar="PATH", envvar="HANNA_SYNC_CONFIG",
    help="Config file. Default: $HANNA_SYNC_CONFIG, else the first that exists of"
         " $CONFIGURATION_DIRECTORY/config.toml (a unit's ConfigurationDirectory=),"
         " ${XDG_CONFIG_HOME:-~/.config}/hanna-sync/config.toml, /etc/hanna-sync/config.toml.",
)
@click.option("-v", "--verbose", count=True, help="More detail (debug log); shows tracebacks of errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (for cron: silent when all is well).")
@click.version_option(__version__, prog_name="hanna-sync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Archive a company's email into its CRM, linked to Customers and Leads.

    \b
    Typical first steps:
      hanna-sync import customers customers.csv
      hanna-sync add-mailbox --user jonas --email jonas@example.lt --provider gmail
      hanna-sync list-mailboxes

    Exit codes: 0 ok, 1 failure, 2 usage or config error, 3 not found (no such mailbox, letter,
    customer, lead or user), 74 the database cannot be used (damaged,
    disk full), 75 busy (another pass, or another program writing): try later. Passwords are kept in
    the secrets store (see [secrets] in 'hanna-sync setup-guide config'), never in the config or the database.
    """
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    ctx.obj = App(config_path, verbose, quiet)


# -- mailboxes --------------------------------------------------------------------------------

def mailbox_settings_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The settings add-mailbox, edit-mailbox and test share."""
    security = click.Choice(["ssl", "starttls", "none"])
    options = [
        click.option("--username", help="Login name, only when it differs from the email."),
        click.option("--imap-host", help="IMAP server name."),
        click.option("--imap-port", type=click.IntRange(1, 65535), help="IMAP port (993 with ssl, 143 otherwise)."),
        click.option("--imap-security", type=security, help="ssl (implicit TLS), starttls or none."),
        click.option("--imap-charset", help="Charset for letters that declare none or a wrong one (e.g. windows-1257)."),
        click.option("--smtp-host", help="SMTP server name."),
        click.option("--smtp-port", type=click.IntRange(1, 65535), help="SMTP port (465 with ssl, 587 starttls, 25 none)."),
        click.option("--smtp-security", type=security, help="ssl, starttls or none."),
        click.option("--smtp-charset", help="Charset used when sending."),
        click.option("--no-smtp", is_flag=True, default=None,
                     help="No SMTP server: the mailbox is only read (edit-mailbox: drop it; --smtp-host adds one again)."),
        click.option("--folder", "folders", multiple=True, metavar="NAME",
                     help="Folder to scan; repeat for several (default: INBOX and the Sent folder)."),
        click.option("--scan-active/--no-scan-active", default=None, help="Scan this mailbox every pass (default on)."),
        click.option("--sync-customers/--no-sync-customers", default=None, help="Link letters to Customers (default on)."),
        click.option("--sync-leads/--no-sync-leads", default=None, help="Link letters to Leads (default on)."),
        click.option("--main/--no-main", default=None, help="The user's main mailbox (at most one per user)."),
        click.option("--ca-file", type=click.Path(dir_okay=False), help="Trust this CA (PEM) for the mailbox's servers."),
        click.option("--allow-plaintext/--no-allow-plaintext", default=None,
                     help="Let security none send the password unencrypted (refused otherwise; trusted networks only)."),
        click.option("--no-verify", is_flag=True, help="Save without logging in first."),
        click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def provider_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--provider, shared by add-mailbox and test (a mailbox can be tried before it is saved)."""
    return click.option(
        "--provider", type=click.Choice(["gmail", "yahoo", "outlook", "serveriai", "custom"]),
        help="Preset of the IMAP and SMTP servers, ports and security (the options below override it);"
             " guessed from the email's domain when not given.",
    )(f)


def without_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Drop shared options that mean nothing to one command, so that its --help lists only what works
    there and giving one is "No such option" rather than silently ignored."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__click_params__ = [p for p in f.__click_params__ if p.name not in names]  # type: ignore[attr-defined]
        return f

    return decorate


def settings_from(options: dict[str, Any]) -> dict[str, Any]:
    from hanna_sync.admin.mailboxes import SETTINGS

    return {key: options[key] for key in SETTINGS if key in options}


def mailbox_from_options(user: str | None, email: str | None, provider: str | None, options: dict[str, Any]) -> Any:
    """A new, unsaved mailbox from add-mailbox's options, asking for the email and server on a terminal."""
    from hanna_sync.admin import mailboxes

    if not email:
        if not interactive():
            raise InputError("--email is required")
        email = click.prompt("Email")
    preset = mailboxes.provider_for(email, provider)
    if preset.host_required and not options["imap_host"]:
        if not interactive():
            raise InputError(f"the {preset.label} preset needs the server name: give --imap-host")
        options["imap_host"] = click.prompt("IMAP server")
    return mailboxes.new_mailbox(user or getpass.getuser(), email, provider, settings_from(options))


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True)
    raise InputError("no password given: pipe it with --password-stdin, or run on a terminal to be asked")


def interactive() -> bool:
    return sys.stdin.isatty()


def server_of(m: Any) -> str:
    """Where a mailbox is read: its IMAP server (with XOAUTH2 for o365-client), or Microsoft Graph."""
    if m.kind == "o365-scan":
        return "Microsoft Graph"
    return f"{m.imap_host}:{m.imap_port} {m.imap_security}" + (" XOAUTH2" if m.kind == "o365-client" else "")


def allow_duplicate_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--allow-duplicate, for add-mailbox and edit-mailbox."""
    return click.option(
        "--allow-duplicate", is_flag=True,
        help="Keep a second mailbox for an account another one already reads (its letters are scanned twice).",
    )(f)


def print_mailbox_saved(verb: str, saved: Any, as_json: bool) -> None:
    for note in saved.notes:  # on stderr, so --json output stays one object
        click.echo(f"Note: {note}", err=True)
    if as_json:
        emit_json(saved.mailbox.public())
        return
    m = saved.mailbox
    click.echo(f"{verb} mailbox {m.id}: {m.email} for {m.user} ({server_of(m)}), folders: {', '.join(m.folders)}")
    if saved.previous_main:
        click.echo(f"Mailbox {saved.previous_main} is no longer {m.user}'s main mailbox.")


@cli.command("add-mailbox")
@click.option("--user", help="Staff member's login the mailbox belongs to (default: your login name).")
@click.option("--email", help="The mailbox's email address (asked for on a terminal).")
@provider_option
@click.option("--kind", type=click.Choice(["imap", "o365-scan", "o365-client"]), default="imap", show_default=True,
              help="imap (a password), o365-scan (Microsoft Graph) or o365-client (IMAP and SMTP with XOAUTH2);"
                   " Office 365 kinds sign in with Microsoft: see 'hanna-sync setup-guide o365'.")
@mailbox_settings_options
@allow_duplicate_option
@json_option
@click.pass_obj
def add_mailbox(app: App, user: str | None, email: str | None, provider: str | None, kind: str,
                no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool, **options: Any) -> None:
    """Connect a mailbox for a staff member.

    The connection is tested (login, and the folders exist) before anything is saved. The password
    is asked for with a hidden prompt, or read from stdin with --password-stdin; it goes to the
    secrets store, never to the config or the database.

    \b
    Examples:
      hanna-sync add-mailbox --user jonas --email jonas@gmail.com          # Gmail preset
      echo "$APP_PASSWORD" | hanna-sync add-mailbox --user ona \\
          --email ona@imone.lt --provider serveriai --imap-host imone.serveriai.lt --password-stdin
      hanna-sync add-mailbox --email me@example.com --imap-host mail.example.com \\
          --imap-security starttls --folder INBOX --folder Sent --folder "Išsiųsti"
      hanna-sync add-mailbox --kind o365-scan --user jonas --email jonas@imone.lt   # signs in with a code

    Without --folder, INBOX and the Sent folder are scanned (flagged \\Sent, else the one with a usual
    Sent name); a note says which, or that none was found.
    """
    from hanna_sync.admin import mailboxes

    if kind != "imap":
        add_o365_mailbox(app, user, email, provider, kind, no_verify, password_stdin, allow_duplicate, as_json, options)
        return
    mailbox = mailbox_from_options(user, email, provider, options)
    mailbox.kind = kind
    app.store.check_unique(mailbox, allow_duplicate)
    password = read_password(password_stdin, f"Password for {mailbox.login_name}")
    saved = mailboxes.add(app.store, app.secrets, mailbox, password, not no_verify, app.timeout, allow_duplicate)
    print_mailbox_saved("Added", saved, as_json)


@cli.command("edit-mailbox")
@click.argument("mailbox_id", metavar="ID", type=int)
@mailbox_settings_options
@allow_duplicate_option
@json_option
@click.pass_obj
def edit_mailbox(app: App, mailbox_id: int, no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool,
                 **options: Any) -> None:
    """Change a mailbox's settings; only the options given change.

    --folder replaces the list of folders. When a connection setting changes, the mailbox is
    verified again with its stored password (skip with --no-verify). To change the password use
    set-password.

    \b
    Example:
      hanna-sync edit-mailbox 3 --folder INBOX --folder "Išsiųsti" --no-sync-leads
    """
    from hanna_sync.admin import mailboxes

    if password_stdin:
        raise InputError("edit-mailbox does not change the password: use 'hanna-sync set-password ID'")
    saved = mailboxes.edit(app.store, app.secrets, mailbox_id, settings_from(options), not no_verify, app.timeout,
                           app.sign_in, allow_duplicate)
    print_mailbox_saved("Updated", saved, as_json)


@cli.command("set-password")
@click.argument("mailbox_id", metavar="ID", type=int)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--no-verify", is_flag=True, help="Store it without trying to log in.")
@click.pass_obj
def set_password(app: App, mailbox_id: int, password_stdin: bool, no_verify: bool) -> None:
    """Replace a mailbox's password (after checking that it logs in).

    \b
    Example:
      hanna-sync set-password 3                 # asks with a hidden prompt
      pass show mail/ona | hanna-sync set-password 3 --password-stdin
    """
    from hanna_sync.admin import mailboxes

    mailbox = app.store.mailbox(mailbox_id)
    mailboxes.check_has_password(mailbox)
    password = read_password(password_stdin, f"New password for {mailbox.login_name}")
    mailboxes.set_password(app.store, app.secrets, mailbox_id, password, not no_verify, app.timeout)
    click.echo(f"Password of mailbox {mailbox_id} ({mailbox.email}) updated.")


@cli.command("remove-mailbox")
@click.argument("mailbox_id", metavar="ID", type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove_mailbox(app: App, mailbox_id: int, yes: bool) -> None:
    """Remove a mailbox and its stored password. Letters archived from it stay in the archive."""
    from hanna_sync.admin import mailboxes

    mailbox = app.store.mailbox(mailbox_id)
    if not yes:
        if not interactive():
            raise InputError("give --yes to remove a mailbox without a terminal to confirm on")
        click.confirm(f"Remove mailbox {mailbox_id} ({mailbox.email} of {mailbox.user})?", abort=True)
    mailboxes.remove(app.store, app.secrets, mailbox_id)
    click.echo(f"Removed mailbox {mailbox_id} ({mailbox.email}); its archived letters stay.")


@cli.command("list-mailboxes")
@click.option("--user", help="Only this staff member's mailboxes.")
@json_option
@click.pass_obj
def list_mailboxes(app: App, user: str | None, as_json: bool) -> None:
    """List mailboxes with their settings and last outcome (never their passwords)."""
    _check_user(app, user)
    boxes = app.store.mailboxes(user)
    if as_json:
        emit_json([m.public() for m in boxes])
        return
    if not boxes:
        click.echo("No mailboxes yet: add one with 'hanna-sync add-mailbox'.")
        return

    def flags(m: Any) -> str:
        marks = [("main", m.main), ("scan", m.scan_active), ("customers", m.sync_customers), ("leads", m.sync_leads)]
        return " ".join(name for name, on in marks if on) or "-"

    table(None, ["ID", "User", "Email", "IMAP", "Folders", "Flags", "Last error"], [
        [m.id, m.user, m.email, server_of(m), ", ".join(m.folders), flags(m),
         m.last_error]
        for m in boxes
    ], below=("Last error",))


@cli.command("folders")
@click.argument("mailbox_id", metavar="ID", type=int)
@json_option
@click.pass_obj
def folders(app: App, mailbox_id: int, as_json: bool) -> None:
    """List the server's folders with message counts; * marks those scanned.

    Use the names shown here with --folder (non-ASCII names such as "Išsiųsti" as they are shown).
    """
    from hanna_sync.admin import mailboxes

    rows = mailboxes.folders(app.store, app.secrets, mailbox_id, app.timeout, app.sign_in)
    if as_json:
        emit_json([{"id": r.name, **asdict(r)} for r in rows])
        return
    table(None, ["", "Folder", "Messages", "Special use"],
          [["*" if r.selected else "", r.name, r.messages, r.special] for r in rows])


# -- the CRM directory ------------------------------------------------------------------------

@cli.group("import")
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


def _import(app: App, entity_type: str, file: str, fmt: str | None, as_json: bool, allow_conflicts: bool) -> None:
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
        result = import_entities(app.store, entity_type, path, fmt, stdin_data, config=app.config,
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
    def command(app: App, file: str, fmt: str | None, as_json: bool, allow_conflicts: bool) -> None:
        _import(app, entity_type, file, fmt, as_json, allow_conflicts)

    command.__doc__ = f"Import {entity_type}s from FILE (.csv or .json; - for stdin with --format)."
    return command


import_group.command("customers")(import_command("customer"))
import_group.command("leads")(import_command("lead"))


@cli.command("relink")
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


@cli.command("customers")
@json_option
@click.pass_obj
def customers(app: App, as_json: bool) -> None:
    """List the Customers letters are linked to, with their contact persons."""
    list_entities(app, "customer", as_json)


@cli.command("leads")
@json_option
@click.pass_obj
def leads(app: App, as_json: bool) -> None:
    """List the Leads letters are linked to, with their contact persons."""
    list_entities(app, "lead", as_json)


# -- the scan pass and the archive ------------------------------------------------------------

def _progress_reporter(enabled: bool):  # type: ignore[no-untyped-def]
    """A rich progress bar on a terminal; None elsewhere (the log lines tell the story there)."""
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console_err(), transient=True)
    tasks: dict[str, Any] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    return bar, report


def console_err():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


@cli.command("run")
@click.option("--mailbox", "mailbox_ids", type=int, multiple=True, metavar="ID",
              help="Scan only this mailbox (repeatable); scans it even when scan is not active.")
@click.option("--dry-run", is_flag=True, help="Show what would be archived; write nothing, fetch no bodies.")
@json_option
@click.pass_obj
def run(app: App, mailbox_ids: tuple[int, ...], dry_run: bool, as_json: bool) -> None:
    """Run one scan pass: archive and link new letters of every active mailbox.

    Only letters that concern a Customer or Lead are stored (the others are counted as skipped).
    Folders are opened read-only and bodies fetched with BODY.PEEK: no flag on the server changes.
    A failing mailbox is recorded (see list-mailboxes) and the others are still scanned.

    \b
    Exit codes: 0 every mailbox scanned, 1 a mailbox failed or the database has no mailbox at all
    (the warning names any other database found), 2 usage or config error, 74 the
    database cannot be written (disk full, damaged: what was saved stays), 75 another pass is running
    or another program holds the database's lock.
    Example (what the systemd timer runs every 10 minutes):
      hanna-sync run
    """
    from hanna_sync.scan import run_pass

    bar, report = _progress_reporter(sys.stderr.isatty() and not as_json and not app.quiet)
    if bar is not None:
        from rich.logging import RichHandler

        logging.getLogger().handlers[:] = [RichHandler(console=bar.console, show_path=False)]
        with bar:
            result = run_pass(app.store, app.secrets, app.config, mailbox_ids=list(mailbox_ids) or None,
                              dry_run=dry_run, progress=report)
    else:
        result = run_pass(app.store, app.secrets, app.config, mailbox_ids=list(mailbox_ids) or None,
                          dry_run=dry_run, progress=report)
    warning = result.database_warning
    if as_json:
        emit_json({"ok": result.ok, "dry_run": dry_run, "budget_exhausted": result.budget_exhausted,
                   "summary": result.summary_line(), "mailboxes": [m.as_dict() for m in result.mailboxes],
                   "purged_by_retention": result.purged_by_retention,
                   "database_warning": warning.as_dict() if warning else None})
    elif app.quiet or under_journal(sys.stdout):
        pass  # the log's summary line says it all; cron mails nothing when all is well
    elif warning is not None:
        pass  # said as a warning at the pass's start, on stderr and in the journal
    elif not result.mailboxes:
        click.echo("No mailbox to scan: every mailbox is paused (turn one on with 'edit-mailbox ID --scan-active').")
    else:
        table("Dry run: nothing written" if dry_run else None,
              ["ID", "Email", "Folders", "New", "Would archive" if dry_run else "Archived", "Linked", "Skipped",
               "Errors", "Seconds"],
              [[m.mailbox_id, m.email, m.folders_checked, m.new, len(m.would_archive) if dry_run else m.archived,
                m.linked, m.skipped, len(m.errors), f"{m.seconds:.1f}"] for m in result.mailboxes])
        for m in result.mailboxes:
            for error in m.errors:
                click.echo(f"Error: mailbox {m.mailbox_id} ({m.email}): {error}", err=True)
        if dry_run:
            for m in result.mailboxes:
                for item in m.would_archive:
                    where = f"Graph id {item.graph_id}" if item.graph_id else f"UID {item.uid}"
                    click.echo(f"  {m.email} {item.folder} {where}: {item.subject!r} -> {', '.join(item.links)}")
    if not result.ok:
        sys.exit(ExitCode.FAILURE)


@cli.command("status")
@click.option("--user", help="Only this staff member's mailboxes.")
@click.option("--fail-after", type=click.IntRange(1), default=60, show_default=True, metavar="MINUTES",
              help="Alert (exit 1) when a mailbox has been failing, or not scanned, for this long.")
@click.option("--folders", "show_folders", is_flag=True, help="Also list every folder's progress.")
@json_option
@click.pass_obj
def status(app: App, user: str | None, fail_after: int, show_folders: bool, as_json: bool) -> None:
    """Show each mailbox's health: ok, new, backfilling, failing, auth failed, needs re-authorisation,
    stale or paused.

    Also the last successful pass and its age, the current error and since when, letters archived
    (today and in total), letters skipped as unrelated, and folders still behind the server.

    \b
    Exit codes: 0 healthy, 1 a mailbox failing (or without a pass) for --fail-after minutes or
    more, or no mailbox configured in the database at all; 3 no such --user. Use it as a monitoring
    check, e.g. for Nagios/Icinga or a systemd OnFailure= unit:
      hanna-sync status --fail-after 60 -q || notify-admin
    """
    from datetime import timedelta

    from hanna_sync.admin.status import health
    from hanna_sync.db.database_warning import (
        database_warning,
        recorded_database_warning,
    )

    _check_user(app, user)
    rows = health(app.store, timedelta(minutes=fail_after), user)
    last = app.store.last_run()
    # No mailbox at all: this shell's view of other databases, and the one the last pass (the timer) had.
    warning = database_warning(app.store, app.config.database)
    recorded = recorded_database_warning(app.store)
    if warning is not None and recorded is not None:
        warning.other_databases += [d for d in recorded.other_databases if d not in warning.other_databases]
    alert = any(r.alert for r in rows) or warning is not None
    if as_json:
        emit_json({
            "alert": alert,
            "database_warning": warning.as_dict() if warning else None,
            "last_pass": None if last is None else {
                "started_at": last["started_at"], "finished_at": last["finished_at"], "outcome": last["outcome"],
                "budget_exhausted": bool(last["budget_exhausted"]),
            },
            "mailboxes": [r.as_dict() for r in rows],
        })
    elif not app.quiet:
        if last:
            note = "; time budget spent, continuing next pass" if last["budget_exhausted"] else ""
            click.echo(f"Last pass: {last['finished_at']} ({last['outcome']}{note})")
        else:
            click.echo("No pass has run yet: 'hanna-sync run' (or the systemd timer) runs one.")

        def ago(minutes: float | None) -> str:
            if minutes is None:
                return "never"
            return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"

        table(None, ["ID", "Email", "State", "Last success", "Archived today/total", "Skipped", "Behind", "Detail"],
              [[r.id, r.email, r.state + (" (!)" if r.alert else ""), ago(r.last_success_minutes_ago),
                f"{r.archived_today}/{r.archived_total}", r.skipped_total, r.folders_behind, r.detail] for r in rows],
              below=("Detail",))
        if show_folders:
            table(None, ["Mailbox", "Folder", "Last UID", "Server UIDNEXT", "Behind", "Skipped", "Gap check"],
                  [[r.id, f.folder, f.last_uid, f.server_uidnext, f.behind, f.skipped,
                    f"{f.gap_found} found {f.gap_checked_at}" if f.gap_checked_at else "-"]
                   for r in rows for f in r.folders])
    if warning is not None:
        click.echo(f"Error: {warning.text}", err=True)
    if alert:
        for r in rows:
            if r.alert:
                click.echo(f"Error: mailbox {r.id} ({r.email}) {r.state}: {r.detail}", err=True)
        sys.exit(ExitCode.FAILURE)


@cli.command("backup")
@click.argument("file", metavar="FILE", type=click.Path(path_type=Path))
@click.pass_obj
def backup(app: App, file: Path) -> None:
    """Copy the database to FILE: consistent, checked, and safe to run while a pass runs.

    SQLite's online backup API takes one consistent snapshot (a running pass goes on meanwhile). The
    copy is checked (quick_check), written with mode 0600 to a temp file beside FILE and renamed into
    place, so FILE is always a whole backup, the new one or the one before. The secrets key and the
    encrypted passwords are separate files: back them up too (see Secrets in the README).

    \b
    Exit codes: 0 written, 2 FILE is a directory, a FIFO, a device or a socket (never replaced) or its
    directory is missing, 74 the copy could not be written (disk full, ...) or fails its check, 75 the
    database is locked by another program. A symlink is followed (the file it names is replaced).
    Example (a nightly cron line):
      hanna-sync -q backup /var/backups/hanna-sync/hanna-sync.db
    """
    done = app.store.backup(file)
    if not app.quiet:
        click.echo(f"Backed up {app.config.database} to {done.path}: {done.letters} letters,"
                   f" {done.size / 1_000_000:.1f} MB, in {done.seconds:.1f} s.")


@cli.command("doctor")
@json_option
@click.pass_obj
def doctor(app: App, as_json: bool) -> None:
    """Check the database's integrity and that its files and the secrets are private.

    SQLite's quick_check reads every page of the database. The state directory must be 0700, the
    database and the secrets files 0600 and usable by this user; the secrets key must be there
    when passwords are stored. Each problem comes with its fix.

    \b
    Exit codes: 0 all well, 1 a permission or secrets problem, 74 the database is damaged or cannot
    be opened (restore a backup).
    """
    from hanna_sync.admin.doctor import examine

    report = examine(app.config)
    if as_json:
        emit_json(report.as_dict())
    elif not app.quiet or report.problems:
        for check in report.checks:
            click.echo(f"{'ok' if check.ok else 'FAILED':<7}{check.name:<17}{check.detail}")
            if check.fix and not check.ok:
                click.echo(f"{'':<24}fix: {check.fix}")
    if report.problems:
        first = report.problems[0]
        click.echo(f"Error: {len(report.problems)} problem(s); first: {first.name}: {first.detail}", err=True)
        sys.exit(report.exit_code)


@cli.command("letters")
@click.option("--customer", metavar="ID", help="Letters linked to this customer (its profile card).")
@click.option("--lead", metavar="ID", help="Letters linked to this lead.")
@click.option("--mailbox", "mailbox_id", type=int, metavar="ID", help="Letters seen in this mailbox.")
@click.option("--since", metavar="DATE", help="Letters dated on or after DATE (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many, newest first.")
@json_option
@click.pass_obj
def letters(app: App, customer: str | None, lead: str | None, mailbox_id: int | None, since: str | None,
            limit: int | None, as_json: bool) -> None:
    """List archived letters, newest first, with the rule that linked them.

    \b
    Example (a customer's profile card):
      hanna-sync letters --customer C-1001 --since 2025-01-01
    """
    since = _since_date(since)
    _check_entities(app, customer, lead)
    if mailbox_id is not None:
        app.store.mailbox(mailbox_id)  # an unknown id is an error, not "No letters."
    rows = app.store.letters(customer, lead, mailbox_id, since, limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No letters.")
        return

    def rule_of(row: dict[str, Any]) -> str:
        wanted = [l for l in row["links"] if (customer and l["entity_id"] == customer and l["entity_type"] == "customer")
                  or (lead and l["entity_id"] == lead and l["entity_type"] == "lead")] or row["links"]
        return ", ".join(f"{l['entity_type']} {l['entity_id']}: {l['rule']}" for l in wanted)

    table(None, ["ID", "Date (UTC)", "From", "Subject", "Linked by"],
          [[r["id"], _short_date(r["date_utc"]), r["from_addr"], r["subject"], rule_of(r)] for r in rows])


def _since_date(since: str | None) -> str | None:
    """--since as the ISO date the archive compares date_utc with."""
    from datetime import date

    if not since:
        return None
    try:
        return date.fromisoformat(since).isoformat()
    except ValueError:
        raise InputError(f"--since '{since}' is not a date: use YYYY-MM-DD") from None


def _check_entities(app: App, customer: str | None, lead: str | None) -> None:
    """A mistyped --customer or --lead is an error, not an empty list that looks like "no letters"."""
    for entity_type, entity_id in (("customer", customer), ("lead", lead)):
        if entity_id is not None and app.store.entity(entity_type, entity_id) is None:
            raise NotFound(f"no {entity_type} '{entity_id}'; 'hanna-sync {entity_type}s' lists them")


def _check_user(app: App, user: str | None) -> None:
    """A mistyped --user is an error, not an empty list that looks like "no mailboxes"."""
    if user is not None and not app.store.user_exists(user):
        raise NotFound(f"no user '{user}'; 'hanna-sync list-mailboxes' shows every mailbox's user")


def _short_date(date_utc: str | None) -> str:
    return (date_utc or "")[:16].replace("T", " ")


@cli.command("show")
@click.argument("letter_id", metavar="LETTER", type=int)
@json_option
@click.pass_obj
def show(app: App, letter_id: int, as_json: bool) -> None:
    """Show one archived letter: headers, links, where it was seen, and its text."""
    letter = app.store.letter(letter_id)
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
        lines.append(f"Linked:     {link['entity_type']} {link['entity_id']} by {link['rule']} ({link['address']})")
    for loc in letter["locations"]:
        gone = f", gone since {loc['gone_at']}" if loc["gone_at"] else ""
        where = f"Graph id {loc['graph_id']}" if loc["graph_id"] else f"UID {loc['uid']}"
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


@cli.command("search", cls=WordsCommand)
@click.argument("words", metavar="QUERY...", nargs=-1, required=True)
@click.option("--customer", metavar="ID", help="Only letters linked to this customer.")
@click.option("--lead", metavar="ID", help="Only letters linked to this lead.")
@click.option("--since", metavar="DATE", help="Only letters dated on or after DATE (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="At most this many, best first.")
@json_option
@click.pass_obj
def search(app: App, words: tuple[str, ...], customer: str | None, lead: str | None, since: str | None, limit: int,
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
    since = _since_date(since)
    _check_entities(app, customer, lead)
    rows = app.store.search(" ".join(words), customer, lead, since, limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No letters match.")
        return
    table(None, ["ID", "Date (UTC)", "From", "Subject", "Found"],
          [[r["id"], _short_date(r["date_utc"]), r["from_addr"], r["subject"], r["snippet"]] for r in rows],
          below=("Found",))


@cli.command("thread")
@click.argument("letter_id", metavar="LETTER", type=int)
@json_option
@click.pass_obj
def thread(app: App, letter_id: int, as_json: bool) -> None:
    """Show the conversation a letter belongs to, oldest first, from every mailbox.

    Letters belong together when their Message-ID, In-Reply-To and References headers connect them.
    """
    rows = app.store.thread(letter_id)
    if as_json:
        emit_json(rows)
        return
    table(f"Conversation of letter {letter_id}: {len(rows)} letter(s)",
          ["ID", "Date (UTC)", "From", "Subject", "Seen in", "Linked to"],
          [[f"{r['id']}*" if r["id"] == letter_id else r["id"], _short_date(r["date_utc"]), r["from_addr"],
            r["subject"], ", ".join(r["mailboxes"]),
            ", ".join(f"{l['entity_type']} {l['entity_id']}" for l in r["links"])] for r in rows])


@cli.command("export")
@click.argument("letter_ids", metavar="[LETTER]...", type=int, nargs=-1)
@click.option("--customer", metavar="ID", help="Every letter linked to this customer.")
@click.option("--lead", metavar="ID", help="Every letter linked to this lead.")
@click.option("--search", "query", metavar="QUERY",
              help="Every letter 'hanna-sync search QUERY' finds (with --customer/--lead: only theirs).")
@click.option("--since", metavar="DATE", help="With --customer, --lead or --search: dated on or after DATE (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["eml", "mbox"]), default="eml", show_default=True,
              help="eml: one file per letter; mbox: one mboxrd file.")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="eml: the file for one LETTER, else a directory (created 0700); mbox: the file."
                   " Default: stdout (one LETTER, or mbox).")
@click.option("--attachments", "attachments_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Also extract the letters' attachments, to DIR/<letter id>/<name>.")
@json_option
@click.pass_obj
def export(app: App, letter_ids: tuple[int, ...], customer: str | None, lead: str | None, query: str | None,
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

    since = _since_date(since)
    _check_entities(app, customer, lead)
    if as_json and output is None:
        raise InputError("--json prints the summary on stdout: write the letters elsewhere with -o PATH")
    ids = exporting.select(app.store, list(letter_ids), customer, lead, query, since)
    bar, report = _progress_reporter(sys.stderr.isatty() and not as_json and not app.quiet and len(ids) > 1)
    with bar or nullcontext():
        result = exporting.export_letters(
            app.store, ids, fmt, output, attachments_dir, one_file=len(letter_ids) == 1, progress=report,
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


@cli.command("purge")
@click.argument("letter_ids", metavar="[LETTER]...", type=int, nargs=-1)
@click.option("--customer", metavar="ID", help="Also every letter linked to this customer.")
@click.option("--lead", metavar="ID", help="Also every letter linked to this lead.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-vacuum", is_flag=True, help="Do not VACUUM afterwards, even when a quarter of the file is free.")
@json_option
@click.pass_obj
def purge(app: App, letter_ids: tuple[int, ...], customer: str | None, lead: str | None, yes: bool,
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
              [[r["id"], _short_date(r["date_utc"]), r["from_addr"], r["subject"]] for r in rows])
        click.confirm(f"Delete these {len(ids)} letter(s) and all trace of them? This cannot be undone", abort=True)
    removal = retention.purge(app.store, app.config, ids, vacuum=not no_vacuum)
    if as_json:
        emit_json(removal.as_dict())
    elif not app.quiet:
        click.echo(f"Purged {len(removal.letters)} letter(s){'; the database was VACUUMed' if removal.vacuumed else ''}.")


# -- diagnostics --------------------------------------------------------------------------------

def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def stage_line(stage: Any) -> str:
    """One plain line per stage (for logs and pipes), the fix indented below a failure."""
    verdict = "skipped" if stage.skipped else "ok" if stage.ok else "FAILED"
    seconds = "" if stage.skipped else f"{stage.seconds:.2f}s"
    head = f"{stage.protocol.upper():<4} {stage.stage:<12} {verdict:<8}{seconds:>6}  "
    line = head + stage.detail
    if stage.hint:
        line += f"\n{'':<{len(head)}}{'note' if stage.ok else 'fix'}: {stage.hint}"
    return line


def stage_table(report: Any):  # type: ignore[no-untyped-def]
    """The terminal view: a rich table, the fix under each failure (server texts never read as markup)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(f"hanna-sync test: {report.mailbox.email}"))
    for column in ("", "Stage", "Result", "Time"):
        t.add_column(column, no_wrap=True, justify="right" if column == "Time" else "left")
    t.add_column("Detail", overflow="fold")
    for s in report.stages:
        verdict = (Text("skipped", style="dim") if s.skipped else Text("ok", style="green") if s.ok
                   else Text("FAILED", style="bold red"))
        detail = Text(s.detail)
        if s.hint:
            detail.append("\nFix: " if not s.ok else "\nNote: ", style="bold")
            detail.append(s.hint, style="yellow")
        t.add_row(s.protocol.upper(), s.stage, verdict, "" if s.skipped else f"{s.seconds:.2f}s", detail)
    return t


@cli.command("test")
@click.argument("mailbox_id", metavar="[MAILBOX]", type=int, required=False)
@click.option("--email", help="Try a mailbox before saving it: its address, with the options add-mailbox takes.")
@provider_option
@click.option("--kind", type=click.Choice(["imap", "o365-scan", "o365-client"]),
              help="With --email: the kind of mailbox to try (default imap); Office 365 kinds sign in first.")
@without_options("no_verify", "main", "scan_active", "sync_customers", "sync_leads")
@mailbox_settings_options
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Give up on a silent server after this long (default: network.timeout).")
@click.option("--insecure", is_flag=True,
              help="Go on past an untrusted certificate, for this test only; the tls stage still fails.")
@click.option("--send-to", metavar="ADDRESS", help="Also send a real test message to ADDRESS (never done otherwise).")
@click.option("--trace", is_flag=True, help="Show the protocol exchange on stderr, passwords and tokens masked.")
@json_option
@click.pass_obj
def test_command(app: App, mailbox_id: int | None, email: str | None, provider: str | None, kind: str | None,
                 password_stdin: bool, timeout: float | None, insecure: bool, send_to: str | None,
                 trace: bool, as_json: bool, **options: Any) -> None:
    """Test a mailbox's IMAP and SMTP servers stage by stage: why it fails, and what to do.

    MAILBOX is a saved mailbox's ID: its stored password is used (--password-stdin tries another),
    and settings given here override its own for this test only. Without MAILBOX, give --email and
    the options add-mailbox takes, to try a mailbox before saving it. Nothing is saved either way.

    Stages, in order; a protocol stops at its first failure. IMAP: charset, dns, tcp, tls, greeting,
    capabilities, auth, folders, and folder for each one (opened read-only with EXAMINE). SMTP:
    charset, dns, tcp, tls, greeting, ehlo, auth, send (only with --send-to). With starttls the tls
    stage comes after the greeting. SMTP is "not configured" when the mailbox has none (--no-smtp).

    Office 365 mailboxes start each protocol with token (got as a scan gets it: from the token cache,
    renewed, or app-only) and claims (its audience, permissions and user, decoded here and compared
    with what the mailbox needs); then o365-client goes on with IMAP and SMTP using XOAUTH2, and
    o365-scan with Graph's folders and folder stages. token and claims failures exit 16. To try one
    before saving it, give --kind o365-scan or o365-client with --email: with delegated sign-in it
    shows a code to sign in with first, and keeps the tokens in memory only.

    \b
    Exit codes, by the first failed stage (IMAP before SMTP):
      0 all passed    10 dns, tcp    12 tls    14 greeting, capabilities, ehlo
      16 auth    18 folders    20 send    22 charset    2 usage error    3 no such MAILBOX
    Examples:
      hanna-sync test 3
      hanna-sync test 3 --imap-security starttls --imap-port 143 --trace
      echo "$PASSWORD" | hanna-sync test --email ona@imone.lt --provider serveriai \\
          --imap-host imone.serveriai.lt --password-stdin --json
      hanna-sync test 3 --send-to me@example.com      # also sends a real test message
      hanna-sync test --kind o365-client --email jonas@imone.lt   # Office 365, not saved yet
    """
    from hanna_sync import diagnose
    from hanna_sync.admin import mailboxes
    from hanna_sync.mail.addresses import normalise_email

    if send_to and normalise_email(send_to) is None:
        raise InputError(f"--send-to '{send_to}' is not an email address")
    sign_in = None
    if mailbox_id is None and kind not in (None, "imap"):
        mailbox = o365_mailbox_from_options(None, email, provider, kind, password_stdin, options)
        sign_in = app.sign_in.unsaved()  # its tokens are kept in memory only: testing saves nothing
        password = None
    elif mailbox_id is None:
        mailbox = mailbox_from_options(None, email, provider, options)
        password = read_password(password_stdin, f"Password for {mailbox.login_name}")
    else:
        if email or provider:
            raise InputError("--email and --provider are for a mailbox not saved yet: leave out MAILBOX to try one")
        if kind:
            raise InputError(f"--kind is for a mailbox not saved yet: mailbox {mailbox_id} keeps its own kind;"
                             " leave out MAILBOX to try another")
        saved = app.store.mailbox(mailbox_id)
        mailbox = mailboxes.changed_mailbox(saved, settings_from(options))
        if saved.kind != "imap":
            sign_in = app.sign_in
            if password_stdin:
                raise InputError(f"mailbox {mailbox_id} is an Office 365 mailbox: it has no password, its tokens"
                                 " come from its Microsoft sign-in")
            password = None
        else:
            password = read_password(True) if password_stdin else app.secrets.get(saved.secret_ref)
            if password is None:
                raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password"
                                 f" {mailbox_id}', or give one with --password-stdin")
    if password == "":
        raise InputError("the password is empty")
    if send_to and mailbox.kind == "o365-scan":
        raise InputError("--send-to needs SMTP: an o365-scan mailbox is only read, through Microsoft Graph")
    if send_to and not mailbox.smtp_host:
        raise InputError("--send-to needs an SMTP server: give --smtp-host")
    if mailbox_id is None and sign_in is not None and not sign_in.app_only:
        from hanna_sync.errors import AuthError

        try:
            sign_in.sign_in(mailbox, show_sign_in)  # delegated: a token reads the mailbox of whoever signs in
        except AuthError as exc:
            exc.exit_code = ExitCode.AUTH  # test's code for a refused sign-in, as for a failed token stage
            raise

    terminal = stdout_is_terminal() and not as_json
    # On a terminal a spinner shows progress while a silent server is waited for, and the table comes
    # at the end; elsewhere each stage is a line as soon as it is done.
    spinner = console_err().status("Testing...") if terminal and not trace else None

    def show(stage: Any) -> None:
        if spinner is not None:
            spinner.update(f"Testing {mailbox.email}: {stage.protocol.upper()} {stage.stage}"
                           f" {'ok' if stage.ok else 'FAILED'}, going on...")
        elif not terminal and not as_json:
            click.echo(stage_line(stage))

    settings = diagnose.Options(timeout=timeout or app.timeout, insecure=insecure, send_to=send_to,
                                trace=(lambda line: click.echo(line, err=True)) if trace else None, on_stage=show)
    with spinner or nullcontext():
        if sign_in is not None:
            report = diagnose.check_o365(mailbox, sign_in, settings)
        else:
            report = diagnose.check(mailbox, password, settings)
    if as_json:
        emit_json(report.as_dict())
    elif terminal:
        console().print(stage_table(report))
        click.echo(report.summary())
    else:
        click.echo(report.summary())
    if report.exit_code:
        sys.exit(report.exit_code)


# -- Office 365 -------------------------------------------------------------------------------------

def show_sign_in(message: str) -> None:
    """MSAL's device-code instructions (the URL and the code), on stderr so that --json output stays clean."""
    click.echo(message, err=True)
    click.echo("Waiting for the sign-in...", err=True)


def o365_mailbox_from_options(user: str | None, email: str | None, provider: str | None, kind: str,
                              password_stdin: bool, options: dict[str, Any]) -> Any:
    """A new, unsaved Office 365 mailbox from add-mailbox's (or test's) options: no password, no provider."""
    from hanna_sync.admin import mailboxes

    if password_stdin:
        raise InputError(f"a {kind} mailbox has no password: it signs in with Microsoft")
    if provider:
        raise InputError(f"--provider is for IMAP mailboxes: a {kind} mailbox is on Exchange Online")
    if not email:
        if not interactive():
            raise InputError("--email is required")
        email = click.prompt("Email")
    return mailboxes.new_o365_mailbox(user or getpass.getuser(), email, kind, settings_from(options))


def add_o365_mailbox(app: App, user: str | None, email: str | None, provider: str | None, kind: str,
                     no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool,
                     options: dict[str, Any]) -> None:
    """add-mailbox for the Office 365 kinds: no password; the device-code sign-in runs unless --no-verify."""
    from hanna_sync.admin import mailboxes

    mailbox = o365_mailbox_from_options(user, email, provider, kind, password_stdin, options)
    saved = mailboxes.add_o365(app.store, app.secrets, app.sign_in, mailbox, not no_verify, app.timeout, show_sign_in,
                               allow_duplicate)
    print_mailbox_saved("Added", saved, as_json)
    if no_verify and not app.sign_in.app_only:
        click.echo(f"Not signed in yet: run 'hanna-sync login {saved.mailbox.id}'.", err=True)


@cli.command("login")
@click.argument("mailbox_id", metavar="[MAILBOX]", type=int, required=False)
@click.option("--client-secret", is_flag=True,
              help='Store the app registration\'s client secret (auth = "app"), once it has got a token.')
@click.option("--secret-stdin", is_flag=True, help="With --client-secret: read it from the first line of stdin.")
@click.pass_obj
def login(app: App, mailbox_id: int | None, client_secret: bool, secret_stdin: bool) -> None:
    """Sign an Office 365 mailbox in to Microsoft, or store the app's client secret.

    With [o365] auth = "delegated" (the default) MAILBOX signs in with a device code: open the URL
    printed, enter the code and sign in as the mailbox's own user (MFA as usual). The tokens are kept,
    encrypted, in the secrets store and renewed silently by every pass; run this again when status says
    "needs re-authorisation". With auth = "app" it checks that the app gets the mailbox's tokens. Either
    way the mailbox leaves its back-off, and the next pass scans it.

    \b
    Examples:
      hanna-sync login 3
      hanna-sync login --client-secret                   # asks with a hidden prompt
      printf '%s\\n' "$SECRET" | hanna-sync login --client-secret --secret-stdin
    """
    from hanna_sync.admin import mailboxes

    if client_secret == (mailbox_id is not None):
        raise InputError("give a MAILBOX to sign in, or --client-secret to store the app's client secret")
    if secret_stdin and not client_secret:
        raise InputError("--secret-stdin goes with --client-secret")
    if client_secret:
        if secret_stdin:
            secret = read_password(True)
        elif interactive():
            secret = click.prompt("Client secret (its Value)", hide_input=True)
        else:
            raise InputError("no client secret given: pipe it with --secret-stdin, or run on a terminal to be asked")
        app.sign_in.store_client_secret(secret)
        click.echo("Client secret checked (it gets a token) and stored in the secrets store.")
        return
    assert mailbox_id is not None
    mailbox = mailboxes.login(app.store, app.sign_in, mailbox_id, show_sign_in)
    how = ": the app gets its tokens (app-only)" if app.sign_in.app_only else " is signed in"
    click.echo(f"Mailbox {mailbox.id} ({mailbox.email}){how}; the next pass scans it.")


@cli.command("setup-guide")
@click.argument("topic", type=click.Choice(["o365", "systemd", "config"]))
@click.option("--user", "user_units", is_flag=True, help="systemd: units for one user (systemctl --user), no root.")
@click.option("--unit", type=click.Choice(["service", "timer"]),
              help="systemd: print only this unit file, to save it (see the steps).")
@click.pass_obj
def setup_guide(app: App, topic: str, user_units: bool, unit: str | None) -> None:
    """Print the steps to set something up, or a file to save: o365, systemd, config.

    
    o365     the app registration, its API permissions and admin consent, "Allow public client flows"
             for the device code, and the Exchange Online commands (Set-CASMailbox,
             New-ServicePrincipal, Add-MailboxPermission), with the configured tenant and client ids.
    systemd  the steps to run a pass every 10 minutes (system-wide, or --user), each command with the
             absolute path of this hanna-sync; --unit service|timer prints that unit file.
    config   the example config: every key, with its default and what it does.

    
    Examples:
      hanna-sync setup-guide o365 | less
      hanna-sync setup-guide systemd --unit service | sudo tee /etc/systemd/system/hanna-sync.service
      hanna-sync setup-guide config > ~/.config/hanna-sync/config.toml
    """
    from hanna_sync.admin import setup_guide as guides

    if topic != "systemd" and (user_units or unit):
        raise InputError(f"--user and --unit are for 'setup-guide systemd', not '{topic}'")
    if topic == "config":
        click.echo(guides.example_config(), nl=False)
    elif topic == "systemd":
        click.echo(guides.systemd_unit(unit, user_units) if unit else guides.systemd_steps(user_units), nl=False)
    else:
        try:
            settings = app.config.o365
        except HannaError:
            settings = None  # a broken config must not hide the guide that helps to write it
        click.echo(guides.office365(settings), nl=False)


@cli.command("demo")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Keep the demo's files here (default: a new temp dir).")
def demo(workdir: str | None) -> None:
    """Try everything on built-in sample data: a throwaway local Dovecot, sample mail and customers.

    Nothing of yours is touched: the demo has its own config, database and secrets in a new
    directory, and its Dovecot listens on 127.0.0.1 only and is gone when the demo ends. Needs
    Dovecot installed (apt-get install dovecot-imapd) and root, or a user Dovecot can run as.
    """
    import shlex

    from hanna_sync.admin.setup_guide import executable
    from hanna_sync.demo import run_demo, sample
    from hanna_sync.linking.relink import summary_line

    result = run_demo(Path(workdir) if workdir else None)
    for name, imported in result.imported.items():
        if name in ("customers", "leads"):
            click.echo(f"Imported {name}: {imported.added} added ({result.workdir / (name + '.csv')}).")
    table("Scan pass over the sample mailbox",
          ["Mailbox", "Email", "Folders", "New", "Archived", "Linked", "Skipped", "Errors"],
          [[m.mailbox_id, m.email, m.folders_checked, m.new, m.archived, m.linked, m.skipped,
            "; ".join(m.errors) or "-"] for m in result.scan.mailboxes])
    if result.backfill is not None:
        late = sample.LATE_CUSTOMER
        click.echo(f"Then customer {late.id} ({late.name}, domain {late.domain}) was imported. "
                   + (summary_line(result.relinked) if result.relinked else "Relink left to the next pass."))
        backfilled = sum(m.backfilled for m in result.backfill.mailboxes)
        click.echo(f"The next pass fetched {backfilled} older letter(s) for it, and nothing else:"
                   f" letters --customer {late.id} lists them.")
    rows = result.store.letters(customer="C-1001")
    table("Letters linked to customer C-1001 (UAB Ąžuolas)", ["ID", "Date (UTC)", "From", "Subject", "Linked by"],
          [[r["id"], r["date_utc"][:16].replace("T", " "), r["from_addr"], r["subject"],
            ", ".join(l["rule"] for l in r["links"] if l["entity_id"] == "C-1001")] for r in rows])
    # Commands that work as shown, pasted anywhere: scripts/demo.sh leaves hanna-sync in .venv/bin, not on PATH.
    hs = f"{executable()} --config {shlex.quote(str(result.config_path.resolve()))}"
    click.echo(f"""
The archive stays in {result.workdir}. Try:
  {hs} letters --customer C-1001
  {hs} letters --lead L-2001
  {hs} show {rows[0]["id"] if rows else 1}
  {hs} export {rows[0]["id"] if rows else 1} -o letter.eml
  {hs} letters --customer {sample.LATE_CUSTOMER.id}
  {hs} search "lentų"
  {hs} thread {rows[-1]["id"] if rows else 1}
  {hs} customers""")
    if not result.scan.ok or (result.backfill is not None and not result.backfill.ok):
        sys.exit(ExitCode.FAILURE)


def _late_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """`hanna-sync run -q` works as well as `hanna-sync -q run`: cron lines are written both ways."""
    app = ctx.find_object(App)
    if not value or app is None:
        return
    if param.name == "quiet":
        app.quiet = True
        logging.getLogger("hanna_sync").setLevel(logging.WARNING)
    else:
        app.verbose += value
        logging.getLogger("hanna_sync").setLevel(logging.DEBUG)


def _add_verbosity_options(group: click.Group) -> None:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _add_verbosity_options(command)
            continue
        command.params += [
            click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_late_verbosity,
                         help="More detail (debug log); shows tracebacks of errors."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_late_verbosity,
                         help="Only warnings and errors."),
        ]


# One line each in `hanna-sync --help`, whole on an 80-column terminal; each command's --help says more.
SHORT_HELP = {
    "add-mailbox": "Connect a staff member's mailbox.",
    "backup": "Copy the database safely, even during a pass.",
    "customers": "List the customers and their contacts.",
    "demo": "Run everything on built-in sample data.",
    "doctor": "Check the database and file permissions.",
    "edit-mailbox": "Change a mailbox's settings.",
    "export": "Write letters' originals as .eml files or an mbox.",
    "folders": "List a mailbox's server folders with counts.",
    "import": "Load customers or leads from CSV or JSON.",
    "leads": "List the leads and their contacts.",
    "letters": "List archived letters (a customer's card).",
    "list-mailboxes": "List mailboxes and their last outcome.",
    "login": "Sign an Office 365 mailbox in again.",
    "purge": "Delete letters for good (privacy requests).",
    "relink": "Redo links after a directory change; backfill.",
    "remove-mailbox": "Remove a mailbox (its letters stay).",
    "run": "Run one scan pass (what the timer runs).",
    "search": "Search the archive's letters by words.",
    "set-password": "Replace a mailbox's password.",
    "setup-guide": "Print setup steps: o365, systemd, config.",
    "show": "Show one archived letter.",
    "status": "Show each mailbox's health (for monitoring).",
    "test": "Diagnose a mailbox's IMAP and SMTP, step by step.",
    "thread": "Show a letter's whole conversation.",
}
for _name, _text in SHORT_HELP.items():
    if _name in cli.commands:
        cli.commands[_name].short_help = _text
_add_verbosity_options(cli)


def main() -> None:
    cli(prog_name="hanna-sync")
