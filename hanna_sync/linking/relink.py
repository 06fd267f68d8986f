"""Keeping links true to the directory as it changes, and finding the letters a change concerns.

Links are made when a pass archives a letter, against the directory of that moment. An import that
adds a contact, moves a domain or drops a person changes what is true: `relink` re-evaluates every
archived letter's links (the five address rules from its stored participants, then the links its
thread passes on), adds what now holds and removes what no longer does. A letter left with no link
stays in the archive (retention decides about it). Links made by hand
(`manual_links`, put back when their entity returns) and links taken off by hand (`unlinks`) are
kept as they are whatever the rules say; a reply inherits a hand-made link like any other, and never
one its letter was unlinked from by hand. Then the backfill: skipped
letters on the servers that the change concerns are marked wanted, and the next pass fetches just
those (see backfill.py).

relink runs under the pass lock, so it never interleaves with a pass: an import while a pass runs
leaves it due, and that pass (or the next) runs it at its end. A pass also relinks at its end when
the [linking] settings (the blocklist, thread replies, automatic mail) or own/free-mail domains
changed since the last relink.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import SecretsError
from hanna_sync.linking.backfill import SkipIndex, load_skip_index
from hanna_sync.linking.match import (
    MANUAL,
    MANUAL_ADDRESS,
    Directory,
    Link,
    build_directory,
    inherited_links,
    match,
)

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

log = logging.getLogger(__name__)

RELINK_DUE = "relink_due"  # archive_state: the directory changed while a pass held the lock
BACKFILL_DUE = "backfill_due"  # archive_state: links redone, skipped letters not looked for yet
INDEX_CHECK = "skip_index_check"  # archive_state: a key made with the skip index's key, to notice a new one
THREAD_WATERMARK = "thread_backfill_after"  # archive_state: letters up to this id were looked for answers
LINKING_SETTINGS = "linking_settings"  # archive_state: linking_settings() of the last relink, to notice a change

EntityKey = tuple[str, str]  # (entity type, entity id)


@dataclass(frozen=True)
class Overrides:
    """What was decided by hand, per letter id: entities linked by hand, entities unlinked by hand."""

    manual: dict[int, list[EntityKey]] = field(default_factory=dict)
    unlinked: dict[int, set[EntityKey]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, *, converted: Sequence[tuple[str, str]] = ()) -> Overrides:
        """The decisions stored; with `converted` (lead id, customer id), as they will be once those
        leads' decisions moved to their customers (Store.move_decisions_by_hand): what a dry run shows."""
        manual, unlinked = store.link_overrides()
        to_customer = {("lead", lead): ("customer", customer) for lead, customer in converted}
        for letter_id in set(manual) | set(unlinked) if to_customer else ():
            own = {*manual.get(letter_id, ()), *unlinked.get(letter_id, ())}  # the customer's own decision wins

            def moved(keys: Iterable[EntityKey], own: set[EntityKey] = own) -> list[EntityKey]:
                return [to_customer.get(k, k) for k in keys if not (k in to_customer and to_customer[k] in own)]

            if letter_id in manual:
                manual[letter_id] = moved(manual[letter_id])
            if letter_id in unlinked:
                unlinked[letter_id] = set(moved(unlinked[letter_id]))
        return cls(manual, unlinked)


@dataclass
class RelinkResult:
    letters: int = 0  # archived letters re-evaluated
    links_added: int = 0
    links_removed: int = 0
    links_changed: int = 0  # same entity, another rule (e.g. a domain link that became a contact's)
    unlinked: int = 0  # letters that lost their last link: kept, retention decides
    backfill_wanted: int = 0  # skipped letters the next pass will fetch
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "letters": self.letters, "links_added": self.links_added, "links_removed": self.links_removed,
            "links_changed": self.links_changed, "unlinked": self.unlinked, "backfill_wanted": self.backfill_wanted,
            "seconds": round(self.seconds, 3),
        }


def letter_links(row: dict[str, Any], directory: Directory, config: Config) -> list[Link]:
    """A letter's links by its own addresses, as a pass would make them now."""
    if row["automatic"] and not config.linking.automatic:
        return []
    return match(row["participants"], directory, bool(row["customers"]), bool(row["leads"]))


