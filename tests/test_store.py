from __future__ import annotations

import json
import sqlite3
import stat

import pytest
import sqlite_utils

from hanna_sync.db.store import DatabaseError, Store, migrations
from hanna_sync.errors import InputError, NotFound
from hanna_sync.models import Entity, FolderState, Mailbox

ALL_TABLES = {
    "users", "mailboxes", "customers", "customer_contacts", "leads", "lead_contacts", "folder_states",
    "letters", "letter_sources", "letter_locations", "links", "scan_runs", "letters_fts", "letter_thread_ids",
}


def test_fresh_database_has_every_table_and_is_private(tmp_path):
    path = tmp_path / "sub" / "a.db"
    store = Store(path)
    assert set(store.db.table_names()) >= ALL_TABLES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.db.journal_mode == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    assert [m.name for m in migrations.applied(store.db)] == [m.name for m in migrations._migrations]


def test_upgrade_from_the_first_schema_keeps_the_data(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m002_archive")
    old["customers"].insert({"id": "C1", "name": "Acme", "email": "a@acme.lt", "updated_at": "2025-01-01"})
    old.close()
    assert "letters" not in sqlite_utils.Database(path).table_names()

    store = Store(path)
    assert set(store.db.table_names()) >= ALL_TABLES
    assert store.entity("customer", "C1") == Entity(id="C1", name="Acme", email="a@acme.lt")
    Store(path)  # opening again applies nothing twice
    assert len(migrations.applied(store.db)) == len(migrations._migrations)


def test_upgrade_indexes_letters_archived_before_search_and_threads(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m006_search_and_threads")
    for n, (message_id, references) in enumerate([("a@x.lt", []), ("b@x.lt", ["a@x.lt"])], start=1):
        old["letters"].insert({
            "id": n, "identity": f"mid:{message_id}", "message_id": message_id, "subject": f"Sąskaita {n}",
            "body_text": "", "attachments": '[{"filename": "sutartis.pdf", "content_type": "x", "size": 1}]',
            "references": json.dumps(references), "size": 1, "archived_at": "2025-01-01",
        })
    old.close()

    store = Store(path)
    assert sorted(r["id"] for r in store.search("saskaita sutartis")) == [1, 2]
    assert [r["id"] for r in store.thread(1)] == [1, 2]


def test_a_newer_database_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.db"
    store = Store(path)
    store.db["_sqlite_migrations"].insert(
        {"migration_set": "hanna_sync", "name": "m999_future", "applied_at": "2030-01-01"}
    )
    store.close()
    with pytest.raises(DatabaseError, match="newer hanna-sync"):
        Store(path)


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(DatabaseError, match="not a usable hanna-sync database"):
        Store(path)


def mailbox(**kw) -> Mailbox:
    base = dict(user="jonas", email="jonas@acme.lt", provider="custom", imap_host="h", imap_port=993,
                imap_security="ssl", folders=["INBOX", "Išsiųsti"], secret_ref="ref-" + kw.get("email", "1"))
    base.update(kw)
    return Mailbox(**base)


def test_mailbox_round_trip_and_uniqueness(tmp_path):
    store = Store(tmp_path / "a.db")
    first = mailbox(main=True)
    store.add_mailbox(first)
    assert store.mailbox(first.id) == first
    with pytest.raises(InputError, match="already has mailbox"):
        store.add_mailbox(mailbox(secret_ref="other"))
    # Another user's mailbox for the same login on the same server is the same account, scanned twice: refused,
    # naming the one there is, unless allowed (a shared mailbox kept on purpose).
    with pytest.raises(InputError, match=r"mailbox 1 \(jonas@acme.lt of jonas\) is already login jonas@acme.lt on"
                                         r" h:993: .* --allow-duplicate"):
        store.add_mailbox(mailbox(user="ona", email="JONAS@acme.lt", imap_host="H", secret_ref="other"))
    store.add_mailbox(mailbox(user="ona", secret_ref="other"), allow_duplicate=True)
    assert [m.user for m in store.mailboxes()] == ["jonas", "ona"]
    assert [m.user for m in store.mailboxes("ona")] == ["ona"]
    # The same address on another server, or another login on the same one, is another account.
    store.add_mailbox(mailbox(user="petras", email="jonas@acme.lt", imap_host="h2", secret_ref="third"))
    store.add_mailbox(mailbox(user="ona", email="ona@acme.lt", imap_host="h", secret_ref="fourth"))
    with pytest.raises(InputError, match="is already login ona@acme.lt on h:993"):
        store.add_mailbox(mailbox(user="petras", email="petras@acme.lt", username="Ona@Acme.lt", secret_ref="fifth"))


def test_only_one_main_mailbox_per_user(tmp_path):
    store = Store(tmp_path / "a.db")
    first = mailbox(main=True)
    store.add_mailbox(first)
    second = mailbox(email="j2@acme.lt", main=True)
    assert store.add_mailbox(second) == first.id
    assert [m.main for m in store.mailboxes()] == [False, True]
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("UPDATE mailboxes SET is_main = 1")


def test_removing_a_mailbox_keeps_letters(tmp_path):
    store = Store(tmp_path / "a.db")
    box = mailbox()
    store.add_mailbox(box)
    letter_id = store.db["letters"].insert(
        {"identity": "mid:x", "size": 1, "archived_at": "2025-01-01"}
    ).last_pk
    store.db["letter_locations"].insert(
        {"letter_id": letter_id, "mailbox_id": box.id, "folder": "INBOX", "uidvalidity": 1, "uid": 1, "seen_at": "t"}
    )
    store.remove_mailbox(box.id)
    assert store.db["letters"].count == 1
    assert store.db["letter_locations"].count == 0
    with pytest.raises(NotFound):
        store.mailbox(box.id)


def test_mailbox_ids_are_never_reused(tmp_path):
    store = Store(tmp_path / "a.db")
    box = mailbox()
    store.add_mailbox(box)
    store.remove_mailbox(box.id)
    again = mailbox()
    store.add_mailbox(again)
    assert again.id != box.id


def test_writes_outside_a_transaction_are_committed_at_once(tmp_path):
    """A bare UPDATE must not open an implicit transaction that later batches would nest into."""
    store = Store(tmp_path / "a.db")
    box = mailbox()
    store.add_mailbox(box)
    store.record_outcome(box.id, "boom")
    assert not store.db.conn.in_transaction
    other = sqlite3.connect(tmp_path / "a.db")
    assert other.execute("SELECT last_error FROM mailboxes").fetchone() == ("boom",)


def test_m009_leaves_old_folder_lists_unknown_and_merges_a_folder_given_twice(tmp_path):
    """A database from before m009: mailboxes saved with INBOX and inbox (scanned twice by every pass)."""
    store = Store(tmp_path / "a.db")
    store.add_mailbox(mailbox())
    store.db.execute("UPDATE mailboxes SET folders = ?", ['["INBOX", "Išsiųsti", "inbox", "Išsiųsti"]'])
    graph = mailbox(email="ona@imone.lt")
    graph.kind = "o365-scan"
    store.add_mailbox(graph)  # Graph names its inbox "Inbox", and it is no IMAP INBOX to rename
    store.db.execute("UPDATE mailboxes SET folders = ? WHERE kind = 'o365-scan'", ['["Inbox", "Sent Items"]'])
    store.db.execute("ALTER TABLE mailboxes DROP COLUMN folders_chosen")
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_folders_chosen'")
    store.db.conn.commit()
    store.close()
    box, graph = Store(tmp_path / "a.db").mailboxes()
    assert box.folders == ["INBOX", "Išsiųsti"]
    assert graph.folders == ["Inbox", "Sent Items"]
    assert box.folders_chosen is None  # "as saved": `test` cannot say whether they were chosen


def test_m009_moves_the_scan_state_of_an_inbox_saved_as_inbox_with_its_name(tmp_path):
    """"Inbox" saved alone becomes "INBOX": its state, locations and skipped letters follow it, so the next
    pass neither takes it for a folder taken off the list nor reads INBOX again from the start."""
    from hanna_sync.demo import sample
    from hanna_sync.mail.message import parse_letter

    store = Store(tmp_path / "a.db")
    box = mailbox(folders=["Inbox", "Sent"])
    store.add_mailbox(box)
    box_id = box.id
    store.save_folder_state(FolderState(mailbox_id=box_id, folder="Inbox", uidvalidity=7, last_uid=40))
    raw = sample.letter("ruta@azuolas.lt", sample.STAFF, "Užsakymas", "Tekstas", message_id="<m9@azuolas.lt>")
    letter_id, _ = store.archive_letter("mid:m9@azuolas.lt", parse_letter(raw), raw, len(raw))
    store.add_location(letter_id, box_id, "Inbox", 7, uid=40)
    store.db.execute("UPDATE mailboxes SET folders = ?", ['["Inbox", "Sent"]'])
    store.db.execute("ALTER TABLE mailboxes DROP COLUMN folders_chosen")
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_folders_chosen'")
    store.db.conn.commit()
    store.close()
    store = Store(tmp_path / "a.db")
    assert store.mailboxes()[0].folders == ["INBOX", "Sent"]
    assert store.folder_state(box_id, "INBOX").last_uid == 40
    assert [s.folder for s in store.folder_states(box_id)] == ["INBOX"]
    assert [(loc["folder"], loc["gone_at"]) for loc in store.letter(letter_id)["locations"]] == [("INBOX", None)]


def test_read_rows_have_exactly_the_fields_their_types_name(tmp_path):
    """The TypedDicts are what the CLI and --json rely on: a column added to a query must be added to its type."""
    from hanna_sync.db import rows
    from hanna_sync.demo import sample
    from hanna_sync.linking.match import Link
    from hanna_sync.mail.message import parse_letter

    store = Store(tmp_path / "a.db")
    box = mailbox()
    store.add_mailbox(box)
    assert box.id is not None
    raw = sample.letter("ruta@azuolas.lt", sample.STAFF, "Užsakymas", "Tekstas", message_id="<r1@azuolas.lt>")
    letter_id, _ = store.archive_letter("mid:r1@azuolas.lt", parse_letter(raw), raw, len(raw))
    store.add_location(letter_id, box.id, "INBOX", 7, uid=1)
    store.add_links(letter_id, [Link("customer", "C1", "address", "ruta@azuolas.lt")])
    store.finish_run(store.start_run(), "ok", [], budget_exhausted=False)

    def fields(row: object) -> set[str]:
        assert isinstance(row, dict)
        return set(row)

    def named(typed: type) -> set[str]:
        return set(typed.__annotations__)

    letter = store.letter(letter_id)
    assert fields(letter) == named(rows.LetterRow)
    assert fields(letter["locations"][0]) == named(rows.LocationRow)
    assert fields(letter["links"][0]) == named(rows.LinkRow)
    assert fields(store.letters()[0]) == named(rows.LetterSummary)
    assert fields(store.search("Užsakymas")[0]) == named(rows.SearchHit)
    assert fields(store.thread(letter_id)[0]) == named(rows.ThreadLetter)
    assert fields(store.original(letter_id)) == named(rows.Original)
    assert fields(store.last_run()) == named(rows.RunRow)
