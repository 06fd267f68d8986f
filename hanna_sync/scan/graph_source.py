"""Folders of an Office 365 mailbox read through Microsoft Graph (o365-scan), into the same letters, links
and locations as over IMAP: a letter seen over IMAP and over Graph (same Message-ID) is one letter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from hanna_sync.linking.backfill import LetterKeys, SkipIndex
from hanna_sync.linking.match import Link, match
from hanna_sync.mail.message import parse_headers_only, parse_letter
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.remote.graph import (
    MAX_IN_FLIGHT,
    DeltaExpired,
    DeltaPage,
    Envelope,
    GraphClient,
    GraphFolder,
    MessageGone,
)
from hanna_sync.scan import archiving
from hanna_sync.scan.archiving import keeping, retire_gone_folder
from hanna_sync.scan.context import PassContext
from hanna_sync.scan.results import MailboxResult
from hanna_sync.scan.source import Candidate, Original
from hanna_sync.uidset import UidSet

log = logging.getLogger(__name__)

# The folders add-mailbox chooses for an o365-scan mailbox (mailboxes.default_folders), by Graph's
# well-known names: found whatever the mailbox's language calls them, verified at add-mailbox or not.
WELL_KNOWN_FOLDERS = {"inbox": "inbox", "sent items": "sentitems"}


@contextmanager
def connect(ctx: PassContext, mailbox: Mailbox, result: MailboxResult) -> Iterator[GraphSource]:
    from hanna_sync.remote.oauth import MicrosoftSignIn

    graph = MicrosoftSignIn.for_config(ctx.config, ctx.secrets).graph(mailbox)
    try:
        yield GraphSource(ctx, mailbox, graph, result)
    finally:
        graph.close()


class GraphSource:
    """Per folder, a delta round returns the envelope of every message the first time, and afterwards what
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
    None when no such round is under way), and when it reaches its deltaLink the live locations it did not
    return are marked gone. That is how the @removed of a window whose delta token was lost (410) still
    arrive; a kill mid-round keeps the set with its pages.
    """

    records_refused = True  # a message Graph reports changed is not downloaded again

    def __init__(self, ctx: PassContext, mailbox: Mailbox, graph: GraphClient, result: MailboxResult) -> None:
        self.ctx, self.store, self.config = ctx, ctx.store, ctx.config
        self.mailbox, self.graph, self.result = mailbox, graph, result
        self._folders: dict[str, GraphFolder] | None = None
        self.dry_linked: set[str] = set()  # --dry-run: letters counted as linked already (seen in another folder)
        assert mailbox.id is not None
        with self.store.transaction():
            self.wanted = self.store.wanted_graph(mailbox.id)  # skipped letters a directory change made worth a look

    def scan(self, folder: str) -> None:
        assert self.mailbox.id is not None
        found = self._find(folder)
        if found is None:
            self.result.fail(
                "folder",
                f"folder '{folder}' is not in the mailbox: renamed or deleted? 'hanna-sync folders {self.mailbox.id}'"
                f" lists the folders, 'edit-mailbox {self.mailbox.id} --folder ...' changes them",
            )
            if not self.ctx.dry_run:  # Graph listed the mailbox's folders, and this one is not among them
                retire_gone_folder(self.store, self.mailbox, folder)
            return
        self.result.folders_checked += 1
        with self.store.transaction():
            state = self.store.folder_state(self.mailbox.id, folder)
        if state.graph_folder_id != found.id:
            if state.graph_folder_id is not None:
                log.warning("%s: another folder has this name now: reading it from the start", folder)
            state = FolderState(self.mailbox.id, folder, graph_folder_id=found.id)
        state.server_messages = found.total
        link = state.next_link or state.delta_link
        resynced = False
        while True:
            if link is None:
                state.messages = 0  # a round from the start: counts what it has looked at, for `status`
                state.graph_returned = ""  # a round from the start: no location returned yet
            if self.ctx.out_of_time():
                self.result.budget_exhausted = True
                return
            try:
                page = self.graph.delta(found.id, link, self.config.scan.batch_size)
            except MessageGone:  # Graph's 404: the folder went after it was listed
                self.result.fail("folder", f"folder '{folder}' was deleted while the pass read it; 'hanna-sync"
                                           f" folders {self.mailbox.id}' lists the folders")
                return
            except DeltaExpired as exc:
                if resynced:
                    raise
                resynced = True
                log.warning("%s: %s: reading the folder again; letters archived already are not stored twice",
                            folder, exc)
                state.delta_link = state.next_link = link = None
                continue
            self._page(state, page)
            if page.next_link is None:
                break
            link = page.next_link
        if self.wanted.get(folder):
            self._backfill(state, self.wanted[folder])

    def _find(self, path: str) -> GraphFolder | None:
        if self._folders is None:
            self._folders = {f.path.casefold(): f for f in self.graph.folders()}
        folder = self._folders.get(path.casefold())
        if folder is None and path.casefold() in WELL_KNOWN_FOLDERS:  # a default name, in the mailbox's language
            try:
                folder = self.graph.well_known(WELL_KNOWN_FOLDERS[path.casefold()])
            except MessageGone:
                folder = None
        return folder

    def _page(self, state: FolderState, page: DeltaPage) -> None:
        assert self.mailbox.id is not None
        path = state.folder
        present = list({e.id: e for e in page.items if not e.removed}.values())
        removed = [e.id for e in page.items if e.removed]
        with self.store.transaction():
            located = self.store.graph_located(self.mailbox.id, path, [e.id for e in present])
            located |= self.store.graph_skipped(self.mailbox.id, path, [e.id for e in present])
        # A message archived or skipped from here before, and changed since (read, flagged), needs nothing
        # more: a directory change that concerns a skipped one makes it wanted (see _backfill).
        fresh = [e for e in present if e.id not in located]
        candidates, passed = self._match(fresh)
        self.result.new += len(fresh)
        self.result.skipped += len(passed)
        state.messages = (state.messages or 0) + len(present)
        state.next_link = page.next_link
        if page.delta_link:
            state.delta_link = page.delta_link
        if self.ctx.progress:
            self.ctx.progress(f"{self.mailbox.email} {path}", state.messages,
                              max(state.messages, state.server_messages or 0))
        if self.ctx.dry_run:
            archiving.would_archive(self.ctx, self.result, folder=path, candidates=candidates, counted=self.dry_linked)
            return

        batch = archiving.prepare(self.ctx, self, candidates, [e.id for e in passed], keys_of=self._keys_of(fresh))
        with self.store.transaction():
            archiving.commit(self.ctx, self, batch, state=state, result=self.result, backfill=False)
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
            state.skipped += len(passed)
            self.store.save_folder_state(state)

    def _match(self, envelopes: list[Envelope]) -> tuple[list[Candidate[str]], list[Envelope]]:
        """The envelopes that concern the directory, with their links, and those that do not: by their
        addresses, and (linking.thread_replies) inherited from the linked letters of their Outlook
        conversation, archived already or on this page. Whether a program sent the letter is only
        known from its original, so that check waits for the download (archiving.commit)."""
        if not envelopes:
            return [], []
        directory = self.ctx.directory.get()
        flags = {"sync_customers": self.mailbox.sync_customers, "sync_leads": self.mailbox.sync_leads}
        links: dict[str, list[Link]] = {}
        for e in envelopes:
            found = match(e.addresses, directory, **flags)
            if found:
                links[e.id] = found
        conversations = {e.id: f"conversation:{e.conversation_id}" for e in envelopes if e.conversation_id}
        archiving.inherit_conversations(self.ctx, links, conversations, mailbox=self.mailbox)
        candidates: list[Candidate[str]] = []
        passed: list[Envelope] = []
        for e in envelopes:
            if e.id in links:
                message_id = _message_id(e.internet_message_id)
                candidates.append(Candidate(e.id, e.subject, links[e.id], f"mid:{message_id}" if message_id else None,
                                            conversation_id=e.conversation_id))
            else:
                passed.append(e)
        return candidates, passed

    @staticmethod
    def _keys_of(envelopes: list[Envelope]) -> Callable[[SkipIndex, str], LetterKeys]:
        by_id = {e.id: e for e in envelopes}

        def keys_of(index: SkipIndex, graph_id: str) -> LetterKeys:
            e = by_id[graph_id]
            return index.envelope_keys(e.addresses, e.conversation_id, _message_id(e.internet_message_id))
        return keys_of

    def originals(self, candidates: list[Candidate[str]]) -> dict[str, Original]:
        """Originals by immutable id, parsed (keeping the addresses that link each, however many
        recipients it has), at most MAX_IN_FLIGHT downloads at once; those gone are left out."""
        limit = self.config.max_letter_bytes
        charset = self.mailbox.imap_charset
        keep = {c.key: keeping(c.links) for c in candidates}

        def download(graph_id: str) -> tuple[str, Original] | None:
            try:
                mime = self.graph.mime(graph_id, limit)
            except MessageGone:
                return None
            parse = parse_headers_only if mime.truncated else parse_letter
            return graph_id, Original(parse(mime.raw, charset, keep[graph_id]), mime.raw, mime.size)

        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            return dict(got for got in pool.map(download, keep) if got is not None)

    def locate(self, letter_id: int, state: FolderState, key: str) -> None:
        assert self.mailbox.id is not None
        self.store.add_graph_location(letter_id, self.mailbox.id, state.folder, key)

    def record_skipped(self, state: FolderState, keys: dict[str, LetterKeys]) -> None:
        assert self.mailbox.id is not None
        self.store.record_skipped_graph(self.mailbox.id, state.folder, keys)

    def _backfill(self, state: FolderState, graph_ids: list[str]) -> None:
        """Look again at skipped letters a directory change made worth it (see backfill.py): their
        envelopes, matched as a pass matches, then the originals of the matched only. The matched are
        archived, the rest stay skipped and are no longer wanted, those gone leave the index."""
        assert self.mailbox.id is not None
        log.info("%s: looking again at %d skipped letters the directory now concerns", state.folder, len(graph_ids))
        batch_size = self.config.scan.batch_size
        for start in range(0, len(graph_ids), batch_size):
            if self.ctx.out_of_time():
                self.result.budget_exhausted = True
                return
            ids = graph_ids[start : start + batch_size]
            with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
                envelopes = [e for e in pool.map(self._envelope, ids) if e is not None]
            candidates, passed = self._match(envelopes)
            if self.ctx.dry_run:  # listed as IMAP's dry run lists them: nothing downloaded, nothing written
                archiving.would_archive(self.ctx, self.result, folder=state.folder, candidates=candidates,
                                        counted=self.dry_linked)
                continue
            batch = archiving.prepare(self.ctx, self, candidates, [e.id for e in passed],
                                      keys_of=self._keys_of(envelopes))
            with self.store.transaction():
                still_skipped = set(archiving.commit(self.ctx, self, batch, state=state, result=self.result,
                                                     backfill=True))
                found = {e.id for e in envelopes}
                archived = [c.key for c in batch.candidates if c.key not in still_skipped]
                self.store.forget_skipped_graph(self.mailbox.id, state.folder,
                                                archived + [i for i in ids if i not in found])

    def _envelope(self, graph_id: str) -> Envelope | None:
        try:
            return self.graph.envelope(graph_id)
        except MessageGone:
            return None


def _message_id(internet_message_id: str | None) -> str | None:
    """Graph's internetMessageId read as IMAP's Message-ID header is, so both give the same identity."""
    if not internet_message_id:
        return None
    return parse_headers_only(b"Message-ID: " + internet_message_id.encode("utf-8", "replace") + b"\r\n\r\n").message_id
