"""Removing letters for good: `hanna-sync purge` on a privacy request, and the retention period every pass
applies.

Both delete the same way (`Store.purge_letters`): the letter, its original bytes, links, locations, search
index entries and thread ids, with the freed bytes overwritten and the search index merged, so the words
do not linger in the file. They differ in what they leave behind. A purged letter leaves a tombstone (a
hash of its identity), since it may still be on a mail server and the next pass, or a UIDVALIDITY reset,
would otherwise archive it again. A letter removed by retention needs none: it is older than the cutoff,
and the same age rule keeps a pass from archiving it in the first place (`refused`).

VACUUM: deleting frees pages inside the file without shrinking it. After a purge or a retention deletion,
when a quarter or more of the file's pages are free, the file is VACUUMed (purge --no-vacuum skips it).
Retention's cutoff moves once a day, so a pass VACUUMs only when much was deleted: about once a day,
more often only while a backlog larger than RETENTION_BATCH is being worked off (the first days after
retention is turned on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError, NotFound

if TYPE_CHECKING:
    from hanna_sync.mail.message import ParsedLetter

log = logging.getLogger(__name__)

VACUUM_FREE_SHARE = 0.25  # VACUUM once this share of the file's pages is free
RETENTION_BATCH = 1000  # letters a pass deletes at most; a backlog goes on at the next passes


@dataclass
class Removal:
    """What a purge or a pass's retention removed: for the CLI's line and --json."""

    letters: list[int]
    vacuumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"purged": len(self.letters), "letters": self.letters, "vacuumed": self.vacuumed}


def cutoff(config: Config, today: date | None = None) -> str | None:
    """The ISO date (UTC) before which letters are not kept, or None when they are kept forever.

    A date, not a moment: it moves once a day, so retention deletes in one go per day instead of a few
    letters at every pass. Whole years are calendar years (29 February becomes the 28th); a fraction is
    counted in days.
    """
    years = config.retention.years
    if years is None:
        return None
    today = today or datetime.now(timezone.utc).date()
    whole = int(years)
    if whole >= today.year:
        return date.min.isoformat()  # nothing is that old
    try:
        day = today.replace(year=today.year - whole)
    except ValueError:  # 29 February, in a year that has none
        day = today.replace(year=today.year - whole, day=28)
    try:
        return (day - timedelta(days=round((years - whole) * 365.25))).isoformat()
    except OverflowError:
        return date.min.isoformat()


def refused(store: Store, config: Config, identity: str, letter: ParsedLetter) -> bool:
    """Whether a pass must not archive this new letter: it was purged, or it is older than retention keeps.

    Called in a pass's storing transaction, so a purge committed meanwhile is seen. An undated letter is
    as old as its archiving, i.e. new.
    """
    if store.purged([identity]):
        return True
    limit = cutoff(config)
    return limit is not None and letter.date_utc is not None and letter.date_utc.date().isoformat() < limit


def purge_selection(store: Store, letter_ids: list[int], customer: str | None, lead: str | None) -> list[int]:
    """The letters a purge removes: those named, and every letter linked to the customer or lead."""
    if not letter_ids and customer is None and lead is None:
        raise InputError("name what to purge: LETTER ids, --customer ID or --lead ID")
    missing = store.missing_letters(letter_ids)
    if missing:
        raise NotFound(f"no letter {missing[0]}; 'hanna-sync letters' lists them (nothing was purged)")
    chosen = dict.fromkeys(letter_ids)
    if customer is not None:
        chosen.update(dict.fromkeys(store.export_ids(customer=customer)))
    if lead is not None:
        chosen.update(dict.fromkeys(store.export_ids(lead=lead)))
    if not chosen:
        named = " or ".join(f"{kind} {value}" for kind, value in (("customer", customer), ("lead", lead)) if value)
        raise NotFound(f"no archived letters are linked to {named}: nothing to purge")
    return list(chosen)


def purge(store: Store, config: Config, letter_ids: list[int], vacuum: bool = True) -> Removal:
    """Delete these letters for good and keep their tombstones, then VACUUM when a quarter of the file is free.

    Holds the pass lock meanwhile: a pass that had already looked a letter up would otherwise go on to
    add a location to a letter that is no longer there. Raises PassBusy while a pass runs.
    """
    from hanna_sync.lock import PassBusy, pass_lock

    try:
        with pass_lock(config.database):
            store.purge_letters(letter_ids, tombstone=True)
            return Removal(letter_ids, vacuum and _vacuum_if_due(store))
    except PassBusy:
        raise PassBusy("a scan pass is running; nothing was purged: run purge again when it has finished"
                       " (hanna-sync status shows the last pass)") from None


def apply_retention(store: Store, config: Config) -> Removal:
    """The end of a pass: delete letters older than the retention period (at most RETENTION_BATCH of them),
    without tombstones, and VACUUM when due.

    Never raises: a pass has done its work by now, and a failed clean-up must not make it fail. The
    next pass tries again.
    """
    limit = cutoff(config)
    if limit is None:
        return Removal([])
    try:
        old = store.letters_dated_before(limit, RETENTION_BATCH)
        if not old:
            return Removal([])
        store.purge_letters(old, tombstone=False)
        log.info("retention: deleted %d letters dated before %s", len(old), limit)
        return Removal(old, _vacuum_if_due(store))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("retention: could not delete letters dated before %s (%s); the next pass tries again",
                    limit, exc)
        return Removal([])


def _vacuum_if_due(store: Store) -> bool:
    share = store.free_share()
    if share < VACUUM_FREE_SHARE:
        return False
    log.info("%.0f%% of the database file is free: VACUUM", share * 100)
    store.vacuum()
    return True
