"""One scan pass: every active mailbox, every chosen folder, new letters only.

Read top to bottom: `run_pass` takes the pass lock; `_run_pass` chooses the mailboxes (leaving alone those
backing off after a refused login), scans them in parallel threads (one connection each, at most a server's
limit on one server: host_limits.py; one writer to SQLite), tries those whose server was busy once or twice
more, then does the bookkeeping of the skip index, applies retention and records the run.
`scan_mailbox` opens the mailbox's source (imap_source.py, graph_source.py) and has it scan each chosen
folder until the time budget is spent; each source commits its batches through archiving.py, one
transaction per batch, so a kill at any moment loses nothing and duplicates nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from imapclient.exceptions import IMAPClientError

from hanna_sync.config import Config
from hanna_sync.db.database_warning import database_warning, record_database_warning
from hanna_sync.db.retention import apply_retention
from hanna_sync.db.store import Store
from hanna_sync.errors import AuthError, HannaError, ReauthRequired, SecretsError
from hanna_sync.linking.relink import RELINK_DUE, after_pass, relink, summary_line
from hanna_sync.lock import pass_lock
from hanna_sync.models import Mailbox
from hanna_sync.remote import overload
from hanna_sync.remote.imap import connection_failed
from hanna_sync.scan import gmail_source, graph_source, imap_source
from hanna_sync.scan.context import LazyDirectory, PassContext, Progress
from hanna_sync.scan.directory_refresh import refresh_directory
from hanna_sync.scan.host_limits import HostLimit, HostLimits, Load, host_of, run_limited
from hanna_sync.scan.results import MailboxResult, PassResult, WouldArchive
from hanna_sync.scan.source import FolderSource

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

__all__ = [
    "Attempt", "LazyDirectory", "MailboxResult", "PassContext", "PassResult", "Progress", "WouldArchive", "pass_lock",
    "run_pass", "scan_mailbox",
]

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(days=1)
BACKED_OFF_KINDS = ("auth", "reauth")  # failures only a person can fix: a refused login, a Microsoft sign-in gone
# A busy server's mailboxes are tried again after the others, this many seconds later, while the time budget
# allows (a login queue drains in seconds); those still busy wait for the next pass.
BUSY_RETRY_PAUSES = (2.0, 10.0)
IMAP_KINDS = ("imap", "o365-client", "google-client")


def run_pass(
    store: Store, secrets: SecretStore, config: Config, *, mailbox_ids: list[int] | None = None,
    dry_run: bool = False, progress: Progress | None = None,
) -> PassResult:
    """Scan every mailbox with scan active (or those named); one failing never stops the others.

    Raises PassBusy when another pass is running. A dry run takes no lock: it writes nothing.
    """
    with nullcontext() if dry_run else pass_lock(config.database):
        started = PassContext.clock()
        ctx = PassContext(store, secrets, config, LazyDirectory(store, config, None if dry_run else secrets),
                          dry_run=dry_run, progress=progress,
                          deadline=started + config.scan.time_budget_minutes * 60)
        return _run_pass(ctx, mailbox_ids, started)


def _run_pass(ctx: PassContext, mailbox_ids: list[int] | None, started: float) -> PassResult:
    store, config, dry_run = ctx.store, ctx.config, ctx.dry_run
    now = datetime.now(timezone.utc)
    # A database with no mailbox is most often not the one the mailboxes were added to (another
    # config, another user, a unit's environment): said at the start, in the journal and to `status`.
    warning = None if mailbox_ids else database_warning(store, config.database)
    if warning is not None:
        log.warning("%s", warning.text)
    if not dry_run and not mailbox_ids:
        record_database_warning(store, warning)
    if not dry_run:
        refresh_due_sources(ctx)
    if mailbox_ids:
        boxes = [store.mailbox(i) for i in mailbox_ids]  # named on the command line: tried even in back-off
        waiting: list[MailboxResult] = []
    else:
        active = [m for m in store.mailboxes() if m.scan_active]
        boxes = [m for m in active if backoff_until(m, now) is None]
        waiting = [_backing_off(m, now) for m in active if backoff_until(m, now) is not None]
    run_id = None if dry_run else store.start_run()

    def record(mailbox: Mailbox, result: MailboxResult) -> None:
        if not dry_run:
            assert mailbox.id is not None
            with store.transaction():
                store.record_outcome(mailbox.id, "; ".join(result.errors) or None, result.failure_kind,
                                     _retry_after(mailbox, result, config))

    results = _scan_all(ctx, boxes, record)
    if not dry_run:
        try:
            after_pass(store, config, ctx.secrets, ctx.directory.get, index=ctx.directory.skip_index)
        except (HannaError, sqlite3.Error) as exc:  # bookkeeping for the next pass: never fails this one
            log.warning("backfill bookkeeping failed (%s); the next pass tries again", exc)
    outcome = PassResult(sorted(results + waiting, key=lambda r: r.mailbox_id), dry_run,
                         PassContext.clock() - started, database_warning=warning)
    if not dry_run:  # never fails the pass: see apply_retention
        outcome.purged_by_retention = len(apply_retention(store, config).letters)
    if run_id is not None:
        store.finish_run(run_id, "ok" if outcome.ok else "failed", [r.as_dict() for r in outcome.mailboxes],
                         outcome.budget_exhausted)
    log.log(logging.INFO if outcome.ok else logging.WARNING, "%s", outcome.summary_line())
    return outcome


@dataclass
class Attempt:
    """One try of a mailbox in a pass, and what its failure to connect or log in said of its server's load
    (overload.load_of): a connection dropped before the login (LOST) is a connect failure, or busy once its
    host has answered busy or logged a mailbox in during the pass."""

    mailbox: Mailbox
    result: MailboxResult
    signal: str | None = None
    busy_text: str = ""  # a dropped connection's error, should its host prove busy

    def settle(self, host: HostLimit) -> Load:
        """The failure kind of a dropped connection, now that its host's pass so far is known; the load."""
        if self.signal == overload.LOST and (host.busy or host.logged_in) and self.result.failure_kind != "busy":
            self.result.failure_kind, self.result.errors = "busy", [self.busy_text]
        if self.result.failure_kind != "busy":
            return "served"
        return "account" if self.signal == overload.ACCOUNT_BUSY else "busy"

    @property
    def final(self) -> bool:
        """Whether this try's outcome stands whatever the rest of the pass brings (nothing left to settle)."""
        return self.result.failure_kind != "busy" and self.signal != overload.LOST