def relink(store: Store, config: Config, secrets: SecretStore | None) -> RelinkResult:
    """Re-evaluate every archived letter's links, then mark the skipped letters the directory now
    concerns. Without the secrets store (secrets None or unreadable) the links are still redone and
    the marking is left due: the next pass (or relink) does it."""
    started = time.monotonic()
    result = RelinkResult()
    with store.transaction():
        store.set_state_value(RELINK_DUE, None)  # an import from now on leaves it due again
        store.set_state_value(LINKING_SETTINGS, linking_settings(config))
    with store.lock:  # read, then think, without holding the write lock
        directory = build_directory(store, config)
        rows = store.relink_rows()
        before = store.all_links()
        overrides = Overrides.load(store)
    after = _evaluate(rows, directory, config, overrides)
    grown: list[str] = []  # thread ids of letters that gained a link: their skipped replies are wanted
    with store.transaction():
        for row, old, gone, fresh in _differences(rows, before, after):
            letter_id = row["id"]
            added = sum(1 for link in fresh if (link.entity_type, link.entity_id) not in old)
            result.links_removed += len(gone)
            result.links_added += added
            result.links_changed += len(fresh) - added
            result.unlinked += int(bool(old) and len(old) - len(gone) + added == 0)
            if added:
                grown.extend(_thread_ids(row))
            store.remove_links(letter_id, gone)
            store.set_links(letter_id, fresh)
        result.letters = len(rows)
        store.set_state_value(BACKFILL_DUE, "1")
    try:
        index = load_skip_index(secrets) if secrets is not None else None
    except SecretsError as exc:
        log.warning("relinked; skipped letters are looked for when the secrets store answers (%s)", exc)
        index = None
    if index is not None:
        result.backfill_wanted = mark_backfill(store, config, index, directory, thread_ids=grown)
    result.seconds = time.monotonic() - started
    return result


def _differences(
    rows: list[dict[str, Any]], before: dict[int, dict[EntityKey, tuple[str, str]]], after: dict[int, list[Link]]
) -> Iterator[tuple[dict[str, Any], dict[EntityKey, tuple[str, str]], list[EntityKey], list[Link]]]:
    """Per letter whose links change: its row, its links now, the entities it loses, and the links
    to add or update. A thread link whose letter is no longer archived (purged, retention) cannot be
    re-judged: it stays."""
    archived_ids = {i for row in rows for i in _thread_ids(row)}
    for row in rows:
        old = before.get(row["id"], {})
        new = {(link.entity_type, link.entity_id): link for link in after.get(row["id"], [])}
        for entity, (rule, address) in old.items():
            if rule == "thread" and address not in archived_ids and entity not in new:
                new[entity] = Link(entity[0], entity[1], rule, address)
        gone = [entity for entity in old if entity not in new]
        fresh = [link for entity, link in new.items() if old.get(entity) != (link.rule, link.address)]
        if gone or fresh:
            yield row, old, gone, fresh


def links_removed(store: Store, config: Config, directory: Directory) -> list[tuple[int, Link]]:
    """The links a relink against `directory` would take off archived letters, (letter id, link) in
    letter order: what an import must show before it changes the directory to that."""
    return predict(store, config, directory).removed


@dataclass
class LinkChanges:
    """What a relink against a directory would do, before it is made (an import's check, a dry run)."""

    removed: list[tuple[int, Link]]  # (letter id, link) taken off
    added: list[tuple[int, Link]]  # (letter id, link) put on, or on with another rule
    orphaned: list[int]  # letters that had links and would have none: they stay archived


def predict(store: Store, config: Config, directory: Directory, *, converted: Sequence[tuple[str, str]] = ()
            ) -> LinkChanges:
    """The relink's differences against `directory` (with the decisions by hand of `converted` leads
    moved to their customers), written nowhere."""
    with store.lock:
        rows = store.relink_rows()
        before = store.all_links()
        overrides = Overrides.load(store, converted=converted)
    changes = LinkChanges([], [], [])
    for row, old, gone, fresh in _differences(rows, before, _evaluate(rows, directory, config, overrides)):
        changes.removed += [(row["id"], Link(*entity, *old[entity])) for entity in gone]
        changes.added += [(row["id"], link) for link in fresh]
        new = sum(1 for link in fresh if (link.entity_type, link.entity_id) not in old)
        if old and len(old) - len(gone) + new == 0:
            changes.orphaned.append(row["id"])
    return changes


