"""One scan pass: every active mailbox, every chosen folder, new letters only.

Per folder: STATUS first (one round trip; an unchanged folder costs nothing more), then EXAMINE
(read-only), then new UIDs in windows, their headers in batches, matched locally against the CRM
directory, and full bodies fetched with BODY.PEEK only for the letters that matched and are not
archived yet. Each batch's letters, locations, links and the folder's advanced state are committed in
one transaction, so a kill at any moment loses nothing and duplicates nothing.

Unattended operation: one pass at a time (an flock that dies with its process), mailboxes scanned in
parallel threads (one IMAP connection each, one writer to SQLite), a time budget after which no new
batch starts, and a mailbox that refuses its login backed off instead of retried every 10 minutes.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync.config import Config
from hanna_sync.db.database_warning import (
    DatabaseWarning,
    database_warning,
    record_database_warning,
)
from hanna_sync.db.retention import apply_retention, refused
from hanna_sync.db.store import Store, participants_of, utcnow
from hanna_sync.errors import (
    AuthError,
    HannaError,
    ReauthRequired,
    SecretsError,
)
from hanna_sync.linking.backfill import LetterKeys, SkipIndex, load_skip_index
from hanna_sync.linking.directory import build_directory
from hanna_sync.linking.match import Directory, Link, inherited_links, match
from hanna_sync.linking.relink import after_pass, linking_settings, verify_index
from hanna_sync.lock import pass_lock
from hanna_sync.mail.addresses import normalise_email
from hanna_sync.mail.message import (
    Keep,
    ParsedLetter,
    address_tokens,
    fingerprint,
    is_automatic,
    parse_headers_only,
    parse_letter,
    thread_tokens,
)
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.remote import imap
from hanna_sync.remote.graph import (
    MAX_IN_FLIGHT,
    DeltaExpired,
    DeltaPage,
    Envelope,
    GraphClient,
    GraphFolder,
    MessageGone,
    Mime,
)
from hanna_sync.uidset import UidSet

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

log = logging.getLogger(__name__)

# The only header fields a pass reads of every letter, instead of whole letters (BODY.PEEK never sets
# \Seen): the addresses matching needs, the Message-ID that tells whether the letter is archived already,
# the ids of the letters it answers (thread links), and what marks it as sent by a program. Everything
# else comes from the whole letter, fetched for the matched ones only.
HEADER_FIELDS = "MESSAGE-ID FROM SENDER REPLY-TO TO CC BCC IN-REPLY-TO REFERENCES AUTO-SUBMITTED PRECEDENCE LIST-ID"
SEARCH_WINDOW = 20_000  # UIDs one SEARCH may return at most: keeps its response line far below imaplib's 1 MB cap
MAX_BACKOFF = timedelta(days=1)
BACKED_OFF_KINDS = ("auth", "reauth")  # failures only a person can fix: a refused login, a Microsoft sign-in gone

Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass
class MailboxResult:
    """What one mailbox's part of a pass did: the row of the summary table and of --json."""

    mailbox_id: int
    email: str
    folders_checked: int = 0
    new: int = 0  # letters the pass looked at for the first time
    archived: int = 0  # letters stored for the first time
    linked: int = 0  # letters that got a link they did not have (archived now, or earlier from elsewhere)
    skipped: int = 0  # letters concerning no customer or lead: counted, not stored
    remapped: int = 0  # letters found again under a new UIDVALIDITY
    gaps: int = 0  # letters the gap check found never looked at (and then read)
    backfilled: int = 0  # letters skipped earlier, archived now that the directory concerns them
    errors: list[str] = field(default_factory=list)
    failure_kind: str | None = None
    budget_exhausted: bool = False  # stopped early; the next pass goes on from here
    backing_off_until: str | None = None  # not tried: its login was refused recently
    seconds: float = 0.0
    would_archive: list[dict[str, Any]] = field(default_factory=list)  # --dry-run only

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, kind: str, message: str) -> None:
        self.failure_kind = self.failure_kind or kind
        self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "id": self.mailbox_id, "email": self.email, "ok": self.ok, "folders_checked": self.folders_checked,
            "new": self.new, "archived": self.archived, "linked": self.linked, "skipped": self.skipped,
            "remapped": self.remapped, "gaps": self.gaps, "backfilled": self.backfilled, "errors": self.errors,
            "failure_kind": self.failure_kind, "budget_exhausted": self.budget_exhausted, "backing_off_until": self.backing_off_until,
            "seconds": round(self.seconds, 3),
        }
        if self.would_archive:
            data["would_archive"] = self.would_archive
        return data


@dataclass
class PassResult:
    mailboxes: list[MailboxResult]
    dry_run: bool = False
    seconds: float = 0.0
    purged_by_retention: int = 0  # letters older than retention.years deleted at the end of the pass
    database_warning: DatabaseWarning | None = None  # no mailbox configured at all: a pass that did nothing

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.mailboxes) and self.database_warning is None

    @property
    def budget_exhausted(self) -> bool:
        return any(m.budget_exhausted for m in self.mailboxes)

    def summary_line(self) -> str:
        """One line per pass that a monitoring system can grep."""
        def total(name: str) -> int:
            return sum(getattr(m, name) for m in self.mailboxes)

        failed = sum(1 for m in self.mailboxes if not m.ok and not m.backing_off_until)
        backing_off = sum(1 for m in self.mailboxes if m.backing_off_until)
        ok = len(self.mailboxes) - failed - backing_off
        return (
            f"pass {'ok' if self.ok else 'failed'}: mailboxes {ok} ok, {failed} failed, {backing_off} backing off;"
            f" letters {total('new')} new, {total('archived')} archived, {total('linked')} linked,"
            f" {total('skipped')} skipped, {total('gaps')} gaps, {total('backfilled')} backfilled;"
            + (f" {self.purged_by_retention} deleted by retention;" if self.purged_by_retention else "")
            + (f" no mailboxes configured in {self.database_warning.database};" if self.database_warning else "") +
            f" {'time budget spent, continuing next pass' if self.budget_exhausted else 'complete'};"
            f" {self.seconds:.1f} s"
        )