def _scan_all(
    ctx: PassContext, boxes: list[Mailbox], record: Callable[[Mailbox, MailboxResult], None],
) -> list[MailboxResult]:
    """Every mailbox, scan.concurrency at once and each host within its limit; then those whose server was
    busy again, after a pause, while there is time (at the lowered limit: the limits last the whole pass).

    Each mailbox's outcome is recorded once: as its try ends, or (busy, or dropped before the login) when the
    pass knows it is its last: a busy server adds one to a failure streak per pass, not per try."""
    limits = HostLimits(ctx.config.scan.max_connections_per_host)

    def host(mailbox: Mailbox) -> HostLimit:
        return limits[host_of(mailbox, ctx.config)]

    def one(mailbox: Mailbox) -> Attempt:
        attempt = scan_mailbox(ctx, mailbox, host(mailbox))
        if attempt.final:
            record(mailbox, attempt.result)  # in the worker: a pass killed later loses no outcome
        return attempt

    def scan(todo: list[Mailbox]) -> list[Attempt]:
        attempts = run_limited(todo, one, limits=limits, host=lambda m: host_of(m, ctx.config),
                               load=lambda a: a.settle(host(a.mailbox)), workers=ctx.config.scan.concurrency)
        for attempt in attempts:  # those dropped before any other connection to their host logged in
            attempt.settle(host(attempt.mailbox))
            if attempt.signal == overload.LOST and attempt.result.failure_kind != "busy":
                record(attempt.mailbox, attempt.result)
        return attempts

    attempts = {a.mailbox.id: a for a in scan(boxes)}
    for pause in BUSY_RETRY_PAUSES:
        again = [a.mailbox for a in attempts.values() if a.result.failure_kind == "busy"]
        if not again or PassContext.clock() + pause >= ctx.deadline:
            break
        log.info("%d mailbox(es) found their server busy: trying them again in %g s", len(again), pause)
        time.sleep(pause)
        attempts.update((a.mailbox.id, a) for a in scan(again))
    for attempt in attempts.values():
        if attempt.result.failure_kind == "busy":
            record(attempt.mailbox, attempt.result)
    for name, entry in limits.hosts.items():
        if entry.busy:
            log.warning("%s was busy %d time(s) this pass: at most %d of its mailboxes at once from then on (at the"
                        " lowest %d; scan.max_connections_per_host is %d)", name, entry.busy, entry.limit,
                        entry.lowest, entry.ceiling)
    return [a.result for a in attempts.values()]


