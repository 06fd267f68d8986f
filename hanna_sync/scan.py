"""One scan pass: every active mailbox, every chosen folder, new letters only.

Per folder: STATUS first (one round trip; an unchanged folder costs nothing more), then EXAMINE
(read-only), then new UIDs in windows, their headers in batches, matched locally against the CRM
directory, and full bodies fetched with BODY.PEEK only for the letters that matched and are not
archived yet. Each batch's letters, locations, links and the folder's advanced state are committed in
one transaction, so a kill at any moment loses nothing and duplicates nothing. A mailbox that fails
is recorded on that mailbox and the pass goes on with the next.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync import imap
from hanna_sync.config import Config
from hanna_sync.errors import HannaError
from hanna_sync.match import Directory, Link, match
from hanna_sync.message import ParsedLetter, fingerprint, parse_headers_only, parse_letter
from hanna_sync.store import FolderState, Mailbox, Store

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

log = logging.getLogger(__name__)

# The header fields matching needs, fetched instead of whole letters (BODY.PEEK never sets \Seen).
HEADER_FIELDS = (
    "MESSAGE-ID IN-REPLY-TO REFERENCES DATE SUBJECT FROM SENDER REPLY-TO TO CC BCC AUTO-SUBMITTED LIST-ID PRECEDENCE"
)
HEADERS_ITEM = f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})]"
SEARCH_WINDOW = 20_000  # UIDs per SEARCH: keeps a response line far below imaplib's 1 MB cap

Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass
class MailboxResult:
    """What one mailbox's part of a pass did: the row of the summary table and of --json."""

    mailbox_id: int
    email: str
    folders_checked: int = 0
    new: int = 0  # letters the pass looked at for the first time
    archived: int = 0  # letters stored for the first time
    linked: int = 0  # letters that got at least one link (new or already archived elsewhere)
    skipped: int = 0  # letters concerning no customer or lead: counted, not stored
    remapped: int = 0  # letters found again under a new UIDVALIDITY
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    would_archive: list[dict[str, Any]] = field(default_factory=list)  # --dry-run only

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        data = {
            "id": self.mailbox_id, "email": self.email, "ok": self.ok, "folders_checked": self.folders_checked,
            "new": self.new, "archived": self.archived, "linked": self.linked, "skipped": self.skipped,
            "remapped": self.remapped, "errors": self.errors, "seconds": round(self.seconds, 3),
        }
        if self.would_archive:
            data["would_archive"] = self.would_archive
        return data


@dataclass
class PassResult:
    mailboxes: list[MailboxResult]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.mailboxes)


def build_directory(store: Store, config: Config) -> Directory:
    """The directory as it is now, with every mailbox address counted as staff."""
    staff = [m.email for m in store.mailboxes()] + [m.username for m in store.mailboxes() if m.username]
    return Directory.build(
        store.entities("customer"), store.entities("lead"), staff, config.own_domains, config.free_mail_domains
    )