class LazyDirectory:
    """The directory, built when the first folder with new letters needs it: a pass over unchanged
    mailboxes never pays for reading the CRM tables and loading the Public Suffix List. With it, the
    skip index that records the letters it did not match (see backfill.py)."""

    def __init__(self, store: Store, config: Config, secrets: SecretStore | None = None) -> None:
        self.store, self.config, self.secrets = store, config, secrets
        self._directory: Directory | None = None
        self._index: SkipIndex | None = None
        self._index_failed = False
        self._remembered = False  # the directory the skipped letters are checked against is on record
        self._lock = threading.Lock()

    def skip_index(self) -> SkipIndex | None:
        """None when the secrets store cannot give its key: skipped letters then go unrecorded (said once).

        The store's transaction is never taken while holding this object's lock: a scanner thread inside
        a transaction may be waiting for that lock (remember_directory), which would deadlock."""
        directory = self.get()
        with self._lock:
            if self._index is not None or self._index_failed or self.secrets is None:
                return self._index
            try:
                index = load_skip_index(self.secrets, directory)
            except SecretsError as exc:
                self._index_failed = True
                log.warning("skipped letters are not recorded this pass (%s): a customer added later will"
                            " not find them", exc)
                return None
        with self.store.transaction():
            verify_index(self.store, index)  # twice when two threads get here first: it is idempotent
        with self._lock:
            self._index = self._index or index
            return self._index

    def remember_directory(self, index: SkipIndex) -> None:
        """Call in the transaction that records skipped letters: the first ones ever recorded are
        remembered with the directory they were checked against, so a later change is seen as one."""
        if not self._remembered and self.store.state_value("backfill_keys_saved") is None:
            assert self._directory is not None  # built before any letter was matched
            self.store.replace_backfill_keys(index.directory_keys(self._directory, linking_settings(self.config)))
        self._remembered = True

    def get(self) -> Directory:
        with self._lock:
            if self._directory is None:
                with self.store.transaction():
                    self._directory = build_directory(self.store, self.config)
                for domain, owners in sorted(self._directory.ambiguous_domains().items()):
                    log.warning("domain %s is claimed by customers %s: it links to neither", domain,
                                ", ".join(sorted(owners)))
            return self._directory


def backoff_until(mailbox: Mailbox, now: datetime) -> str | None:
    """Until when a mailbox whose login was refused is left alone, or None when it may be tried."""
    if mailbox.failure_kind not in BACKED_OFF_KINDS or not mailbox.retry_after:
        return None
    return mailbox.retry_after if datetime.fromisoformat(mailbox.retry_after) > now else None


def run_pass(
    store: Store,
    secrets: SecretStore,
    config: Config,
    mailbox_ids: list[int] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PassResult:
    """Scan every mailbox with scan active (or those named); one failing never stops the others.

    Raises PassBusy when another pass is running. A dry run takes no lock: it writes nothing.
    """
    with nullcontext() if dry_run else pass_lock(config.database):
        return _run_pass(store, secrets, config, mailbox_ids, dry_run, progress)


def _run_pass(
    store: Store, secrets: SecretStore, config: Config, mailbox_ids: list[int] | None, dry_run: bool,
    progress: Progress | None,
) -> PassResult:
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    # A database with no mailbox is most often not the one the mailboxes were added to (another
    # config, another user, a unit's environment): said at the start, in the journal and to `status`.
    warning = None if mailbox_ids else database_warning(store, config.database)
    if warning is not None:
        log.warning("%s", warning.text)
    if not dry_run and not mailbox_ids:
        record_database_warning(store, warning)
    if mailbox_ids:
        boxes = [store.mailbox(i) for i in mailbox_ids]  # named on the command line: tried even in back-off
        waiting: list[MailboxResult] = []
    else:
        active = [m for m in store.mailboxes() if m.scan_active]
        boxes = [m for m in active if backoff_until(m, now) is None]
        waiting = [_backing_off(m, now) for m in active if backoff_until(m, now) is not None]
    directory = LazyDirectory(store, config, None if dry_run else secrets)
    run_id = None if dry_run else store.start_run()
    deadline = started + config.scan.time_budget_minutes * 60

    def one(mailbox: Mailbox) -> MailboxResult:
        result = scan_mailbox(store, secrets, config, mailbox, directory, dry_run, progress, deadline)
        if not dry_run:
            assert mailbox.id is not None
            with store.transaction():
                store.record_outcome(mailbox.id, "; ".join(result.errors) or None, result.failure_kind,
                                     _retry_after(mailbox, result, config))
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(config.scan.concurrency, len(boxes)))) as pool:
        results = list(pool.map(one, boxes))
    if not dry_run:
        try:
            after_pass(store, config, secrets, directory.get, directory.skip_index)
        except (HannaError, sqlite3.Error) as exc:  # bookkeeping for the next pass: never fails this one
            log.warning("backfill bookkeeping failed (%s); the next pass tries again", exc)
    outcome = PassResult(sorted(results + waiting, key=lambda r: r.mailbox_id), dry_run, time.monotonic() - started,
                         database_warning=warning)
    if not dry_run:  # never fails the pass: see apply_retention
        outcome.purged_by_retention = len(apply_retention(store, config).letters)
    if run_id is not None:
        store.finish_run(run_id, "ok" if outcome.ok else "failed", [r.as_dict() for r in outcome.mailboxes],
                         outcome.budget_exhausted)
    log.log(logging.INFO if outcome.ok else logging.WARNING, "%s", outcome.summary_line())
    return outcome


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


def connection_failed(exc: BaseException, mailbox: Mailbox, timeout: float) -> str:
    """One line for a session that broke mid-pass. Never what the server was sending (a cut-off line may
    quote a letter), and saying what the admin wants to know: nothing saved is lost, the next pass goes on."""
    where = f"{mailbox.imap_host}:{mailbox.imap_port}" if mailbox.imap_host else "the server"
    text = imap.server_text(exc) if isinstance(exc, IMAPClientError) else str(exc)
    if isinstance(exc, TimeoutError) or "timed out" in text:
        what = f"no answer within {timeout:g} s"
    else:
        # imaplib says "command: UID => socket error: unterminated line: b'* 10 FETCH ...'": keep the reason only.
        what = text.split(" => ", 1)[-1].split(": b'", 1)[0].split(': b"', 1)[0][:200] or type(exc).__name__
    if isinstance(exc, IMAPClientError) and not isinstance(exc, imaplib.IMAP4.abort):
        return f"{where} answered with an error ({what}); the letters saved so far stay, the next pass tries again"
    return f"connection to {where} broke ({what}); the letters saved so far stay, the next pass goes on from there"


