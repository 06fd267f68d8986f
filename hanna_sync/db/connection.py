"""The store's one SQLite connection as every query group sees it, and the small helpers they share.

The query groups (directory, scan state, skip index, archive, reading) are mixins of `Store`: each
works on the same connection, under the same writer lock, inside the same transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

_T = TypeVar("_T")

GRAPH_UIDVALIDITY = 0  # marks a location found through Graph: IMAP's UIDVALIDITY is never 0


def chunks(values: Sequence[_T]) -> Iterator[tuple[list[_T], str]]:
    """`values` in slices small enough for one `IN (...)` (far below SQLite's limit on parameters),
    each with its placeholders."""
    for start in range(0, len(values), 500):
        chunk = list(values[start : start + 500])
        yield chunk, ",".join("?" * len(chunk))


def utcnow() -> str:
    """Timestamps are stored as ISO 8601 UTC text: sortable, and readable in any SQLite tool."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Connection:
    """What every query group works on; `Store` opens it."""

    path: Path
    db: sqlite_utils.Database
    lock: threading.RLock

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (nests as a savepoint).

        Scanner threads share this connection; the lock makes each transaction theirs alone, so the
        database has one writer at a time whatever the scan concurrency.

        BEGIN IMMEDIATE, not SQLite's default deferred BEGIN: a deferred transaction that reads first and
        writes later fails at once with "database is locked" when another process (an import, the CRM)
        committed in between, busy timeout or not. IMMEDIATE waits for the write lock up front, for up to
        the busy timeout, and then cannot be overtaken.
        """
        with self.lock:
            if self.db.conn.in_transaction:
                with self.db.atomic():  # nested: a savepoint
                    yield
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.conn.rollback()
                raise
            try:
                self.db.execute("COMMIT")
            except BaseException:
                self.db.conn.rollback()
                raise

    def insert_row(self, table: str, row: dict[str, Any]) -> int:
        """Insert one row; its new id."""
        last_pk = self.db.table(table).insert(row).last_pk
        assert last_pk is not None  # every table inserted into this way has an INTEGER PRIMARY KEY
        return int(last_pk)
