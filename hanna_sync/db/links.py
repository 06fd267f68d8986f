"""Links between letters and customers or leads: added by a pass, re-judged by relink, inherited by replies."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hanna_sync.db.connection import Connection, chunks, utcnow

if TYPE_CHECKING:
    from hanna_sync.linking.match import Link


class LinkQueries(Connection):
    """Links, and what relinking and thread backfill read."""

    def add_links(self, letter_id: int, links: list[Link]) -> int:
        """Links a letter does not have yet (a link made earlier, e.g. from another mailbox, stays), except
        those taken off it by hand (`unlinks`)."""
        added = 0
        for link in links:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO links (letter_id, entity_type, entity_id, rule, address) SELECT ?, ?, ?, ?, ?"
                " WHERE NOT EXISTS (SELECT 1 FROM unlinks WHERE letter_id = ? AND entity_type = ? AND entity_id = ?)",
                [letter_id, link.entity_type, link.entity_id, link.rule, link.address,
                 letter_id, link.entity_type, link.entity_id],
            )
            added += cursor.rowcount
        return added

    def thread_links(self, thread_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """The entities the archived letters these ids name are linked to: what a reply inherits.

        A Message-ID names the letter that has it; "conversation:<id>" names every letter of that
        Outlook conversation (letters read through Graph).
        """
        found: dict[str, list[tuple[str, str]]] = {}
        unique = list(dict.fromkeys(thread_ids))
        conversations = [i for i in unique if i.startswith("conversation:")]
        message_ids = [i for i in unique if not i.startswith("conversation:")]
        for ids, sql in (
            (message_ids, "SELECT DISTINCT l.message_id, k.entity_type, k.entity_id FROM letters l"
                          " JOIN links k ON k.letter_id = l.id WHERE l.message_id IN ({})"),
            (conversations, "SELECT DISTINCT t.message_id, k.entity_type, k.entity_id FROM letter_thread_ids t"
                            " JOIN links k ON k.letter_id = t.letter_id WHERE t.message_id IN ({})"),
        ):
            for chunk, marks in chunks(ids):
                for thread_id, entity_type, entity_id in self.db.execute(
                    sql.format(marks), chunk
                ).fetchall():
                    found.setdefault(thread_id, []).append((entity_type, entity_id))
        return found

    def linked_message_ids(self, after_letter_id: int) -> tuple[list[str], int]:
        """The thread ids (Message-IDs, and "conversation:<id>" for Graph letters) of linked letters
        archived after a letter id, and the highest letter id: what thread backfill has not looked for yet."""
        top = self.db.execute("SELECT coalesce(max(id), 0) FROM letters").fetchone()[0]
        ids: list[str] = []
        for message_id, conversation_id in self.db.execute(
            "SELECT l.message_id, l.conversation_id FROM letters l WHERE l.id > ? AND l.id <= ?"
            " AND EXISTS (SELECT 1 FROM links k WHERE k.letter_id = l.id)", [after_letter_id, top],
        ).fetchall():
            if message_id:
                ids.append(message_id)
            if conversation_id:
                ids.append(f"conversation:{conversation_id}")
        return ids, int(top)

    def relink_rows(self) -> list[dict[str, Any]]:
        """Every archived letter with what relinking needs, oldest first (parents before their replies).

        `customers`/`leads`: whether any mailbox the letter was seen in syncs them (both when it was
        seen in none left, e.g. its mailbox was removed).
        """
        rows = list(self.db.query(
            """
            SELECT l.id, l.message_id, l.in_reply_to, l."references", l.conversation_id, l.participants, l.automatic,
                coalesce(max(m.sync_customers), 1) AS customers, coalesce(max(m.sync_leads), 1) AS leads
            FROM letters l
            LEFT JOIN letter_locations p ON p.letter_id = l.id
            LEFT JOIN mailboxes m ON m.id = p.mailbox_id
            GROUP BY l.id ORDER BY l.date_utc, l.id
            """
        ))
        for row in rows:
            row["participants"] = json.loads(row["participants"])
            row["references"] = json.loads(row["references"])
        return rows

    def all_links(self) -> dict[int, dict[tuple[str, str], tuple[str, str]]]:
        """letter id -> (entity type, entity id) -> (rule, address), for every link."""
        links: dict[int, dict[tuple[str, str], tuple[str, str]]] = {}
        for letter_id, entity_type, entity_id, rule, address in self.db.execute(
            "SELECT letter_id, entity_type, entity_id, rule, address FROM links"
        ).fetchall():
            links.setdefault(letter_id, {})[(entity_type, entity_id)] = (rule, address)
        return links

    def remove_links(self, letter_id: int, entities: list[tuple[str, str]]) -> None:
        for entity_type, entity_id in entities:
            self.db.execute(
                "DELETE FROM links WHERE letter_id = ? AND entity_type = ? AND entity_id = ?",
                [letter_id, entity_type, entity_id],
            )

    def set_links(self, letter_id: int, links: list[Link]) -> None:
        """These links, replacing the letter's links to the same entities (a rule that changed)."""
        for link in links:
            self.db.execute(
                "INSERT OR REPLACE INTO links (letter_id, entity_type, entity_id, rule, address)"
                " VALUES (?, ?, ?, ?, ?)",
                [letter_id, link.entity_type, link.entity_id, link.rule, link.address],
            )

    # -- links made and taken off by hand -------------------------------------------------------------

    def link_overrides(self) -> tuple[dict[int, list[tuple[str, str]]], dict[int, set[tuple[str, str]]]]:
        """What relink keeps whatever the rules say: per letter, the entities linked by hand and those
        unlinked by hand. Both outlive their entity: a manual link is put back when its id returns."""
        manual: dict[int, list[tuple[str, str]]] = {}
        for letter_id, entity_type, entity_id in self.db.execute(
            "SELECT letter_id, entity_type, entity_id FROM manual_links ORDER BY letter_id, entity_type, entity_id"
        ).fetchall():
            manual.setdefault(letter_id, []).append((entity_type, entity_id))
        unlinked: dict[int, set[tuple[str, str]]] = {}
        for letter_id, entity_type, entity_id in self.db.execute(
            "SELECT letter_id, entity_type, entity_id FROM unlinks"
        ).fetchall():
            unlinked.setdefault(letter_id, set()).add((entity_type, entity_id))
        return manual, unlinked

    def has_unlinks(self) -> bool:
        return self.db.execute("SELECT EXISTS (SELECT 1 FROM unlinks)").fetchone()[0] == 1

    def unlinked_by_identity(self, identities: list[str]) -> dict[str, set[tuple[str, str]]]:
        """identity -> the entities the archived letter with that identity was unlinked from by hand:
        what a pass must neither link it to again nor pass on to its replies in the same batch."""
        found: dict[str, set[tuple[str, str]]] = {}
        for chunk, marks in chunks(list(dict.fromkeys(identities))):
            for identity, entity_type, entity_id in self.db.execute(
                "SELECT l.identity, u.entity_type, u.entity_id FROM unlinks u JOIN letters l ON l.id = u.letter_id"
                f" WHERE l.identity IN ({marks})", chunk,
            ).fetchall():
                found.setdefault(identity, set()).add((entity_type, entity_id))
        return found

    def link_between(self, letter_id: int, entity_type: str, entity_id: str) -> tuple[str, str] | None:
        """The (rule, address) of a letter's link to an entity, or None."""
        row = self.db.execute(
            "SELECT rule, address FROM links WHERE letter_id = ? AND entity_type = ? AND entity_id = ?",
            [letter_id, entity_type, entity_id],
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def unlink_between(self, letter_id: int, entity_type: str, entity_id: str) -> str | None:
        """The rule of the link taken off a letter by hand, or None when there is no such unlink."""
        row = self.db.execute(
            "SELECT rule FROM unlinks WHERE letter_id = ? AND entity_type = ? AND entity_id = ?",
            [letter_id, entity_type, entity_id],
        ).fetchone()
        return None if row is None else str(row[0])

    def set_link_by_hand(self, letter_id: int, entity_type: str, entity_id: str, *, linked: bool,
                         rule: str | None = None) -> None:
        """Linked: the letter's link to the entity becomes a manual one, and any unlink of it goes.
        Not linked: its link goes; with `rule` (the link's, when rules made it), the unlink is remembered."""
        key = [letter_id, entity_type, entity_id]
        where = "WHERE letter_id = ? AND entity_type = ? AND entity_id = ?"
        self.db.execute(f"DELETE FROM unlinks {where}", key)
        self.db.execute(f"DELETE FROM manual_links {where}", key)
        if linked:
            self.db.execute("INSERT OR REPLACE INTO links (letter_id, entity_type, entity_id, rule, address)"
                            " VALUES (?, ?, ?, 'manual', '-')", key)
            self.db.execute("INSERT INTO manual_links (letter_id, entity_type, entity_id, linked_at)"
                            " VALUES (?, ?, ?, ?)", [*key, utcnow()])
            return
        self.db.execute(f"DELETE FROM links {where}", key)
        if rule is not None:
            self.db.execute("INSERT INTO unlinks (letter_id, entity_type, entity_id, rule, unlinked_at)"
                            " VALUES (?, ?, ?, ?, ?)", [*key, rule, utcnow()])

    def decisions_by_hand(self, entity_type: str, entity_ids: list[str]) -> int:
        """How many links made or taken off by hand name these entities: what is kept for when they return."""
        count = 0
        for table in ("manual_links", "unlinks"):
            for chunk, marks in chunks(entity_ids):
                count += self.db.execute(f"SELECT count(*) FROM {table} WHERE entity_type = ?"
                                         f" AND entity_id IN ({marks})", [entity_type, *chunk]).fetchone()[0]
        return int(count)

    def move_decisions_by_hand(self, conversions: list[tuple[str, str]]) -> int:
        """A lead converted to a customer (lead id, customer id): its links made and taken off by hand
        become the customer's, unless the customer has its own decision on that letter. Returns how many
        moved. In the caller's transaction."""
        moved = 0
        for lead_id, customer_id in conversions:
            for table in ("manual_links", "unlinks"):
                taken = {(r[0]) for r in self.db.execute(
                    "SELECT letter_id FROM manual_links WHERE entity_type = 'customer' AND entity_id = ?"
                    " UNION SELECT letter_id FROM unlinks WHERE entity_type = 'customer' AND entity_id = ?",
                    [customer_id, customer_id]).fetchall()}
                rows = self.db.execute(f"SELECT letter_id FROM {table} WHERE entity_type = 'lead' AND entity_id = ?",
                                       [lead_id]).fetchall()
                for (letter_id,) in rows:
                    if letter_id not in taken:
                        moved += self.db.execute(
                            f"UPDATE {table} SET entity_type = 'customer', entity_id = ? WHERE letter_id = ?"
                            " AND entity_type = 'lead' AND entity_id = ?", [customer_id, letter_id, lead_id]).rowcount
                self.db.execute(f"DELETE FROM {table} WHERE entity_type = 'lead' AND entity_id = ?", [lead_id])
        return moved