def mark_backfill(
    store: Store, config: Config, index: SkipIndex, directory: Directory, *, thread_ids: list[str]
) -> int:
    """The skipped letters a directory change concerns (new or changed keys), and those answering
    letters that gained a link, marked wanted in one transaction with clearing BACKFILL_DUE: a kill
    or a refusing secrets store leaves it due, never half done."""
    with store.transaction():
        verify_index(store, index)
        marked = mark_directory_backfill(store, index, directory, config)
        if config.linking.thread_replies and thread_ids:
            marked += store.mark_wanted(index.thread_keys(thread_ids))
        store.drop_orphan_keys()
        store.set_state_value(BACKFILL_DUE, None)
    return marked


def verify_index(store: Store, index: SkipIndex) -> None:
    """Check that the skip index's key is the one its keys were made with. A secrets store restored
    without it, or reset, makes a new key: the stored keys can no longer be found, so every skipped
    letter is looked at once more (and recorded with the new key) instead of being lost to backfill."""
    check = str(index.thread_key("hanna-sync: skip index check"))
    stored = store.state_value(INDEX_CHECK)
    if stored == check:
        return
    if stored is not None:
        log.warning("the skip index's key changed (secrets store restored or reset?): every skipped letter"
                    " is looked at once more by the next pass")
        store.want_all_skipped()
    store.set_state_value(INDEX_CHECK, check)


def _thread_ids(row: dict[str, Any]) -> list[str]:
    """What names a letter in a thread: its Message-ID, and its Outlook conversation."""
    ids = [row["message_id"]] if row["message_id"] else []
    if row["conversation_id"]:
        ids.append(f"conversation:{row['conversation_id']}")
    return ids


def summary_line(result: RelinkResult) -> str:
    """One line for the log (a relink an import left to the pass) and the CLI."""
    return (f"Relinked {result.letters} letters: {result.links_added} links added, {result.links_removed} removed,"
            f" {result.links_changed} changed, {result.unlinked} letters left unlinked;"
            f" {result.backfill_wanted} skipped letters will be fetched by the next pass.")


def _by_hand(row: dict[str, Any], directory: Directory, config: Config, overrides: Overrides) -> list[Link]:
    """A letter's own links with what was decided by hand: its manual links (while their entity is in
    the directory), then the rules' links to entities it was neither linked to nor unlinked from by hand."""
    unlinked = overrides.unlinked.get(row["id"], set())
    manual = [key for key in overrides.manual.get(row["id"], ()) if key in directory.entities]
    by_rules = [link for link in letter_links(row, directory, config)
                if (key := (link.entity_type, link.entity_id)) not in unlinked and key not in manual]
    return [Link(*key, MANUAL, MANUAL_ADDRESS) for key in manual] + by_rules


def _evaluate(
    rows: list[dict[str, Any]], directory: Directory, config: Config, overrides: Overrides
) -> dict[int, list[Link]]:
    """Every letter's links: by its addresses (and by hand), then inherited along its thread (oldest
    first, so a reply sees what its parents have; repeated until nothing changes, for replies dated
    before their parents by a wrong clock), never an entity the letter was unlinked from by hand. A
    letter read through Graph also inherits from its Outlook conversation ("conversation:<id>"), as a
    pass does."""
    links = {row["id"]: _by_hand(row, directory, config, overrides) for row in rows}
    if not config.linking.thread_replies:
        return links
    by_thread_id: dict[str, list[int]] = {}
    for row in rows:
        for thread_id in (row["message_id"], row["conversation_id"] and f"conversation:{row['conversation_id']}"):
            if thread_id:
                by_thread_id.setdefault(thread_id, []).append(row["id"])
    answering = [(row, _answers(row)) for row in rows]
    answering = [(row, answers) for row, answers in answering if answers]
    linked = {thread_id: [(link.entity_type, link.entity_id) for i in ids for link in links[i]]
              for thread_id, ids in by_thread_id.items()}
    grew = True
    while grew:  # once through, and once more only for what a wrong clock put before its parent
        grew = False
        for row, answers in answering:
            if row["automatic"] and not config.linking.automatic:
                continue
            extra = inherited_links(answers, linked, links[row["id"]], sync_customers=bool(row["customers"]),
                                    sync_leads=bool(row["leads"]))
            if row["id"] in overrides.unlinked:
                extra = [link for link in extra
                         if (link.entity_type, link.entity_id) not in overrides.unlinked[row["id"]]]
            if extra:
                links[row["id"]] += extra
                grew = True
                for thread_id in _thread_ids(row):  # its replies, later in this round, see it at once
                    linked[thread_id] += [(link.entity_type, link.entity_id) for link in extra]
    return links


