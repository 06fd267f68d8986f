"""The schema: named migrations (sqlite-utils' `Migrations`), applied in order when the store opens.

One file holds the directory (customers, leads, their contacts), the mailboxes, the archive and the
scan state, so a CRM (or Datasette) can read it directly; the README documents the tables. A migration
is never edited once released: a change is a new one, each applied in its own transaction.
"""

from __future__ import annotations

import datetime
import json

import sqlite_utils

from hanna_sync import __version__
from hanna_sync.db.archive import participants_of
from hanna_sync.models import merged_folders


class VersionedMigrations(sqlite_utils.Migrations):
    """sqlite-utils' migrations, each recorded with the hanna-sync version that applied it
    (`_sqlite_migrations.hanna_sync_version`): after upgrades and restored backups, which release shaped
    a database is a fact to read (`hanna-sync doctor`), not to guess. Rows from before it was recorded
    are NULL. The column is the record's own, so it comes before any migration, not as one."""

    VERSION_COLUMN = "hanna_sync_version"

    def ensure_migrations_table(self, db: sqlite_utils.Database) -> None:
        super().ensure_migrations_table(db)
        table = db.table(self.migrations_table)
        if self.VERSION_COLUMN not in table.columns_dict:
            table.add_column(self.VERSION_COLUMN, str)

    def _record_applied(self, db: sqlite_utils.Database, name: str) -> None:
        """As sqlite-utils records it (in the migration's transaction), plus the version."""
        db.table(self.migrations_table).insert({
            "migration_set": self.name, "name": name,
            "applied_at": str(datetime.datetime.now(datetime.timezone.utc)), self.VERSION_COLUMN: __version__,
        })


migrations = VersionedMigrations("hanna_sync")


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
        db.execute("UPDATE mailboxes SET folders = ? WHERE id = ?",
                   [json.dumps(merged, ensure_ascii=False), mailbox_id])
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


@migrations()
def m010_links_by_hand(db: sqlite_utils.Database) -> None:
    """Links made and taken off by hand (`hanna-sync link` / `unlink`), which no relink undoes.

    A link made by hand is a row of `links` like any other, with rule 'manual' and address '-': every
    reader of `links` (letters --customer, a reply's thread links, a CRM) sees it. The decision itself
    is a row of `manual_links`, and a rule's link taken off by hand a row of `unlinks`: both outlive
    the entity. A customer or lead deleted (by a snapshot, remove-entity or the CRM itself) takes its
    `links` rows with it, but when its id comes back (a CRM export missing it once) the next relink
    puts the hand-made links back and no relink, import or pass brings an unlinked link back. A
    lead converted to a customer hands its decisions to that customer. Purging a letter takes its
    decisions with it.
    """
    triggers = "\n".join(
        f"""
        CREATE TRIGGER {entity_type}s_delete_links_by_hand AFTER DELETE ON {entity_type}s BEGIN
            DELETE FROM links WHERE entity_type = '{entity_type}' AND entity_id = old.id AND rule = 'manual';
        END;"""
        for entity_type in ("customer", "lead")
    )
    db.executescript(
        f"""
        CREATE TABLE unlinks (
            letter_id INTEGER NOT NULL REFERENCES letters(id) ON DELETE CASCADE,
            entity_type TEXT NOT NULL CHECK (entity_type IN ('customer', 'lead')),
            entity_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            unlinked_at TEXT NOT NULL,
            PRIMARY KEY (letter_id, entity_type, entity_id)
        );
        CREATE INDEX unlinks_entity ON unlinks(entity_type, entity_id);
        CREATE TABLE manual_links (
            letter_id INTEGER NOT NULL REFERENCES letters(id) ON DELETE CASCADE,
            entity_type TEXT NOT NULL CHECK (entity_type IN ('customer', 'lead')),
            entity_id TEXT NOT NULL,
            linked_at TEXT NOT NULL,
            PRIMARY KEY (letter_id, entity_type, entity_id)
        );
        CREATE INDEX manual_links_entity ON manual_links(entity_type, entity_id);
        CREATE INDEX links_manual ON links(letter_id, entity_type, entity_id) WHERE rule = 'manual';
        {triggers}
        """
    )


@migrations()
def m011_web_tokens(db: sqlite_utils.Database) -> None:
    """The web server's API tokens (`hanna-sync token create`): only each token's sha256 is kept."""
    db.executescript(
        """
        CREATE TABLE web_tokens (
            name TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            admin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            last_used_at TEXT
        );
        """
    )


@migrations()
def m012_gmail_message_ids(db: sqlite_utils.Database) -> None:
    """Gmail's X-GM-MSGID on each location read from a server with X-GM-EXT-1 (as decimal text: the ids
    are unsigned 64-bit). One Gmail message shows in INBOX, each label's folder and All Mail; the id says,
    before any download, that a letter seen in another folder of the mailbox is archived already, also
    for letters without a Message-ID, across passes and kills."""
    db.executescript(
        """
        ALTER TABLE letter_locations ADD COLUMN gm_msgid TEXT;
        CREATE INDEX letter_locations_gm_msgid ON letter_locations(mailbox_id, gm_msgid) WHERE gm_msgid IS NOT NULL;
        """
    )


@migrations()
def m013_gmail_api_message_ids(db: sqlite_utils.Database) -> None:
    """A Gmail message id names one message in all its labels: found in a second label, its letter is found
    by the id in any folder of the mailbox (letters_by_graph_id), and located there without a download."""
    db.executescript(
        """
        CREATE INDEX letter_locations_graph_any ON letter_locations(mailbox_id, graph_id) WHERE graph_id IS NOT NULL;
        """
    )
