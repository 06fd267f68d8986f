"""The rows the read side hands out, typed: the CLI reads them by name and prints them as --json.

TypedDicts, not dataclasses: a row stays the dict SQLite gave (same keys, same order), so --json is
unchanged, and mypy knows each field.
"""

from __future__ import annotations

from typing import Any, TypedDict


class LinkRow(TypedDict):
    """A letter's link to a customer or lead, and the rule and address that made it."""

    entity_type: str
    entity_id: str
    rule: str
    address: str


class UnlinkRow(TypedDict):
    """A link taken off a letter by hand (`hanna-sync unlink`): no relink or pass brings it back."""

    entity_type: str
    entity_id: str
    rule: str  # the rule that had made the link
    unlinked_at: str


class LocationRow(TypedDict):
    """Where a letter was seen: a folder of a mailbox (an IMAP UID, or Graph's id with uidvalidity 0)."""

    mailbox_id: int
    folder: str
    uidvalidity: int
    uid: int
    graph_id: str | None
    seen_at: str
    gone_at: str | None


class LetterSummary(TypedDict):
    """A line of `letters`."""

    id: int
    date_utc: str | None
    from_addr: str | None
    from_name: str | None
    subject: str | None
    message_id: str | None
    size: int
    body_skipped: bool
    links: list[LinkRow]


class LetterRow(TypedDict):
    """One letter with every column of `letters` (the address lists decoded), its links and locations."""

    id: int
    identity: str
    message_id: str | None
    date_utc: str | None
    from_addr: str | None
    from_name: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    subject: str | None
    body_text: str | None
    attachments: list[dict[str, Any]]
    in_reply_to: str | None
    references: list[str]
    size: int
    body_skipped: bool
    archived_at: str
    participants: str  # JSON text, as stored
    automatic: int
    conversation_id: str | None
    links: list[LinkRow]  # a link made by hand has rule "manual" and address "-"
    locations: list[LocationRow]
    unlinked: list[UnlinkRow]  # links taken off by hand


class SearchHit(TypedDict):
    """A letter `search` found, with its one-line snippet and bm25 rank (lower is better)."""

    id: int
    date_utc: str | None
    from_addr: str | None
    subject: str | None
    snippet: str
    rank: float
    links: list[LinkRow]


class ThreadLetter(TypedDict):
    """A letter of a conversation, with the mailboxes it was seen in."""

    id: int
    date_utc: str | None
    from_addr: str | None
    from_name: str | None
    subject: str | None
    message_id: str | None
    mailboxes: list[str]
    links: list[LinkRow]


class Original(TypedDict):
    """A letter's original bytes with what names its export file."""

    id: int
    date: str
    from_addr: str | None
    subject: str | None
    body_skipped: bool
    raw: bytes


class RunRow(TypedDict):
    """A finished pass, as `scan_runs` records it."""

    id: int
    started_at: str
    finished_at: str | None
    outcome: str | None
    summary: str | None  # JSON text: the pass's per-mailbox summary
    budget_exhausted: int
