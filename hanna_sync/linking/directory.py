"""Importing the CRM's Customers and Leads from CSV or JSON: an upsert, or a snapshot.

A CRM export always has a few bad rows; one of them must not stop an upsert of the other thousand,
and none may slip in half-read. Each row is parsed and checked on its own, bad ones are reported by
line number, the good ones are upserted on the CRM's id. Conflicts (one address or domain claimed by
two customers) are reported, since linking by them would be a guess. Reading the file and naming its
columns is csv_rows.py's; a snapshot's difference and its guard are snapshot.py's.

Nor may an import change what is stored behind the admin's back: a column the file lacks keeps the
stored values, and an import that would take links off archived letters of entities that stay is
refused, listing them, unless allowed. A snapshot (the whole list) removes what it lacks, and so
refuses any bad row rather than skip it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError
from hanna_sync.linking.csv_rows import (
    COLUMNS,
    FORMATS,
    RowError,
    detect_format,
    mapped_columns,
    read_csv,
    read_records,
    resolve_columns,
    source_label,
)
from hanna_sync.linking.match import Link, build_directory
from hanna_sync.linking.relink import predict
from hanna_sync.linking.snapshot import (
    Difference,
    SnapshotRefused,
    check_guard,
    converted_leads,
    difference,
    write,
)
from hanna_sync.mail.addresses import FREE_MAIL_DOMAINS, is_listed, normalise_domain, normalise_email
from hanna_sync.models import ENTITY_TYPES, Contact, Entity

# Re-exported: what callers imported from here before the reading moved to csv_rows.py.
__all__ = ["COLUMNS", "FORMATS", "ImportResult", "LinksWouldGo", "RowError", "SnapshotRefused", "build_directory",
           "import_entities", "read_csv", "read_records", "remove_entity"]

@dataclass
class ParsedRow:
    line: int
    entity: Entity
    columns: frozenset[str]  # the columns the row gives: the others keep their stored values


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RowError] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    removed_links: list[tuple[int, Link]] = field(default_factory=list)  # (letter id, link) the relink takes off
    removed: list[str] = field(default_factory=list)  # entity ids a snapshot (or remove-entity) removes
    converted: list[tuple[str, str]] = field(default_factory=list)  # (lead id, customer id): removed leads
    orphaned: list[int] = field(default_factory=list)  # letters the relink leaves linked to nobody (kept)
    links_added: int = 0  # links the relink puts on (or on with another rule)
    kept_by_hand: int = 0  # links made or taken off by hand naming removed entities: kept for when they return
    dry_run: bool = False  # nothing was written

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [{"line": e.line, "error": e.message} for e in self.rejected],
            "conflicts": self.conflicts,
            "ignored_columns": self.ignored_columns,
            "removed_links": [{"letter": letter_id, "entity_type": link.entity_type, "entity_id": link.entity_id,
                               "rule": link.rule, "address": link.address} for letter_id, link in self.removed_links],
            "removed": self.removed,
            "converted": [{"lead": lead, "customer": customer} for lead, customer in self.converted],
            "orphaned": self.orphaned,
            "links_added": self.links_added,
            "kept_by_hand": self.kept_by_hand,
            "dry_run": self.dry_run,
        }

    def summary(self, entity_type: str) -> str:
        """The one line the CLI prints: "Leads: 0 added, 0 updated, 1 removed (1 converted to a customer)"."""
        removed = f", {len(self.removed)} removed" if self.removed else ""
        if self.converted:
            removed += f" ({len(self.converted)} converted to a customer)"
        would = " (dry run: nothing written)" if self.dry_run else ""
        kept = (f" {self.kept_by_hand} link(s) made or taken off by hand kept for when the removed"
                f" {entity_type}s return." if self.kept_by_hand else "")
        return (f"{entity_type.capitalize()}s: {self.added} added, {self.updated} updated{removed},"
                f" {self.unchanged} unchanged, {len(self.rejected)} rejected{would}.{kept}")


class LinksWouldGo(InputError):
    """An import whose relink would take links off archived letters (a new customer claiming another's
    domain, a contact moved): refused, with the links, unless the admin allows it."""

    def __init__(self, removed: list[tuple[int, Link]], conflicts: list[str]) -> None:
        super().__init__(f"this import would remove {len(removed)} links from archived letters (listed above):"
                         " correct the file, or give --allow-conflicts to import it anyway")
        self.details = [f"conflict: {c}" for c in conflicts] + describe_removed(removed)


def describe_removed(removed: list[tuple[int, Link]], shown: int = 10) -> list[str]:
    """One line per entity and rule: which letters lose that link (see them with `hanna-sync show ID`)."""
    letters: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for letter_id, link in removed:
        letters[(link.entity_type, link.entity_id, link.rule)].append(letter_id)
    lines = []
    for (entity_type, entity_id, rule), ids in sorted(letters.items()):
        more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
        lines.append(f"unlinks {entity_type} {entity_id} ({rule}) from {len(ids)} letter(s):"
                     f" {', '.join(map(str, sorted(ids)[:shown]))}{more}")
    return lines


def _contact(text: str) -> Contact | None:
    name, address = parseaddr(text.strip())
    email = normalise_email(address) if address else None
    return Contact(email=email, name=name or None) if email else None


def parse_row(
    entity_type: str, data: dict[str, Any], line: int, free_mail_domains: tuple[str, ...] = FREE_MAIL_DOMAINS
) -> ParsedRow:
    """Check and normalise one row; raises InputError saying what is wrong with it."""

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InputError(f"'{key}' must be text, not {type(value).__name__}")
        return str(value).strip() or None

    entity_id = text("id")
    if not entity_id:
        raise InputError("'id' is missing (the CRM's id of the record is required)")
    email = domain = None
    if text("email"):
        email = normalise_email(text("email") or "")
        if email is None:
            raise InputError(f"'{data['email']}' is not an email address")
    if entity_type == "customer" and text("domain"):
        domain = normalise_domain((text("domain") or "").removeprefix("@"))
        if domain is None:
            raise InputError(f"'{data['domain']}' is not a domain name")
        if is_listed(domain, free_mail_domains):
            raise InputError(f"domain {domain} is free mail: it says nothing about which company writes (leave the"
                             " domain empty; the customer's own addresses still link)")
    contacts_value = data.get("contacts")
    if isinstance(contacts_value, str):
        items = [c.strip() for c in contacts_value.split(";") if c.strip()]
    elif isinstance(contacts_value, list):
        items = contacts_value
    elif contacts_value is None:
        items = []
    else:
        raise InputError("'contacts' must be a list of addresses")
    contacts: dict[str, Contact] = {}
    for item in items:
        contact = _contact(item) if isinstance(item, str) else None
        if contact is None:
            raise InputError(f"contact {item!r} is not an email address (use 'Name <email>' or 'email')")
        contacts.setdefault(contact.email, contact)
    entity = Entity(id=entity_id, name=text("name"), email=email, domain=domain,
                    contacts=sorted(contacts.values(), key=lambda c: c.email))
    return ParsedRow(line=line, entity=entity, columns=frozenset(data))



def import_entities(
    store: Store, entity_type: str, path: Path | None, fmt: str | None = None, *, stdin_data: bytes | None = None,
    config: Config | None = None, allow_conflicts: bool = False, snapshot: bool = False, dry_run: bool = False,
    force: bool = False, source_name: str | None = None,
) -> ImportResult:
    """Upsert every good row on the CRM id; report bad rows and conflicts. All rows go in one
    transaction, after the checks: a refused import (bad file, links it would remove) writes nothing.

    The data is the file at `path`, or `stdin_data` (bytes: standard input's, or a live source's, with
    `source_name` naming it in errors, e.g. "https://crm.example.lt/leads.csv" or "cmd:psql ...").

    snapshot: the data is the whole list: an entity it lacks is removed with its links, in the same one
    transaction; a bad row or a repeated id refuses the whole snapshot (it would remove that entity),
    and so does the guard (SnapshotRefused) unless `force`. dry_run: work it all out, write nothing.
    Either way the relink is left due in the transaction: the caller runs it (relink_or_defer), or the
    next pass does.
    """
    config = config or Config(database=store.path)
    source = source_label(path, source_name)
    names, records = read_records(path, detect_format(path, fmt, stdin_data), stdin_data, source_name=source_name)
    renamed = mapped_columns(names, config.directory.columns, entity_type, source)
    mapping, ignored = resolve_columns(names, records, entity_type, source, renamed=renamed)
    result = ImportResult(ignored_columns=ignored, dry_run=dry_run)
    stored = {e.id: e for e in store.entities(entity_type)}
    planned = _planned(records, mapping, entity_type=entity_type, stored=stored, result=result,
                       free_mail=FREE_MAIL_DOMAINS + config.free_mail_domains)
    if snapshot and result.rejected:
        first, more = result.rejected[0], len(result.rejected) - 1
        others = f" (and {more} more bad row{'s' if more > 1 else ''})" if more else ""
        raise InputError(f"{source}, line {first.line}: {first.message}{others}: a snapshot must list every"
                         f" {entity_type} as it is, so nothing was written")
    diff = difference(stored, planned, snapshot=snapshot)
    result.converted = converted_leads(store, entity_type, diff.removed)
    if snapshot and not force:
        check_guard(entity_type, diff, rows=len(planned), max_percent=config.directory.max_removed_percent,
                    source=source, converted=len(result.converted))
    after = {**stored, **planned}
    for entity_id in diff.removed:
        del after[entity_id]
    _predict(store, config, entity_type=entity_type, after=list(after.values()), diff=diff, result=result,
             allow_conflicts=allow_conflicts)
    result.added = sum(1 for e in diff.save if e.id not in stored)
    result.updated = len(diff.save) - result.added
    result.unchanged = len(planned) - len(diff.save)
    if not dry_run:
        write(store, entity_type, diff, converted=result.converted)
    result.conflicts = find_conflicts({t: list(after.values()) if t == entity_type else store.entities(t)
                                       for t in ENTITY_TYPES})
    return result


def _planned(records: list[tuple[int, Any]], mapping: dict[str, str], *, entity_type: str,
             stored: dict[str, Entity], result: ImportResult, free_mail: tuple[str, ...]) -> dict[str, Entity]:
    """The good rows as they will be stored, by id; the bad ones into result.rejected."""
    seen_ids: dict[str, int] = {}
    planned: dict[str, Entity] = {}
    for line, record in records:
        if isinstance(record, RowError):
            result.rejected.append(record)
            continue
        if not isinstance(record, dict):
            result.rejected.append(RowError(line, "not an object"))
            continue
        try:
            parsed = parse_row(entity_type, {mapping[k]: v for k, v in record.items() if k in mapping}, line, free_mail)
        except InputError as exc:
            result.rejected.append(RowError(line, str(exc)))
            continue
        if parsed.entity.id in seen_ids:
            first = seen_ids[parsed.entity.id]
            result.rejected.append(RowError(line, f"id {parsed.entity.id} already given on line {first}"))
            continue
        entity = merged(parsed, stored.get(parsed.entity.id))
        if not (entity.email or entity.domain or entity.contacts):
            what = "an email, a domain or a contact" if entity_type == "customer" else "an email or a contact"
            result.rejected.append(RowError(line, f"no address to link letters by: give {what}"))
            continue
        seen_ids[parsed.entity.id] = line
        planned[entity.id] = entity
    return planned


def _predict(store: Store, config: Config, *, entity_type: str, after: list[Entity], diff: Difference,
             result: ImportResult, allow_conflicts: bool) -> None:
    """What the relink after this change would do, into result; refuse (LinksWouldGo) when it would take
    links off letters from entities that stay, unless allowed (a removed entity's links go by design)."""
    result.removed = list(diff.removed)
    moved = {lead for lead, _ in result.converted}
    result.kept_by_hand = store.decisions_by_hand(entity_type, [i for i in diff.removed if i not in moved])
    if not (diff.save or diff.removed):
        return
    entities = {t: after if t == entity_type else store.entities(t) for t in ENTITY_TYPES}
    changes = predict(store, config, build_directory(store, config, entities), converted=result.converted)
    result.removed_links, result.orphaned, result.links_added = changes.removed, changes.orphaned, len(changes.added)
    removed = set(diff.removed)
    kept = [(i, link) for i, link in changes.removed
            if not (link.entity_type == entity_type and link.entity_id in removed)]
    if kept and not allow_conflicts:
        raise LinksWouldGo(kept, find_conflicts(entities))


def remove_entity(store: Store, config: Config, entity_type: str, entity_id: str, *, dry_run: bool = False
                  ) -> ImportResult:
    """Remove one customer or lead by hand, as a snapshot without it would: its contacts and links go
    in one transaction with a due relink (the caller runs it). NotFound for an unknown id."""
    store.existing_entity(entity_type, entity_id)
    stored = {e.id: e for e in store.entities(entity_type)}
    diff = Difference(removed=[entity_id], stored=len(stored))
    result = ImportResult(dry_run=dry_run)
    _predict(store, config, entity_type=entity_type, after=[e for e in stored.values() if e.id != entity_id],
             diff=diff, result=result, allow_conflicts=True)
    if not dry_run:
        write(store, entity_type, diff, converted=result.converted)
    return result


def merged(row: ParsedRow, stored: Entity | None) -> Entity:
    """The row as it is stored: a column the file does not have keeps the stored value (a file of ids
    and names renames customers, it does not take their addresses away)."""
    if stored is None:
        return row.entity
    kept = {column: getattr(stored, column) for column in ("name", "email", "domain", "contacts")
            if column not in row.columns}
    return replace(row.entity, **kept)


def find_conflicts(entities: dict[str, list[Entity]]) -> list[str]:
    """Addresses and domains that belong to more than one customer (or more than one lead)."""
    conflicts = []
    for entity_type in ENTITY_TYPES:
        owners: dict[str, set[str]] = defaultdict(set)
        domains: dict[str, set[str]] = defaultdict(set)
        for entity in entities[entity_type]:
            for email in [entity.email, *(c.email for c in entity.contacts)]:
                if email:
                    owners[email].add(entity.id)
            if entity.domain:
                domains[entity.domain].add(entity.id)
        for email, ids in sorted(owners.items()):
            if len(ids) > 1:
                conflicts.append(f"{email} belongs to {entity_type}s {', '.join(sorted(ids))}")
        for domain, ids in sorted(domains.items()):
            if len(ids) > 1:
                conflicts.append(f"domain {domain} is claimed by customers {', '.join(sorted(ids))}:"
                                 " it links to neither")
    return conflicts
