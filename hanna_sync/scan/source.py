"""What a mail source offers a pass: the interface the IMAP and Graph sources implement, and the records
they hand to the one batch commit (archiving.py). A new kind of mailbox (the Gmail API) is one new module
with a class of this shape, and a line in `open_source`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from hanna_sync.linking.backfill import LetterKeys
from hanna_sync.linking.match import Link
from hanna_sync.mail.message import ParsedLetter
from hanna_sync.models import FolderState

# A letter's place in its folder, as the source names it: an IMAP UID (under the folder's UIDVALIDITY),
# or Graph's immutable id. Locations and the skip index are kept by it.
K = TypeVar("K", int, str)


@dataclass
class Candidate(Generic[K]):
    """A new letter that concerns the directory, waiting for its original."""

    key: K
    subject: str | None
    links: list[Link]
    identity: str | None  # None until the original is there, for letters without a Message-ID
    size: int = 0  # as the server gave it before the download (IMAP's RFC822.SIZE); 0 when it gives none
    conversation_id: str | None = None  # Outlook's, kept with the letter for thread links


@dataclass
class Original:
    """A letter's original bytes, parsed (headers only when over the size limit)."""

    parsed: ParsedLetter
    raw: bytes
    size: int  # of the whole letter, also when `raw` holds its header only


class FolderSource(Protocol[K]):
    """One connected mailbox. `scan_mailbox` calls `scan` for each chosen folder; the source finds the
    folder's new letters its own way (IMAP: STATUS, UIDs and header fields; Graph: delta rounds), matches
    them, and commits each batch with `archiving.prepare` and `archiving.commit`, which call back for
    the transport-specific parts below. Every write is in a transaction: a kill loses nothing."""

    # Whether a matched letter that is then refused (purged, older than retention, sent by a program) goes
    # into the skip index. IMAP's folder state already says which UIDs were looked at; Graph's delta
    # reports changed messages again, so only the skip index keeps it from being downloaded again.
    records_refused: bool

    def scan(self, folder: str) -> None: ...

    def originals(self, candidates: list[Candidate[K]]) -> dict[K, Original]:
        """The originals of these letters; those gone from the server meanwhile are left out."""
        ...

    def locate(self, letter_id: int, state: FolderState, key: K) -> None:
        """Record where the letter is (inside the batch's transaction)."""
        ...

    def record_skipped(self, state: FolderState, keys: dict[K, LetterKeys]) -> None:
        """Put letters that concern nobody into the skip index (inside the batch's transaction)."""
        ...
