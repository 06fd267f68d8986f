"""The `hanna-sync` command: parse options, call the core, render the result.

No logic lives here beyond prompting and presentation; every command is a few lines over a function of
the core library, whose `HannaError`s become one line on stderr and a documented exit code. This module
holds the group, its error handling and logging; each family of commands has its own module, its
rendering is in `render`.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import traceback
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from hanna_sync import __version__
from hanna_sync.cli import archive, diagnostics, directory, mailboxes, operate, service, sources, web
from hanna_sync.cli.render import JournalFormatter, console_err, under_journal
from hanna_sync.errors import ExitCode, HannaError

if TYPE_CHECKING:
    from hanna_sync.config import Config
    from hanna_sync.credentials import SecretStore
    from hanna_sync.db.store import Store
    from hanna_sync.remote.google_auth import GoogleSignIn
    from hanna_sync.remote.oauth import MicrosoftSignIn


class App:
    """What every command needs, opened on first use so `--help` and usage errors stay instant."""

    def __init__(self, config_path: str | None, verbose: int, quiet: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.quiet = quiet

    @cached_property
    def config(self) -> Config:
        from hanna_sync.config import load_config

        config = load_config(self.config_path)
        if not self.verbose and not self.quiet:
            logging.getLogger("hanna_sync").setLevel(config.log_level.upper())
        return config

    @cached_property
    def store(self) -> Store:
        from hanna_sync.db.store import Store

        return Store(self.config.database)

    @cached_property
    def secrets(self) -> SecretStore:
        from hanna_sync.credentials import open_secret_store

        c = self.config
        return open_secret_store(c.secrets.store, c.secrets_file, c.secrets_key_file, c.secrets.timeout)

    @cached_property
    def sign_in(self) -> MicrosoftSignIn:
        from hanna_sync.remote.oauth import MicrosoftSignIn

        return MicrosoftSignIn.for_config(self.config, self.secrets)

    @cached_property
    def google(self) -> GoogleSignIn:
        from hanna_sync.remote.google_auth import GoogleSignIn

        return GoogleSignIn.for_config(self.config, self.secrets)

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
    disk full), 75 busy (another pass, or another program writing): try later, 77 not permitted
    (setup-service without root: use sudo, or --user). Passwords are kept in
    the secrets store (see [secrets] in 'hanna-sync setup-guide config'), never in the config or the database.
    """
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    ctx.obj = App(config_path, verbose, quiet)


for _module in (mailboxes, diagnostics, directory, sources, archive, operate, service, web):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


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
    "directory-token": "Store an https:// CRM source's token.",
    "doctor": "Check the database and file permissions.",
    "edit-mailbox": "Change a mailbox's settings.",
    "export": "Write letters' originals as .eml files or an mbox.",
    "folders": "List a mailbox's server folders with counts.",
    "import": "Load customers or leads from CSV or JSON.",
    "leads": "List the leads and their contacts.",
    "letters": "List archived letters (a customer's card).",
    "link": "Link a letter to a customer or lead by hand.",
    "list-mailboxes": "List mailboxes and their last outcome.",
    "login": "Sign an Office 365 or Google mailbox in again.",
    "migrate": "Upgrade the database's schema, backup first.",
    "purge": "Delete letters for good (privacy requests).",
    "relink": "Redo links after a directory change; backfill.",
    "remove-mailbox": "Remove a mailbox (its letters stay).",
    "run": "Run one scan pass (what the timer runs).",
    "search": "Search the archive's letters by words.",
    "serve": "Serve the archive's JSON API over HTTP.",
    "set-password": "Replace a mailbox's password.",
    "setup-guide": "Print setup steps: o365, google, systemd, config.",
    "setup-service": "Set up the systemd service and timer (root or --user).",
    "show": "Show one archived letter.",
    "status": "Show each mailbox's health (for monitoring).",
    "sync-directory": "Refresh customers and leads from the CRM now.",
    "test": "Diagnose a mailbox's IMAP and SMTP, step by step.",
    "thread": "Show a letter's whole conversation.",
    "token": "Create, list and revoke web API tokens.",
    "unlink": "Take a letter's link off by hand, for good.",
}
for _name, _text in SHORT_HELP.items():
    if _name in cli.commands:
        cli.commands[_name].short_help = _text
_add_verbosity_options(cli)


def add_command(command: click.Command) -> None:
    """A command from a package beside cli/ (web/'s serve), added as the group's own are: its short
    help, and -v/-q after it. hanna_sync.__main__ calls it."""
    if command.name in cli.commands:
        return
    cli.add_command(command)
    command.short_help = SHORT_HELP.get(command.name or "", command.short_help)
    _add_verbosity_options(click.Group(commands=[command]))


def main() -> None:
    cli(prog_name="hanna-sync")
