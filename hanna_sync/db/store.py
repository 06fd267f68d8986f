"""The SQLite database: schema, migrations and every query the rest of the code needs.

One file holds the directory (customers, leads, their contacts), the mailboxes, the archive and the
scan state, so a CRM (or Datasette) can read it directly; the README documents the tables. Schema changes
are named migrations (sqlite-utils' `Migrations`), applied on open, each in its own transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlite_utils

from hanna_sync.errors import ExitCode, HannaError, InputError, NotFound
from hanna_sync.mail.filenames import file_kind
from hanna_sync.models import Backup, Contact, Entity, FolderState, Mailbox, merged_folders

if TYPE_CHECKING:
    from hanna_sync.linking.backfill import LetterKeys
    from hanna_sync.linking.match import Link
    from hanna_sync.mail.message import ParsedLetter

migrations = sqlite_utils.Migrations("hanna_sync")
_T = TypeVar("_T")


@migrations()
def m001_directory_and_mailboxes(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            login TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE mailboxes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id),
            kind TEXT NOT NULL DEFAULT 'imap',
            email TEXT NOT NULL,
            username TEXT,
            provider TEXT NOT NULL,
            imap_host TEXT, imap_port INTEGER, imap_security TEXT, imap_charset TEXT,
            smtp_host TEXT, smtp_port INTEGER, smtp_security TEXT, smtp_charset TEXT,
            folders TEXT NOT NULL DEFAULT '[]',
            scan_active INTEGER NOT NULL DEFAULT 1,
            sync_customers INTEGER NOT NULL DEFAULT 1,
            sync_leads INTEGER NOT NULL DEFAULT 1,
            is_main INTEGER NOT NULL DEFAULT 0,
            ca_file TEXT,
            secret_ref TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_success_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            UNIQUE (user_id, email)
        );
        CREATE UNIQUE INDEX one_main_mailbox_per_user ON mailboxes(user_id) WHERE is_main;
        CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            name TEXT,
            email TEXT,
            domain TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE customer_contacts (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            email TEXT NOT NULL,
            name TEXT,
            PRIMARY KEY (customer_id, email)
        );
        CREATE TABLE leads (
            id TEXT PRIMARY KEY,
            name TEXT,
            email TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE lead_contacts (
            lead_id TEXT NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
            email TEXT NOT NULL,
            name TEXT,
            PRIMARY KEY (lead_id, email)
        );
        CREATE INDEX customers_email ON customers(email);
        CREATE INDEX customers_domain ON customers(domain);
        CREATE INDEX customer_contacts_email ON customer_contacts(email);
        CREATE INDEX leads_email ON leads(email);
        CREATE INDEX lead_contacts_email ON lead_contacts(email);
        """
    )


