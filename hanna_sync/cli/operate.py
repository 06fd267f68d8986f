"""Running and keeping the archive: the scan pass, its status, backup, doctor, setup guides and the demo."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import check_user, json_option
from hanna_sync.cli.render import emit_json, progress_reporter, short_date, table, under_journal
from hanna_sync.errors import ExitCode, HannaError, InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App


@click.command("run")
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
    Up to scan.concurrency mailboxes at once, at most scan.max_connections_per_host on one server;
    a server that answers "busy" (Connection queue full, [UNAVAILABLE], a login cut off while it is
    busy or serving others) gets fewer, and its mailboxes are tried again later in the pass
    (failure_kind "busy", never a back-off).

    \b
    Exit codes: 0 every mailbox scanned, 1 a mailbox failed (its server still busy, too) or the
    database has no mailbox at all (the warning names any other database found), 2 usage or config
    error, 74 the database cannot be written (disk full, damaged: what was saved stays), 75 another
    pass is running or another program holds the database's lock.
    Example (what the systemd timer runs every 10 minutes):
      hanna-sync run
    """
    from hanna_sync.scan import run_pass

    bar, report = progress_reporter(sys.stderr.isatty() and not as_json and not app.quiet)
    if bar is not None:
        from rich.logging import RichHandler

        logging.getLogger().handlers[:] = [RichHandler(console=bar.console, show_path=False)]
    with bar or nullcontext():
        result = run_pass(app.store, app.secrets, app.config, mailbox_ids=list(mailbox_ids) or None, dry_run=dry_run,
                          progress=report)
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


@click.command("status")
@click.option("--user", help="Only this staff member's mailboxes.")
@click.option("--fail-after", type=click.IntRange(1), default=60, show_default=True, metavar="MINUTES",
              help="Alert (exit 1) when a mailbox has been failing, or not scanned, for this long.")
@click.option("--folders", "show_folders", is_flag=True, help="Also list every folder's progress.")
@json_option
@click.pass_obj
def status(app: App, *, user: str | None, fail_after: int, show_folders: bool, as_json: bool) -> None:
    """Show each mailbox's health: ok, new, backfilling, failing, server busy, auth failed, needs
    re-authorisation, stale or paused ("server busy": the server refused or dropped the login for want of
    room; tried again at the next pass, no back-off, --json failure_kind "busy").

    Also the last successful pass and its age, the current error and since when, letters archived
    (today and in total), letters skipped as unrelated, and folders still behind the server; and
    each CRM source of [directory]: its last refresh, counts and last error.

    \b
    Exit codes: 0 healthy, 1 a mailbox failing (or without a pass), or a directory source
    failing, for --fail-after minutes or more, or no mailbox configured in the database at all;
    3 no such --user. With -q it prints only the errors behind exit 1 (a source failing for less
    than --fail-after is no warning then). Use it as a monitoring
    check, e.g. for Nagios/Icinga or a systemd OnFailure= unit:
      hanna-sync status --fail-after 60 -q || notify-admin
    """
    from datetime import timedelta

    from hanna_sync.admin.status import overview

    check_user(app, user)
    seen = overview(app.store, app.config, fail_after=timedelta(minutes=fail_after), user=user)
    rows, sources, last, warning, alert = seen.rows, seen.sources, seen.last, seen.warning, seen.alert
    if as_json:
        emit_json(seen.as_dict())
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
        if sources:
            table("CRM directory sources", ["Of", "Source", "State", "Last refresh", "Added/updated/removed", "Detail"],
                  [[s.entity_type + "s", s.source, s.state + (" (!)" if s.alert else ""),
                    ago(s.last_success_minutes_ago), f"{s.added}/{s.updated}/{s.removed}",
                    (f"failing since {s.failing_since}: {s.last_error}" if s.last_error else
                     f"{s.converted} lead(s) converted" if s.converted else "-" if s.last_success_at else
                     "not refreshed yet: the next pass (or sync-directory) reads it")] for s in sources],
                  below=("Detail",))
    for s in sources:  # -q: a monitoring check, silent until --fail-after (as a mailbox failing is)
        if s.last_error and not s.alert and not app.quiet:
            click.echo(f"Warning: the {s.entity_type}s source {s.state} since {s.failing_since}: {s.last_error}",
                       err=True)
    if warning is not None:
        click.echo(f"Error: {warning.text}", err=True)
    if alert:
        for r in rows:
            if r.alert:
                click.echo(f"Error: mailbox {r.id} ({r.email}) {r.state}: {r.detail}", err=True)
        for s in sources:
            if s.alert:
                click.echo(f"Error: the {s.entity_type}s source {s.state} since {s.failing_since}: {s.last_error}",
                           err=True)
        sys.exit(ExitCode.FAILURE)


@click.command("backup")
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
    from hanna_sync.db.store import Store

    done = Store(app.config.database, migrate=False).backup(file)
    if not app.quiet:
        click.echo(f"Backed up {app.config.database} to {done.path}: {done.letters} letters,"
                   f" {done.size / 1_000_000:.1f} MB, in {done.seconds:.1f} s.")


@click.command("migrate")
@click.option("--backup", "backup_file", metavar="FILE", type=click.Path(path_type=Path),
              help="First copy the database to FILE (as `backup` does), only when there is something to apply.")