def refresh_due_sources(ctx: PassContext) -> None:
    """The configured CRM sources whose refresh is due, applied as snapshots and relinked before any mailbox is
    scanned: the pass links against the refreshed directory. A failed refresh is a warning, never the pass's."""
    outcomes = refresh_directory(ctx.store, ctx.config, ctx.secrets, only_due=True)
    if any(o.changed for o in outcomes):
        try:
            log.info("%s (the directory refresh)", summary_line(relink(ctx.store, ctx.config, ctx.secrets)))
        except HannaError as exc:  # the links are redone by the next relink: never fails the pass
            log.warning("relink after the directory refresh failed (%s); the next pass relinks", exc)
            with ctx.store.transaction():
                ctx.store.set_state_value(RELINK_DUE, "1")


def scan_mailbox(ctx: PassContext, mailbox: Mailbox, host: HostLimit) -> Attempt:
    """One mailbox's part of a pass: its failure is its result's, never the pass's (the database's aside).
    Tells `host` as soon as the mailbox is logged in: the host is up, and serving (Attempt.settle)."""
    assert mailbox.id is not None
    attempt = Attempt(mailbox, MailboxResult(mailbox.id, mailbox.email))
    result = attempt.result
    started = PassContext.clock()
    if not ctx.dry_run:
        retire_unchosen_folders(ctx.store, mailbox)
    try:
        with open_source(ctx, mailbox, result) as source:
            host.logged_in = True
            for folder in mailbox.folders:
                if ctx.out_of_time():
                    result.budget_exhausted = True
                    break
                source.scan(folder)
    except ReauthRequired as exc:
        result.fail("reauth", str(exc))
    except SecretsError as exc:
        result.fail("secrets", str(exc))
    except HannaError as exc:
        result.fail(_failure_kind(mailbox, exc), str(exc))
        if mailbox.kind in IMAP_KINDS and (signal := overload.load_of(exc)) is not None:
            attempt.signal = signal
            attempt.busy_text = (exc.busy_text if isinstance(exc, overload.ConnectionLost)
                                 else overload.busy_text(mailbox.imap_host, exc))
    except (OSError, ssl.SSLError, IMAPClientError, TimeoutError) as exc:
        result.fail("connect", connection_failed(exc, mailbox, ctx.config.network.timeout))
    except sqlite3.Error:
        raise  # the database is everyone's: the whole pass stops (exit 74/75), as documented
    except Exception as exc:  # a bug, or a library's surprise: this mailbox fails, the others go on
        log.debug("mailbox %s: unexpected error", mailbox.id, exc_info=True)
        result.fail("connect", f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                               " (run with -v for the traceback, and report it)")
    result.seconds = PassContext.clock() - started
    level = logging.INFO if result.ok else logging.ERROR
    log.log(level, "mailbox %s (%s): %d new, %d archived, %d linked, %d skipped%s%s", mailbox.id, mailbox.email,
            result.new, result.archived, result.linked, result.skipped,
            "; time budget spent" if result.budget_exhausted else "",
            f"; errors: {'; '.join(result.errors)}" if result.errors else "")
    return attempt