@migrations()
def m002_archive(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE folder_states (
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            folder TEXT NOT NULL,
            uidvalidity INTEGER,
            last_uid INTEGER NOT NULL DEFAULT 0,
            highestmodseq INTEGER,
            uidnext INTEGER,
            messages INTEGER,
            checked_at TEXT,
            PRIMARY KEY (mailbox_id, folder)
        );
        CREATE TABLE letters (
            id INTEGER PRIMARY KEY,
            identity TEXT NOT NULL UNIQUE,
            message_id TEXT,
            date_utc TEXT,
            from_addr TEXT,
            from_name TEXT,
            to_addrs TEXT NOT NULL DEFAULT '[]',
            cc_addrs TEXT NOT NULL DEFAULT '[]',
            subject TEXT,
            body_text TEXT,
            attachments TEXT NOT NULL DEFAULT '[]',
            in_reply_to TEXT,
            "references" TEXT NOT NULL DEFAULT '[]',
            size INTEGER NOT NULL,
            body_skipped INTEGER NOT NULL DEFAULT 0,
            archived_at TEXT NOT NULL
        );
        CREATE INDEX letters_message_id ON letters(message_id);
        CREATE INDEX letters_date ON letters(date_utc);
        CREATE TABLE letter_sources (
            letter_id INTEGER PRIMARY KEY REFERENCES letters(id) ON DELETE CASCADE,
            raw BLOB NOT NULL
        );
        CREATE TABLE letter_locations (
            letter_id INTEGER NOT NULL REFERENCES letters(id) ON DELETE CASCADE,
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            seen_at TEXT NOT NULL,
            gone_at TEXT,
            PRIMARY KEY (mailbox_id, folder, uidvalidity, uid)
        );
        CREATE INDEX letter_locations_letter ON letter_locations(letter_id);
        CREATE TABLE links (
            letter_id INTEGER NOT NULL REFERENCES letters(id) ON DELETE CASCADE,
            entity_type TEXT NOT NULL CHECK (entity_type IN ('customer', 'lead')),
            entity_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            address TEXT NOT NULL,
            PRIMARY KEY (letter_id, entity_type, entity_id)
        );
        CREATE INDEX links_entity ON links(entity_type, entity_id);
        CREATE TABLE scan_runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT,
            summary TEXT
        );
        """
    )


@migrations()
def m003_unattended(db: sqlite_utils.Database) -> None:
    """Failure streaks and back-off per mailbox; what the server last said and what was seen, per folder."""
    db.executescript(
        """
        ALTER TABLE mailboxes ADD COLUMN failure_kind TEXT;
        ALTER TABLE mailboxes ADD COLUMN failing_since TEXT;
        ALTER TABLE mailboxes ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE mailboxes ADD COLUMN retry_after TEXT;
        ALTER TABLE folder_states ADD COLUMN server_uidnext INTEGER;
        ALTER TABLE folder_states ADD COLUMN server_messages INTEGER;
        ALTER TABLE folder_states ADD COLUMN seen_uids TEXT NOT NULL DEFAULT '';
        ALTER TABLE folder_states ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE folder_states ADD COLUMN gap_checked_at TEXT;
        ALTER TABLE folder_states ADD COLUMN gap_found INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE scan_runs ADD COLUMN budget_exhausted INTEGER NOT NULL DEFAULT 0;
        UPDATE folder_states SET seen_uids = '1:' || last_uid WHERE last_uid > 0;
        """
    )


@migrations()
def m004_office365(db: sqlite_utils.Database) -> None:
    """Graph scanning: each folder's delta state, and locations named by Graph's immutable message id.

    A Graph location has uidvalidity 0 (IMAP's is never 0) and a uid numbered by hanna-sync per folder,
    since letter_locations' key is (mailbox, folder, uidvalidity, uid); `graph_id` is what finds it again.
    """
    db.executescript(
        """
        ALTER TABLE folder_states ADD COLUMN graph_folder_id TEXT;
        ALTER TABLE folder_states ADD COLUMN delta_link TEXT;
        ALTER TABLE folder_states ADD COLUMN next_link TEXT;
        ALTER TABLE letter_locations ADD COLUMN graph_id TEXT;
        CREATE UNIQUE INDEX letter_locations_graph ON letter_locations(mailbox_id, folder, graph_id)
            WHERE graph_id IS NOT NULL;
        """
    )


@migrations()
def m005_allow_plaintext(db: sqlite_utils.Database) -> None:
    """Whether a mailbox may send its password unencrypted (security none): off unless an admin says so.

    Off for existing mailboxes too: one set to `none` before this migration fails its next pass with the
    fix (use TLS, or `edit-mailbox ID --allow-plaintext`) instead of going on sending the password in clear.
    """
    db.execute("ALTER TABLE mailboxes ADD COLUMN allow_plaintext INTEGER NOT NULL DEFAULT 0")


# What the search index covers, per letter. FTS5 reads an external-content row back (for snippet() and
# to delete it from the index) with virtual tables forbidden, so json_each is out: the addresses are the
# JSON lists with their brackets and quotes blanked (so a snippet reads as a list) and the attachment names are
# collected from the JSON with json_extract in a recursive CTE.
_INDEXED_COLUMNS = "subject, body, addresses, attachment_names"  # letters_fts's columns, in the view
_SEARCH_VIEW = """
    CREATE VIEW letters_search AS SELECT
        id,
        subject,
        body_text AS body,
        coalesce(from_name, '') || ' ' || coalesce(from_addr, '') || ' '
            || replace(replace(replace(replace(to_addrs || cc_addrs, '[', ''), ']', ' '), '"', ''), ',', ' ')
            AS addresses,
        (WITH RECURSIVE n(i, names) AS (
            SELECT 0, ''
            UNION ALL
            SELECT i + 1, names || ' ' || coalesce(json_extract(attachments, '$[' || i || '].filename'), '')
            FROM n WHERE i < json_array_length(attachments)
        ) SELECT names FROM n ORDER BY i DESC LIMIT 1) AS attachment_names
    FROM letters
"""
_SEARCHED_COLUMNS = "subject, body_text, from_name, from_addr, to_addrs, cc_addrs, attachments"
_THREAD_IDS_OF_NEW = """
    INSERT OR IGNORE INTO letter_thread_ids (letter_id, message_id)
        SELECT new.id, new.message_id WHERE new.message_id IS NOT NULL
        UNION SELECT new.id, new.in_reply_to WHERE new.in_reply_to IS NOT NULL
        UNION SELECT new.id, value FROM json_each(new."references");
"""
# From m008 on, also Graph's conversation (a name no Message-ID can have: it has no "@").
_THREAD_IDS_WITH_CONVERSATION = _THREAD_IDS_OF_NEW.rstrip().rstrip(";") + """
        UNION SELECT new.id, 'conversation:' || new.conversation_id WHERE new.conversation_id IS NOT NULL;
"""


@migrations()
def m006_search_and_threads(db: sqlite_utils.Database) -> None:
    """Full-text search (`letters_fts`) and conversation look-ups (`letter_thread_ids`), kept by triggers.

    Triggers rather than code in archive_letter, so every writer (a pass, a CRM deleting a letter) keeps
    both in step. The index has external content (the `letters_search` view): letter text is stored once.
    remove_diacritics 2 makes "sąskaita" and "saskaita" the same word. `letter_thread_ids` holds every
    Message-ID a letter names (its own, In-Reply-To, References), indexed both ways, so a conversation
    is a walk over shared ids instead of a scan of every letter's References.
    """
    fts_insert = (f"INSERT INTO letters_fts (rowid, {_INDEXED_COLUMNS})"
                  f" SELECT id, {_INDEXED_COLUMNS} FROM letters_search WHERE id = new.id;")
    fts_delete = (f"INSERT INTO letters_fts (letters_fts, rowid, {_INDEXED_COLUMNS})"
                  f" SELECT 'delete', id, {_INDEXED_COLUMNS} FROM letters_search WHERE id = old.id;")
    db.executescript(
        f"""
        {_SEARCH_VIEW};
        CREATE VIRTUAL TABLE letters_fts USING fts5(
            {_INDEXED_COLUMNS},
            content = 'letters_search', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER letters_fts_insert AFTER INSERT ON letters BEGIN {fts_insert} END;
        CREATE TRIGGER letters_fts_delete BEFORE DELETE ON letters BEGIN {fts_delete} END;
        CREATE TRIGGER letters_fts_update_old BEFORE UPDATE OF {_SEARCHED_COLUMNS} ON letters BEGIN {fts_delete} END;
        CREATE TRIGGER letters_fts_update_new AFTER UPDATE OF {_SEARCHED_COLUMNS} ON letters BEGIN {fts_insert} END;
        INSERT INTO letters_fts (letters_fts) VALUES ('rebuild');

        CREATE TABLE letter_thread_ids (
            letter_id INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            PRIMARY KEY (letter_id, message_id)
        ) WITHOUT ROWID;
        CREATE INDEX letter_thread_ids_message ON letter_thread_ids(message_id, letter_id);
        CREATE TRIGGER letter_thread_ids_insert AFTER INSERT ON letters BEGIN {_THREAD_IDS_OF_NEW} END;
        CREATE TRIGGER letter_thread_ids_delete AFTER DELETE ON letters BEGIN
            DELETE FROM letter_thread_ids WHERE letter_id = old.id;
        END;
        CREATE TRIGGER letter_thread_ids_update AFTER UPDATE OF message_id, in_reply_to, "references" ON letters BEGIN
            DELETE FROM letter_thread_ids WHERE letter_id = old.id;
            {_THREAD_IDS_OF_NEW}
        END;
        INSERT OR IGNORE INTO letter_thread_ids (letter_id, message_id)
            SELECT id, message_id FROM letters WHERE message_id IS NOT NULL
            UNION SELECT id, in_reply_to FROM letters WHERE in_reply_to IS NOT NULL
            UNION SELECT l.id, r.value FROM letters l, json_each(l."references") r;
        """
    )


@migrations()
def m007_purged(db: sqlite_utils.Database) -> None:
    """Tombstones of purged letters, so that no later pass archives them again (see Store.purged).

    Only a hash of the letter's identity is kept, never its Message-ID or anything else of it: the table
    can tell whether a letter one already holds was purged, not what was purged.
    """
    db.execute(
        "CREATE TABLE purged_letters (identity_hash TEXT PRIMARY KEY, purged_at TEXT NOT NULL) WITHOUT ROWID"
    )


@migrations()
def m008_relink_and_backfill(db: sqlite_utils.Database) -> None:
    """What relinking and backfilling need.

    `letters.participants` (every address on the letter, Bcc and Reply-To too) and `letters.automatic`
    let `relink` re-evaluate links without reading the original bytes again. `skipped_letters` is where
    letters that concerned nobody are on the server; `skipped_keys` holds, per skipped letter, keyed
    hashes (never the addresses themselves) of its addresses, their domains and the Message-IDs it
    answers, so a customer added later finds its older letters without re-reading any mailbox.
    `backfill_keys` is the directory the skipped letters were last checked against; `archive_state`
    holds small named values (e.g. how far thread backfill has looked). `letters.conversation_id` is
    Graph's conversationId: letters of one Outlook conversation join one thread even without
    In-Reply-To or References (it enters `letter_thread_ids` as "conversation:<id>").
    """
    from hanna_sync.mail.message import is_automatic, parse_headers_only

    db.executescript(
        f"""
        ALTER TABLE letters ADD COLUMN participants TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE letters ADD COLUMN automatic INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE letters ADD COLUMN conversation_id TEXT;
        CREATE INDEX letters_conversation ON letters(conversation_id) WHERE conversation_id IS NOT NULL;
        DROP TRIGGER letter_thread_ids_insert;
        CREATE TRIGGER letter_thread_ids_insert AFTER INSERT ON letters BEGIN {_THREAD_IDS_WITH_CONVERSATION} END;
        DROP TRIGGER letter_thread_ids_update;
        CREATE TRIGGER letter_thread_ids_update
            AFTER UPDATE OF message_id, in_reply_to, "references", conversation_id ON letters BEGIN
            DELETE FROM letter_thread_ids WHERE letter_id = old.id;
            {_THREAD_IDS_WITH_CONVERSATION}
        END;
        CREATE TABLE skipped_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a forgotten letter's keys stay behind
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER,
            graph_id TEXT,
            own_key INTEGER,
            wanted_since TEXT
        );
        CREATE UNIQUE INDEX skipped_letters_uid ON skipped_letters(mailbox_id, folder, uidvalidity, uid)
            WHERE uid IS NOT NULL;
        CREATE UNIQUE INDEX skipped_letters_graph ON skipped_letters(mailbox_id, folder, graph_id)
            WHERE graph_id IS NOT NULL;
        CREATE INDEX skipped_letters_wanted ON skipped_letters(mailbox_id, folder) WHERE wanted_since IS NOT NULL;
        CREATE TABLE skipped_keys (
            key INTEGER NOT NULL,
            skipped_id INTEGER NOT NULL,
            PRIMARY KEY (key, skipped_id)
        ) WITHOUT ROWID;
        CREATE TABLE backfill_keys (key INTEGER PRIMARY KEY, meaning INTEGER NOT NULL);
        ALTER TABLE folder_states ADD COLUMN graph_returned TEXT;
        CREATE TABLE archive_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )
    last = 0
    while True:  # in chunks, reading only the start of each original: the header block
        rows = db.execute(
            "SELECT letter_id, substr(raw, 1, 262144) FROM letter_sources WHERE letter_id > ? ORDER BY letter_id"
            " LIMIT 500", [last],
        ).fetchall()
        if not rows:
            break
        for letter_id, head in rows:
            parsed = parse_headers_only(bytes(head))
            db.execute(
                "UPDATE letters SET participants = ?, automatic = ? WHERE id = ?",
                [json.dumps(participants_of(parsed), ensure_ascii=False), int(is_automatic(parsed)), letter_id],
            )
        last = rows[-1][0]



