"""Writing the archive: letters stored once with their original bytes, where each was seen, and purging
letters for good (with a tombstone, so no later pass archives them again)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from hanna_sync.db.connection import GRAPH_UIDVALIDITY, Connection, chunks, utcnow

if TYPE_CHECKING:
    from hanna_sync.mail.message import ParsedLetter


def participants_of(letter: ParsedLetter) -> list[str]:
    """Every address on the letter that may tie it to a customer or lead, lower-cased, each once."""
    groups = (letter.from_, letter.sender, letter.reply_to, letter.to, letter.cc, letter.bcc)
    return list(dict.fromkeys(a.email.lower() for group in groups for a in group if a.email))


def _identity_hash(identity: str) -> str:
    """A tombstone's name for a letter: tells whether it was purged, never what it was."""
    return hashlib.sha256(b"hanna-purged-v1\n" + identity.encode("utf-8", "surrogatepass")).hexdigest()


class ArchiveQueries(Connection):
    """Letters, their originals and locations; purging them."""

    def letter_ids(self, identities: list[str]) -> dict[str, int]:
        """Which of these letters are archived already (by identity), with their ids."""
        found: dict[str, int] = {}
        for chunk, marks in chunks(identities):
            for identity, letter_id in self.db.execute(
                f"SELECT identity, id FROM letters WHERE identity IN ({marks})", chunk
            ).fetchall():
                found[identity] = letter_id
        return found

    def archive_letter(
        self, identity: str, letter: ParsedLetter, raw: bytes, size: int, *, conversation_id: str | None = None
    ) -> tuple[int, bool]:
        """Store a letter once (by identity) with its original bytes; returns its id and whether it is new.
        `conversation_id`: Graph's, for letters read through Graph."""
        from hanna_sync.mail.message import (
            is_automatic,  # loaded by whoever parsed `letter`; not by `status`
        )

        existing = self.letter_ids([identity])
        if existing:
            return existing[identity], False
        first = letter.from_[0] if letter.from_ else None
        row = {
            "identity": identity,
            "message_id": letter.message_id,
            "date_utc": letter.date_utc.isoformat() if letter.date_utc else None,
            "from_addr": first.email.lower() if first else None,
            "from_name": first.name if first else None,
            "to_addrs": json.dumps([a.email.lower() for a in letter.to if a.email], ensure_ascii=False),
            "cc_addrs": json.dumps([a.email.lower() for a in letter.cc if a.email], ensure_ascii=False),
            "subject": letter.subject,
            "body_text": letter.body_text,
            "attachments": json.dumps([asdict(a) for a in letter.attachments], ensure_ascii=False),
            "in_reply_to": letter.in_reply_to,
            "references": json.dumps(letter.references),
            "size": size,
            "body_skipped": int(letter.body_skipped),
            "archived_at": utcnow(),
            "participants": json.dumps(participants_of(letter), ensure_ascii=False),
            "automatic": int(is_automatic(letter)),
            "conversation_id": conversation_id,
        }
        # Plain INSERTs: this runs once per archived letter, and sqlite-utils' generic insert (schema
        # look-ups, its own transaction) cost more than the write itself.
        columns = ", ".join(f'"{name}"' for name in row)
        cursor = self.db.execute(
            f"INSERT INTO letters ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        letter_id = cursor.lastrowid
        assert letter_id is not None  # an INSERT into a rowid table always sets it
        self.db.execute("INSERT INTO letter_sources (letter_id, raw) VALUES (?, ?)", [letter_id, raw])
        return letter_id, True

    def add_location(
        self, letter_id: int, mailbox_id: int, folder: str, uidvalidity: int, *, uid: int, gm_msgid: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO letter_locations"
            " (letter_id, mailbox_id, folder, uidvalidity, uid, seen_at, gm_msgid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [letter_id, mailbox_id, folder, uidvalidity, uid, utcnow(), gm_msgid],
        )

    def gmail_identities(self, mailbox_id: int, gm_msgids: list[str]) -> dict[str, str]:
        """X-GM-MSGID -> identity of the letters of this Gmail mailbox archived already from any folder
        (also one the letter has left since: it is archived all the same)."""
        found: dict[str, str] = {}
        for chunk, marks in chunks(gm_msgids):
            found.update(self.db.execute(
                f"SELECT p.gm_msgid, l.identity FROM letter_locations p JOIN letters l ON l.id = p.letter_id"
                f" WHERE p.mailbox_id = ? AND p.gm_msgid IN ({marks})", [mailbox_id, *chunk]
            ).fetchall())
        return found

    def graph_located(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> set[str]:
        """Which of these Graph messages already have a live location in this folder (so need nothing)."""
        found: set[str] = set()
        for chunk, marks in chunks(graph_ids):
            found.update(row[0] for row in self.db.execute(
                f"SELECT graph_id FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND gone_at IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk]
            ).fetchall())
        return found

    def letters_by_graph_id(self, mailbox_id: int, graph_ids: list[str]) -> dict[str, int]:
        """The archived letters these message ids have a live location of, in any folder of the mailbox (a
        Gmail message id names one message in all its labels): id -> letter id."""
        found: dict[str, int] = {}
        for chunk, marks in chunks(graph_ids):
            found.update((row[0], row[1]) for row in self.db.execute(
                f"SELECT graph_id, letter_id FROM letter_locations WHERE mailbox_id = ? AND gone_at IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, *chunk]
            ).fetchall())
        return found

    def add_graph_location(self, letter_id: int, mailbox_id: int, folder: str, graph_id: str) -> None:
        """Where Graph showed the letter; a message that comes back (moved back, restored) is live again."""
        cursor = self.db.execute(
            "UPDATE letter_locations SET gone_at = NULL WHERE mailbox_id = ? AND folder = ? AND graph_id = ?",
            [mailbox_id, folder, graph_id],
        )
        if cursor.rowcount:
            return
        self.db.execute(
            "INSERT INTO letter_locations (letter_id, mailbox_id, folder, uidvalidity, uid, graph_id, seen_at)"
            " SELECT ?, ?, ?, ?, COALESCE(MAX(uid), 0) + 1, ?, ? FROM letter_locations"
            " WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?",
            [letter_id, mailbox_id, folder, GRAPH_UIDVALIDITY, graph_id, utcnow(),
             mailbox_id, folder, GRAPH_UIDVALIDITY],
        )

    def purged(self, identities: list[str]) -> set[str]:
        """Which of these letters (by identity) were purged: a pass must not archive them again."""
        by_hash = {_identity_hash(identity): identity for identity in identities}
        hashes = list(by_hash)
        found: set[str] = set()
        for chunk, marks in chunks(hashes):
            found.update(by_hash[row[0]] for row in self.db.execute(
                f"SELECT identity_hash FROM purged_letters WHERE identity_hash IN ({marks})",
                chunk).fetchall())
        return found

    def letters_dated_before(self, cutoff: str, limit: int) -> list[int]:
        """Up to `limit` letters dated before `cutoff` (an ISO date; an undated letter by when it was archived)."""
        return [letter_id for (letter_id,) in self.db.execute(
            "SELECT id FROM letters WHERE coalesce(date_utc, archived_at) < ? ORDER BY coalesce(date_utc, archived_at)"
            " LIMIT ?", [cutoff, limit],
        ).fetchall()]

    def purge_letters(self, letter_ids: list[int], tombstone: bool) -> int:
        """Delete letters for good, in one transaction; returns how many there were.

        The letter row goes, and with it (ON DELETE CASCADE) its original bytes, links and locations, and
        (m006's triggers) its search index entries and thread ids. Three things make "for good" true:
        `PRAGMA secure_delete` overwrites the freed bytes with zeros instead of leaving them in free pages;
        the FTS5 index is merged ('optimize'), since a deleted letter's words otherwise stay in its
        segments until some later merge (FTS5's own secure-delete option needs SQLite 3.42, Debian 12 has
        3.40); and the write-ahead log is checkpointed and truncated, so no older page image stays there.
        With `tombstone`, a hash of each letter's identity is kept so that no later pass archives it again.
        """
        now = utcnow()
        with self.lock:
            secure = self.db.execute("PRAGMA secure_delete").fetchone()[0]
            self.db.execute("PRAGMA secure_delete = ON")
            try:
                with self.transaction():
                    deleted = 0
                    for chunk, marks in chunks(letter_ids):
                        if tombstone:
                            self.db.conn.executemany(
                                "INSERT OR IGNORE INTO purged_letters (identity_hash, purged_at) VALUES (?, ?)",
                                [(_identity_hash(identity), now) for (identity,) in self.db.execute(
                                    f"SELECT identity FROM letters WHERE id IN ({marks})", chunk).fetchall()],
                            )
                        deleted += self.db.execute(f"DELETE FROM letters WHERE id IN ({marks})", chunk).rowcount
                    if deleted:
                        self.db.execute("INSERT INTO letters_fts (letters_fts) VALUES ('optimize')")
            finally:
                self.db.execute(f"PRAGMA secure_delete = {int(secure)}")
            if deleted:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted
