"""The archive's answers as JSON-ready data: what `--json` prints and what the HTTP API returns.

One place builds each shape, so `hanna-sync letters --json` and `GET /api/customers/{id}/letters`
cannot drift apart: the CLI and the web server both call these and only serialise the result.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hanna_sync.db.store import Store


def entities(store: Store, entity_type: str, *, limit: int | None = None,
             after: str | None = None) -> list[dict[str, Any]]:
    """The customers or leads with their contacts (a lead has no domain), by id; with `after`, those whose id
    sorts after it (a page's keyset)."""
    out = []
    for e in [e for e in store.entities(entity_type) if after is None or e.id > after][:limit]:
        data = asdict(e)
        if entity_type == "lead":
            data.pop("domain")
        out.append(data)
    return out


def letters(store: Store, *, customer: str | None = None, lead: str | None = None, mailbox_id: int | None = None,
            since: str | None = None, limit: int | None = None,
            after: tuple[str | None, int] | None = None) -> list[Any]:
    """Archived letters, newest first; an unknown customer, lead or mailbox is NotFound, not "no letters"."""
    for entity_type, entity_id in (("customer", customer), ("lead", lead)):
        if entity_id is not None:
            store.existing_entity(entity_type, entity_id)
    if mailbox_id is not None:
        store.mailbox(mailbox_id)
    return list(store.letters(customer=customer, lead=lead, mailbox_id=mailbox_id, since=since, limit=limit,
                             after=after))


def letter(store: Store, letter_id: int) -> Any:
    return store.letter(letter_id)


def thread(store: Store, letter_id: int) -> list[Any]:
    return list(store.thread(letter_id))


def search(store: Store, query: str, *, customer: str | None = None, lead: str | None = None,
           since: str | None = None, limit: int = 20, after: tuple[float, str | None, int] | None = None) -> list[Any]:
    for entity_type, entity_id in (("customer", customer), ("lead", lead)):
        if entity_id is not None:
            store.existing_entity(entity_type, entity_id)
    return list(store.search(query, customer=customer, lead=lead, since=since, limit=limit, after=after))
