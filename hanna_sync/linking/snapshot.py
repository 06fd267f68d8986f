"""A snapshot import: the CRM's whole list, so what is absent from it is gone from the CRM.

The difference between the stored directory and the list (added, updated, removed) is worked out
first, checked against the guard, and written in ONE transaction together with the links to the
removed entities and a due relink: a kill at any point leaves the old directory or the new one, and
a relink the kill prevented runs at the next pass (or `hanna-sync relink`).

The guard stands between a truncated export and an emptied directory: a snapshot that would remove
more than directory.max_removed_percent of the entities, or any entity when the list is empty, is
refused unless forced.

A lead removed while a customer has its address (its email or a contact's) was converted in the
CRM: the relink moves its letters to the customer by the address rules, its links made and taken off
by hand become the customer's, the guard does not count it, and the summary says so. Any other
removed entity's decisions by hand stay, and count again when its id comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hanna_sync.db.store import Store
from hanna_sync.errors import HannaError
from hanna_sync.linking.relink import RELINK_DUE
from hanna_sync.models import Entity


class SnapshotRefused(HannaError):
    """A snapshot that would remove too much of the directory: probably a truncated export."""


@dataclass
class Difference:
    """What a snapshot changes in one entity type's part of the directory."""

    save: list[Entity] = field(default_factory=list)  # added or updated (unchanged ones are not written)
    removed: list[str] = field(default_factory=list)  # ids absent from the snapshot
    stored: int = 0  # how many there were


def difference(stored: dict[str, Entity], planned: dict[str, Entity], *, snapshot: bool) -> Difference:
    """The entities to write, and, for a snapshot, the ids to remove."""
    save = [entity for entity_id, entity in planned.items() if stored.get(entity_id) != entity]
    removed = sorted(set(stored) - set(planned)) if snapshot else []
    return Difference(save=save, removed=removed, stored=len(stored))


def check_guard(entity_type: str, diff: Difference, *, rows: int, max_percent: float, source: str,
                converted: int = 0) -> None:
    """Refuse (SnapshotRefused, exit 1) a snapshot removing more than max_percent of the entities, or any
    from a source without rows; the numbers are in the message. Leads `converted` to customers are not
    counted: they did not vanish from the CRM, they moved (on a short lead list one conversion is a lot)."""
    if not diff.removed:
        return
    plural = f"{entity_type}s"
    if rows == 0:
        raise SnapshotRefused(f"{source} has no {plural}: a snapshot of it would remove all {diff.stored:,}"
                              f" {plural}: nothing written; check the export, or give --force")
    removed = len(diff.removed) - converted
    percent = removed * 100 / diff.stored
    if percent > max_percent:
        also = f" (and {converted:,} converted to customers)" if converted else ""
        raise SnapshotRefused(
            f"{source}: this snapshot would remove {removed:,} of {diff.stored:,} {plural}{also}"
            f" ({percent:.0f}%), over directory.max_removed_percent ({max_percent:g}%): nothing written;"
            " check the export, or give --force")


def addresses(entity: Entity) -> list[str]:
    """An entity's own addresses: its email and its contacts'."""
    return [a for a in (entity.email, *(c.email for c in entity.contacts)) if a]


def conversions(removed_leads: list[Entity], customers: list[Entity]) -> list[tuple[str, str]]:
    """(lead id, customer id) for each removed lead a customer now has an address of: converted in the CRM."""
    owner: dict[str, str] = {}
    for customer in sorted(customers, key=lambda c: c.id):
        for address in addresses(customer):
            owner.setdefault(address, customer.id)
    found = []
    for lead in removed_leads:
        customer_ids = [owner[a] for a in addresses(lead) if a in owner]
        if customer_ids:
            found.append((lead.id, customer_ids[0]))
    return found


def converted_leads(store: Store, entity_type: str, removed: list[str]) -> list[tuple[str, str]]:
    """(lead id, customer id) for the removed leads a stored customer has an address of."""
    if entity_type != "lead" or not removed:
        return []
    gone = {e.id: e for e in store.entities("lead") if e.id in set(removed)}
    return conversions([gone[i] for i in removed if i in gone], store.entities("customer"))


def write(store: Store, entity_type: str, diff: Difference, *, converted: Sequence[tuple[str, str]] = ()
          ) -> dict[str, int]:
    """The difference in one transaction, with the relink left due (the caller runs it, or the next pass
    does), and the decisions by hand of leads `converted` to customers moved to those customers; counts
    of 'added' and 'updated'. The removed entities' other decisions by hand stay, for when they return."""
    counts = {"added": 0, "updated": 0}
    if not (diff.save or diff.removed):
        return counts
    with store.transaction():
        for entity in diff.save:
            outcome = store.save_entity(entity_type, entity, replace_contacts=True)
            if outcome in counts:
                counts[outcome] += 1
        store.remove_entities(entity_type, diff.removed)
        store.move_decisions_by_hand(list(converted))
        store.set_state_value(RELINK_DUE, "1")
    return counts