@migrations()
def m009_folders_chosen(db: sqlite_utils.Database) -> None:
    """Whether a mailbox's folders were chosen with --folder (1) or found by default (0), so `test` says which.

    NULL for mailboxes saved before: their lists look the same either way, and `test` says "as saved".
    Their lists lose a folder given twice (INBOX and inbox are one folder), which each pass scanned twice.
    """
    db.execute("ALTER TABLE mailboxes ADD COLUMN folders_chosen INTEGER")
    imap_read = "SELECT id, folders FROM mailboxes WHERE kind != 'o365-scan'"  # Graph's "Inbox" is no IMAP INBOX
    for mailbox_id, folders in db.execute(imap_read).fetchall():
        merged = merged_folders(json.loads(folders))[0]
        if merged == json.loads(folders):
            continue
        db.execute("UPDATE mailboxes SET folders = ? WHERE id = ?", [json.dumps(merged, ensure_ascii=False), mailbox_id])
        # "Inbox" saved alone becomes "INBOX": its scan state, locations and skipped letters follow, or the next
        # pass would take "Inbox" for a folder taken off the list and read INBOX again from the start. Where
        # both were scanned, INBOX's rows stay and the duplicate's are retired by that pass as off the list.
        has_inbox = db.execute("SELECT 1 FROM folder_states WHERE mailbox_id = ? AND folder = 'INBOX'",
                               [mailbox_id]).fetchone()
        variants = [f for f in json.loads(folders) if f.upper() == "INBOX" and f != "INBOX"]
        if not has_inbox and variants:
            for table in ("folder_states", "letter_locations", "skipped_letters"):
                db.execute(f"UPDATE {table} SET folder = 'INBOX' WHERE mailbox_id = ? AND folder = ?",
                           [mailbox_id, variants[0]])

