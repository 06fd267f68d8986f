"""Importing the CRM's Customers and Leads from CSV or JSON.

A CRM export always has a few bad rows; one of them must not stop the other thousand, and none may
slip in half-read. Each row is parsed and checked on its own, bad ones are reported by line number,
the good ones are upserted on the CRM's id. Conflicts (one address or domain claimed by two
customers) are reported, since linking by them would be a guess.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from hanna_sync.addresses import normalise_domain, normalise_email
from hanna_sync.config import Config
from hanna_sync.errors import InputError
from hanna_sync.match import Directory
from hanna_sync.store import Contact, Entity, Store

FORMATS = ("csv", "json")
COLUMNS = {"customer": ("id", "name", "email", "domain", "contacts"), "lead": ("id", "name", "email", "contacts")}


@dataclass(frozen=True)
class RowError:
    line: int  # CSV: line number in the file; JSON: position of the object in the list, from 1
    message: str


@dataclass
class ParsedRow:
    line: int
    entity: Entity
    has_contacts: bool  # a file without a contacts column leaves existing contacts alone


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RowError] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [{"line": e.line, "error": e.message} for e in self.rejected],
            "conflicts": self.conflicts,
            "ignored_columns": self.ignored_columns,
        }


def _contact(text: str) -> Contact | None:
    name, address = parseaddr(text.strip())
    email = normalise_email(address) if address else None
    return Contact(email=email, name=name or None) if email else None


def parse_row(entity_type: str, data: dict[str, Any], line: int) -> ParsedRow:
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
    entity = Entity(id=entity_id, name=text("name"), email=email, domain=domain, contacts=sorted(contacts.values(), key=lambda c: c.email))
    return ParsedRow(line=line, entity=entity, has_contacts="contacts" in data)


def read_records(path: Path | None, fmt: str, stdin_data: bytes | None = None) -> list[tuple[int, Any]]:
    """(line number, record) pairs from a CSV or JSON file; a file that cannot be read at all is an error.

    Standard input comes as bytes, like a file, so that both are decoded (and refused) the same way.
    """
    name = str(path) if path else "standard input"
    try:
        data = stdin_data if path is None else path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    assert data is not None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{name} is not UTF-8 (line {line}); save it as UTF-8 (CSV UTF-8 in Excel)") from None
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(data, list):
            raise InputError(f"{name} must hold a JSON list of objects")
        return list(enumerate(data, start=1))
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise InputError(f"{name} is empty: the first line must name the columns (id,name,email,...)")
    reader.fieldnames = [(f or "").strip().lower() for f in reader.fieldnames]
    records = []
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]
        records.append((reader.line_num, {**row, "__extra__": bool(extra)}))
    return records


def detect_format(path: Path | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".") if path else ""
    if suffix not in FORMATS:
        raise InputError("cannot tell the file's format from its name: give --format csv or --format json")
    return suffix


def import_entities(
    store: Store, entity_type: str, path: Path | None, fmt: str | None = None, stdin_data: bytes | None = None
) -> ImportResult:
    """Upsert every good row on the CRM id; report bad rows and conflicts."""
    records = read_records(path, detect_format(path, fmt), stdin_data)
    result = ImportResult()
    known = set(COLUMNS[entity_type])
    seen_ids: dict[str, int] = {}
    rows: list[ParsedRow] = []
    for line, record in records:
        if not isinstance(record, dict):
            result.rejected.append(RowError(line, "not an object"))
            continue
        if record.pop("__extra__", False):
            result.rejected.append(RowError(line, "more fields than the header has columns (quote fields with commas)"))
            continue
        for column in record:
            if column not in known and column not in result.ignored_columns:
                result.ignored_columns.append(column)
        try:
            parsed = parse_row(entity_type, record, line)
        except InputError as exc:
            result.rejected.append(RowError(line, str(exc)))
            continue
        if parsed.entity.id in seen_ids:
            result.rejected.append(RowError(line, f"id {parsed.entity.id} already given on line {seen_ids[parsed.entity.id]}"))
            continue
        seen_ids[parsed.entity.id] = line
        rows.append(parsed)
    with store.transaction():
        for row in rows:
            outcome = store.save_entity(entity_type, row.entity, replace_contacts=row.has_contacts)
            setattr(result, outcome, getattr(result, outcome) + 1)
    result.conflicts = find_conflicts(store)
    return result


def find_conflicts(store: Store) -> list[str]:
    """Addresses and domains that belong to more than one customer (or more than one lead)."""
    conflicts = []
    for entity_type in ("customer", "lead"):
        owners: dict[str, set[str]] = defaultdict(set)
        domains: dict[str, set[str]] = defaultdict(set)
        for entity in store.entities(entity_type):
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
                conflicts.append(f"domain {domain} is claimed by customers {', '.join(sorted(ids))}: it links to neither")
    return conflicts


def build_directory(store: Store, config: Config) -> Directory:
    """The directory as it is now, with every mailbox address counted as staff."""
    boxes = store.mailboxes()
    staff = [m.email for m in boxes] + [m.username for m in boxes if m.username]
    return Directory.build(
        store.entities("customer"), store.entities("lead"), staff, config.own_domains, config.free_mail_domains
    )