def scan_mailbox(
    store: Store,
    secrets: SecretStore,
    config: Config,
    mailbox: Mailbox,
    directory: LazyDirectory,
    dry_run: bool = False,
    progress: Progress | None = None,
    deadline: float = float("inf"),
) -> MailboxResult:
    assert mailbox.id is not None
    result = MailboxResult(mailbox.id, mailbox.email)
    started = time.monotonic()
    if not dry_run:
        retire_unchosen_folders(store, mailbox)
    try:
        with open_scanner(store, secrets, config, mailbox, directory, result, dry_run, progress, deadline) as scanner:
            for folder in mailbox.folders:
                if time.monotonic() > deadline:
                    result.budget_exhausted = True
                    break
                scanner.scan(folder)
    except ReauthRequired as exc:
        result.fail("reauth", str(exc))
    except AuthError as exc:
        result.fail("auth", str(exc))
    except SecretsError as exc:
        result.fail("secrets", str(exc))
    except HannaError as exc:
        result.fail("connect", str(exc))
    except (OSError, ssl.SSLError, IMAPClientError, socket.timeout) as exc:
        result.fail("connect", connection_failed(exc, mailbox, config.network.timeout))
    except sqlite3.Error:
        raise  # the database is everyone's: the whole pass stops (exit 74/75), as documented
    except Exception as exc:  # a bug, or a library's surprise: this mailbox fails, the others go on
        log.debug("mailbox %s: unexpected error", mailbox.id, exc_info=True)
        result.fail("connect", f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                               " (run with -v for the traceback, and report it)")
    result.seconds = time.monotonic() - started
    level = logging.INFO if result.ok else logging.ERROR
    log.log(level, "mailbox %s (%s): %d new, %d archived, %d linked, %d skipped%s%s", mailbox.id, mailbox.email,
            result.new, result.archived, result.linked, result.skipped,
            "; time budget spent" if result.budget_exhausted else "",
            f"; errors: {'; '.join(result.errors)}" if result.errors else "")
    return result


def keeping(links: list[Link]) -> Keep:
    """The parser's `keep` for a matched letter: the addresses that link it, so that they are parsed and
    stored (and relink finds them) even past the first MAX_ADDRESSES_PER_HEADER recipients of a header."""
    addresses = {link.address for link in links if link.rule != "thread"}
    return lambda address: normalise_email(address) in addresses


def would_link(store: Store, counted: set[str], candidates: list[tuple[str | None, list[Link]]]) -> int:
    """--dry-run's `linked`: the letters a pass would give a link they do not have, each once (a letter
    in two folders, or archived from another mailbox with the same links, is not counted again)."""
    with store.transaction():
        known = store.letter_ids([identity for identity, _ in candidates if identity])
        have = {i: {(l["entity_type"], l["entity_id"]) for l in store.links_of(known[i])} for i in known}
    count = 0
    for identity, links in candidates:
        if identity is not None and identity in counted:
            continue
        if {(l.entity_type, l.entity_id) for l in links} - have.get(identity or "", set()):
            count += 1
            if identity is not None:
                counted.add(identity)
    return count


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


def retire_gone_folder(store: Store, mailbox: Mailbox, folder: str) -> None:
    """A chosen folder the server no longer lists: renamed or deleted there. Its locations are marked gone
    at once, so `show` does not name a place the letter is no longer in; the pass still fails for it until
    the folder list is fixed (a renamed folder chosen again under its new name is read from the start)."""
    assert mailbox.id is not None
    with store.transaction():
        gone = store.retire_folder(mailbox.id, folder)
    if gone is not None:  # said once, not at every pass until the folder list is fixed
        log.warning("mailbox %s: folder '%s' is no longer on the server (renamed or deleted): %d locations of its"
                    " letters are marked gone (the letters stay)", mailbox.id, folder, gone)


@dataclass
class Candidate:
    """A new letter that concerns the directory, waiting for its body."""

    uid: int
    headers: ParsedLetter
    links: list[Link]
    size: int
    identity: str | None  # None until the body is there, for letters without a Message-ID


