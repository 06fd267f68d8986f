"""The directory's rows: users, their mailboxes, and the CRM's customers and leads with their contacts."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from hanna_sync.db.connection import Connection, chunks, utcnow
from hanna_sync.errors import InputError, NotFound
from hanna_sync.models import Contact, Entity, Mailbox

_BOOL_COLUMNS = ("scan_active", "sync_customers", "sync_leads", "allow_plaintext")
OUTCOME_FIELDS = (
    "last_success_at", "last_error", "last_error_at", "failure_kind", "failing_since", "consecutive_failures",
    "retry_after",
)


def _mailbox_from_row(row: dict[str, Any]) -> Mailbox:
    row = dict(row)
    row["user"] = row.pop("login")
    row["folders"] = json.loads(row["folders"])
    row["main"] = bool(row.pop("is_main"))
    row["folders_chosen"] = None if row["folders_chosen"] is None else bool(row["folders_chosen"])
    for name in _BOOL_COLUMNS:
        row[name] = bool(row[name])
    for name in ("user_id", "created_at", "updated_at"):
        row.pop(name)
    return Mailbox(**row)


class DirectoryQueries(Connection):
    """Users, mailboxes, customers and leads."""

    def _user_id(self, login: str) -> int:
        row = self.db.execute("SELECT id FROM users WHERE login = ?", [login]).fetchone()
        if row:
            return int(row[0])
        return self.insert_row("users", {"login": login, "created_at": utcnow()})

    def _mailbox_row(self, mailbox: Mailbox) -> dict[str, Any]:
        row = asdict(mailbox)
        for name in ("user", "id", "main", *OUTCOME_FIELDS):
            row.pop(name)
        row["folders"] = json.dumps(mailbox.folders, ensure_ascii=False)
        row["is_main"] = int(mailbox.main)
        row["folders_chosen"] = None if mailbox.folders_chosen is None else int(mailbox.folders_chosen)
        row["user_id"] = self._user_id(mailbox.user)
        row["updated_at"] = utcnow()
        return row

    def check_unique(self, mailbox: Mailbox, allow_duplicate: bool = False) -> None:
        """One mailbox per user and address; and, unless allowed, one per account: a second mailbox for the
        same login on the same server (whoever's it is) would scan every letter twice."""
        clash = self.db.execute(
            "SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id"
            " WHERE u.login = ? AND m.email = ? AND m.id IS NOT ?",
            [mailbox.user, mailbox.email, mailbox.id],
        ).fetchone()
        if clash:
            raise InputError(
                f"user {mailbox.user} already has mailbox {clash[0]} for {mailbox.email};"
                f" change it with 'hanna-sync edit-mailbox {clash[0]}'"
            )
        if allow_duplicate:
            return
        same = self.same_account(mailbox)
        if same is not None:
            account = (f"the Office 365 mailbox {same.email}" if "o365-scan" in (mailbox.kind, same.kind) else
                       f"login {same.login_name} on {same.imap_host}:{same.imap_port}")
            raise InputError(
                f"mailbox {same.id} ({same.email} of {same.user}) is already {account}: a second one would scan"
                f" every letter twice; change that one with 'hanna-sync edit-mailbox {same.id}', or give"
                " --allow-duplicate to keep both"
            )

    def same_account(self, mailbox: Mailbox) -> Mailbox | None:
        """Another mailbox reading the same account: the same login name on the same IMAP host and port
        (names compared without regard to case), or, for the Office 365 kinds, the same address (one
        tenant per configuration)."""
        if mailbox.kind == "o365-scan":
            where = "m.kind IN ('o365-scan', 'o365-client') AND lower(m.email) = lower(?)"
            args: list[Any] = [mailbox.email]
        else:
            where = ("m.kind != 'o365-scan' AND lower(coalesce(m.username, m.email)) = lower(?)"
                     " AND lower(m.imap_host) = lower(?) AND m.imap_port = ?")
            args = [mailbox.login_name, mailbox.imap_host, mailbox.imap_port]
            if mailbox.kind == "o365-client":
                where = f"(({where}) OR (m.kind = 'o365-scan' AND lower(m.email) = lower(?)))"
                args.append(mailbox.email)
        rows = self._mailbox_rows(f"{where} AND m.id IS NOT ?", [*args, mailbox.id])
        return rows[0] if rows else None

    def _clear_main(self, mailbox: Mailbox) -> int | None:
        """Make room for a new main mailbox; returns the id of the one that stops being main."""
        if not mailbox.main:
            return None
        row = self.db.execute(
            "SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id"
            " WHERE u.login = ? AND m.is_main AND m.id IS NOT ?",
            [mailbox.user, mailbox.id],
        ).fetchone()
        if row:
            self.db.execute("UPDATE mailboxes SET is_main = 0 WHERE id = ?", [row[0]])
            return int(row[0])
        return None

    def add_mailbox(self, mailbox: Mailbox, allow_duplicate: bool = False) -> int | None:
        """Save a new mailbox (sets its id); returns the id of a mailbox that stopped being main."""
        with self.transaction():
            self.check_unique(mailbox, allow_duplicate)
            previous_main = self._clear_main(mailbox)
            row = self._mailbox_row(mailbox)
            row["created_at"] = row["updated_at"]
            mailbox.id = self.insert_row("mailboxes", row)
        return previous_main

    def update_mailbox(self, mailbox: Mailbox, allow_duplicate: bool = False) -> int | None:
        """Save changed settings of an existing mailbox; returns the id that stopped being main."""
        with self.transaction():
            self.check_unique(mailbox, allow_duplicate)
            previous_main = self._clear_main(mailbox)
            assert mailbox.id is not None  # an existing mailbox: read from the store, so it has its id
            self.db.table("mailboxes").update(mailbox.id, self._mailbox_row(mailbox))
        return previous_main

    def mailbox(self, mailbox_id: int) -> Mailbox:
        rows = self._mailbox_rows("m.id = ?", [mailbox_id])
        if not rows:
            raise NotFound(f"no mailbox {mailbox_id}; 'hanna-sync list-mailboxes' shows the ids")
        return rows[0]

    def user_exists(self, login: str) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE login = ?", [login]).fetchone() is not None

    def mailboxes(self, user: str | None = None) -> list[Mailbox]:
        if user is None:
            return self._mailbox_rows("1", [])
        return self._mailbox_rows("u.login = ?", [user])

    def _mailbox_rows(self, where: str, args: list[Any]) -> list[Mailbox]:
        sql = f"SELECT m.*, u.login FROM mailboxes m JOIN users u ON u.id = m.user_id WHERE {where} ORDER BY m.id"
        return [_mailbox_from_row(row) for row in self.db.query(sql, args)]

    def remove_mailbox(self, mailbox_id: int) -> None:
        """Forget a mailbox and its scan state. Archived letters stay (only their locations go)."""
        self.mailbox(mailbox_id)
        with self.transaction():
            self.db.execute("DELETE FROM mailboxes WHERE id = ?", [mailbox_id])

    def entity(self, entity_type: str, entity_id: str) -> Entity | None:
        table = f"{entity_type}s"
        row = self.db.execute(f"SELECT id, name, email FROM {table} WHERE id = ?", [entity_id]).fetchone()
        if row is None:
            return None
        entity = Entity(id=row[0], name=row[1], email=row[2])
        if entity_type == "customer":
            entity.domain = self.db.execute("SELECT domain FROM customers WHERE id = ?", [entity_id]).fetchone()[0]
        entity.contacts = self._contacts(entity_type, entity_id)
        return entity

    def existing_entity(self, entity_type: str, entity_id: str) -> Entity:
        """The customer or lead a command names: NotFound (exit 3) when there is none, never "nothing"."""
        entity = self.entity(entity_type, entity_id)
        if entity is None:
            raise NotFound(f"no {entity_type} '{entity_id}'; 'hanna-sync {entity_type}s' lists them")
        return entity

    def _contacts(self, entity_type: str, entity_id: str) -> list[Contact]:
        sql = f"SELECT email, name FROM {entity_type}_contacts WHERE {entity_type}_id = ? ORDER BY email"
        return [Contact(email=e, name=n) for e, n in self.db.execute(sql, [entity_id]).fetchall()]

    def entities(self, entity_type: str) -> list[Entity]:
        """All customers or all leads with their contacts, ordered by id."""
        table = f"{entity_type}s"
        domain = "domain" if entity_type == "customer" else "NULL"
        contacts: dict[str, list[Contact]] = {}
        sql = f"SELECT {entity_type}_id, email, name FROM {entity_type}_contacts ORDER BY email"
        for owner, email, name in self.db.execute(sql).fetchall():
            contacts.setdefault(owner, []).append(Contact(email=email, name=name))
        rows = self.db.execute(f"SELECT id, name, email, {domain} FROM {table} ORDER BY id").fetchall()
        return [Entity(id=i, name=n, email=e, domain=d, contacts=contacts.get(i, [])) for i, n, e, d in rows]

    def save_entity(self, entity_type: str, entity: Entity, replace_contacts: bool) -> str:
        """Insert or update one customer or lead; returns 'added', 'updated' or 'unchanged'."""
        table = f"{entity_type}s"
        before = self.entity(entity_type, entity.id)
        if before is not None and not replace_contacts:
            entity.contacts = before.contacts
        if before == entity:
            return "unchanged"
        row: dict[str, Any] = {"id": entity.id, "name": entity.name, "email": entity.email, "updated_at": utcnow()}
        if entity_type == "customer":
            row["domain"] = entity.domain
        with self.transaction():
            self.db.table(table).upsert(row, pk="id")
            contact_table = f"{entity_type}_contacts"
            self.db.execute(f"DELETE FROM {contact_table} WHERE {entity_type}_id = ?", [entity.id])
            self.db.table(contact_table).insert_all(
                {f"{entity_type}_id": entity.id, "email": c.email, "name": c.name} for c in entity.contacts
            )
        return "added" if before is None else "updated"

    def remove_entities(self, entity_type: str, entity_ids: list[str]) -> int:
        """Delete customers or leads, their contacts and every link to them (a link to nobody would
        outlive its entity); the letters stay. Returns how many links went. In the caller's transaction
        when there is one: a snapshot writes its whole difference at once."""
        links = 0
        with self.transaction():
            for chunk, marks in chunks(entity_ids):
                links += self.db.execute(
                    f"DELETE FROM links WHERE entity_type = ? AND entity_id IN ({marks})", [entity_type, *chunk]
                ).rowcount
                self.db.execute(f"DELETE FROM {entity_type}s WHERE id IN ({marks})", chunk)
        return links

    def entity_link_count(self, entity_type: str, entity_id: str) -> int:
        """How many letters are linked to a customer or lead."""
        return int(self.db.execute("SELECT count(*) FROM links WHERE entity_type = ? AND entity_id = ?",
                                   [entity_type, entity_id]).fetchone()[0])
