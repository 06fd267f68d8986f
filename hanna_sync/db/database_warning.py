"""A database with no mailbox at all, said loudly: a pass over it does nothing, which must never look like success."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanna_sync.config import other_databases
from hanna_sync.db.store import Store


@dataclass
class DatabaseWarning:
    """A database with no mailbox at all: a pass over it does nothing, which must never look like success."""

    database: str
    other_databases: list[str]  # known places that hold a database: likely the one meant

    @property
    def text(self) -> str:
        if not self.other_databases:
            return (f"no mailboxes configured in {self.database}: add one with 'hanna-sync add-mailbox'"
                    " (or set 'database' in the config to the database that has them)")
        return (f"no mailboxes configured in {self.database}, but another hanna-sync database exists:"
                f" {'; '.join(self.other_databases)}. Set 'database' in the config to the one you mean"
                " ('hanna-sync setup-guide config'), or add the mailboxes here with 'hanna-sync add-mailbox'")

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "other_databases": self.other_databases, "text": self.text}


DATABASE_WARNING = "database_warning"  # archive_state name: what the last pass found


def database_warning(store: Store, database: Path) -> DatabaseWarning | None:
    """The warning for a database with no mailbox configured (none for one whose mailboxes are paused).

    An archive whose mailboxes were all removed on purpose (letters kept, no other database around) is a
    state someone chose, not a misconfiguration: no warning, or `status` would page about it forever."""
    if store.db.execute("SELECT count(*) FROM mailboxes").fetchone()[0]:
        return None
    others = other_databases(database)
    if not others and store.db.execute("SELECT 1 FROM letters LIMIT 1").fetchone():
        return None
    return DatabaseWarning(str(database), others)


def record_database_warning(store: Store, warning: DatabaseWarning | None) -> None:
    """Kept for `status`: the timer's environment is the one that matters, not the shell's running status."""
    value = json.dumps({"database": warning.database, "other_databases": warning.other_databases},
                       ensure_ascii=False) if warning else None
    if store.state_value(DATABASE_WARNING) != value:
        store.set_state_value(DATABASE_WARNING, value)


def recorded_database_warning(store: Store) -> DatabaseWarning | None:
    value = store.state_value(DATABASE_WARNING)
    return DatabaseWarning(**json.loads(value)) if value else None
