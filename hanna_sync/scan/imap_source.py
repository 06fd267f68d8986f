"""Folders read over IMAP (with a password, or XOAUTH2 for o365-client): STATUS first (one round trip; an
unchanged folder costs nothing more), then EXAMINE (read-only), then new UIDs in windows, their header
fields in batches, matched locally, and whole letters fetched with BODY.PEEK (never setting \\Seen) only
for the matched ones not archived yet. UIDVALIDITY changes, expunged letters and never-seen gaps are this
module's; the batch commit is archiving.py's."""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync.db.store import participants_of, utcnow
from hanna_sync.errors import AuthError, ReauthRequired, SecretsError
from hanna_sync.linking.backfill import LetterKeys
from hanna_sync.linking.match import Link, inherited_links, match
from hanna_sync.mail.message import (
    Keep,
    ParsedLetter,
    address_tokens,
    is_automatic,
    parse_headers_only,
    parse_letter,
    thread_tokens,
)
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.remote import imap, imap_wire
from hanna_sync.scan import archiving
from hanna_sync.scan.archiving import keeping, retire_gone_folder
from hanna_sync.scan.context import PassContext
from hanna_sync.scan.imap_batch import Matched, conversation_key, message_id
from hanna_sync.scan.results import MailboxResult
from hanna_sync.scan.source import Candidate, Original
from hanna_sync.uidset import UidSet

log = logging.getLogger(__name__)

# The only header fields a pass reads of every letter, instead of whole letters: the addresses matching
# needs, the Message-ID that tells whether the letter is archived already, the ids of the letters it
# answers (thread links), and what marks it as sent by a program. Everything else comes from the whole
# letter, fetched for the matched ones only.
HEADER_FIELDS = "MESSAGE-ID FROM SENDER REPLY-TO TO CC BCC IN-REPLY-TO REFERENCES AUTO-SUBMITTED PRECEDENCE LIST-ID"
# Pipelining (see _process): batches matched before the oldest is committed. The bytes of their bodies in
# flight (a server may send them all before it completes the oldest FETCH: Dovecot does) come out of the
# pass's BodyBudget; a batch whose bodies weigh more than a quarter of it is committed in parts.
BATCHES_AHEAD = 2
HEADER_WEIGHT = 64 * 1024  # what the header block of a letter over scan.max_letter_size_mb is taken to weigh
SEARCH_WINDOW = 20_000  # UIDs one SEARCH may return at most: keeps its response line far below imaplib's 1 MB cap


@contextmanager
def connect(ctx: PassContext, mailbox: Mailbox, result: MailboxResult) -> Iterator[ImapSource]:
    """The mailbox's IMAP session: with its password, or with XOAUTH2 (o365-client, google-client)."""
    if mailbox.kind == "imap":
        password = ctx.secrets.get(mailbox.secret_ref)
        if password is None:
            raise SecretsError(f"no password stored; run 'hanna-sync set-password {mailbox.id}'")
        with imap.session(mailbox, password, ctx.config.network.timeout, status_of=list(mailbox.folders)) as client:
            yield ImapSource(ctx, mailbox, client, result)
        return
    from hanna_sync.remote.oauth import IMAP, MicrosoftSignIn, TokenRefused

    if mailbox.kind == "google-client":
        from hanna_sync.remote.google_auth import GoogleSignIn

        token = GoogleSignIn.for_config(ctx.config, ctx.secrets).token_source(mailbox)
    else:
        token = MicrosoftSignIn.for_config(ctx.config, ctx.secrets).token_source(mailbox, IMAP)
    try:
        renewing = imap.TokenRenewingClient(mailbox, token, ctx.config.network.timeout)
    except (ReauthRequired, TokenRefused):
        raise
    except AuthError:
        # Exchange refuses a token it no longer honours (the sign-in revoked: continuous access evaluation
        # sees it before the token expires) with the same "AUTHENTICATE failed" as a missing permission;
        # Gmail too ("Invalid credentials"). Renewing tells them apart: a lost sign-in says so (needs
        # re-authorisation), a permission fails again.
        token(True)
        renewing = imap.TokenRenewingClient(mailbox, token, ctx.config.network.timeout)
    try:
        client = cast(IMAPClient, renewing)  # passes every IMAPClient method through
        yield ImapSource(ctx, mailbox, client, result)
    finally:
        renewing.end()


