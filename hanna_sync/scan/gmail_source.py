"""Labels of a Gmail mailbox read through the Gmail API (google-scan), into the same letters, links and
locations as over IMAP and Graph: a letter seen in several labels, or in another mailbox, is one letter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from hanna_sync.db.store import participants_of
from hanna_sync.linking.backfill import LetterKeys, SkipIndex
from hanna_sync.linking.match import Link, match
from hanna_sync.mail.message import ParsedLetter, address_tokens, is_automatic, parse_headers_only, parse_letter
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.remote.gmail import (
    MAX_IN_FLIGHT,
    SYSTEM_LABELS,
    Changes,
    Envelope,
    GmailClient,
    GmailLabel,
    HistoryExpired,
    MessageGone,
)
from hanna_sync.remote.google_auth import GoogleSignIn
from hanna_sync.scan import archiving
from hanna_sync.scan.archiving import keeping, retire_gone_folder
from hanna_sync.scan.context import PassContext
from hanna_sync.scan.results import MailboxResult
from hanna_sync.scan.source import Candidate, Original
from hanna_sync.uidset import UidSet

log = logging.getLogger(__name__)



@contextmanager
def connect(
    ctx: PassContext, mailbox: Mailbox, result: MailboxResult, *, token: Callable[[bool], str] | None = None,
    base_url: str | None = None,
) -> Iterator[GmailSource]:
    """The mailbox's Gmail API source, at `[google] gmail_url`. `token(fresh)` gives an access token for
    GMAIL_READONLY on it (fresh: the one given was refused), or raises ReauthRequired when only a person can
    help: by default the Google sign-in's (service account or kept consent); the tests may hand one in."""
    if token is None:
        token = GoogleSignIn.for_config(ctx.config, ctx.secrets).token_source(mailbox)
    gmail = GmailClient(base_url or ctx.config.google.gmail_url, token, ctx.config.network.timeout)
    try:
        yield GmailSource(ctx, mailbox, gmail, result)
    finally:
        log.info("mailbox %s (%s): %d Gmail API quota units", mailbox.id, mailbox.email, gmail.units)
        gmail.close()