def _failure_kind(mailbox: Mailbox, exc: HannaError) -> str:
    """"auth" (backed off) for a refused login only. A server that said it had no room to connect or log us in
    (its `* BYE Connection queue full` greeting, `NO [UNAVAILABLE]`) is "busy", tried again later; a connection
    dropped before the login is "connect" until its host shows it is busy (Attempt.settle)."""
    if mailbox.kind in IMAP_KINDS and overload.load_of(exc) in (overload.HOST_BUSY, overload.ACCOUNT_BUSY):
        return "busy"
    return "auth" if isinstance(exc, AuthError) else "connect"


def open_source(ctx: PassContext, mailbox: Mailbox, result: MailboxResult) -> AbstractContextManager[FolderSource[Any]]:
    """The mailbox's source, connected: IMAP with its password or with XOAUTH2 (o365-client, google-client),
    Microsoft Graph (o365-scan) or the Gmail API (google-scan). Each scans a folder with `scan(folder)`, into
    the same archive."""
    if mailbox.kind in ("imap", "o365-client", "google-client"):
        return imap_source.connect(ctx, mailbox, result)
    if mailbox.kind == "google-scan":
        return gmail_source.connect(ctx, mailbox, result)
    return graph_source.connect(ctx, mailbox, result)


def retire_unchosen_folders(store: Store, mailbox: Mailbox) -> None:
    """Folders scanned before but no longer in the mailbox's folder list (`edit-mailbox --folder`): their
    locations are marked gone, as for a folder gone from the server. Every folder that holds locations or
    skipped letters has a state row (written in the same transactions), so the state rows say which."""
    assert mailbox.id is not None
    with store.transaction():
        for state in store.folder_states(mailbox.id):
            if state.folder not in mailbox.folders:
                gone = store.retire_folder(mailbox.id, state.folder)
                log.warning("mailbox %s: folder '%s' is no longer scanned: %d locations of its letters are marked"
                            " gone (the letters stay)", mailbox.id, state.folder, gone)


def backoff_until(mailbox: Mailbox, now: datetime) -> str | None:
    """Until when a mailbox whose login was refused is left alone, or None when it may be tried."""
    if mailbox.failure_kind not in BACKED_OFF_KINDS or not mailbox.retry_after:
        return None
    return mailbox.retry_after if datetime.fromisoformat(mailbox.retry_after) > now else None


def _backing_off(mailbox: Mailbox, now: datetime) -> MailboxResult:
    assert mailbox.id is not None
    until = backoff_until(mailbox, now)
    result = MailboxResult(mailbox.id, mailbox.email, backing_off_until=until, failure_kind=mailbox.failure_kind)
    if mailbox.failure_kind == "reauth":
        result.errors.append(
            f"needs re-authorisation ({mailbox.last_error}); not tried again before {until}: sign in with"
            f" 'hanna-sync login {mailbox.id}' (or try now with 'run --mailbox {mailbox.id}')"
        )
    elif mailbox.kind != "imap":
        result.errors.append(
            f"refused {mailbox.consecutive_failures} time(s) ({mailbox.last_error}); not tried again before {until}:"
            f" 'hanna-sync test {mailbox.id}' shows why (or try now with 'run --mailbox {mailbox.id}')"
        )
    else:
        result.errors.append(
            f"login refused {mailbox.consecutive_failures} time(s); not tried again before {until}: fix the password"
            f" with 'hanna-sync set-password {mailbox.id}' (or try now with 'run --mailbox {mailbox.id}')"
        )
    return result


def _retry_after(mailbox: Mailbox, result: MailboxResult, config: Config) -> str | None:
    """Back-off for refused logins and lost sign-ins: auth_backoff_minutes, doubling each time, at most a day."""
    if result.failure_kind not in BACKED_OFF_KINDS or config.scan.auth_backoff_minutes <= 0:
        return None
    streak = mailbox.consecutive_failures if mailbox.failure_kind == result.failure_kind else 0
    delay = min(timedelta(minutes=config.scan.auth_backoff_minutes) * 2 ** min(streak, 10), MAX_BACKOFF)
    return (datetime.now(timezone.utc) + delay).isoformat(timespec="seconds")
