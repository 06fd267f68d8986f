"""The one batch commit every source uses: which matched letters are archived already, their originals,
the letters refused (purged, older than retention, sent by a program), the letters, locations and links
stored, and the skipped letters put in the skip index, all in the caller's transaction. And what a dry
run reports instead, and the marking of a folder's locations as gone."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

from hanna_sync.db.retention import refused
from hanna_sync.db.store import Store
from hanna_sync.linking.backfill import LetterKeys, SkipIndex
from hanna_sync.linking.match import Link, inherited_links
from hanna_sync.mail.addresses import normalise_email
from hanna_sync.mail.message import Keep, fingerprint, is_automatic
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.scan.context import PassContext
from hanna_sync.scan.results import MailboxResult, WouldArchive
from hanna_sync.scan.source import Candidate, FolderSource, K, Original

log = logging.getLogger(__name__)


@dataclass
class Batch(Generic[K]):
    """A batch between its downloads and its transaction."""

    candidates: list[Candidate[K]]  # matched, archived already or with their original
    passed: list[K]  # the letters that concern nobody
    originals: dict[K, Original]
    known: dict[str, int]  # identity -> letter id of those archived already
    keys: dict[K, LetterKeys]  # skip-index keys of the letters that may be recorded as skipped
    index: SkipIndex | None  # None: skipped letters go unrecorded this pass


def keeping(links: list[Link]) -> Keep:
    """The parser's `keep` for a matched letter: the addresses that link it, so that they are parsed and
    stored (and relink finds them) even past the first MAX_ADDRESSES_PER_HEADER recipients of a header."""
    addresses = {link.address for link in links if link.rule != "thread"}
    return lambda address: normalise_email(address) in addresses


def inherit_conversations(ctx: PassContext, links: dict[K, list[Link]], conversations: dict[K, str], *,
                          mailbox: Mailbox) -> None:
    """The links a batch's letters inherit from archived letters of their conversation (Outlook's, Gmail's
    thread: `conversations` maps a key to "conversation:<id>"), added to `links` in place. From archived
    letters only: whether a letter of this batch was sent by a program (and so passes nothing on) is known
    from its original; a reply whose conversation's first letter is in this very batch is fetched by the
    next pass (thread backfill)."""
    if not ctx.config.linking.thread_replies or not conversations:
        return
    flags = {"sync_customers": mailbox.sync_customers, "sync_leads": mailbox.sync_leads}
    with ctx.store.transaction():
        linked = ctx.store.thread_links(list(set(conversations.values())))
    for key, conversation in conversations.items():
        extra = inherited_links([conversation], linked, links.get(key, ()), **flags)
        if extra:
            links[key] = links.get(key, []) + extra


def prepare(
    ctx: PassContext, source: FolderSource[K], candidates: list[Candidate[K]], passed: list[K],
    *, keys_of: Callable[[SkipIndex, K], LetterKeys],
) -> Batch[K]:
    """Everything a batch needs from the network, before its transaction: the originals of the matched
    letters not archived yet, and the skip-index keys (`keys_of`) of the letters that may stay skipped.
    Letters without a Message-ID get their identity here, from a fingerprint of their content."""
    with ctx.store.transaction():
        known = ctx.store.letter_ids([c.identity for c in candidates if c.identity])
    originals = source.originals([c for c in candidates if c.identity not in known])
    for c in candidates:
        if c.identity is None and c.key in originals:
            c.identity = f"sha256:{fingerprint(originals[c.key].raw)}"
    # A letter gone between its headers and its download is left out: the next look at the folder says so.
    candidates = [c for c in candidates if c.identity in known or c.key in originals]
    index = ctx.directory.skip_index()
    recordable = passed + ([c.key for c in candidates] if source.records_refused else [])
    keys = {key: keys_of(index, key) for key in recordable} if index else {}
    return Batch(candidates, passed, originals, known, keys, index)


def commit(
    ctx: PassContext, source: FolderSource[K], batch: Batch[K], *, state: FolderState, result: MailboxResult,
    backfill: bool, remapping: bool = False,
) -> list[K]:
    """The batch's letters, locations and links, and its skipped letters in the skip index, inside the
    caller's transaction. A backfill's letters were counted when first skipped, so its refused ones are
    not counted again. Returns the letters that stay skipped."""
    store, config = ctx.store, ctx.config
    skipped = list(batch.passed)
    for c in batch.candidates:
        assert c.identity is not None
        letter_id = batch.known.get(c.identity)
        if letter_id is None:
            original = batch.originals[c.key]
            if refused(store, config, c.identity, original.parsed) or (
                    is_automatic(original.parsed) and not config.linking.automatic):
                if not backfill:
                    result.skipped += 1
                    state.skipped += 1
                if source.records_refused:
                    skipped.append(c.key)
                continue
            letter_id, created = store.archive_letter(
                c.identity, original.parsed, original.raw, original.size, conversation_id=c.conversation_id)
            batch.known[c.identity] = letter_id
            result.archived += int(created)
        elif remapping:
            result.remapped += 1
        source.locate(letter_id, state, c.key)
        # A letter, not a location: found again in another folder (Gmail's labels, a renamed folder) or
        # mailbox, it counts only when it gets a link it did not have.
        result.linked += int(store.add_links(letter_id, c.links) > 0)
        result.backfilled += int(backfill)
    if batch.index is not None and skipped:
        ctx.directory.remember_directory(batch.index)
        source.record_skipped(state, {key: batch.keys[key] for key in skipped})
    return skipped


def would_archive(
    ctx: PassContext, result: MailboxResult, *, folder: str, candidates: list[Candidate[K]], counted: set[str],
) -> None:
    """--dry-run's report of a batch instead of its commit: nothing downloaded, nothing written."""
    result.linked += would_link(ctx.store, counted, [(c.identity, c.links) for c in candidates])
    for c in candidates:
        uid, graph_id = (c.key, None) if isinstance(c.key, int) else (None, c.key)
        links = [f"{link.entity_type} {link.entity_id} ({link.rule})" for link in c.links]
        result.would_archive.append(WouldArchive(folder, uid, graph_id, c.subject, links))


def would_link(store: Store, counted: set[str], candidates: list[tuple[str | None, list[Link]]]) -> int:
    """--dry-run's `linked`: the letters a pass would give a link they do not have, each once (a letter
    in two folders, or archived from another mailbox with the same links, is not counted again)."""
    with store.transaction():
        known = store.letter_ids([identity for identity, _ in candidates if identity])
        have = {i: {(row["entity_type"], row["entity_id"]) for row in store.links_of(known[i])} for i in known}
    count = 0
    for identity, links in candidates:
        if identity is not None and identity in counted:
            continue
        if {(link.entity_type, link.entity_id) for link in links} - have.get(identity or "", set()):
            count += 1
            if identity is not None:
                counted.add(identity)
    return count


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