def _answers(row: dict[str, Any]) -> list[str]:
    """The thread ids a letter inherits links through: those it answers, and its Graph conversation."""
    answers = [row["in_reply_to"], *row["references"]] if row["in_reply_to"] else list(row["references"])
    if row["conversation_id"]:
        answers.append(f"conversation:{row['conversation_id']}")
    return answers


def linking_settings(config: Config) -> str:
    """What of the config decides whether a letter links, beside the directory: part of each key's meaning."""
    return repr((config.linking.automatic, config.linking.thread_replies, config.own_domains,
                 config.free_mail_domains, config.linking.blocked))


def mark_directory_backfill(store: Store, index: SkipIndex, directory: Directory, config: Config) -> int:
    """Mark the skipped letters that have a key the directory did not have, or that meant something
    else, when they were last checked; remember the directory's keys as checked. The first time
    (nothing remembered) the skipped letters were checked against this very directory: nothing to mark."""
    now = index.directory_keys(directory, linking_settings(config))
    checked = store.backfill_keys()
    changed = {key for key, meaning in now.items() if checked is not None and checked.get(key) != meaning}
    marked = store.mark_wanted(changed) if changed else 0
    store.replace_backfill_keys(now)
    return marked


def mark_thread_backfill(store: Store, index: Callable[[], SkipIndex | None], config: Config) -> int:
    """Mark the skipped letters that answer a letter linked since the last look: a reply a pass
    skipped (staff only) before the letter it answers was archived. `index` is only asked for (it
    may build the directory) when there is something to look for."""
    if not config.linking.thread_replies:
        return 0
    watermark = int(store.state_value(THREAD_WATERMARK) or 0)
    message_ids, top = store.linked_message_ids(watermark)
    marked = 0
    if message_ids:
        keys = index()
        if keys is None:
            return 0  # the watermark stays: looked for when the key can be had
        marked = store.mark_wanted(keys.thread_keys(message_ids))
    if top != watermark:
        store.set_state_value(THREAD_WATERMARK, str(top))
    return marked


def after_pass(
    store: Store, config: Config, secrets: SecretStore, directory: Callable[[], Directory],
    *, index: Callable[[], SkipIndex | None],
) -> None:
    """The backfill bookkeeping at the end of a pass (under its lock): a relink an import left due, a
    marking a relink could not finish, and the skipped replies the pass's new letters make worth
    fetching. Cheap when the pass archived nothing."""
    if store.state_value(RELINK_DUE):
        log.info("%s (an import during the pass left it due)", summary_line(relink(store, config, secrets)))
        return
    if settings_changed(store, config):
        log.info("%s ([linking] settings or own domains changed)", summary_line(relink(store, config, secrets)))
        return
    if store.state_value(BACKFILL_DUE) and (keys := index()) is not None:
        marked = mark_backfill(store, config, keys, directory(), thread_ids=store.linked_message_ids(0)[0])
        log.info("%d skipped letters the last directory change concerns: the next pass fetches them", marked)
    with store.transaction():
        marked = mark_thread_backfill(store, index, config)
    if marked:
        log.info("%d skipped letters answer letters archived this pass: the next pass fetches them", marked)


def settings_changed(store: Store, config: Config) -> bool:
    """Whether the settings letters were linked with changed since the last relink (a blocked address
    added, thread replies turned off): the archive is then relinked. A database that never recorded
    them (made before the blocklist) is relinked when a blocklist is configured, else they are recorded."""
    stored = store.state_value(LINKING_SETTINGS)
    now = linking_settings(config)
    if stored is None and not config.linking.blocked:
        with store.transaction():
            store.set_state_value(LINKING_SETTINGS, now)
        return False
    return stored != now


def relink_or_defer(store: Store, config: Config, secrets: SecretStore | None) -> RelinkResult | None:
    """Relink now, under the pass lock; while a pass holds it, leave the relink due (that pass runs
    it at its end) and return None. What an import calls: an import never waits for a pass."""
    from hanna_sync.lock import PassBusy, pass_lock  # scan imports this module

    try:
        with pass_lock(config.database):
            return relink(store, config, secrets)
    except PassBusy:
        with store.transaction():
            store.set_state_value(RELINK_DUE, "1")
        return None