class ImapSource:
    """Scans folders of one logged-in IMAP mailbox; letters are located by UID under UIDVALIDITY."""

    records_refused = False  # the folder state's seen UIDs say they were looked at

    def __init__(self, ctx: PassContext, mailbox: Mailbox, client: IMAPClient, result: MailboxResult) -> None:
        self.ctx, self.store, self.config = ctx, ctx.store, ctx.config
        self.mailbox, self.client, self.result = mailbox, client, result
        self.condstore = b"CONDSTORE" in client.capabilities()
        # Every folder's STATUS in one round trip (with the login, where it could go with it): most folders
        # of most passes are unchanged, and that is all they cost.
        request = client.status_request
        self.statuses = (request.answers(client) if request is not None
                      else client.folder_statuses(list(mailbox.folders), self._status_items()))
        # Gmail: one message in many folders (INBOX, labels, All Mail) has one X-GM-MSGID, and X-GM-THRID
        # names its conversation. Other servers get exactly the commands they always got.
        self.gmail = imap_wire.GMAIL_EXTENSION in client.capabilities()
        self.gm_msgids: dict[int, str] = {}  # the folder's UID -> X-GM-MSGID, kept on its location
        self.wire = imap_wire.Wire(client)
        # Batches whose bodies may be in flight while an earlier one is committed; none for a client that
        # renews its token (Office 365, Google): a renewal repeats one command, not a pipeline.
        self.ahead = BATCHES_AHEAD if isinstance(client, imap_wire.Client) else 0
        self.asked: list[imap_wire.Pending] = []  # the FETCH of the committing batch's bodies
        self.dry_linked: set[str] = set()  # --dry-run: letters counted as linked already (seen in another folder)
        self.remapping = False  # this folder's UIDVALIDITY changed: known letters are found again
        assert mailbox.id is not None
        with self.store.transaction():
            # Skipped letters a directory change made worth a look (see backfill.py): folder -> UIDVALIDITY -> UIDs.
            self.wanted = self.store.wanted_skipped(mailbox.id)

    def scan(self, folder: str) -> None:
        assert self.mailbox.id is not None
        ahead = self.statuses.pop(folder, None)
        status = self._status(folder, ahead)
        if status is None:
            return
        self.result.folders_checked += 1
        with self.store.transaction():
            state = self.store.folder_state(self.mailbox.id, folder)
        if self._unchanged(state, status, folder):
            log.debug("%s: unchanged", folder)
            return
        selected = None
        if ahead is not None:  # asked at the start, maybe minutes ago: the folder is read by fresh numbers
            fresh = self._status_and_examine(folder)
            if fresh is None:
                return
            status, selected = fresh
            status = imap_wire.examined_status(status, selected)
        uidvalidity = int(status[b"UIDVALIDITY"])
        uidnext = int(status[b"UIDNEXT"])
        messages = int(status[b"MESSAGES"])
        gap_check_due = self._gap_check_due(state)
        expunged = self._expunged(state, uidvalidity, uidnext, messages)
        wanted = self.wanted.get(folder, {}).get(uidvalidity, [])
        self.remapping = False
        if state.uidvalidity is not None and state.uidvalidity != uidvalidity:
            self.remapping = True
            log.warning("%s: UIDVALIDITY changed (%s -> %s): re-mapping by Message-ID", folder, state.uidvalidity,
                        uidvalidity)
            if not self.ctx.dry_run:
                with self.store.transaction():
                    self.store.mark_locations_gone(self.mailbox.id, folder, state.uidvalidity)
                    self.store.forget_skipped_folder(self.mailbox.id, folder, keep_uidvalidity=uidvalidity)
            state = FolderState(self.mailbox.id, folder)
        state.uidvalidity = uidvalidity
        state.server_uidnext = uidnext
        state.server_messages = messages
        remapped_before = self.result.remapped
        seen = UidSet.parse(state.seen_uids)
        if selected is None:
            selected = self.client.select_folder(folder, readonly=True)  # EXAMINE: the server cannot change flags
        exists = int(selected.get(b"EXISTS", messages))

        if (gap_check_due or expunged) and state.last_uid > 0:
            present = self._uids_between(1, state.last_uid, exists)
            if not self.ctx.dry_run:
                with self.store.transaction():
                    gone = self.store.mark_expunged(self.mailbox.id, folder, uidvalidity, present, up_to=state.last_uid)
                    self.store.prune_skipped(self.mailbox.id, folder, uidvalidity, present, up_to=state.last_uid)
                if gone:
                    log.info("%s: %d archived letters were expunged on the server: the archive keeps them,"
                             " their locations are marked gone", folder, gone)
        if gap_check_due and state.last_uid > 0:
            missing = seen.missing(present)
            if missing:
                log.warning("%s: %d letters below UID %d were never looked at: reading them now", folder,
                            len(missing), state.last_uid)
            if not self._process(state, seen, missing, moves_high_water=False):
                return
            state.gap_found = len(missing)
            state.gap_checked_at = utcnow()
            self.result.gaps += len(missing)

        uids = self._uids_between(state.last_uid + 1, uidnext - 1, exists)
        if not self._process(state, seen, uids, moves_high_water=True):
            return
        # The folder is done to UIDNEXT: only now may a later pass skip it as unchanged.
        state.last_uid = max(state.last_uid, uidnext - 1)
        state.uidnext = uidnext
        state.messages = state.server_messages
        state.highestmodseq = int(status[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in status else None
        if state.gap_checked_at is None:
            state.gap_checked_at = utcnow()  # everything up to here was just looked at
        if not self.ctx.dry_run:
            with self.store.transaction():
                self.store.save_folder_state(state)
        if wanted and not self.remapping:
            log.info("%s: looking again at %d skipped letters the directory now concerns", folder, len(wanted))
            if not self._process(state, seen, wanted, moves_high_water=False, backfill=True):
                return
        if self.remapping:
            log.warning("%s: re-mapped %d letters after the UIDVALIDITY change", folder,
                        self.result.remapped - remapped_before)

    def _status(self, folder: str, ahead: dict[bytes, int] | str | None) -> dict[bytes, int] | None:
        """The folder's STATUS: the answer asked ahead, else asked now; None when the server refuses it."""
        try:
            if isinstance(ahead, str):
                raise IMAPClientError(ahead)
            return ahead if ahead is not None else dict(self.client.folder_status(folder, self._status_items()))
        except IMAPClientError as exc:
            self._unreadable(folder, exc)
            return None

    def _status_and_examine(self, folder: str) -> tuple[dict[bytes, int], dict[bytes, Any] | None] | None:
        """Fresh STATUS, and where the client pipelines the EXAMINE in the same write (with COMPRESS
        DEFLATE: letters come next); None when the server refuses the folder."""
        if not isinstance(self.client, imap_wire.Client):
            status = self._status(folder, None)
            return None if status is None else (status, None)
        try:
            return self.client.status_and_examine(folder, tuple(self._status_items()))
        except IMAPClientError as exc:
            self._unreadable(folder, exc)
            return None

    def _unreadable(self, folder: str, exc: IMAPClientError) -> None:
        self.result.fail(
            "folder",
            f"folder '{folder}' cannot be read ({imap.server_text(exc)}): renamed or deleted?"
            f" 'hanna-sync folders {self.mailbox.id}' lists the folders,"
            f" 'edit-mailbox {self.mailbox.id} --folder ...' changes them",
        )
        if not self.ctx.dry_run and not self._listed(folder):
            retire_gone_folder(self.store, self.mailbox, folder)

    def _unchanged(self, state: FolderState, status: dict[bytes, int], folder: str) -> bool:
        """Nothing to do: no new UID, none gone, no gap check due, no skipped letter wanted again."""
        uidvalidity, uidnext = int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])
        return (state.uidvalidity == uidvalidity and state.uidnext == uidnext and not self._gap_check_due(state)
                and not self._expunged(state, uidvalidity, uidnext, int(status[b"MESSAGES"]))
                and not self.wanted.get(folder, {}).get(uidvalidity))

    def _listed(self, folder: str) -> bool:
        """Whether the server's LIST still returns the folder. Only a LIST that answers without it says a
        folder is gone: when LIST fails too (the connection dropped), the folder may well still be there."""
        try:
            names = {f.name for f in imap.list_folders(self.client)}
        except (IMAPClientError, OSError, ssl.SSLError, TimeoutError):
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
        self, state: FolderState, seen: UidSet, uids: list[int], *, moves_high_water: bool, backfill: bool = False,
    ) -> bool:
        """Run the UIDs through batches; False when the time budget ran out first.

        Pipelined, so that a first pass at network distance is not a sum of round trips: the header fields
        of the next batches are asked for before they are needed, and a batch's bodies as soon as it is
        matched, while up to `ahead` batches before it still wait for theirs. Commits stay one per batch and
        in order (a kill loses nothing); a batch whose letters answer letters of a batch not committed yet
        waits for that commit, so replies inherit links exactly as one batch after the other would. The
        bodies' bytes come out of the pass's budget first: while they do not fit, the oldest batch is
        committed; with none left waiting, the pass waits for other mailboxes' commits.
        """
        size = self.config.scan.batch_size
        batches = [uids[start : start + size] for start in range(0, len(uids), size)]
        fields = HEADER_FIELDS + " SUBJECT" if self.ctx.dry_run else HEADER_FIELDS  # a dry run lists subjects
        headers: deque[imap_wire.Pending] = deque()  # asked for, not read yet
        waiting: deque[Matched] = deque()  # matched, not committed yet
        asked = done = 0
        budget = self.ctx.bodies

        def ask_headers(up_to: int) -> None:
            nonlocal asked
            while asked < min(up_to, len(batches)):
                headers.append(self.wire.header_fields(batches[asked], fields, gmail=self.gmail))
                asked += 1

        def progressed(letters: int) -> None:
            nonlocal done
            done += letters
            if self.ctx.progress:
                self.ctx.progress(f"{self.mailbox.email} {state.folder}", done, len(uids))

        def commit_oldest() -> None:
            matched = waiting.popleft()
            try:
                self._commit(state, seen, matched, moves_high_water=moves_high_water, backfill=backfill)
            finally:
                budget.give_back(matched.held)
                matched.bodies = []  # its bytes go with what it gave back, whoever still refers to it
            progressed(len(matched.uids))

        try:
            with imap_wire.one_write(self.client._imap):
                ask_headers(1 + self.ahead)
            for read, batch in enumerate(batches, start=1):
                if self.ctx.out_of_time():
                    self.result.budget_exhausted = True
                    while waiting:
                        commit_oldest()
                    self.wire.drain()
                    return False
                ask_headers(read)  # asked already, unless nothing is asked ahead
                fetched = self.wire.headers(headers.popleft())
                in_batch = set(batch)
                looked_at = sorted(uid for uid in fetched if uid in in_batch)
                answers = {uid: thread_tokens(fetched[uid].raw) + conversation_key(self._conversation(fetched[uid]))
                           for uid in looked_at}
                answered = {i for ids in answers.values() for i in ids}
                while waiting and any(answered & m.published for m in waiting):
                    commit_oldest()  # a reply's links come from letters committed before it is matched
                matched = self._matched(state, batch, {uid: fetched[uid] for uid in looked_at}, answers,
                                        backfill=backfill)
                if matched is None:  # a dry run: nothing to commit
                    if self.ahead:
                        with imap_wire.one_write(self.client._imap):
                            ask_headers(read + 1 + self.ahead)
                    progressed(len(batch))
                    continue
                parts = matched.parts(self._weights(matched), budget.limit // 4)
                for part in parts:
                    while not budget.take(part.held, wait=not waiting):
                        commit_oldest()  # memory stays bounded whatever the letters' sizes
                    waiting.append(part)  # on the books before anything can fail
                    with imap_wire.one_write(self.client._imap):
                        if self.ahead:
                            part.bodies = self._ask_bodies(part.wanted)
                        if self.ahead and part is parts[-1]:
                            ask_headers(read + 1 + self.ahead)
                    while len(waiting) > self.ahead:
                        commit_oldest()
            while waiting:
                commit_oldest()
            return True
        finally:  # batches dropped (the connection broke) give their bytes back
            budget.give_back(sum(m.held for m in waiting))

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

    def _matched(
        self, state: FolderState, uids: list[int], fetched: dict[int, imap_wire.HeaderFields],
        answers: dict[int, list[str]], *, backfill: bool,
    ) -> Matched | None:
        """A batch's letters matched on their header fields (a dry run reports them here and gets None)."""
        looked_at = sorted(fetched)
        tokens = {uid: address_tokens(fetched[uid].raw) for uid in looked_at}
        candidates = self._match(fetched, tokens, answers)
        if self.gmail:
            self._known_to_gmail(candidates, fetched)
        matched = {c.key for c in candidates}
        skipped = [uid for uid in looked_at if uid not in matched]
        if not backfill:
            self.result.new += len(looked_at)
            self.result.skipped += len(skipped)
        if self.ctx.dry_run:
            archiving.would_archive(self.ctx, self.result, folder=state.folder, candidates=candidates,
                                    counted=self.dry_linked)
            return None
        published = {i for c in candidates for i in [*message_id(c.identity), *conversation_key(c.conversation_id)]}
        return Matched(uids, fetched, tokens, answers, candidates, skipped, published)

    def _weights(self, matched: Matched) -> dict[int, int]:
        """UID -> the bytes its download takes, of the batch's matched letters not archived yet (which
        become its `wanted`): RFC822.SIZE, or HEADER_WEIGHT for one over the size limit (headers only)."""
        candidates = matched.candidates
        with self.store.transaction():
            known = self.store.letter_ids([c.identity for c in candidates if c.identity])
        matched.wanted = [c for c in candidates if c.identity not in known]
        limit = self.config.max_letter_bytes
        return {c.key: c.size if c.size <= limit else HEADER_WEIGHT for c in matched.wanted}

    def _ask_bodies(self, wanted: list[Candidate[int]]) -> list[imap_wire.Pending]:
        """The FETCH of the matched letters' originals not archived yet, written now, read at the commit."""
        limit = self.config.max_letter_bytes
        whole = [c.key for c in wanted if c.size <= limit]
        heads = [c.key for c in wanted if c.size > limit]
        return ([self.wire.bodies(whole, b"BODY.PEEK[]")] if whole else []) + (
            [self.wire.bodies(heads, b"BODY.PEEK[HEADER]")] if heads else [])

    def _commit(
        self, state: FolderState, seen: UidSet, matched: Matched, *, moves_high_water: bool, backfill: bool,
    ) -> None:
        """One batch's originals and its one transaction.

        A backfill batch looks again at letters skipped earlier that a directory change made worth it:
        the matched are archived and leave the skip index, the rest stay in it, no longer wanted, and
        those the server no longer has leave it too.
        """
        fetched, tokens, answers = matched.fetched, matched.tokens, matched.answers
        self.asked = matched.bodies
        try:
            batch = archiving.prepare(self.ctx, self, matched.candidates, matched.skipped,
                                      keys_of=lambda index, uid: index.letter_keys(fetched[uid].raw, tokens[uid],
                                                                                   answers[uid]))
        finally:
            self.asked = []
        uids, looked_at = matched.uids, sorted(fetched)
        assert self.mailbox.id is not None and state.uidvalidity is not None
        with self.store.transaction():
            archiving.commit(self.ctx, self, batch, state=state, result=self.result, backfill=backfill,
                             remapping=self.remapping)
            if backfill:  # archived now, or no longer on the server
                done = [c.key for c in batch.candidates] + [uid for uid in uids if uid not in fetched]
                self.store.forget_skipped(self.mailbox.id, state.folder, state.uidvalidity, done)
            else:
                state.skipped += len(matched.skipped)
            # A UID the server did not return stays out of `seen`: the gap check finds it if it still exists.
            seen.add(looked_at)
            state.seen_uids = str(seen)
            if moves_high_water:
                state.last_uid = max(state.last_uid, max(uids))
            self.store.save_folder_state(state)

    def _conversation(self, fields: imap_wire.HeaderFields) -> str | None:
        """Gmail's thread as the letter's conversation id: its X-GM-THRID, which is the account's own
        (so named with the account), like Outlook's conversation over Graph."""
        return f"gmail:{self.mailbox.login_name.lower()}:{fields.gm_thrid}" if fields.gm_thrid else None

    def _known_to_gmail(self, candidates: list[Candidate[int]], fetched: dict[int, imap_wire.HeaderFields]) -> None:
        """The matched letters archived already from another folder of this Gmail mailbox (a label, All
        Mail) get that letter's identity, so they are located, never downloaded again: also those without
        a Message-ID, whose identity would otherwise come from their download."""
        assert self.mailbox.id is not None
        self.gm_msgids.update((uid, f.gm_msgid) for uid, f in fetched.items() if f.gm_msgid)
        with self.store.transaction():
            archived = self.store.gmail_identities(
                self.mailbox.id, [self.gm_msgids[c.key] for c in candidates if c.key in self.gm_msgids])
        for c in candidates:
            gm_msgid = self.gm_msgids.get(c.key)
            if gm_msgid in archived:
                c.identity = archived[gm_msgid]

    def _match(
        self, fetched: dict[int, imap_wire.HeaderFields], tokens: dict[int, list[str]], answered: dict[int, list[str]],
    ) -> list[Candidate[int]]:
        """The letters of a batch that concern the directory, with their links: by their own addresses,
        and (linking.thread_replies) inherited from the linked letters they answer (Gmail: or share a
        thread with), archived already or in this very batch. Auto-replies and bulk mail get none unless
        linking.automatic says so."""
        charset = self.mailbox.imap_charset
        directory = self.ctx.directory.get()
        flags = {"sync_customers": self.mailbox.sync_customers, "sync_leads": self.mailbox.sync_leads}
        parsed: dict[int, ParsedLetter] = {}
        keep: dict[int, Keep] = {}  # the addresses the prefilter matched, wherever in the header they are

        def headers(uid: int) -> ParsedLetter:
            if uid not in parsed:
                parsed[uid] = parse_headers_only(fetched[uid].raw, charset, keep.get(uid))
            return parsed[uid]

        def may_link(uid: int) -> bool:
            return self.config.linking.automatic or not is_automatic(headers(uid))

        links: dict[int, list[Link]] = {}
        for uid in fetched:
            # Cheap prefilter first: most letters concern nobody, and a superset of their addresses says so.
            prefiltered = match(tokens[uid], directory, **flags)
            if prefiltered:
                keep[uid] = keeping(prefiltered)
                found = match(participants_of(headers(uid)), directory, **flags)
                if found and may_link(uid):
                    links[uid] = found

        unlinked = self._unlinked(sorted(set(links) | {uid for uid, ids in answered.items() if ids}), headers)
        for uid, entities in unlinked.items():
            if uid in links:  # kept even with no link left: its location in this folder is still recorded
                links[uid] = [link for link in links[uid] if (link.entity_type, link.entity_id) not in entities]
        answers = {uid: ids for uid, ids in answered.items() if ids}
        if self.config.linking.thread_replies and answers:
            with self.store.transaction():
                linked = self.store.thread_links([i for ids in answers.values() for i in ids])

            def publish(uid: int) -> None:  # a letter of this batch that others in it may answer (or share a thread)
                for thread_id in [headers(uid).message_id, *conversation_key(self._conversation(fetched[uid]))]:
                    if thread_id:
                        linked.setdefault(thread_id, []).extend((link.entity_type, link.entity_id)
                                                                for link in links[uid])

            for uid in list(links):
                publish(uid)
            grew = True
            while grew:  # until no reply inherits more: a chain of replies within one batch
                grew = False
                for uid, ids in answers.items():
                    extra = inherited_links(ids, linked, links.get(uid, ()), **flags)
                    extra = [link for link in extra if (link.entity_type, link.entity_id) not in unlinked.get(uid, ())]
                    if extra and (uid in links or may_link(uid)):
                        links[uid] = links.get(uid, []) + extra
                        publish(uid)
                        grew = True

        candidates = []
        for uid in sorted(links):
            letter = headers(uid)
            identity = f"mid:{letter.message_id}" if letter.message_id else None
            candidates.append(Candidate(uid, letter.subject, links[uid], identity, size=fetched[uid].size,
                                        conversation_id=self._conversation(fetched[uid])))
        return candidates

    def _unlinked(self, uids: list[int], headers: Callable[[int], ParsedLetter]) -> dict[int, set[tuple[str, str]]]:
        """The entities letters archived already were unlinked from by hand (`hanna-sync unlink`): found
        again here (another folder or mailbox), such a letter neither gets them back, by its addresses
        or its thread, nor passes them on to its replies in this batch."""
        with self.store.transaction():
            if not uids or not self.store.has_unlinks():  # most installs: no header parsed for this
                return {}
            identities = {uid: f"mid:{headers(uid).message_id}" for uid in uids if headers(uid).message_id}
            unlinked = self.store.unlinked_by_identity(list(identities.values()))
        return {uid: unlinked[identity] for uid, identity in identities.items() if identity in unlinked}

    def originals(self, candidates: list[Candidate[int]]) -> dict[int, Original]:
        """Whole letters for the matched ones; headers only for those over the size limit. Read from the
        FETCH asked for when the batch was matched; asked now for any it did not bring (a letter archived
        meanwhile is not asked for at all, one expunged meanwhile is left out)."""
        limit = self.config.max_letter_bytes
        charset = self.mailbox.imap_charset
        sizes = {c.key: c.size for c in candidates}
        keep = {c.key: keeping(c.links) for c in candidates}
        got: dict[int, dict[bytes, Any]] = {}
        for pending in self.asked:
            got.update(self.wire.fetched(pending))
        out: dict[int, Original] = {}
        for item, key, parse in (
            ("BODY.PEEK[]", b"BODY[]", parse_letter),
            ("BODY.PEEK[HEADER]", b"BODY[HEADER]", parse_headers_only),
        ):
            uids = [c.key for c in candidates if (c.size <= limit) == (parse is parse_letter)]
            missing = [uid for uid in uids if key not in got.get(uid, {})]
            if missing and self.ahead:  # through the wire: it files the answers of the FETCHes in flight
                got.update(self.wire.fetched(self.wire.bodies(missing, item.encode("ascii"))))
            elif missing:
                got.update(self.client.fetch(missing, [item]))
            for uid in uids:
                if uid in got:
                    raw = got[uid].get(key) or b""
                    out[uid] = Original(parse(raw, charset, keep.get(uid)), raw, sizes.get(uid) or len(raw))
        return out

    def locate(self, letter_id: int, state: FolderState, key: int) -> None:
        assert self.mailbox.id is not None and state.uidvalidity is not None
        self.store.add_location(letter_id, self.mailbox.id, state.folder, state.uidvalidity, uid=key,
                                gm_msgid=self.gm_msgids.get(key))

    def record_skipped(self, state: FolderState, keys: dict[int, LetterKeys]) -> None:
        assert self.mailbox.id is not None and state.uidvalidity is not None
        self.store.record_skipped(self.mailbox.id, state.folder, state.uidvalidity, keys)