def participants_of(letter: ParsedLetter) -> list[str]:
    """Every address on the letter that may tie it to a customer or lead, lower-cased, each once."""
    groups = (letter.from_, letter.sender, letter.reply_to, letter.to, letter.cc, letter.bcc)
    return list(dict.fromkeys(a.email.lower() for group in groups for a in group if a.email))


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


def _chunks(values: Sequence[_T]) -> Iterator[tuple[list[_T], str]]:
    """`values` in slices small enough for one `IN (...)` (far below SQLite's limit on parameters),
    each with its placeholders."""
    for start in range(0, len(values), 500):
        chunk = list(values[start : start + 500])
        yield chunk, ",".join("?" * len(chunk))


def utcnow() -> str:
    """Timestamps are stored as ISO 8601 UTC text: sortable, and readable in any SQLite tool."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


class DatabaseError(HannaError):
    """The database cannot be used: not openable, damaged, disk full, an I/O error, or newer than this program."""

    exit_code = ExitCode.DATABASE


class DatabaseBusy(DatabaseError):
    """Another program held the write lock for longer than the busy timeout: nothing was written, try later."""

    exit_code = ExitCode.TEMPFAIL


# SQLite's result codes (Python 3.11+ names them on the exception; 3.10 only has the message) and what
# each means for whoever runs hanna-sync. Constraint violations and SQL errors are bugs, so not here.
_SQLITE_FAILURES = (
    (("SQLITE_BUSY", "SQLITE_LOCKED"), ("database is locked", "database table is locked"), "busy"),
    (("SQLITE_FULL",), ("database or disk is full",), "full"),
    (("SQLITE_CORRUPT", "SQLITE_NOTADB"), ("malformed", "file is not a database"), "damaged"),
    (("SQLITE_READONLY",), ("readonly database",), "readonly"),
    (("SQLITE_IOERR",), ("disk i/o error",), "io"),
    (("SQLITE_CANTOPEN", "SQLITE_PERM"), ("unable to open database file",), "cantopen"),
)


def database_error(exc: sqlite3.Error, path: Path) -> DatabaseError | None:
    """The one-line explanation of a failed SQLite call, or None when it is a bug rather than a condition.

    Why here: every command meets the same few conditions (another writer, a full disk, a damaged file),
    and each deserves the same fix-it sentence, not a traceback.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    kind = next((k for names, texts, k in _SQLITE_FAILURES
                 if any(name.startswith(n) for n in names) or any(t in text for t in texts)), None)
    if kind == "busy":
        return DatabaseBusy(f"database {path} is locked by another program (a long write, or a stuck process);"
                            " nothing was written: try again later")
    if kind == "full":
        return DatabaseError(f"database {path}: no space left ({exc}): free space on its file system;"
                             " nothing was half-written, and the next pass goes on from its last saved batch")
    if kind == "damaged":
        return DatabaseError(f"database {path} is damaged ({exc}): stop the timer, keep a copy of the file and"
                             " restore the last backup ('hanna-sync doctor' checks a database)")
    if kind == "readonly":
        return DatabaseError(f"database {path} cannot be written ({exc}): check the owner and permissions of it"
                             " and of its directory (hanna-sync doctor)")
    if kind == "io":
        return DatabaseError(f"database {path}: disk I/O error ({exc}): check the disk (dmesg) and free space")
    if kind == "cantopen":
        return DatabaseError(f"cannot open database {path} ({exc}): check that its directory exists and is"
                             " writable by the user hanna-sync runs as")
    return None


