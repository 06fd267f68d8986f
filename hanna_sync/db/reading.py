"""Reading the archive: lists, one letter, full-text search, conversations, and what an export needs."""

from __future__ import annotations

import json
from typing import Any, cast

from hanna_sync.db.connection import Connection, chunks
from hanna_sync.db.rows import (
    LetterRow,
    LetterSummary,
    LinkRow,
    LocationRow,
    Original,
    SearchHit,
    ThreadLetter,
    UnlinkRow,
)
from hanna_sync.errors import InputError, NotFound


def fts_query(text: str) -> str:
    """A search as people type it, made a safe FTS5 query: every word must occur, "..." is a phrase.

    Each word is quoted, so FTS5's operators (AND, OR, NOT, NEAR, column:, -, parentheses) and an address
    such as ruta@azuolas.lt are just text, never a syntax error; a trailing * keeps its meaning as a prefix
    search. Raises InputError for an unclosed quote and for a search with no words.
    """
    if text.count('"') % 2:
        raise InputError(
            'the search has an unclosed quote: put a phrase between two quotes, e.g. \'"ąžuolinės lentos" kaina\''
        )
    terms = []
    for n, part in enumerate(text.split('"')):
        if n % 2:  # between quotes: one phrase
            if part.strip():
                terms.append(f'"{part}"')
            continue
        for word in part.split():
            stem = word.rstrip("*")
            if stem:
                terms.append(f'"{stem}"' + ("*" if stem != word else ""))
    if not terms:
        raise InputError("nothing to search for: give one or more words, e.g. 'sąskaita faktūra'")
    return " ".join(terms)


def _letter_filters(
    customer: str | None, lead: str | None, since: str | None, mailbox_id: int | None = None
) -> tuple[list[str], list[Any]]:
    """WHERE terms (over `letters l`) and their arguments shared by `letters` and `search`."""
    where: list[str] = ["1"]
    args: list[Any] = []
    for entity_type, entity_id in (("customer", customer), ("lead", lead)):
        if entity_id is not None:
            where.append(
                "EXISTS (SELECT 1 FROM links k WHERE k.letter_id = l.id AND k.entity_type = ? AND k.entity_id = ?)"
            )
            args += [entity_type, entity_id]
    if mailbox_id is not None:
        where.append("EXISTS (SELECT 1 FROM letter_locations p WHERE p.letter_id = l.id AND p.mailbox_id = ?)")
        args.append(mailbox_id)
    if since is not None:
        where.append("l.date_utc >= ?")
        args.append(since)
    return where, args


def _newest_first_after(after: tuple[str | None, int], date: str, letter_id: str) -> tuple[str, list[Any]]:
    """A WHERE term for the rows after `after` (a row's date_utc and id) in `ORDER BY date DESC, id DESC`,
    where SQLite puts a NULL date last: so a page starts exactly behind the row that ended the one before."""
    last_date, last_id = after
    if last_date is None:
        return f"({date} IS NULL AND {letter_id} < ?)", [last_id]
    return (f"({date} < ? OR {date} IS NULL OR ({date} = ? AND {letter_id} < ?))", [last_date, last_date, last_id])


