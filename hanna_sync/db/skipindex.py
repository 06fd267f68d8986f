"""The skip index's storage: where letters that concerned nobody are, the keyed hashes they are found by,
which of them a backfill wants looked at again, and the directory keys they were last checked against.

What the keys mean is linking/backfill.py's business; this file only keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hanna_sync.db.connection import Connection, chunks, utcnow

if TYPE_CHECKING:
    from hanna_sync.linking.backfill import LetterKeys


class SkipIndexQueries(Connection):
    """Skipped letters, their keys, backfill's wanted marks, and small named values (`archive_state`)."""

    def record_skipped(self, mailbox_id: int, folder: str, uidvalidity: int, letters: dict[int, LetterKeys]) -> None:
        """Where letters that concerned nobody are (uid -> their keyed hashes), for a later backfill.

        A letter recorded again (looked at once more by a backfill, still concerning nobody) is no
        longer wanted; its keys are the same. Three statements per batch, whatever its size: this
        runs for nine letters in ten.
        """
        if not letters:
            return
        self.db.conn.executemany(
            "INSERT INTO skipped_letters (mailbox_id, folder, uidvalidity, uid, own_key) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (mailbox_id, folder, uidvalidity, uid) WHERE uid IS NOT NULL"
            " DO UPDATE SET wanted_since = NULL",
            [(mailbox_id, folder, uidvalidity, uid, entry.own) for uid, entry in letters.items()],
        )
        ids = dict(self.db.execute(
            "SELECT uid, id FROM skipped_letters WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
            " AND uid BETWEEN ? AND ?", [mailbox_id, folder, uidvalidity, min(letters), max(letters)],
        ).fetchall())
        self.db.conn.executemany(
            "INSERT OR IGNORE INTO skipped_keys (key, skipped_id) VALUES (?, ?)",
            sorted((key, ids[uid]) for uid, entry in letters.items() for key in entry.keys),
        )

    def record_skipped_graph(self, mailbox_id: int, folder: str, letters: dict[str, LetterKeys]) -> None:
        """record_skipped for a Graph folder: letters named by their immutable id (graph_id -> keys)."""
        if not letters:
            return
        self.db.conn.executemany(
            "INSERT INTO skipped_letters (mailbox_id, folder, uidvalidity, graph_id, own_key) VALUES (?, ?, 0, ?, ?)"
            " ON CONFLICT (mailbox_id, folder, graph_id) WHERE graph_id IS NOT NULL DO UPDATE SET wanted_since = NULL",
            [(mailbox_id, folder, graph_id, entry.own) for graph_id, entry in letters.items()],
        )
        ids: dict[str, int] = {}
        names = list(letters)
        for chunk, marks in chunks(names):
            ids.update(self.db.execute(
                "SELECT graph_id, id FROM skipped_letters WHERE mailbox_id = ? AND folder = ?"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk],
            ).fetchall())
        self.db.conn.executemany(
            "INSERT OR IGNORE INTO skipped_keys (key, skipped_id) VALUES (?, ?)",
            sorted((key, ids[graph_id]) for graph_id, entry in letters.items() for key in entry.keys),
        )

    def forget_skipped_graph(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> None:
        """Skipped Graph letters archived now, or gone from the folder."""
        for chunk, marks in chunks(graph_ids):
            self.db.execute(
                "DELETE FROM skipped_letters WHERE mailbox_id = ? AND folder = ?"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk],
            )

    def graph_skipped(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> set[str]:
        """Which of these Graph messages were skipped here before and are not wanted: nothing to do."""
        found: set[str] = set()
        for chunk, marks in chunks(graph_ids):
            found.update(row[0] for row in self.db.execute(
                "SELECT graph_id FROM skipped_letters WHERE mailbox_id = ? AND folder = ? AND wanted_since IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk],
            ).fetchall())
        return found

    def wanted_graph(self, mailbox_id: int) -> dict[str, list[str]]:
        """Skipped Graph letters a backfill wants looked at again: folder -> immutable ids."""
        wanted: dict[str, list[str]] = {}
        for folder, graph_id in self.db.execute(
            "SELECT folder, graph_id FROM skipped_letters WHERE mailbox_id = ? AND wanted_since IS NOT NULL"
            " AND graph_id IS NOT NULL ORDER BY folder, id", [mailbox_id],
        ).fetchall():
            wanted.setdefault(folder, []).append(graph_id)
        return wanted

    def forget_skipped(self, mailbox_id: int, folder: str, uidvalidity: int, uids: list[int]) -> None:
        """Skipped letters that are archived now, or no longer on the server. Their keys are left to
        `drop_orphan_keys`: deleting them here would need a second index on a table written per letter."""
        for chunk, marks in chunks(uids):
            self.db.execute(
                "DELETE FROM skipped_letters WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                f" AND uid IN ({marks})", [mailbox_id, folder, uidvalidity, *chunk],
            )

    def forget_skipped_folder(self, mailbox_id: int, folder: str, keep_uidvalidity: int | None = None) -> None:
        """Skipped letters of a folder whose UIDVALIDITY changed: their UIDs no longer name anything."""
        self.db.execute(
            "DELETE FROM skipped_letters WHERE mailbox_id = ? AND folder = ? AND uidvalidity IS NOT ?",
            [mailbox_id, folder, keep_uidvalidity],
        )

    def prune_skipped(self, mailbox_id: int, folder: str, uidvalidity: int, present: list[int], *, up_to: int) -> int:
        """Skipped letters (UID at most `up_to`) the server no longer has, found by the gap check."""
        on_server = set(present)
        gone = [uid for (uid,) in self.db.execute(
            "SELECT uid FROM skipped_letters WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ? AND uid <= ?",
            [mailbox_id, folder, uidvalidity, up_to],
        ).fetchall() if uid not in on_server]
        self.forget_skipped(mailbox_id, folder, uidvalidity, gone)
        return len(gone)

    def wanted_skipped(self, mailbox_id: int) -> dict[str, dict[int, list[int]]]:
        """Skipped letters a backfill wants looked at again: folder -> UIDVALIDITY -> UIDs."""
        wanted: dict[str, dict[int, list[int]]] = {}
        for folder, uidvalidity, uid in self.db.execute(
            "SELECT folder, uidvalidity, uid FROM skipped_letters WHERE mailbox_id = ? AND wanted_since IS NOT NULL"
            " AND uid IS NOT NULL ORDER BY folder, uid", [mailbox_id],
        ).fetchall():
            wanted.setdefault(folder, {}).setdefault(uidvalidity, []).append(uid)
        return wanted

    def wanted_count(self, mailbox_id: int, folders: list[str]) -> int:
        """Skipped letters in these folders of a mailbox that the next pass looks at again."""
        marks = ",".join("?" * len(folders)) or "NULL"
        return int(self.db.execute(
            "SELECT count(*) FROM skipped_letters WHERE mailbox_id = ? AND wanted_since IS NOT NULL"
            f" AND folder IN ({marks})", [mailbox_id, *folders],
        ).fetchone()[0])

    def mark_wanted(self, keys: set[int]) -> int:
        """Skipped letters with any of these keys are looked at again by the next pass, and so are the
        skipped letters answering those, down the whole chain of replies; returns how many were marked."""
        marked = 0
        now = utcnow()
        frontier = sorted(keys)
        while frontier:
            answered: set[int] = set()
            for chunk, marks in chunks(frontier):
                rows = self.db.execute(
                    "UPDATE skipped_letters SET wanted_since = ? WHERE wanted_since IS NULL AND id IN"
                    f" (SELECT skipped_id FROM skipped_keys WHERE key IN ({marks}))"
                    " RETURNING own_key", [now, *chunk],
                ).fetchall()
                marked += len(rows)
                answered.update(own for (own,) in rows if own is not None)
            frontier = sorted(answered)  # letters marked once are not marked again: the walk ends
        return marked

    def want_all_skipped(self) -> None:
        """Every skipped letter looked at again (the skip index's keys can no longer be trusted)."""
        self.db.execute("UPDATE skipped_letters SET wanted_since = ? WHERE wanted_since IS NULL", [utcnow()])
        self.db.execute("DELETE FROM skipped_keys")

    def skipped_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM skipped_letters").fetchone()[0])

    def drop_orphan_keys(self) -> int:
        """Keys of skipped letters since archived or gone (left behind by forget_skipped)."""
        return self.db.execute(
            "DELETE FROM skipped_keys WHERE skipped_id NOT IN (SELECT id FROM skipped_letters)"
        ).rowcount

    def backfill_keys(self) -> dict[int, int] | None:
        """The directory's keys (key -> what it meant) as skipped letters were last checked against;
        None before the first time."""
        if self.state_value("backfill_keys_saved") is None:
            return None
        return dict(self.db.execute("SELECT key, meaning FROM backfill_keys").fetchall())

    def replace_backfill_keys(self, keys: dict[int, int]) -> None:
        self.db.execute("DELETE FROM backfill_keys")
        self.db.conn.executemany("INSERT INTO backfill_keys (key, meaning) VALUES (?, ?)", list(keys.items()))
        self.set_state_value("backfill_keys_saved", utcnow())

    def state_value(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM archive_state WHERE name = ?", [name]).fetchone()
        return row[0] if row else None

    def set_state_value(self, name: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM archive_state WHERE name = ?", [name])
        else:
            self.db.execute("INSERT OR REPLACE INTO archive_state (name, value) VALUES (?, ?)", [name, value])