class GmailSource:
    """Per label (the mailbox's folder list holds label names), the first pass lists the label's message
    ids page by page, and afterwards reads what changed from history.list, starting at the history id
    taken before the listing began. Each page or slice of ids is a batch: envelopes (format=metadata, the
    header fields matching reads) of the ids not seen in this label before, matching, originals
    (format=raw) of the matched only, then their letters, locations, links and the label's state in one
    transaction, so a kill loses nothing and doubles nothing. The history id moves on only after every
    change it covers is committed: a kill mid-history reads the same history again next pass, and what
    was committed is recognised by its message id.

    Gmail's message id is the location key (kept where Graph keeps its immutable id), the same in every
    label: a message already archived from another label of the mailbox is located in this one without
    any request. Gmail's thread is the letter's conversation (named as over IMAP's X-GM-THRID), what thread
    links follow. An expired
    history id (404) means one listing again: what is archived or skipped is known by message id and not
    fetched, and archived letters the listing no longer returns have their locations marked gone.

    Folder state per label, in the columns Graph uses: graph_folder_id the label id, delta_link the
    history id, next_link the page token of a listing under way, graph_returned (not None: a listing
    under way) the locations it returned.
    """

    records_refused = True  # history and listings return a message again: the skip index remembers it

    def __init__(self, ctx: PassContext, mailbox: Mailbox, gmail: GmailClient, result: MailboxResult) -> None:
        self.ctx, self.store, self.config = ctx, ctx.store, ctx.config
        self.mailbox, self.gmail, self.result = mailbox, gmail, result
        self._labels: dict[str, GmailLabel] | None = None
        self.dry_linked: set[str] = set()  # --dry-run: letters counted as linked already (seen in another label)
        assert mailbox.id is not None
        with self.store.transaction():
            self.wanted = self.store.wanted_graph(mailbox.id)  # skipped letters a directory change made worth a look

    def scan(self, folder: str) -> None:
        assert self.mailbox.id is not None
        label = self._find(folder)
        if label is None:
            self.result.fail("folder", f"label '{folder}' is not in the mailbox: renamed or deleted? 'edit-mailbox"
                                       f" {self.mailbox.id} --folder ...' changes the labels scanned")
            if not self.ctx.dry_run:
                retire_gone_folder(self.store, self.mailbox, folder)
            return
        self.result.folders_checked += 1
        with self.store.transaction():
            state = self.store.folder_state(self.mailbox.id, folder)
        if state.graph_folder_id != label.id:
            if state.graph_folder_id is not None:
                log.warning("%s: another label has this name now: reading it from the start", folder)
            state = FolderState(self.mailbox.id, folder, graph_folder_id=label.id)
        if (state.delta_link is None or state.graph_returned is not None) and not self._list(state, label):
            return
        assert state.delta_link is not None
        try:
            changes = self.gmail.history(state.delta_link, label.id)
        except HistoryExpired as exc:
            log.warning("%s: %s: listing the label again; letters archived already are not fetched again",
                        folder, exc)
            state.delta_link, state.graph_returned = None, None
            if not self._list(state, label):
                return
            assert state.delta_link is not None
            changes = self.gmail.history(state.delta_link, label.id)
        if not self._apply(state, changes):
            return
        wanted = self.wanted.get(folder, [])
        if wanted:
            log.info("%s: looking again at %d skipped letters the directory now concerns", folder, len(wanted))
        for start in range(0, len(wanted), self.config.scan.batch_size):
            if self._out_of_time():
                return
            self._batch(state, wanted[start : start + self.config.scan.batch_size], backfill=True)

    def _find(self, name: str) -> GmailLabel | None:
        if name.upper() in SYSTEM_LABELS:
            return GmailLabel(name.upper(), name.upper())
        if self._labels is None:
            self._labels = {label.name.casefold(): label for label in self.gmail.labels()}
        return self._labels.get(name.casefold())

    def _out_of_time(self) -> bool:
        if self.ctx.out_of_time():
            self.result.budget_exhausted = True
            return True
        return False

    def _list(self, state: FolderState, label: GmailLabel) -> bool:
        """The label's message ids, page by page, from the start or from the page a kill interrupted.
        False when the time budget ran out first."""
        if state.graph_returned is None:  # from the start: history from now on covers what changes meanwhile
            state.delta_link = self.gmail.history_id()
            state.graph_returned, state.next_link, state.messages = "", None, 0
        while True:
            if self._out_of_time():
                return False
            page = self.gmail.list_page(label.id, state.next_link, self.config.scan.batch_size)
            if state.next_link is None:
                state.server_messages = page.estimate
            state.next_link = page.next_token

            def returned(ids: list[str] = page.ids, last: bool = page.next_token is None) -> None:
                """In the batch's transaction: the locations this listing returned; at its end, the others
                are gone (a listing says what is in the label, never what left it)."""
                assert self.mailbox.id is not None
                path = state.folder
                seen = UidSet.parse(state.graph_returned or "")
                seen.add(self.store.graph_location_uids(self.mailbox.id, path, ids))
                if last:
                    gone = seen.missing(self.store.graph_location_uids(self.mailbox.id, path))
                    self.store.mark_graph_uids_gone(self.mailbox.id, path, gone)
                    if gone:
                        log.warning("%s: %d archived letters are no longer in the label (the listing did not"
                                    " return them): their locations are marked gone", path, len(gone))
                state.graph_returned = None if last else str(seen)

            self._batch(state, page.ids, finish=returned)
            if page.next_token is None:
                return True

    def _apply(self, state: FolderState, changes: Changes) -> bool:
        """History's news, in batches; then the messages that left the label, and the new history id."""
        assert self.mailbox.id is not None
        added = list(changes.added)
        for start in range(0, len(added), self.config.scan.batch_size):
            if self._out_of_time():
                return False
            self._batch(state, added[start : start + self.config.scan.batch_size])
        if self.ctx.dry_run:
            return True
        removed = list(changes.removed)
        with self.store.transaction():
            self.store.mark_graph_locations_gone(self.mailbox.id, state.folder, removed)
            self.store.forget_skipped_graph(self.mailbox.id, state.folder, removed)
            state.delta_link = changes.history_id
            self.store.save_folder_state(state)
        return True

    def _batch(
        self, state: FolderState, ids: list[str], *, backfill: bool = False, finish: Callable[[], None] | None = None,
    ) -> None:
        """One batch: envelopes of the ids new to this label, matching, originals, one transaction. A backfill
        batch looks again at skipped letters a directory change made wanted (see backfill.py): the matched
        are archived and leave the skip index, the rest stay, no longer wanted, and those gone leave it."""
        assert self.mailbox.id is not None
        path = state.folder
        with self.store.transaction():
            seen = set() if backfill else (self.store.graph_located(self.mailbox.id, path, ids)
                                            | self.store.graph_skipped(self.mailbox.id, path, ids))
            fresh = [i for i in dict.fromkeys(ids) if i not in seen]
            elsewhere = {} if backfill else self.store.letters_by_graph_id(self.mailbox.id, fresh)
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            envelopes = [e for e in pool.map(self._envelope, [i for i in fresh if i not in elsewhere]) if e]
        candidates, passed = self._match(envelopes)
        if not backfill:
            self.result.new += len(fresh)
            self.result.skipped += len(passed)
            state.messages = (state.messages or 0) + len(fresh)
        if self.ctx.progress:
            self.ctx.progress(f"{self.mailbox.email} {path}", state.messages or 0,
                              max(state.messages or 0, state.server_messages or 0))
        if self.ctx.dry_run:
            archiving.would_archive(self.ctx, self.result, folder=path, candidates=candidates, counted=self.dry_linked)
            return

        batch = archiving.prepare(self.ctx, self, candidates, [e.id for e in passed], keys_of=self._keys_of(envelopes))
        with self.store.transaction():
            still_skipped = set(archiving.commit(self.ctx, self, batch, state=state, result=self.result,
                                                 backfill=backfill))
            for message_id, letter_id in elsewhere.items():  # archived from another label: the same message
                self.store.add_graph_location(letter_id, self.mailbox.id, path, message_id)
            if backfill:
                found = {e.id for e in envelopes}
                archived = [c.key for c in batch.candidates if c.key not in still_skipped]
                self.store.forget_skipped_graph(self.mailbox.id, path, archived + [i for i in ids if i not in found])
            else:
                state.skipped += len(passed)
            if finish is not None:
                finish()
            self.store.save_folder_state(state)

    def _envelope(self, message_id: str) -> Envelope | None:
        try:
            return self.gmail.envelope(message_id)
        except MessageGone:
            return None

    def _match(self, envelopes: list[Envelope]) -> tuple[list[Candidate[str]], list[Envelope]]:
        """The envelopes that concern the directory, with their links, and those that do not: by their
        header fields as over IMAP (a cheap scan first, parsing only for the letters it may concern), and
        (linking.thread_replies) inherited from the linked letters of their Gmail thread. Letters sent by
        programs are known from their header fields here, so they are not downloaded."""
        if not envelopes:
            return [], []
        charset = self.mailbox.imap_charset
        directory = self.ctx.directory.get()
        flags = {"sync_customers": self.mailbox.sync_customers, "sync_leads": self.mailbox.sync_leads}
        parsed: dict[str, ParsedLetter] = {}
        links: dict[str, list[Link]] = {}
        for e in envelopes:
            prefiltered = match(address_tokens(e.headers), directory, **flags)
            if prefiltered:
                parsed[e.id] = parse_headers_only(e.headers, charset, keeping(prefiltered))
                found = match(participants_of(parsed[e.id]), directory, **flags)
                if found:
                    links[e.id] = found
        threads = {e.id: f"conversation:{self._conversation(e)}" for e in envelopes if e.thread_id}
        archiving.inherit_conversations(self.ctx, links, threads, mailbox=self.mailbox)
        candidates: list[Candidate[str]] = []
        passed: list[Envelope] = []
        for e in envelopes:
            letter = (parsed.get(e.id) or parse_headers_only(e.headers, charset)) if e.id in links else None
            if letter is not None and e.id in links and (self.config.linking.automatic or not is_automatic(letter)):
                candidates.append(Candidate(e.id, letter.subject, links[e.id],
                                            f"mid:{letter.message_id}" if letter.message_id else None,
                                            size=e.size, conversation_id=self._conversation(e)))
            else:
                passed.append(e)
        return candidates, passed

    def _conversation(self, envelope: Envelope) -> str | None:
        """Gmail's thread as the letter's conversation id, named as over IMAP with X-GM-EXT-1 (the API's
        thread id is X-GM-THRID in hex): the account's letters read either way share their threads."""
        if not envelope.thread_id:
            return None
        try:
            thread = str(int(envelope.thread_id, 16))
        except ValueError:
            thread = envelope.thread_id
        return f"gmail:{self.mailbox.login_name.lower()}:{thread}"

    def _keys_of(self, envelopes: list[Envelope]) -> Callable[[SkipIndex, str], LetterKeys]:
        """Skip-index keys as over IMAP (addresses, the Message-IDs answered), and the Gmail thread."""
        by_id = {e.id: e for e in envelopes}

        def keys_of(index: SkipIndex, message_id: str) -> LetterKeys:
            e = by_id[message_id]
            keys = index.letter_keys(e.headers)
            conversation = self._conversation(e)
            if conversation:
                keys.keys.add(index.thread_key(f"conversation:{conversation}"))
            return keys
        return keys_of

    def originals(self, candidates: list[Candidate[str]]) -> dict[str, Original]:
        """Originals by message id (format=raw; the header block only, over the size limit), parsed keeping
        the addresses that link each, at most MAX_IN_FLIGHT downloads at once; those gone are left out."""
        limit = self.config.max_letter_bytes
        charset = self.mailbox.imap_charset
        wanted = {c.key: (c.size, keeping(c.links)) for c in candidates}

        def download(message_id: str) -> tuple[str, Original] | None:
            size, keep = wanted[message_id]
            try:
                mime = self.gmail.original(message_id, size, limit)
            except MessageGone:
                return None
            parse = parse_headers_only if mime.truncated else parse_letter
            return message_id, Original(parse(mime.raw, charset, keep), mime.raw, mime.size)

        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            return dict(got for got in pool.map(download, wanted) if got is not None)

    def locate(self, letter_id: int, state: FolderState, key: str) -> None:
        assert self.mailbox.id is not None
        self.store.add_graph_location(letter_id, self.mailbox.id, state.folder, key)

    def record_skipped(self, state: FolderState, keys: dict[str, LetterKeys]) -> None:
        assert self.mailbox.id is not None
        self.store.record_skipped_graph(self.mailbox.id, state.folder, keys)