class ReadingQueries(Connection):
    """What the CLI, export and a pass read of the archive, as typed rows."""

    def letters(
        self,
        customer: str | None = None,
        lead: str | None = None,
        mailbox_id: int | None = None,
        since: str | None = None,
        *, limit: int | None = None,
        after: tuple[str | None, int] | None = None,
    ) -> list[LetterSummary]:
        """Archived letters, newest first, each with its links ("rule" is the link to the entity asked for);
        with `after` (date_utc, id) of a letter, those that follow it in this order (a page's keyset)."""
        where, args = _letter_filters(customer, lead, since, mailbox_id)
        if after is not None:
            term, more = _newest_first_after(after, "l.date_utc", "l.id")
            where.append(term)
            args += more
        sql = (
            "SELECT l.id, l.date_utc, l.from_addr, l.from_name, l.subject, l.message_id, l.size, l.body_skipped"
            f" FROM letters l WHERE {' AND '.join(where)} ORDER BY l.date_utc DESC, l.id DESC"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = [cast(LetterSummary, row) for row in self.db.query(sql, args)]
        for row in rows:
            row["body_skipped"] = bool(row["body_skipped"])
            row["links"] = self.links_of(row["id"])
        return rows

    def links_of(self, letter_id: int) -> list[LinkRow]:
        return [cast(LinkRow, row) for row in self.db.query(
            "SELECT entity_type, entity_id, rule, address FROM links WHERE letter_id = ?"
            " ORDER BY entity_type, entity_id",
            [letter_id],
        )]

    def letter(self, letter_id: int) -> LetterRow:
        """One letter with everything known about it: fields, links and locations."""
        rows = list(self.db.query("SELECT * FROM letters WHERE id = ?", [letter_id]))
        if not rows:
            raise NotFound(f"no letter {letter_id}; 'hanna-sync letters' lists them")
        row = rows[0]
        for name in ("to_addrs", "cc_addrs", "attachments", "references"):
            row[name] = json.loads(row[name])
        row["body_skipped"] = bool(row["body_skipped"])
        letter = cast(LetterRow, row)
        letter["links"] = self.links_of(letter_id)
        letter["locations"] = [cast(LocationRow, row) for row in self.db.query(
            "SELECT mailbox_id, folder, uidvalidity, uid, graph_id, seen_at, gone_at FROM letter_locations"
            " WHERE letter_id = ?"
            " ORDER BY mailbox_id, folder, uid",
            [letter_id],
        )]
        letter["unlinked"] = [cast(UnlinkRow, row) for row in self.db.query(
            "SELECT entity_type, entity_id, rule, unlinked_at FROM unlinks WHERE letter_id = ?"
            " ORDER BY entity_type, entity_id",
            [letter_id],
        )]
        return letter

    def search(
        self,
        query: str,
        customer: str | None = None,
        lead: str | None = None,
        since: str | None = None,
        *, limit: int = 20,
        after: tuple[float, str | None, int] | None = None,
    ) -> list[SearchHit]:
        """Letters matching every word of `query` (see fts_query), best first, each with a snippet and its links;
        with `after` (rank, date_utc, id) of a hit, the hits that follow it (a page's keyset).

        rank is FTS5's bm25 (lower is better), with a subject hit worth more than a body hit: a subject
        names what the letter is about. Equal ranks go newest first, then by id, so the order is total.
        The snippet marks each matched word as **word**.
        """
        where, args = _letter_filters(customer, lead, since)
        where.insert(0, "letters_fts MATCH ?")
        args.insert(0, fts_query(query))
        page, query_args = "1", list(args)
        if after is not None:  # on the inner query's columns: beside letters_fts, `rank` is FTS5's own hidden column
            term, tie_args = _newest_first_after(after[1:], "date_utc", "id")
            page = f"(rank > ? OR (rank = ? AND {term}))"
            query_args += [after[0], after[0], *tie_args]
        rows = [cast(SearchHit, row) for row in self.db.query(
            "SELECT * FROM (SELECT l.id, l.date_utc, l.from_addr, l.subject,"
            " snippet(letters_fts, -1, '**', '**', '…', 12) AS snippet, bm25(letters_fts, 4.0, 1.0, 2.0, 2.0) AS rank"
            f" FROM letters_fts JOIN letters l ON l.id = letters_fts.rowid WHERE {' AND '.join(where)})"
            f" WHERE {page} ORDER BY rank, date_utc DESC, id DESC LIMIT {int(limit)}",
            query_args,
        )]
        for row in rows:
            row["snippet"] = " ".join(row["snippet"].split())  # a one-line preview: the letter's line breaks go
            row["links"] = self.links_of(row["id"])
        return rows

    def thread(self, letter_id: int) -> list[ThreadLetter]:
        """The conversation a letter belongs to, oldest first, from every mailbox.

        Letters are in one conversation when they are connected through the Message-IDs they name (their
        own, In-Reply-To, References): a reply joins the letters it answers, and two replies that quote
        the same letter join each other even when that letter itself was never archived.
        """
        if self.db.execute("SELECT 1 FROM letters WHERE id = ?", [letter_id]).fetchone() is None:
            raise NotFound(f"no letter {letter_id}; 'hanna-sync letters' lists them")
        rows = [cast(ThreadLetter, row) for row in self.db.query(
            """
            WITH RECURSIVE ids(message_id) AS (
                SELECT message_id FROM letter_thread_ids WHERE letter_id = :id
                UNION
                SELECT b.message_id FROM ids
                JOIN letter_thread_ids a ON a.message_id = ids.message_id
                JOIN letter_thread_ids b ON b.letter_id = a.letter_id
            )
            SELECT l.id, l.date_utc, l.from_addr, l.from_name, l.subject, l.message_id FROM letters l
            WHERE l.id = :id OR l.id IN (SELECT letter_id FROM letter_thread_ids WHERE message_id IN ids)
            ORDER BY l.date_utc, l.id
            """,
            {"id": letter_id},
        )]
        for row in rows:
            row["mailboxes"] = [email for (email,) in self.db.execute(
                "SELECT DISTINCT m.email FROM letter_locations p JOIN mailboxes m ON m.id = p.mailbox_id"
                " WHERE p.letter_id = ? ORDER BY m.email", [row["id"]],
            ).fetchall()]
            row["links"] = self.links_of(row["id"])
        return rows

    def letter_source(self, letter_id: int) -> bytes:
        """The original bytes exactly as the server gave them."""
        self.letter(letter_id)
        return bytes(self.db.execute("SELECT raw FROM letter_sources WHERE letter_id = ?", [letter_id]).fetchone()[0])

    def export_ids(
        self, customer: str | None = None, lead: str | None = None, since: str | None = None, query: str | None = None
    ) -> list[int]:
        """Letters linked to a customer or lead, or found by a search (as `search` finds them: see
        fts_query), dated on or after `since`: all of them, oldest first, as an export writes them."""
        where, args = _letter_filters(customer, lead, since)
        source = "letters l"
        if query is not None:
            source += " JOIN letters_fts ON letters_fts.rowid = l.id"
            where.insert(0, "letters_fts MATCH ?")
            args.insert(0, fts_query(query))
        return [letter_id for (letter_id,) in self.db.execute(
            f"SELECT l.id FROM {source} WHERE {' AND '.join(where)} ORDER BY coalesce(l.date_utc, l.archived_at), l.id",
            args,
        ).fetchall()]

    def missing_letters(self, letter_ids: list[int]) -> list[int]:
        """Which of these ids name no archived letter, in the order given."""
        found: set[int] = set()
        for chunk, marks in chunks(letter_ids):
            found.update(row[0] for row in self.db.execute(
                f"SELECT id FROM letters WHERE id IN ({marks})", chunk).fetchall())
        return [letter_id for letter_id in letter_ids if letter_id not in found]

    def original(self, letter_id: int) -> Original:
        """A letter's original bytes (`raw`) with what names its export: id, date (date_utc, else
        archived_at), from_addr, subject, body_skipped."""
        row = self.db.execute(
            "SELECT l.id, coalesce(l.date_utc, l.archived_at), l.from_addr, l.subject, l.body_skipped, s.raw"
            " FROM letters l JOIN letter_sources s ON s.letter_id = l.id WHERE l.id = ?", [letter_id],
        ).fetchone()
        if row is None:
            raise NotFound(f"no letter {letter_id}; 'hanna-sync letters' lists them")
        return {"id": row[0], "date": row[1], "from_addr": row[2], "subject": row[3], "body_skipped": bool(row[4]),
                "raw": bytes(row[5])}
