"""The records every floor passes around: a mailbox, a folder's scan state, a CRM customer or lead.

Plain dataclasses that import nothing of hanna-sync's, so that naming a `Mailbox` never drags in the
database or a transport.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GOOGLE_KINDS = ("google-scan", "google-client")  # the kinds that sign in with Google: Gmail API, IMAP/SMTP


@dataclass
class Mailbox:
    """A staff member's mailbox and how to reach it. The password is not here: see credentials."""

    user: str
    email: str
    provider: str
    kind: str = "imap"
    username: str | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: str | None = None
    imap_charset: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str | None = None
    smtp_charset: str | None = None
    folders: list[str] = field(default_factory=list)
    folders_chosen: bool | None = False  # given with --folder, or found by default (None: saved before recorded)
    scan_active: bool = True
    sync_customers: bool = True
    sync_leads: bool = True
    main: bool = False
    ca_file: str | None = None
    allow_plaintext: bool = False  # security none may send the password unencrypted (never by default)
    secret_ref: str = ""
    id: int | None = None
    # Outcome of the last passes, written by the scan only (never by add/edit):
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    failure_kind: str | None = None  # "auth", "reauth", "busy", "connect", "folder", "secrets", "other"
    failing_since: str | None = None  # first failure of the current streak
    consecutive_failures: int = 0
    retry_after: str | None = None  # auth back-off: not tried again before this time

    @property
    def login_name(self) -> str:
        """What the server's LOGIN gets: the username when it differs from the email."""
        return self.username or self.email

    def public(self) -> dict[str, Any]:
        """The fields shown to people and scripts (`list-mailboxes --json`): no secret reference."""
        data = asdict(self)
        data.pop("secret_ref")
        return {"id": data.pop("id"), **data}


@dataclass(frozen=True)
class Contact:
    email: str
    name: str | None = None


@dataclass
class Entity:
    """A Customer or a Lead from the CRM: what letters are linked to."""

    id: str
    name: str | None = None
    email: str | None = None
    domain: str | None = None  # customers only
    contacts: list[Contact] = field(default_factory=list)


ENTITY_TYPES = ("customer", "lead")


@dataclass
class FolderState:
    """How far a folder has been scanned. Advanced in the same transaction as the letters it covers."""

    mailbox_id: int
    folder: str
    uidvalidity: int | None = None
    last_uid: int = 0  # every UID up to this one has been looked at
    highestmodseq: int | None = None
    uidnext: int | None = None  # UIDNEXT when the folder was last scanned to the end
    messages: int | None = None
    checked_at: str | None = None
    server_uidnext: int | None = None  # what the last STATUS said, finished or not: backfill progress
    server_messages: int | None = None
    seen_uids: str = ""  # UidSet of every UID looked at, for the gap check
    skipped: int = 0  # letters that concerned nobody, counted over all passes
    gap_checked_at: str | None = None
    gap_found: int = 0  # letters the last gap check found never looked at (and then read)
    # Office 365 folders scanned through Graph, and Gmail labels through the Gmail API (in brackets)
    # (uidvalidity, UIDs and the gap check are IMAP's only):
    graph_folder_id: str | None = None  # the folder's id when its delta round began: a new id means a new folder
    # (the label's id)
    delta_link: str | None = None  # the deltaLink of the last complete round: where the next round starts
    # (the history id the next history.list starts from)
    next_link: str | None = None  # a round under way: the nextLink to go on from (the next pass, after a kill)
    # (a listing under way: the pageToken to go on from)
    graph_returned: str | None = None  # a round from the start under way: UidSet of the locations it returned
    # (the same, for a listing)


@dataclass(frozen=True)
class Backup:
    """What `Store.backup` wrote: for the one line `hanna-sync backup` prints."""

    path: Path
    size: int  # bytes
    letters: int
    seconds: float


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the database's migration record, for `hanna-sync doctor`."""

    name: str
    applied_at: str
    version: str | None  # the hanna-sync that applied it; None: applied before versions were recorded


def merged_folders(names: list[str]) -> tuple[list[str], list[str]]:
    """Each folder once, and the notes saying which were merged: INBOX is INBOX in any case (RFC 3501),
    other names are compared exactly, as servers compare them."""
    merged: list[str] = []
    notes = []
    for name in names:
        key = "INBOX" if name.upper() == "INBOX" else name
        if key in merged:
            same = " (INBOX is the same folder in any case)" if key == "INBOX" and name != key else ""
            notes.append(f"folder {name!r} was given twice{same}: it is scanned once, as {key!r}")
        else:
            merged.append(key)
    return merged, notes