def _regular_or_missing(target: Path) -> None:
    """A backup replaces a regular file or makes a new one; anything else (a FIFO, a device such as
    /dev/null, a socket) is refused, never renamed over: SQLite's copy needs a real file, and replacing
    a device with a file breaks whatever uses it."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot look at {target}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{target} is {file_kind(st.st_mode)}: a backup is an SQLite file, written to a temp file"
                         " and renamed into place, so name a regular file (e.g. /var/backups/hanna-sync/hanna-sync.db)")


class Store:
    """The open database. One per process; SQLite's WAL lets a reader run beside the writer."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the state dir: private, like its files
            # Created 0600 before SQLite opens it: letters and the directory are private. SQLite gives
            # the -wal and -shm files the same permissions as the database file.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            # isolation_level=None: no implicit transactions. A statement outside `transaction()` commits
            # at once, and `transaction()` is the only place a transaction starts, so nothing written can
            # be left waiting for a commit that never comes.
            conn = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open database {path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self.lock = threading.RLock()
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            explained = database_error(exc, path)
            if explained is None or "not a database" in str(exc):  # e.g. --config naming another file
                raise DatabaseError(f"{path} is not a usable hanna-sync database: {exc}") from None
            raise explained from None

    def _migrate(self) -> None:
        applied = {m.name for m in migrations.applied(self.db)}
        unknown = applied - {m.name for m in migrations._migrations}
        if unknown:
            raise DatabaseError(
                f"{self.path} was written by a newer hanna-sync (migration {sorted(unknown)[0]}); upgrade hanna-sync"
            )
        migrations.apply(self.db)

    def close(self) -> None:
        self.db.close()

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

    # -- users and mailboxes ------------------------------------------------------------------

    def _user_id(self, login: str) -> int:
        row = self.db.execute("SELECT id FROM users WHERE login = ?", [login]).fetchone()
        if row:
            return int(row[0])
        return int(self.db["users"].insert({"login": login, "created_at": utcnow()}).last_pk)

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
            mailbox.id = int(self.db["mailboxes"].insert(row).last_pk)
        return previous_main

    def update_mailbox(self, mailbox: Mailbox, allow_duplicate: bool = False) -> int | None:
        """Save changed settings of an existing mailbox; returns the id that stopped being main."""
        with self.transaction():
            self.check_unique(mailbox, allow_duplicate)
            previous_main = self._clear_main(mailbox)
            self.db["mailboxes"].update(mailbox.id, self._mailbox_row(mailbox))
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

    # -- the CRM directory --------------------------------------------------------------------

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
            self.db[table].upsert(row, pk="id")
            contact_table = f"{entity_type}_contacts"
            self.db.execute(f"DELETE FROM {contact_table} WHERE {entity_type}_id = ?", [entity.id])
            self.db[contact_table].insert_all(
                {f"{entity_type}_id": entity.id, "email": c.email, "name": c.name} for c in entity.contacts
            )
        return "added" if before is None else "updated"

    # -- maintenance ------------------------------------------------------------------------------

    def quick_check(self) -> list[str]:
        """What SQLite finds damaged ([] when sound), at most 20 lines.

        quick_check rather than integrity_check: it still reads every page, but skips comparing each index
        with its table, so it takes seconds, not minutes, on a large archive.
        """
        with self.lock:
            found = [str(row[0]) for row in self.db.execute("PRAGMA quick_check(20)").fetchall()]
        return [] if found == ["ok"] else found

    def backup(self, target: Path) -> Backup:
        """A consistent copy of the database at `target`, taken with SQLite's online backup API.

        In one step, so it is one snapshot even while a pass (another process) writes: WAL readers do not
        block the writer. The copy goes to a 0600 temp file beside `target`, is checked (quick_check),
        made a self-contained rollback-journal file, fsynced and renamed into place, so `target` is
        always the previous backup or the new one, never half of one. Only a regular file is ever renamed
        over (through a symlink: the file it names); a FIFO, device or socket is refused.
        """
        started = time.monotonic()
        target = target.expanduser()
        if target.is_dir():
            raise InputError(f"{target} is a directory: name the backup file, e.g. {target / 'hanna-sync.db'}")
        _regular_or_missing(target)
        target = Path(os.path.realpath(target))  # a symlink: the file it names is replaced, the link stays
        if not target.parent.is_dir():
            raise InputError(f"{target.parent} does not exist: create it first, or back up somewhere else")
        if target.resolve() in {Path(f"{self.path.resolve()}{suffix}") for suffix in ("", "-wal", "-shm")}:
            raise InputError(f"{target} is the database itself: back it up to another file")
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            copy = sqlite3.connect(temp, isolation_level=None)
            try:
                with self.lock:  # no transaction of this process's threads is half-way through
                    self.db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
                damage = [str(row[0]) for row in copy.execute("PRAGMA quick_check(20)").fetchall()]
                letters = int(copy.execute("SELECT count(*) FROM letters").fetchone()[0])
            finally:
                copy.close()
            if damage != ["ok"]:
                raise DatabaseError(f"the copy of {self.path} fails its check ({damage[0]}): the database itself"
                                    " may be damaged; run 'hanna-sync doctor'")
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _regular_or_missing(target)  # again: a FIFO or device made meanwhile is not renamed over either
            os.replace(temp, target)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, (OSError, sqlite3.Error)) and not isinstance(exc, sqlite3.ProgrammingError):
                reason = getattr(exc, "strerror", None) or exc
                raise DatabaseError(f"cannot write the backup {target}: {reason}") from None
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        return Backup(target, target.stat().st_size, letters, time.monotonic() - started)

    def mark_expunged(self, mailbox_id: int, folder: str, uidvalidity: int, present: list[int], up_to: int) -> int:
        """Locations whose UID (at most `up_to`) the server no longer has: the letter was expunged there.

        The letter stays in the archive; only this place is marked gone. Returns how many were marked.
        """
        on_server = set(present)
        gone = [uid for (uid,) in self.db.execute(
            "SELECT uid FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
            " AND uid <= ? AND gone_at IS NULL", [mailbox_id, folder, uidvalidity, up_to],
        ).fetchall() if uid not in on_server]
        now = utcnow()
        for chunk, marks in _chunks(gone):
            self.db.execute(
                f"UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                f" AND uid IN ({marks})", [now, mailbox_id, folder, uidvalidity, *chunk],
            )
        return len(gone)

    # -- scan state and the archive -------------------------------------------------------------

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

    def retire_folder(self, mailbox_id: int, folder: str) -> int:
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

    def letter_ids(self, identities: list[str]) -> dict[str, int]:
        """Which of these letters are archived already (by identity), with their ids."""
        found: dict[str, int] = {}
        for chunk, marks in _chunks(identities):
            for identity, letter_id in self.db.execute(
                f"SELECT identity, id FROM letters WHERE identity IN ({marks})", chunk
            ).fetchall():
                found[identity] = letter_id
        return found

    def archive_letter(
        self, identity: str, letter: ParsedLetter, raw: bytes, size: int, conversation_id: str | None = None
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
        letter_id = int(cursor.lastrowid)
        self.db.execute("INSERT INTO letter_sources (letter_id, raw) VALUES (?, ?)", [letter_id, raw])
        return letter_id, True

    def add_location(self, letter_id: int, mailbox_id: int, folder: str, uidvalidity: int, uid: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO letter_locations (letter_id, mailbox_id, folder, uidvalidity, uid, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [letter_id, mailbox_id, folder, uidvalidity, uid, utcnow()],
        )

    def add_links(self, letter_id: int, links: list[Link]) -> int:
        """Links a letter does not have yet (a link made earlier, e.g. from another mailbox, stays)."""
        added = 0
        for link in links:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO links (letter_id, entity_type, entity_id, rule, address) VALUES (?, ?, ?, ?, ?)",
                [letter_id, link.entity_type, link.entity_id, link.rule, link.address],
            )
            added += cursor.rowcount
        return added

    def record_outcome(
        self, mailbox_id: int, error: str | None, kind: str | None = None, retry_after: str | None = None
    ) -> None:
        """The mailbox's last pass: success clears the failure streak; a failure extends it."""
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
                " retry_after = ? WHERE id = ?",
                [error, now, kind, now, retry_after, mailbox_id],
            )

    def clear_backoff(self, mailbox_id: int) -> None:
        """A new password deserves a try at the next pass."""
        self.db.execute("UPDATE mailboxes SET retry_after = NULL WHERE id = ?", [mailbox_id])

    def mailbox_counts(self, mailbox_id: int, since: str) -> dict[str, int]:
        """Letters seen in this mailbox that are archived (all of them are linked): in total and since a time."""
        total, recent = self.db.execute(
            "SELECT count(DISTINCT letter_id), count(DISTINCT CASE WHEN seen_at >= ? THEN letter_id END)"
            " FROM letter_locations WHERE mailbox_id = ?",
            [since, mailbox_id],
        ).fetchone()
        return {"total": total, "since": recent}

    def start_run(self) -> int:
        return int(self.db["scan_runs"].insert({"started_at": utcnow()}).last_pk)

    def finish_run(self, run_id: int, outcome: str, summary: list[dict[str, Any]], budget_exhausted: bool) -> None:
        self.db["scan_runs"].update(run_id, {
            "finished_at": utcnow(), "outcome": outcome, "summary": json.dumps(summary, ensure_ascii=False),
            "budget_exhausted": int(budget_exhausted),
        })

    def last_run(self) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM scan_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    # -- reading the archive ----------------------------------------------------------------------

    def letters(
        self,
        customer: str | None = None,
        lead: str | None = None,
        mailbox_id: int | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Archived letters, newest first, each with its links ("rule" is the link to the entity asked for)."""
        where, args = _letter_filters(customer, lead, since, mailbox_id)
        sql = (
            "SELECT l.id, l.date_utc, l.from_addr, l.from_name, l.subject, l.message_id, l.size, l.body_skipped"
            f" FROM letters l WHERE {' AND '.join(where)} ORDER BY l.date_utc DESC, l.id DESC"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = list(self.db.query(sql, args))
        for row in rows:
            row["body_skipped"] = bool(row["body_skipped"])
            row["links"] = self.links_of(row["id"])
        return rows

    def links_of(self, letter_id: int) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT entity_type, entity_id, rule, address FROM links WHERE letter_id = ? ORDER BY entity_type, entity_id",
            [letter_id],
        ))

    def letter(self, letter_id: int) -> dict[str, Any]:
        """One letter with everything known about it: fields, links and locations."""
        rows = list(self.db.query("SELECT * FROM letters WHERE id = ?", [letter_id]))
        if not rows:
            raise NotFound(f"no letter {letter_id}; 'hanna-sync letters' lists them")
        letter = rows[0]
        for name in ("to_addrs", "cc_addrs", "attachments", "references"):
            letter[name] = json.loads(letter[name])
        letter["body_skipped"] = bool(letter["body_skipped"])
        letter["links"] = self.links_of(letter_id)
        letter["locations"] = list(self.db.query(
            "SELECT mailbox_id, folder, uidvalidity, uid, graph_id, seen_at, gone_at FROM letter_locations"
            " WHERE letter_id = ?"
            " ORDER BY mailbox_id, folder, uid",
            [letter_id],
        ))
        return letter

    def search(
        self,
        query: str,
        customer: str | None = None,
        lead: str | None = None,
        since: str | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Letters matching every word of `query` (see fts_query), best first, each with a snippet and its links.

        rank is FTS5's bm25 (lower is better), with a subject hit worth more than a body hit: a subject
        names what the letter is about. The snippet marks each matched word as **word**.
        """
        where, args = _letter_filters(customer, lead, since)
        where.insert(0, "letters_fts MATCH ?")
        args.insert(0, fts_query(query))
        rows = list(self.db.query(
            "SELECT l.id, l.date_utc, l.from_addr, l.subject,"
            " snippet(letters_fts, -1, '**', '**', '…', 12) AS snippet, bm25(letters_fts, 4.0, 1.0, 2.0, 2.0) AS rank"
            f" FROM letters_fts JOIN letters l ON l.id = letters_fts.rowid WHERE {' AND '.join(where)}"
            f" ORDER BY rank, l.date_utc DESC LIMIT {int(limit)}",
            args,
        ))
        for row in rows:
            row["snippet"] = " ".join(row["snippet"].split())  # a one-line preview: the letter's line breaks go
            row["links"] = self.links_of(row["id"])
        return rows

    def thread(self, letter_id: int) -> list[dict[str, Any]]:
        """The conversation a letter belongs to, oldest first, from every mailbox.

        Letters are in one conversation when they are connected through the Message-IDs they name (their
        own, In-Reply-To, References): a reply joins the letters it answers, and two replies that quote
        the same letter join each other even when that letter itself was never archived.
        """
        if self.db.execute("SELECT 1 FROM letters WHERE id = ?", [letter_id]).fetchone() is None:
            raise NotFound(f"no letter {letter_id}; 'hanna-sync letters' lists them")
        rows = list(self.db.query(
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
        ))
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

    # -- relinking and backfill -----------------------------------------------------------------

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
            for chunk, marks in _chunks(ids):
                for thread_id, entity_type, entity_id in self.db.execute(
                    sql.format(marks), chunk
                ).fetchall():
                    found.setdefault(thread_id, []).append((entity_type, entity_id))
        return found

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
            " ON CONFLICT (mailbox_id, folder, uidvalidity, uid) WHERE uid IS NOT NULL DO UPDATE SET wanted_since = NULL",
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
        for chunk, marks in _chunks(names):
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
        for chunk, marks in _chunks(graph_ids):
            self.db.execute(
                "DELETE FROM skipped_letters WHERE mailbox_id = ? AND folder = ?"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk],
            )

    def graph_skipped(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> set[str]:
        """Which of these Graph messages were skipped here before and are not wanted: nothing to do."""
        found: set[str] = set()
        for chunk, marks in _chunks(graph_ids):
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
        for chunk, marks in _chunks(uids):
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

    def prune_skipped(self, mailbox_id: int, folder: str, uidvalidity: int, present: list[int], up_to: int) -> int:
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
            for chunk, marks in _chunks(frontier):
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
                "INSERT OR REPLACE INTO links (letter_id, entity_type, entity_id, rule, address) VALUES (?, ?, ?, ?, ?)",
                [letter_id, link.entity_type, link.entity_id, link.rule, link.address],
            )

    # -- export, purge and retention --------------------------------------------------------------

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
        for chunk, marks in _chunks(letter_ids):
            found.update(row[0] for row in self.db.execute(
                f"SELECT id FROM letters WHERE id IN ({marks})", chunk).fetchall())
        return [letter_id for letter_id in letter_ids if letter_id not in found]

    def original(self, letter_id: int) -> dict[str, Any]:
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

    @staticmethod
    def _identity_hash(identity: str) -> str:
        import hashlib

        return hashlib.sha256(b"hanna-purged-v1\n" + identity.encode("utf-8", "surrogatepass")).hexdigest()

    def purged(self, identities: list[str]) -> set[str]:
        """Which of these letters (by identity) were purged: a pass must not archive them again."""
        by_hash = {self._identity_hash(identity): identity for identity in identities}
        hashes = list(by_hash)
        found: set[str] = set()
        for chunk, marks in _chunks(hashes):
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
                    for chunk, marks in _chunks(letter_ids):
                        if tombstone:
                            self.db.conn.executemany(
                                "INSERT OR IGNORE INTO purged_letters (identity_hash, purged_at) VALUES (?, ?)",
                                [(self._identity_hash(identity), now) for (identity,) in self.db.execute(
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

    def free_share(self) -> float:
        """The share of the file's pages that are free (on SQLite's freelist): what VACUUM would give back."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        return self.db.execute("PRAGMA freelist_count").fetchone()[0] / pages if pages else 0.0

    def vacuum(self) -> None:
        """Rewrite the file without its free pages, then truncate the write-ahead log.

        Under the store's lock and outside any transaction (VACUUM cannot run inside one). In WAL mode a
        reader in another process keeps reading its snapshot meanwhile; a writer waits for the busy timeout.
        """
        with self.lock:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- Office 365 ----------------------------------------------------------------------------------

    GRAPH_UIDVALIDITY = 0  # marks a location found through Graph: IMAP's UIDVALIDITY is never 0

    def graph_located(self, mailbox_id: int, folder: str, graph_ids: list[str]) -> set[str]:
        """Which of these Graph messages already have a live location in this folder (so need nothing)."""
        found: set[str] = set()
        for chunk, marks in _chunks(graph_ids):
            found.update(row[0] for row in self.db.execute(
                f"SELECT graph_id FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND gone_at IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk]
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
            [letter_id, mailbox_id, folder, self.GRAPH_UIDVALIDITY, graph_id, utcnow(),
             mailbox_id, folder, self.GRAPH_UIDVALIDITY],
        )

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
                " AND gone_at IS NULL", [mailbox_id, folder, self.GRAPH_UIDVALIDITY],
            ).fetchall()]
        uids: list[int] = []
        for chunk, marks in _chunks(graph_ids):
            uids.extend(row[0] for row in self.db.execute(
                f"SELECT uid FROM letter_locations WHERE mailbox_id = ? AND folder = ? AND gone_at IS NULL"
                f" AND graph_id IN ({marks})", [mailbox_id, folder, *chunk]
            ).fetchall())
        return uids

    def mark_graph_uids_gone(self, mailbox_id: int, folder: str, uids: list[int]) -> None:
        """Graph locations found gone without an @removed (a delta round read from the start did not return them)."""
        now = utcnow()
        for chunk, marks in _chunks(uids):
            self.db.execute(
                f"UPDATE letter_locations SET gone_at = ? WHERE mailbox_id = ? AND folder = ? AND uidvalidity = ?"
                f" AND uid IN ({marks}) AND gone_at IS NULL",
                [now, mailbox_id, folder, self.GRAPH_UIDVALIDITY, *chunk],
            )

    def clear_reauth(self, mailbox_id: int) -> None:
        """A fresh sign-in: the mailbox is no longer waiting for one, and the next pass tries it."""
        self.db.execute(
            "UPDATE mailboxes SET failure_kind = NULL, last_error = NULL, last_error_at = NULL, failing_since = NULL,"
            " consecutive_failures = 0, retry_after = NULL WHERE id = ? AND failure_kind IN ('reauth', 'auth')",
            [mailbox_id],
        )