class FolderScanner:
    """Scans folders of one logged-in mailbox. All its database access goes through transactions,
    which the store serialises between scanner threads."""

    def __init__(
        self, store: Store, config: Config, mailbox: Mailbox, directory: LazyDirectory, client: IMAPClient,
        result: MailboxResult, dry_run: bool, progress: Progress | None, deadline: float,
    ) -> None:
        self.store, self.config, self.mailbox, self.directory = store, config, mailbox, directory
        self.client, self.result, self.dry_run, self.progress = client, result, dry_run, progress
        self.deadline = deadline
        self.condstore = b"CONDSTORE" in client.capabilities()
        self.dry_linked: set[str] = set()  # --dry-run: letters counted as linked already (seen in another folder)
        self.remapping = False  # this folder's UIDVALIDITY changed: known letters are found again
        assert mailbox.id is not None
        with store.transaction():
            # Skipped letters a directory change made worth a look (see backfill.py): folder -> UIDVALIDITY -> UIDs.
            self.wanted = store.wanted_skipped(mailbox.id)

    def scan(self, folder: str) -> None:
        assert self.mailbox.id is not None
        try:
            status = self.client.folder_status(folder, self._status_items())
        except IMAPClientError as exc:
            self.result.fail(
                "folder",
                f"folder '{folder}' cannot be read ({imap.server_text(exc)}): renamed or deleted?"
                f" 'hanna-sync folders {self.mailbox.id}' lists the folders,"
                f" 'edit-mailbox {self.mailbox.id} --folder ...' changes them",
            )
            if not self.dry_run and not self._listed(folder):
                retire_gone_folder(self.store, self.mailbox, folder)
            return
        self.result.folders_checked += 1
        with self.store.transaction():
            state = self.store.folder_state(self.mailbox.id, folder)
        uidvalidity = int(status[b"UIDVALIDITY"])
        uidnext = int(status[b"UIDNEXT"])
        messages = int(status[b"MESSAGES"])
        gap_check_due = self._gap_check_due(state)
        expunged = self._expunged(state, uidvalidity, uidnext, messages)
        wanted = self.wanted.get(folder, {}).get(uidvalidity, [])
        if (state.uidvalidity == uidvalidity and state.uidnext == uidnext and not gap_check_due and not expunged
                and not wanted):
            log.debug("%s: unchanged", folder)
            return
        self.remapping = state.uidvalidity is not None and state.uidvalidity != uidvalidity
        if self.remapping:
            log.warning("%s: UIDVALIDITY changed (%s -> %s): re-mapping by Message-ID", folder, state.uidvalidity,
                        uidvalidity)
            if not self.dry_run:
                with self.store.transaction():
                    self.store.mark_locations_gone(self.mailbox.id, folder, state.uidvalidity)
                    self.store.forget_skipped_folder(self.mailbox.id, folder, keep_uidvalidity=uidvalidity)
            state = FolderState(self.mailbox.id, folder)
        state.uidvalidity = uidvalidity
        state.server_uidnext = uidnext
        state.server_messages = messages
        remapped_before = self.result.remapped
        seen = UidSet.parse(state.seen_uids)
        selected = self.client.select_folder(folder, readonly=True)  # EXAMINE: the server cannot change flags
        exists = int(selected.get(b"EXISTS", messages))

        if (gap_check_due or expunged) and state.last_uid > 0:
            present = self._uids_between(1, state.last_uid, exists)
            if not self.dry_run:
                with self.store.transaction():
                    gone = self.store.mark_expunged(self.mailbox.id, folder, uidvalidity, present, state.last_uid)
                    self.store.prune_skipped(self.mailbox.id, folder, uidvalidity, present, state.last_uid)
                if gone:
                    log.info("%s: %d archived letters were expunged on the server: the archive keeps them,"
                             " their locations are marked gone", folder, gone)
        if gap_check_due and state.last_uid > 0:
            missing = seen.missing(present)
            if missing:
                log.warning("%s: %d letters below UID %d were never looked at: reading them now", folder,
                            len(missing), state.last_uid)
            if not self._process(folder, state, seen, missing, moves_high_water=False):
                return
            state.gap_found = len(missing)
            state.gap_checked_at = utcnow()
            self.result.gaps += len(missing)

        uids = self._uids_between(state.last_uid + 1, uidnext - 1, exists)
        if not self._process(folder, state, seen, uids, moves_high_water=True):
            return
        # The folder is done to UIDNEXT: only now may a later pass skip it as unchanged.
        state.last_uid = max(state.last_uid, uidnext - 1)
        state.uidnext = uidnext
        state.messages = state.server_messages
        state.highestmodseq = int(status[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in status else None
        if state.gap_checked_at is None:
            state.gap_checked_at = utcnow()  # everything up to here was just looked at
        if not self.dry_run:
            with self.store.transaction():
                self.store.save_folder_state(state)
        if wanted and not self.remapping:
            log.info("%s: looking again at %d skipped letters the directory now concerns", folder, len(wanted))
            if not self._process(folder, state, seen, wanted, moves_high_water=False, backfill=True):
                return
        if self.remapping:
            log.warning("%s: re-mapped %d letters after the UIDVALIDITY change", folder,
                        self.result.remapped - remapped_before)

    def _listed(self, folder: str) -> bool:
        """Whether the server's LIST still returns the folder. Only a LIST that answers without it says a
        folder is gone: when LIST fails too (the connection dropped), the folder may well still be there."""
        try:
            names = {f.name for f in imap.list_folders(self.client)}
        except (IMAPClientError, OSError, ssl.SSLError, socket.timeout):
            return True
        return folder in names or (folder.upper() == "INBOX" and any(n.upper() == "INBOX" for n in names))

    @staticmethod
    def _expunged(state: FolderState, uidvalidity: int, uidnext: int, messages: int) -> bool:
        """Whether letters left the folder since it was last scanned to the end: it holds fewer than it did
        then plus every UID given out since. Numbers STATUS returns anyway, so the check is free; the
        SEARCH that finds which letters left runs only when it says so (or at the gap check)."""
        if state.uidvalidity != uidvalidity or state.messages is None or state.uidnext is None:
            return False
        return messages < state.messages + (uidnext - state.uidnext)

    def _gap_check_due(self, state: FolderState) -> bool:
        hours = self.config.scan.gap_check_hours
        if hours <= 0 or state.last_uid == 0 or state.gap_checked_at is None:
            return False
        return datetime.fromisoformat(state.gap_checked_at) < datetime.now(timezone.utc) - timedelta(hours=hours)

    def _process(
        self, folder: str, state: FolderState, seen: UidSet, uids: list[int], moves_high_water: bool,
        backfill: bool = False,
    ) -> bool:
        """Run the UIDs through batches; False when the time budget ran out first."""
        batch_size = self.config.scan.batch_size
        for start in range(0, len(uids), batch_size):
            if time.monotonic() > self.deadline:
                self.result.budget_exhausted = True
                return False
            batch = uids[start : start + batch_size]
            self._batch(folder, state, seen, batch, moves_high_water, backfill)
            if self.progress:
                self.progress(f"{self.mailbox.email} {folder}", start + len(batch), len(uids))
        return True

    def _status_items(self) -> list[bytes]:
        items = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"]
        return items + [b"HIGHESTMODSEQ"] if self.condstore else items

    def _uids_between(self, low: int, high: int, exists: int) -> list[int]:
        """UIDs in [low, high] on the server, in as many SEARCHes as the answer needs, never as the UIDs'
        span would: a folder of two letters at UID 3,000,000 (Gmail's All Mail) is one round trip.

        One `UID SEARCH UID low:high` when at most SEARCH_WINDOW UIDs can come back (the folder holds
        `exists` letters, the range has high - low + 1 UIDs). Else windows of SEARCH_WINDOW sequence numbers
        with the same UID range, from the top down: a letter expunged meanwhile moves the others down, into
        a window still to come, never past it (one seen twice is counted once).
        """
        if low > high:
            return []
        span = f"{low}:{high}"
        if min(exists, high - low + 1) <= SEARCH_WINDOW:
            windows = [["UID", span]]
        else:
            tops = range(exists, 0, -SEARCH_WINDOW)
            windows = [[f"{max(1, top - SEARCH_WINDOW + 1)}:{'*' if top == exists else top}", "UID", span]
                       for top in tops]
        uids: set[int] = set()
        for criteria in windows:
            # Servers may answer `n:m` with a message outside it (as for `n:*`): keep only the range.
            uids.update(u for u in self.client.search(criteria) if low <= u <= high)
        return sorted(uids)

    def _batch(
        self, folder: str, state: FolderState, seen: UidSet, uids: list[int], moves_high_water: bool, backfill: bool,
    ) -> None:
        """One batch: headers, matching, bodies of the matched, and one transaction.

        A backfill batch looks again at letters skipped earlier that a directory change made worth it:
        the matched are archived and leave the skip index, the rest stay in it, no longer wanted, and
        those the server no longer has leave it too.
        """
        # A dry run lists each matched letter with its subject: one more field in the same FETCH.
        fields = HEADER_FIELDS + " SUBJECT" if self.dry_run else HEADER_FIELDS
        fetched = imap.fetch_header_fields(self.client, uids, fields)
        wanted = set(uids)
        looked_at = sorted(uid for uid in fetched if uid in wanted)
        tokens = {uid: address_tokens(fetched[uid][1]) for uid in looked_at}
        answers = {uid: thread_tokens(fetched[uid][1]) for uid in looked_at}
        candidates = self._candidates({uid: fetched[uid] for uid in looked_at}, tokens, answers)
        matched = {c.uid for c in candidates}
        skipped = [uid for uid in looked_at if uid not in matched]
        if not backfill:
            self.result.new += len(looked_at)
            self.result.skipped += len(skipped)

        if self.dry_run:
            self.result.linked += would_link(self.store, self.dry_linked, [(c.identity, c.links) for c in candidates])
            for c in candidates:
                self.result.would_archive.append({
                    "folder": folder, "uid": c.uid, "subject": c.headers.subject,
                    "links": [f"{l.entity_type} {l.entity_id} ({l.rule})" for l in c.links],
                })
            return

        with self.store.transaction():
            known = self.store.letter_ids([c.identity for c in candidates if c.identity])
        need = [c for c in candidates if c.identity not in known]
        bodies = self._fetch_bodies(need)
        # Letters expunged between the two FETCHes are left out: nothing is known of them but headers.
        candidates = [c for c in candidates if c.identity in known or c.uid in bodies]
        index = self.directory.skip_index()
        skipped_keys = ({uid: index.letter_keys(fetched[uid][1], tokens[uid], answers[uid]) for uid in skipped}
                        if index else {})

        assert self.mailbox.id is not None and state.uidvalidity is not None
        with self.store.transaction():
            for c in candidates:
                assert c.identity is not None
                letter_id = known.get(c.identity)
                if letter_id is None:
                    parsed, raw = bodies[c.uid]
                    if refused(self.store, self.config, c.identity, parsed):  # purged, or older than retention
                        self.result.skipped += 1
                        state.skipped += 1
                        continue
                    letter_id, created = self.store.archive_letter(c.identity, parsed, raw, c.size or len(raw))
                    known[c.identity] = letter_id
                    self.result.archived += int(created)
                elif self.remapping:
                    self.result.remapped += 1
                self.store.add_location(letter_id, self.mailbox.id, folder, state.uidvalidity, c.uid)
                # A letter, not a location: found again in another folder (Gmail's labels, a renamed
                # folder) or mailbox, it counts only when it gets a link it did not have.
                self.result.linked += int(self.store.add_links(letter_id, c.links) > 0)
                self.result.backfilled += int(backfill)
            if index is not None and skipped_keys:
                self.directory.remember_directory(index)
                self.store.record_skipped(self.mailbox.id, folder, state.uidvalidity, skipped_keys)
            if backfill:  # archived now, or no longer on the server
                done = [c.uid for c in candidates] + [uid for uid in uids if uid not in fetched]
                self.store.forget_skipped(self.mailbox.id, folder, state.uidvalidity, done)
            else:
                state.skipped += len(skipped)
            # A UID the server did not return stays out of `seen`: the gap check finds it if it still exists.
            seen.add(looked_at)
            state.seen_uids = str(seen)
            if moves_high_water:
                state.last_uid = max(state.last_uid, max(uids))
            self.store.save_folder_state(state)

    def _candidates(
        self, fetched: dict[int, tuple[int, bytes]], tokens: dict[int, list[str]], answered: dict[int, list[str]],
    ) -> list[Candidate]:
        """The letters of a batch that concern the directory, with their links: by their own addresses,
        and (linking.thread_replies) inherited from the linked letters they answer, archived already or
        in this very batch. Auto-replies and bulk mail get none unless linking.automatic says so."""
        charset = self.mailbox.imap_charset
        directory = self.directory.get()
        flags = (self.mailbox.sync_customers, self.mailbox.sync_leads)
        parsed: dict[int, ParsedLetter] = {}
        keep: dict[int, Keep] = {}  # the addresses the prefilter matched, wherever in the header they are

        def headers(uid: int) -> ParsedLetter:
            if uid not in parsed:
                parsed[uid] = parse_headers_only(fetched[uid][1], charset, keep.get(uid))
            return parsed[uid]

        def may_link(uid: int) -> bool:
            return self.config.linking.automatic or not is_automatic(headers(uid))

        links: dict[int, list[Link]] = {}
        for uid in fetched:
            # Cheap prefilter first: most letters concern nobody, and a superset of their addresses says so.
            prefiltered = match(tokens[uid], directory, *flags)
            if prefiltered:
                keep[uid] = keeping(prefiltered)
                found = match(participants_of(headers(uid)), directory, *flags)
                if found and may_link(uid):
                    links[uid] = found

        answers = {uid: ids for uid, ids in answered.items() if ids}
        if self.config.linking.thread_replies and answers:
            with self.store.transaction():
                linked = self.store.thread_links([i for ids in answers.values() for i in ids])

            def publish(uid: int) -> None:  # a letter of this batch that others in it may answer
                message_id = headers(uid).message_id
                if message_id:
                    linked.setdefault(message_id, []).extend((l.entity_type, l.entity_id) for l in links[uid])

            for uid in list(links):
                publish(uid)
            grew = True
            while grew:  # until no reply inherits more: a chain of replies within one batch
                grew = False
                for uid, ids in answers.items():
                    extra = inherited_links(ids, linked, links.get(uid, ()), *flags)
                    if extra and (uid in links or may_link(uid)):
                        links[uid] = links.get(uid, []) + extra
                        publish(uid)
                        grew = True

        candidates = []
        for uid in sorted(links):
            identity = f"mid:{headers(uid).message_id}" if headers(uid).message_id else None
            candidates.append(Candidate(uid, headers(uid), links[uid], fetched[uid][0], identity))
        return candidates

    def _fetch_bodies(self, candidates: list[Candidate]) -> dict[int, tuple[ParsedLetter, bytes]]:
        """Whole letters for the matched ones; headers only for those over the size limit.

        Letters without a Message-ID get their identity here, from a fingerprint of their content.
        """
        limit = self.config.max_letter_bytes
        charset = self.mailbox.imap_charset
        out: dict[int, tuple[ParsedLetter, bytes]] = {}
        for item, key, parse in (
            ("BODY.PEEK[]", b"BODY[]", parse_letter),
            ("BODY.PEEK[HEADER]", b"BODY[HEADER]", parse_headers_only),
        ):
            uids = [c.uid for c in candidates if (c.size <= limit) == (parse is parse_letter)]
            keep = {c.uid: keeping(c.links) for c in candidates}
            if uids:
                for uid, data in self.client.fetch(uids, [item]).items():
                    raw = data.get(key) or b""
                    out[uid] = (parse(raw, charset, keep.get(uid)), raw)
        for c in candidates:
            if c.identity is None and c.uid in out:
                c.identity = f"sha256:{fingerprint(out[c.uid][1])}"
        return out


# -- Office 365 ---------------------------------------------------------------------------------------

@contextmanager
def open_scanner(
    store: Store, secrets: SecretStore, config: Config, mailbox: Mailbox, directory: LazyDirectory,
    result: MailboxResult, dry_run: bool, progress: Progress | None, deadline: float,
) -> Iterator[FolderScanner | GraphScanner]:
    """The scanner for the mailbox's kind, connected: IMAP with its password, IMAP with XOAUTH2 (o365-client),
    or Microsoft Graph (o365-scan). Each scans a folder with `scan(folder)`, into the same archive."""
    if mailbox.kind == "imap":
        password = secrets.get(mailbox.secret_ref)
        if password is None:
            raise SecretsError(f"no password stored; run 'hanna-sync set-password {mailbox.id}'")
        with imap.session(mailbox, password, config.network.timeout) as client:
            yield FolderScanner(store, config, mailbox, directory, client, result, dry_run, progress, deadline)
        return
    from hanna_sync.remote.oauth import IMAP, MicrosoftSignIn, TokenRefused

    sign_in = MicrosoftSignIn.for_config(config, secrets)
    if mailbox.kind == "o365-client":
        token = sign_in.token_source(mailbox, IMAP)
        try:
            renewing = imap.TokenRenewingClient(mailbox, token, config.network.timeout)
        except (ReauthRequired, TokenRefused):
            raise
        except AuthError:
            # Exchange refuses a token it no longer honours (the sign-in revoked: continuous access evaluation
            # sees it before the token expires) with the same "AUTHENTICATE failed" as a missing permission.
            # Renewing tells them apart: a lost sign-in says so (needs re-authorisation), a permission fails again.
            sign_in.token(mailbox, IMAP, fresh=True)
            renewing = imap.TokenRenewingClient(mailbox, token, config.network.timeout)
        try:
            client = cast(IMAPClient, renewing)  # passes every IMAPClient method through
            yield FolderScanner(store, config, mailbox, directory, client, result, dry_run, progress, deadline)
        finally:
            renewing.end()
        return
    graph = sign_in.graph(mailbox)
    try:
        yield GraphScanner(store, config, mailbox, directory, graph, result, dry_run, progress, deadline)
    finally:
        graph.close()


@dataclass
class GraphCandidate:
    """A message new to this folder that concerns the directory, waiting for its original."""

    envelope: Envelope
    links: list[Link]
    identity: str | None  # None until the original is there, for letters without a Message-ID


# The folders add-mailbox chooses for an o365-scan mailbox (mailboxes.default_folders), by Graph's
# well-known names: found whatever the mailbox's language calls them, verified at add-mailbox or not.
WELL_KNOWN_FOLDERS = {"inbox": "inbox", "sent items": "sentitems"}


class GraphScanner:
    """Scans folders of one Office 365 mailbox through Microsoft Graph, into the same letters, links and
    locations as FolderScanner: a letter seen over IMAP and over Graph (same Message-ID) is one letter.

    Per folder, a delta round returns the envelope of every message the first time, and afterwards what
    changed since the last round (its deltaLink). Each page is a batch: matched letters' originals fetched
    (`$value`, at most 4 requests at once), then their letters, locations and links, the messages that left
    the folder, and the link to go on from, all in one transaction, so a kill loses nothing and doubles
    nothing. A delta token Graph has forgotten (410) means reading the folder again; letters archived
    already are recognised by Message-ID and locations by Graph's immutable id, so nothing is stored twice.

    Matching is IMAP's, with Outlook's conversation (conversationId) for thread links, and the check for
    letters sent by programs made on the original. Skipped messages go into the skip index by immutable
    id; those a directory change makes wanted are looked at again, envelope first, after the round.

    A round read from the start reports what is in the folder, never what left it: so it remembers, with its
    pages, which of the folder's locations it returned (their uids, in the folder state's `graph_returned`,
    None when no such round is under way), and when it
    reaches its deltaLink the live locations it did not return are marked gone. That is how the @removed of
    a window whose delta token was lost (410) still arrive; a kill mid-round keeps the set with its pages.
    """

    def __init__(
        self, store: Store, config: Config, mailbox: Mailbox, directory: LazyDirectory, graph: GraphClient,
        result: MailboxResult, dry_run: bool, progress: Progress | None, deadline: float,
    ) -> None:
        self.store, self.config, self.mailbox, self.directory = store, config, mailbox, directory
        self.graph, self.result, self.dry_run, self.progress = graph, result, dry_run, progress
        self.deadline = deadline
        self._folders: dict[str, GraphFolder] | None = None
        self.dry_linked: set[str] = set()  # --dry-run: letters counted as linked already (seen in another folder)
        assert mailbox.id is not None
        with store.transaction():
            self.wanted = store.wanted_graph(mailbox.id)  # skipped letters a directory change made worth a look

    def scan(self, path: str) -> None:
        assert self.mailbox.id is not None
        if self._folders is None:
            self._folders = {f.path.casefold(): f for f in self.graph.folders()}
        folder = self._folders.get(path.casefold())
        if folder is None and path.casefold() in WELL_KNOWN_FOLDERS:  # a default name, in the mailbox's language
            try:
                folder = self.graph.well_known(WELL_KNOWN_FOLDERS[path.casefold()])
            except MessageGone:
                folder = None
        if folder is None:
            self.result.fail(
                "folder",
                f"folder '{path}' is not in the mailbox: renamed or deleted? 'hanna-sync folders {self.mailbox.id}'"
                f" lists the folders, 'edit-mailbox {self.mailbox.id} --folder ...' changes them",
            )
            if not self.dry_run:  # Graph listed the mailbox's folders, and this one is not among them
                retire_gone_folder(self.store, self.mailbox, path)
            return
        self.result.folders_checked += 1
        with self.store.transaction():
            state = self.store.folder_state(self.mailbox.id, path)
        if state.graph_folder_id != folder.id:
            if state.graph_folder_id is not None:
                log.warning("%s: another folder has this name now: reading it from the start", path)
            state = FolderState(self.mailbox.id, path, graph_folder_id=folder.id)
        state.server_messages = folder.total
        link = state.next_link or state.delta_link
        resynced = False
        while True:
            if link is None:
                state.messages = 0  # a round from the start: counts what it has looked at, for `status`
                state.graph_returned = ""  # a round from the start: no location returned yet
            if time.monotonic() > self.deadline:
                self.result.budget_exhausted = True
                return
            try:
                page = self.graph.delta(folder.id, link, self.config.scan.batch_size)
            except MessageGone:  # Graph's 404: the folder went after it was listed
                self.result.fail("folder", f"folder '{path}' was deleted while the pass read it; 'hanna-sync folders"
                                           f" {self.mailbox.id}' lists the folders")
                return
            except DeltaExpired as exc:
                if resynced:
                    raise
                resynced = True
                log.warning("%s: %s: reading the folder again; letters archived already are not stored twice",
                            path, exc)
                state.delta_link = state.next_link = link = None
                continue
            self._page(path, state, page)
            if page.next_link is None:
                break
            link = page.next_link
        if self.wanted.get(path):
            self._backfill(path, self.wanted[path])

    def _page(self, path: str, state: FolderState, page: DeltaPage) -> None:
        assert self.mailbox.id is not None
        present = list({e.id: e for e in page.items if not e.removed}.values())
        removed = [e.id for e in page.items if e.removed]
        with self.store.transaction():
            located = self.store.graph_located(self.mailbox.id, path, [e.id for e in present])
            located |= self.store.graph_skipped(self.mailbox.id, path, [e.id for e in present])
        # A message archived or skipped from here before, and changed since (read, flagged), needs nothing
        # more: a directory change that concerns a skipped one makes it wanted (see _backfill).
        fresh = [e for e in present if e.id not in located]
        candidates, passed = self._match(fresh)
        skipped = len(passed)
        self.result.new += len(fresh)
        self.result.skipped += skipped
        state.messages = (state.messages or 0) + len(present)
        state.next_link = page.next_link
        if page.delta_link:
            state.delta_link = page.delta_link
        if self.progress:
            self.progress(f"{self.mailbox.email} {path}", state.messages, max(state.messages, state.server_messages or 0))

        if self.dry_run:
            self._would_archive(path, candidates)
            return

        prepared = self._prepare(candidates, passed)
        with self.store.transaction():
            self._archive(path, prepared, state)
            self.store.mark_graph_locations_gone(self.mailbox.id, path, removed)
            self.store.forget_skipped_graph(self.mailbox.id, path, removed)
            if state.graph_returned is not None:  # a round from the start: no @removed, so what it returned counts
                returned = UidSet.parse(state.graph_returned)
                returned.add(self.store.graph_location_uids(self.mailbox.id, path, [e.id for e in present]))
                if page.delta_link:
                    gone = returned.missing(self.store.graph_location_uids(self.mailbox.id, path))
                    self.store.mark_graph_uids_gone(self.mailbox.id, path, gone)
                    if gone:
                        log.warning("%s: %d archived letters are no longer in the folder (the full read did not"
                                    " return them): their locations are marked gone", path, len(gone))
                state.graph_returned = None if page.delta_link else str(returned)
            state.skipped += skipped
            self.store.save_folder_state(state)

    def _match(self, envelopes: list[Envelope]) -> tuple[list[GraphCandidate], list[Envelope]]:
        """The envelopes that concern the directory, with their links, and those that do not: by their
        addresses, and (linking.thread_replies) inherited from the linked letters of their Outlook
        conversation, archived already or on this page. Whether a program sent the letter is only
        known from its original, so that check waits for the download."""
        if not envelopes:
            return [], []
        directory = self.directory.get()
        flags = (self.mailbox.sync_customers, self.mailbox.sync_leads)
        links: dict[str, list[Link]] = {}
        for e in envelopes:
            found = match(e.addresses, directory, *flags)
            if found:
                links[e.id] = found
        conversations = {e.id: f"conversation:{e.conversation_id}" for e in envelopes if e.conversation_id}
        if self.config.linking.thread_replies and conversations:
            # From archived letters only: whether a letter of this page was sent by a program (and so
            # passes nothing on) is known from its original. A reply skipped here because its
            # conversation's first letter is on the same page is fetched by the next pass (thread backfill).
            with self.store.transaction():
                linked = self.store.thread_links(list(set(conversations.values())))
            for graph_id, conversation in conversations.items():
                extra = inherited_links([conversation], linked, links.get(graph_id, ()), *flags)
                if extra:
                    links[graph_id] = links.get(graph_id, []) + extra
        candidates, passed = [], []
        for e in envelopes:
            if e.id in links:
                message_id = _message_id(e.internet_message_id)
                candidates.append(GraphCandidate(e, links[e.id], f"mid:{message_id}" if message_id else None))
            else:
                passed.append(e)
        return candidates, passed

    def _originals(self, candidates: list[GraphCandidate]) -> dict[str, tuple[ParsedLetter, Mime]]:
        """The original bytes of each letter (headers only over the size limit), up to 4 downloads at once.

        Letters without a Message-ID get their identity here, from a fingerprint of their content, as over IMAP.
        """
        out = self._download({c.envelope.id: keeping(c.links) for c in candidates})
        for c in candidates:
            if c.identity is None and c.envelope.id in out:
                c.identity = f"sha256:{fingerprint(out[c.envelope.id][1].raw)}"
        return out

    def _download(self, graph_ids: dict[str, Keep]) -> dict[str, tuple[ParsedLetter, Mime]]:
        """Originals by immutable id, parsed (keeping the addresses that link each, however many
        recipients it has), at most MAX_IN_FLIGHT at once; those gone are left out."""
        limit = self.config.max_letter_bytes
        charset = self.mailbox.imap_charset

        def download(graph_id: str) -> tuple[str, ParsedLetter, Mime] | None:
            try:
                mime = self.graph.mime(graph_id, limit)
            except MessageGone:
                return None
            parse = parse_headers_only if mime.truncated else parse_letter
            return graph_id, parse(mime.raw, charset, graph_ids[graph_id]), mime

        out: dict[str, tuple[ParsedLetter, Mime]] = {}
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            for got in pool.map(download, graph_ids):
                if got is not None:
                    out[got[0]] = (got[1], got[2])
        return out

    def _prepare(self, candidates: list[GraphCandidate], passed: list[Envelope]) -> GraphBatch:
        """Everything a batch needs from the network, before its transaction: the originals of the
        matched letters not archived yet, and the skip-index keys of all of them (a matched letter may
        still turn out to be one not to archive: sent by a program, purged, too old)."""
        with self.store.transaction():
            known = self.store.letter_ids([c.identity for c in candidates if c.identity])
        originals = self._originals([c for c in candidates if c.identity not in known])
        # A message deleted between its envelope and the download is left out: the next round says so.
        candidates = [c for c in candidates if c.identity in known or c.envelope.id in originals]
        index = self.directory.skip_index()
        keys = {e.id: index.envelope_keys(e.addresses, e.conversation_id, _message_id(e.internet_message_id))
                for e in passed + [c.envelope for c in candidates]} if index else {}
        return GraphBatch(candidates, [e.id for e in passed], originals, known, keys, index)

    def _archive(self, path: str, batch: GraphBatch, state: FolderState | None) -> list[str]:
        """The batch's letters, locations and links, and its skipped letters in the skip index (inside
        the caller's transaction). `state` is None for a backfill: its letters were counted when first
        skipped. Returns the graph ids that stay skipped."""
        assert self.mailbox.id is not None
        skipped = list(batch.passed)
        for c in batch.candidates:
            assert c.identity is not None
            letter_id = batch.known.get(c.identity)
            if letter_id is None:
                parsed, mime = batch.originals[c.envelope.id]
                # Purged, older than retention, or (only the original tells) sent by a program.
                if refused(self.store, self.config, c.identity, parsed) or (
                        is_automatic(parsed) and not self.config.linking.automatic):
                    if state is not None:
                        self.result.skipped += 1
                        state.skipped += 1
                    skipped.append(c.envelope.id)  # not downloaded again when Graph reports it changed
                    continue
                letter_id, created = self.store.archive_letter(
                    c.identity, parsed, mime.raw, mime.size, c.envelope.conversation_id)
                batch.known[c.identity] = letter_id
                self.result.archived += int(created)
            self.store.add_graph_location(letter_id, self.mailbox.id, path, c.envelope.id)
            self.result.linked += int(self.store.add_links(letter_id, c.links) > 0)  # letters, as over IMAP
            self.result.backfilled += int(state is None)
        if batch.index is not None and skipped:
            self.directory.remember_directory(batch.index)
            self.store.record_skipped_graph(self.mailbox.id, path, {i: batch.keys[i] for i in skipped})
        return skipped

    def _backfill(self, path: str, graph_ids: list[str]) -> None:
        """Look again at skipped letters a directory change made worth it (see backfill.py): their
        envelopes, matched as a pass matches, then the originals of the matched only. The matched are
        archived, the rest stay skipped and are no longer wanted, those gone leave the index."""
        assert self.mailbox.id is not None
        log.info("%s: looking again at %d skipped letters the directory now concerns", path, len(graph_ids))
        batch_size = self.config.scan.batch_size
        for start in range(0, len(graph_ids), batch_size):
            if time.monotonic() > self.deadline:
                self.result.budget_exhausted = True
                return
            ids = graph_ids[start : start + batch_size]
            with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
                envelopes = [e for e in pool.map(self._envelope, ids) if e is not None]
            candidates, passed = self._match(envelopes)
            if self.dry_run:  # listed as IMAP's dry run lists them: nothing downloaded, nothing written
                self._would_archive(path, candidates)
                continue
            batch = self._prepare(candidates, passed)
            with self.store.transaction():
                still_skipped = set(self._archive(path, batch, None))
                found = {e.id for e in envelopes}
                archived = [c.envelope.id for c in batch.candidates if c.envelope.id not in still_skipped]
                self.store.forget_skipped_graph(self.mailbox.id, path, archived + [i for i in ids if i not in found])

    def _would_archive(self, path: str, candidates: list[GraphCandidate]) -> None:
        self.result.linked += would_link(self.store, self.dry_linked, [(c.identity, c.links) for c in candidates])
        for c in candidates:
            self.result.would_archive.append({
                "folder": path, "uid": None, "graph_id": c.envelope.id, "subject": c.envelope.subject,
                "links": [f"{l.entity_type} {l.entity_id} ({l.rule})" for l in c.links],
            })

    def _envelope(self, graph_id: str) -> Envelope | None:
        try:
            return self.graph.envelope(graph_id)
        except MessageGone:
            return None


@dataclass
class GraphBatch:
    """A Graph batch between its downloads and its transaction."""

    candidates: list[GraphCandidate]
    passed: list[str]  # graph ids of the letters that concern nobody
    originals: dict[str, tuple[ParsedLetter, Mime]]
    known: dict[str, int]  # identity -> letter id of those archived already
    keys: dict[str, LetterKeys]  # graph id -> skip-index keys, for every letter of the batch
    index: SkipIndex | None


def _message_id(internet_message_id: str | None) -> str | None:
    """Graph's internetMessageId read as IMAP's Message-ID header is, so both give the same identity."""
    if not internet_message_id:
        return None
    return parse_headers_only(b"Message-ID: " + internet_message_id.encode("utf-8", "replace") + b"\r\n\r\n").message_id
