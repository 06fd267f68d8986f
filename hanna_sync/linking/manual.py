"""Links made and taken off by hand: `hanna-sync link` and `hanna-sync unlink`.

A link made by hand has rule "manual" (address "-") and is remembered in `manual_links`; a link
taken off by hand is remembered in `unlinks`. Both outlive the entity: when it leaves the directory
and comes back, so do they. Both are the last word on that letter and that entity: no relink, import, snapshot or
pass changes them, until the other command says otherwise. Either one then relinks the archive, so
the replies to the letter inherit (or stop inheriting) the link along its thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError
from hanna_sync.linking.match import MANUAL
from hanna_sync.linking.relink import RelinkResult, relink_or_defer

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

# What a command did, as --json's "result" says it.
LINKED, ALREADY_LINKED, UNLINKED, ALREADY_UNLINKED, NOT_LINKED = (
    "linked", "already linked", "unlinked", "already unlinked", "not linked")


@dataclass
class ByHand:
    """What `link` or `unlink` did to one letter's link to one entity."""

    letter: int
    entity_type: str
    entity_id: str
    result: str  # one of LINKED .. NOT_LINKED
    was: str | None  # the rule of the link before (None: there was none)
    relink: RelinkResult | None = None  # None: nothing changed, or a pass runs and relinks at its end
    relink_due: bool = False  # changed while a pass runs: that pass relinks the archive at its end

    @property
    def changed(self) -> bool:
        return self.result in (LINKED, UNLINKED)

    def message(self) -> str:
        entity = f"{self.entity_type} {self.entity_id}"
        if self.result == LINKED:
            how = f" (it was linked by rule {self.was}: now it stays whatever the rules say)" if self.was else ""
            return f"Linked letter {self.letter} to {entity} by hand{how}."
        if self.result == ALREADY_LINKED:
            return f"Letter {self.letter} is already linked to {entity} by hand: nothing changed."
        if self.result == UNLINKED:
            return (f"Unlinked letter {self.letter} from {entity} (it was linked by {self.was}): no relink or pass"
                    " links it again; 'hanna-sync link' undoes this.")
        if self.result == ALREADY_UNLINKED:
            return f"Letter {self.letter} is already unlinked from {entity} by hand: nothing changed."
        return f"Letter {self.letter} is not linked to {entity}: nothing to unlink."

    def as_dict(self) -> dict[str, Any]:
        return {
            "letter": self.letter, "entity_type": self.entity_type, "entity_id": self.entity_id,
            "result": self.result, "was": self.was, "changed": self.changed,
            "relink": self.relink.as_dict() if self.relink else None,
        }


def entity_option(customer: str | None, lead: str | None) -> tuple[str, str]:
    """(entity type, id) from --customer / --lead: exactly one of them."""
    if (customer is None) == (lead is None):
        raise InputError("give exactly one of --customer ID or --lead ID")
    return ("customer", customer) if customer is not None else ("lead", lead)  # type: ignore[return-value]


def _check(store: Store, letter_id: int, entity_type: str, entity_id: str) -> None:
    store.letter(letter_id)  # NotFound: no such letter
    store.existing_entity(entity_type, entity_id)


def link(
    store: Store, config: Config, secrets: SecretStore | None, *, letter_id: int, entity: tuple[str, str],
) -> ByHand:
    """Link a letter to a customer or lead by hand: a rule's link to it becomes manual, an unlink goes."""
    entity_type, entity_id = entity
    _check(store, letter_id, entity_type, entity_id)
    with store.transaction():
        current = store.link_between(letter_id, entity_type, entity_id)
        if current is not None and current[0] == MANUAL:
            return ByHand(letter_id, entity_type, entity_id, ALREADY_LINKED, MANUAL)
        store.set_link_by_hand(letter_id, entity_type, entity_id, linked=True)
    return _relinked(store, config, secrets, ByHand(letter_id, entity_type, entity_id, LINKED,
                                                    None if current is None else current[0]))


def unlink(
    store: Store, config: Config, secrets: SecretStore | None, *, letter_id: int, entity: tuple[str, str],
) -> ByHand:
    """Take a letter's link to a customer or lead off by hand, and remember it (whatever made the link)."""
    entity_type, entity_id = entity
    _check(store, letter_id, entity_type, entity_id)
    with store.transaction():
        current = store.link_between(letter_id, entity_type, entity_id)
        if current is None:
            was = store.unlink_between(letter_id, entity_type, entity_id)
            return ByHand(letter_id, entity_type, entity_id, NOT_LINKED if was is None else ALREADY_UNLINKED, was)
        store.set_link_by_hand(letter_id, entity_type, entity_id, linked=False, rule=current[0])
    return _relinked(store, config, secrets, ByHand(letter_id, entity_type, entity_id, UNLINKED, current[0]))


def _relinked(store: Store, config: Config, secrets: SecretStore | None, done: ByHand) -> ByHand:
    """The archive relinked after a change by hand: replies along the letter's thread follow it."""
    done.relink = relink_or_defer(store, config, secrets)
    done.relink_due = done.relink is None
    return done
