"""Scan state: each folder's state, where letters stopped being (expunged, gone), each mailbox's last
outcome, and the record of each pass."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, cast

from hanna_sync.db.connection import GRAPH_UIDVALIDITY, Connection, chunks, utcnow
from hanna_sync.db.rows import RunRow
from hanna_sync.models import FolderState


class ScanStateQueries(Connection):
    """Folder states, locations gone, mailbox outcomes and pass records."""

    def folder_state(self, mailbox_id: int, folder: str) -> FolderState:
        rows = list(self.db.query(
            "SELECT * FROM folder_states WHERE mailbox_id = ? AND folder = ?", [mailbox_id, folder]
        ))
        return FolderState(**rows[0]) if rows else FolderState(mailbox_id, folder)

    def folder_states(self, mailbox_id: int) -> list[FolderState]:
        return [FolderState(**row) for row in self.db.query(
            "SELECT * FROM folder_states WHERE mailbox_id = ? ORDER BY folder", [mailbox_id]
        )]

    def save_folder_state(self, state: FolderState) -> None:
        """Upsert the state's columns (only those: columns it does not know of keep their values)."""
        state.checked_at = utcnow()
        row = asdict(state)
        names = ", ".join(f'"{n}"' for n in row)
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in row if n not in ("mailbox_id", "folder"))
        self.db.execute(
            f"INSERT INTO folder_states ({names}) VALUES ({', '.join('?' * len(row))})"
            f" ON CONFLICT (mailbox_id, folder) DO UPDATE SET {updates}",
            list(row.values()),
        )

    def retire_folder(self, mailbox_id: int, folder: str) -> int | None:
        """A folder that is no longer scanned: gone from the server (LIST no longer returns it: renamed
        or deleted) or from the mailbox's folder list. Its live locations are marked gone (the letters
        stay in the archive), its state row and its skipped letters go (their keys are left to
        `drop_orphan_keys`). Chosen again later, it is read from the start. Returns how many locations were
        marked, None when the folder had no state row (retired before, or never scanned)."""
        marked = self.db.execute(
            "UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND gone_at IS NULL",
            [utcnow(), mailbox_id, folder],
        ).rowcount
        self.db.execute("DELETE FROM skipped_letters WHERE mailbox_id = ? AND folder = ?", [mailbox_id, folder])
        had_state = self.db.execute(
            "DELETE FROM folder_states WHERE mailbox_id = ? AND folder = ?", [mailbox_id, folder]).rowcount
        return marked if had_state or marked else None

    def mark_locations_gone(self, mailbox_id: int, folder: str, uidvalidity: int) -> int:
        """Locations under a UIDVALIDITY the server has dropped: their UIDs no longer mean anything."""
        cursor = self.db.execute(
            "UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
            " AND gone_at IS NULL",
            [utcnow(), mailbox_id, folder, uidvalidity],
        )
        return cursor.rowcount

    def mark_expunged(self, mailbox_id: int, folder: str, uidvalidity: int, present: list[int], *, up_to: int) -> int:
        """Locations whose UID (at most `up_to`) the server no longer has: the letter was expunged there.

        The letter stays in the archive; only this place is marked gone. Returns how many were marked.
        """
        on_server = set(present)
        gone = [uid for (uid,) in self.db.execute(
            "SELECT uid FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
            " AND uid <= ? AND gone_at IS NULL", [mailbox_id, folder, uidvalidity, up_to],
        ).fetchall() if uid not in on_server]
        now = utcnow()
        for chunk, marks in chunks(gone):
            self.db.execute(
                f"UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                f" AND uid IN ({marks})", [now, mailbox_id, folder, uidvalidity, *chunk],
            )
        return len(gone)

    def mark_graph_locations_gone(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> int:
        """Messages Graph reports @removed from the folder (deleted or moved away): the letters stay."""
        gone = 0
        now = utcnow()
        for graph_id in graph_ids:
            gone += self.db.execute(
                "UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND graph_id = ?"
                " AND gone_at IS NULL", [now, mailbox_id, folder, graph_id],
            ).rowcount
        return gone

    def graph_location_uids(self, mailbox_id: int, folder: str, graph_ids: list[str] | None = None) -> list[int]:
        """The uids hanna-sync gave the live Graph locations in this folder: of these messages, or (None) of all."""
        if graph_ids is None:
            return [row[0] for row in self.db.execute(
                "SELECT uid FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                " AND gone_at IS NULL", [mailbox_id, folder, GRAPH_UIDVALIDITY],
            ).fetchall()]
        uids: list[int] = []
        for chunk, marks in chunks(graph_ids):
            uids.extend(row[0] for row in self.db.execute(
                f"SELECT uid FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND gone_at IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk]
            ).fetchall())
        return uids

    def mark_graph_uids_gone(self, mailbox_id: int, folder: str, uids: list[int]) -> None:
        """Graph locations found gone without an @removed (a delta round read from the start did not return them)."""
        now = utcnow()
        for chunk, marks in chunks(uids):
            self.db.execute(
                f"UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                f" AND uid IN ({marks}) AND gone_at IS NULL",
                [now, mailbox_id, folder, GRAPH_UIDVALIDITY, *chunk],
            )

    def record_outcome(
        self, mailbox_id: int, error: str | None, kind: str | None = None, retry_after: str | None = None
    ) -> None:
        """The mailbox's last pass: success clears the failure streak; a failure extends it. A busy server says
        nothing of a password: a mailbox on auth or reauth back-off keeps its record and its streak."""
        now = utcnow()
        if error is None:
            self.db.execute(
                "UPDATE mailboxes SET last_success_at = ?, last_error = NULL, last_error_at = NULL,"
                " failure_kind = NULL, failing_since = NULL, consecutive_failures = 0, retry_after = NULL"
                " WHERE id = ?",
                [now, mailbox_id],
            )
        else:
            self.db.execute(
                "UPDATE mailboxes SET last_error = ?, last_error_at = ?, failure_kind = ?,"
                " failing_since = COALESCE(failing_since, ?), consecutive_failures = consecutive_failures + 1,"
                " retry_after = ? WHERE id = ?"
                " AND NOT (COALESCE(?, '') = 'busy' AND COALESCE(failure_kind, '') IN ('auth', 'reauth'))",
                [error, now, kind, now, retry_after, mailbox_id, kind],
            )

    def clear_backoff(self, mailbox_id: int) -> None:
        """A new password deserves a try at the next pass."""
        self.db.execute("UPDATE mailboxes SET retry_after = NULL WHERE id = ?", [mailbox_id])

    def clear_reauth(self, mailbox_id: int) -> None:
        """A fresh sign-in: the mailbox is no longer waiting for one, and the next pass tries it."""
        self.db.execute(
            "UPDATE mailboxes SET failure_kind = NULL, last_error = NULL, last_error_at = NULL, failing_since = NULL,"
            " consecutive_failures = 0, retry_after = NULL WHERE id = ? AND failure_kind IN ('reauth', 'auth')",
            [mailbox_id],
        )

    def mailbox_counts(self, mailbox_id: int, since: str) -> dict[str, int]:
        """Letters seen in this mailbox that are archived (all of them are linked): in total and since a time."""
        total, recent = self.db.execute(
            "SELECT count(DISTINCT letter_id), count(DISTINCT CASE WHEN seen_at >= ? THEN letter_id END)"
            " FROM letter_locations WHERE mailbox_id = ?",
            [since, mailbox_id],
        ).fetchone()
        return {"total": total, "since": recent}

    def start_run(self) -> int:
        return self.insert_row("scan_runs", {"started_at": utcnow()})

    def finish_run(self, run_id: int, outcome: str, summary: list[dict[str, Any]], budget_exhausted: bool) -> None:
        self.db.table("scan_runs").update(run_id, {
            "finished_at": utcnow(), "outcome": outcome, "summary": json.dumps(summary, ensure_ascii=False),
            "budget_exhausted": int(budget_exhausted),
        })

    def last_run(self) -> RunRow | None:
        rows = list(self.db.query("SELECT * FROM scan_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"))
        return cast(RunRow, rows[0]) if rows else None