@json_option
@click.pass_obj
def migrate(app: App, backup_file: Path | None, as_json: bool) -> None:
    """Bring the database to this hanna-sync's schema, with a backup of the old one first.

    Every command that writes applies the migrations a new version brings when it opens the database;
    this does only that, at a time you choose, so an upgrade migrates once, after a backup of what the
    older version wrote (the Debian package's upgrade runs it so). Nothing pending: nothing is written
    and no backup is made. No database yet: none is created.

    \b
    Exit codes: 0 migrated or nothing to do, 2 FILE exists (a backup is never replaced) or its directory
    is missing (nothing written), 74 the backup or a migration failed (the database stays as it was
    before the failed migration: each is one transaction), 75 the database is locked.
    Example (stop the timer, upgrade with pip, then):
      sudo -u hanna-sync hanna-sync migrate --backup /var/lib/hanna-sync/before-0.2.0.db
    JSON: {"database": PATH, "version": "0.1.0", "applied": [names], "backup": PATH or null}
    """
    from hanna_sync import __version__
    from hanna_sync.db.store import Store

    database = app.config.database
    applied: list[str] = []
    backed_up = None
    if backup_file is not None and os.path.lexists(backup_file):
        # Never over an earlier backup: after a migration that failed half way, the file there is the only
        # copy of what the older version wrote, and this run would replace it with the half-migrated one.
        raise InputError(f"{backup_file} exists: migrate never replaces a backup; name a new file")
    if database.exists():
        store = Store(database, migrate=False)
        if store.pending_migrations():
            if backup_file is not None:
                backed_up = store.backup(backup_file).path
            applied = store.apply_migrations()
    if as_json:
        emit_json({"database": str(database), "version": __version__, "applied": applied,
                   "backup": str(backed_up) if backed_up else None})
    elif not app.quiet:
        if not database.exists():
            click.echo(f"No database at {database} yet: nothing to migrate (the first command that writes makes it).")
        elif not applied:
            click.echo(f"{database} is up to date for hanna-sync {__version__}: nothing to apply.")
        else:
            click.echo(f"{database}: applied {len(applied)} migration(s) for hanna-sync {__version__}: "
                       f"{', '.join(applied)}.")
            if backed_up:
                click.echo(f"The database as it was before: {backed_up}")


@click.command("doctor")
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



@click.command("setup-guide")
@click.argument("topic", type=click.Choice(["o365", "google", "systemd", "config", "man"]))
@click.option("--user", "user_units", is_flag=True, help="systemd: units for one user (systemctl --user), no root.")
@click.option("--unit", type=click.Choice(["service", "timer", "web"]),
              help="systemd: print only this unit file, to save it (see the steps).")
@click.pass_obj
def setup_guide(app: App, topic: str, user_units: bool, unit: str | None) -> None:
    """Print the steps to set something up, or a file to save: o365, google, systemd, config, man.

    
    o365     the app registration, its API permissions and admin consent, "Allow public client flows"
             for the device code, and the Exchange Online commands (Set-CASMailbox,
             New-ServicePrincipal, Add-MailboxPermission), with the configured tenant and client ids.
    google   the Google Cloud project, the service account and the Workspace admin console's domain-wide
             delegation (the exact client id and scope), or your own OAuth client and its consent screen,
             IMAP on for the domain, with the configured ids filled in.
    systemd  the steps to run a pass every 10 minutes (system-wide, or --user), each command with the
             absolute path of this hanna-sync; --unit service|timer prints that unit file,
             --unit web the one for `hanna-sync serve` (hanna-sync-web.service).
    config   the example config: every key, with its default and what it does.
    man      the man page hanna-sync(1) in roff, made from every command's --help (for packagers,
             and pip installs: see the README's "Man page and shell completion").

    
    Examples:
      hanna-sync setup-guide o365 | less
      hanna-sync setup-guide google | less
      hanna-sync setup-guide systemd --unit service | sudo tee /etc/systemd/system/hanna-sync.service
      hanna-sync setup-guide config > ~/.config/hanna-sync/config.toml
      hanna-sync setup-guide man > hanna-sync.1 && man -l hanna-sync.1
    """
    from hanna_sync.admin import setup_guide as guides

    if topic != "systemd" and (user_units or unit):
        raise InputError(f"--user and --unit are for 'setup-guide systemd', not '{topic}'")
    if topic == "config":
        click.echo(guides.example_config(), nl=False)
    elif topic == "man":
        from hanna_sync.cli.manpage import render

        root = click.get_current_context().find_root().command
        assert isinstance(root, click.Group)
        click.echo(render(root), nl=False)
    elif topic == "systemd":
        click.echo(guides.systemd_unit(unit, user_units) if unit else guides.systemd_steps(user_units), nl=False)
    elif topic == "google":
        try:
            google = app.config.google
        except HannaError:
            google = None  # a broken config must not hide the guide that helps to write it
        click.echo(guides.google(google), nl=False)
    else:
        try:
            settings = app.config.o365
        except HannaError:
            settings = None  # a broken config must not hide the guide that helps to write it
        click.echo(guides.office365(settings), nl=False)


@click.command("demo")
@click.option("--dir", "workdir", type=click.Path(file_okay=False),
              help="Keep the demo's files here (default: a new temp dir).")
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
          ["ID", "Email", "Folders", "New", "Archived", "Linked", "Skipped", "Errors"],
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
          [[r["id"], short_date(r["date_utc"]), r["from_addr"], r["subject"],
            ", ".join(link["rule"] for link in r["links"] if link["entity_id"] == "C-1001")] for r in rows])
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
  {hs} customers
In a browser: '{hs} token create me' prints a token; '{hs} serve', then open http://127.0.0.1:8025/
and paste it (README, "Reading the archive in a browser").""")
    if not result.scan.ok or (result.backfill is not None and not result.backfill.ok):
        sys.exit(ExitCode.FAILURE)


COMMANDS = (run, status, backup, migrate, doctor, setup_guide, demo)