def run_pass(
    store: Store,
    secrets: SecretStore,
    config: Config,
    mailbox_ids: list[int] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PassResult:
    """Scan every mailbox with scan active (or those named); one failing never stops the others."""
    if mailbox_ids:
        boxes = [store.mailbox(i) for i in mailbox_ids]
    else:
        boxes = [m for m in store.mailboxes() if m.scan_active]
    directory = build_directory(store, config)
    for domain, owners in sorted(directory.ambiguous_domains().items()):
        log.warning("domain %s is claimed by customers %s: it links to neither", domain, ", ".join(sorted(owners)))
    run_id = None if dry_run else store.start_run()
    results = []
    for mailbox in boxes:
        result = scan_mailbox(store, secrets, config, mailbox, directory, dry_run, progress)
        if not dry_run:
            store.record_outcome(mailbox.id, "; ".join(result.errors) if result.errors else None)
        results.append(result)
    outcome = PassResult(results, dry_run)
    if run_id is not None:
        store.finish_run(run_id, "ok" if outcome.ok else "failed", [r.as_dict() for r in results])
    return outcome


def scan_mailbox(
    store: Store,
    secrets: SecretStore,
    config: Config,
    mailbox: Mailbox,
    directory: Directory,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> MailboxResult:
    assert mailbox.id is not None
    result = MailboxResult(mailbox.id, mailbox.email)
    started = time.monotonic()
    try:
        password = secrets.get(mailbox.secret_ref)
        if password is None:
            raise HannaError(f"no password stored; run 'hanna-sync set-password {mailbox.id}'")
        with imap.session(mailbox, password, config.network.timeout) as client:
            scanner = FolderScanner(store, config, mailbox, directory, client, result, dry_run, progress)
            for folder in mailbox.folders:
                scanner.scan(folder)
    except HannaError as exc:
        result.errors.append(str(exc))
    except (OSError, ssl.SSLError, IMAPClientError, socket.timeout) as exc:
        result.errors.append(f"connection to {mailbox.imap_host} failed: {exc or type(exc).__name__}")
    result.seconds = time.monotonic() - started
    level = logging.INFO if result.ok else logging.ERROR
    log.log(level, "mailbox %s (%s): %d new, %d archived, %d linked, %d skipped%s", mailbox.id, mailbox.email,
            result.new, result.archived, result.linked, result.skipped,
            f"; errors: {'; '.join(result.errors)}" if result.errors else "")
    return result


@dataclass
class Candidate:
    """A new letter that concerns the directory, waiting for its body."""

    uid: int
    headers: ParsedLetter
    links: list[Link]
    size: int
    identity: str | None  # None until the body is there, for letters without a Message-ID


class FolderScanner:
    """Scans folders of one logged-in mailbox."""

    def __init__(
        self, store: Store, config: Config, mailbox: Mailbox, directory: Directory, client: IMAPClient,
        result: MailboxResult, dry_run: bool, progress: Progress | None,
    ) -> None:
        self.store, self.config, self.mailbox, self.directory = store, config, mailbox, directory
        self.client, self.result, self.dry_run, self.progress = client, result, dry_run, progress
        self.condstore = b"CONDSTORE" in client.capabilities()
        self.remapping = False  # this folder's UIDVALIDITY changed: known letters are found again

    def scan(self, folder: str) -> None:
        try:
            status = self.client.folder_status(folder, self._status_items())
        except IMAPClientError as exc:
            self.result.errors.append(
                f"folder '{folder}' cannot be read ({exc}): renamed or deleted? 'hanna-sync folders"
                f" {self.mailbox.id}' lists the folders, 'edit-mailbox {self.mailbox.id} --folder ...' changes them"
            )
            return
        self.result.folders_checked += 1
        assert self.mailbox.id is not None
        state = self.store.folder_state(self.mailbox.id, folder)
        uidvalidity = int(status[b"UIDVALIDITY"])
        uidnext = int(status[b"UIDNEXT"])
        if state.uidvalidity == uidvalidity and state.uidnext == uidnext:
            log.debug("%s: unchanged", folder)
            return
        self.remapping = state.uidvalidity is not None and state.uidvalidity != uidvalidity
        if self.remapping:
            log.warning("%s: UIDVALIDITY changed (%s -> %s): re-mapping by Message-ID", folder, state.uidvalidity,
                        uidvalidity)
            if not self.dry_run:
                with self.store.transaction():
                    self.store.mark_locations_gone(self.mailbox.id, folder, state.uidvalidity)
            state = FolderState(self.mailbox.id, folder)
        state.uidvalidity = uidvalidity
        remapped_before = self.result.remapped
        self.client.select_folder(folder, readonly=True)  # EXAMINE: the server cannot change flags
        uids = self._new_uids(state.last_uid, uidnext - 1)
        done = 0
        batch_size = self.config.scan.batch_size
        for start in range(0, len(uids), batch_size):
            batch = uids[start : start + batch_size]
            self._batch(folder, state, batch)
            done += len(batch)
            if self.progress:
                self.progress(f"{self.mailbox.email} {folder}", done, len(uids))
        # The folder is done to UIDNEXT: only now may a later pass skip it as unchanged.
        state.last_uid = max(state.last_uid, uidnext - 1)
        state.uidnext = uidnext
        state.messages = int(status[b"MESSAGES"])
        state.highestmodseq = int(status[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in status else None
        if not self.dry_run:
            with self.store.transaction():
                self.store.save_folder_state(state)
        if self.remapping:
            log.warning("%s: re-mapped %d letters after the UIDVALIDITY change", folder, self.result.remapped - remapped_before)

    def _status_items(self) -> list[bytes]:
        items = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"]
        return items + [b"HIGHESTMODSEQ"] if self.condstore else items

    def _new_uids(self, last_uid: int, top: int) -> list[int]:
        """UIDs above last_uid, found by SEARCH in windows (never one huge SEARCH ALL)."""
        uids: list[int] = []
        low = last_uid + 1
        while low <= top:
            high = min(low + SEARCH_WINDOW - 1, top)
            found = self.client.search(["UID", f"{low}:{high}"])
            # `n:*`-style ranges can return a message below n; never go back over what is done.
            uids.extend(u for u in found if last_uid < u <= high)
            low = high + 1
        return sorted(set(uids))

    def _batch(self, folder: str, state: FolderState, uids: list[int]) -> None:
        charset = self.mailbox.imap_charset
        fetched = self.client.fetch(uids, [HEADERS_ITEM, "RFC822.SIZE"])
        candidates: list[Candidate] = []
        for uid in sorted(fetched):
            if uid not in uids:
                continue
            data = fetched[uid]
            raw_headers = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS")), b"") or b""
            headers = parse_headers_only(raw_headers, charset)
            self.result.new += 1
            links = match(
                participants(headers), self.directory, self.mailbox.sync_customers, self.mailbox.sync_leads
            )
            if not links:
                self.result.skipped += 1
                continue
            identity = f"mid:{headers.message_id}" if headers.message_id else None
            candidates.append(Candidate(uid, headers, links, int(data.get(b"RFC822.SIZE", 0)), identity))

        if self.dry_run:
            for c in candidates:
                self.result.linked += 1
                self.result.would_archive.append({
                    "folder": folder, "uid": c.uid, "subject": c.headers.subject,
                    "links": [f"{l.entity_type} {l.entity_id} ({l.rule})" for l in c.links],
                })
            return

        known = self.store.letter_ids([c.identity for c in candidates if c.identity])
        need = [c for c in candidates if c.identity not in known]
        bodies = self._fetch_bodies(need)
        # Letters expunged between the two FETCHes are left out: nothing is known of them but headers.
        candidates = [c for c in candidates if c.identity in known or c.uid in bodies]
        known.update(self.store.letter_ids([c.identity for c in need if c.uid in bodies]))

        assert self.mailbox.id is not None and state.uidvalidity is not None
        with self.store.transaction():
            for c in candidates:
                assert c.identity is not None
                letter_id = known.get(c.identity)
                if letter_id is None:
                    parsed, raw = bodies[c.uid]
                    letter_id = self.store.archive_letter(c.identity, parsed, raw, c.size or len(raw))
                    known[c.identity] = letter_id
                    self.result.archived += 1
                elif self.remapping:
                    self.result.remapped += 1
                self.store.add_location(letter_id, self.mailbox.id, folder, state.uidvalidity, c.uid)
                self.store.add_links(letter_id, c.links)
                self.result.linked += 1
            state.last_uid = max(uids)
            self.store.save_folder_state(state)

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
            if uids:
                for uid, data in self.client.fetch(uids, [item]).items():
                    raw = data.get(key) or b""
                    out[uid] = (parse(raw, charset), raw)
        for c in candidates:
            if c.identity is None and c.uid in out:
                c.identity = f"sha256:{fingerprint(out[c.uid][1])}"
        return out


def participants(letter: ParsedLetter) -> list[str]:
    """Every address on the letter that may tie it to a customer or lead."""
    groups = (letter.from_, letter.sender, letter.reply_to, letter.to, letter.cc, letter.bcc)
    return [a.email for group in groups for a in group if a.email]
