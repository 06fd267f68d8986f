"""Removing letters for good: `hanna-sync purge` (tombstones, secure delete, VACUUM) and the retention period
a pass applies. Letters come from the sandbox Dovecot through real passes."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.config import Config, RetentionConfig, load_config
from hanna_sync.db import retention
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.errors import ConfigError
from hanna_sync.lock import pass_lock
from tests.helpers import Env, deliver_sample


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def archived(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user)
    assert env.run().ok
    return env


def cli_run(env, *args, input=None):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args], input=input)


def letter_id(env, message_id: str) -> int:
    return env.store.db.execute("SELECT id FROM letters WHERE message_id = ?", [message_id]).fetchone()[0]


def traces(env, letter: int) -> dict[str, int]:
    """Rows anywhere that still belong to the letter."""
    q = env.store.db.execute
    return {table: q(f"SELECT count(*) FROM {table} WHERE {column} = ?", [letter]).fetchone()[0]
            for table, column in (("letters", "id"), ("letter_sources", "letter_id"), ("letter_locations", "letter_id"),
                                  ("links", "letter_id"), ("letter_thread_ids", "letter_id"))}


def file_bytes(env) -> bytes:
    """The database file and its write-ahead log, as someone who copies them would have them."""
    path = env.config.database
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_purge_removes_the_letter_everywhere_and_keeps_only_a_hash(archived):
    env = archived
    order = letter_id(env, "order-17@azuolas.lt")
    reply = letter_id(env, "reply-17@imone.lt")
    assert [r["id"] for r in env.store.thread(reply)] == [order, reply]
    assert [r["id"] for r in env.store.search('"40 m³ lentų"')] == [order]
    assert all(traces(env, order).values())

    result = cli_run(env, "purge", str(order), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"purged": 1, "letters": [order], "vacuumed": False}
    assert traces(env, order) == dict.fromkeys(traces(env, order), 0)
    assert env.store.search('"40 m³ lentų"') == [] and env.store.search("prašome") == []
    assert [r["id"] for r in env.store.thread(reply)] == [reply]
    env.store.db.execute("INSERT INTO letters_fts (letters_fts) VALUES ('integrity-check')")
    # The tombstone is a hash of the identity: the Message-ID itself is nowhere.
    (row,) = env.store.db.execute("SELECT identity_hash FROM purged_letters").fetchall()
    assert row[0] == hashlib.sha256(b"hanna-purged-v1\nmid:order-17@azuolas.lt").hexdigest()
    assert env.store.purged(["mid:order-17@azuolas.lt", "mid:reply-17@imone.lt"]) == {"mid:order-17@azuolas.lt"}
    assert not env.store.db.execute("SELECT count(*) FROM letters WHERE message_id LIKE 'order-17%'").fetchone()[0]


def test_purge_by_customer_asks_first_and_refuses_without_a_terminal(archived, monkeypatch):
    env = archived
    linked = env.store.export_ids(lead="L-2001")
    assert linked
    result = cli_run(env, "purge", "--lead", "L-2001")
    assert result.exit_code == 2 and result.stderr.strip() == (
        "Error: give --yes to purge without a terminal to confirm on")
    monkeypatch.setattr("hanna_sync.cli.archive.interactive", lambda: True)
    result = cli_run(env, "purge", "--lead", "L-2001", input="n\n")
    assert result.exit_code == 1 and "Domina jūsų paslaugos" in result.output
    assert env.store.export_ids(lead="L-2001") == linked
    result = cli_run(env, "purge", "--lead", "L-2001", input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Purged {len(linked)} letter(s)" in result.stdout
    assert env.store.export_ids(lead="L-2001") == []

    before = env.store.db["letters"].count
    for args, code, says in [
        (["4242", "--yes"], 3, "no letter 4242"),
        (["--lead", "L-2001", "--yes"], 3, "no archived letters are linked to lead L-2001"),
        (["--customer", "C-NOPE", "--yes"], 3, "no archived letters are linked to customer C-NOPE"),
        (["--yes"], 2, "name what to purge"),
    ]:
        result = cli_run(env, "purge", *args)
        assert result.exit_code == code and result.stderr.startswith("Error: ") and says in result.stderr, args
    assert env.store.db["letters"].count == before


def test_purge_waits_for_no_pass(archived):
    env = archived
    order = letter_id(env, "order-17@azuolas.lt")
    with pass_lock(env.config.database):
        result = cli_run(env, "purge", str(order), "--yes")
    assert result.exit_code == 75 and "a scan pass is running; nothing was purged" in result.stderr
    assert traces(env, order)["letters"] == 1


def test_a_purged_letter_is_not_archived_again_when_the_server_hands_it_over_again(archived, imap_user):
    env = archived
    order = letter_id(env, "order-17@azuolas.lt")
    letters = env.store.db["letters"].count
    assert cli_run(env, "purge", str(order), "--yes").exit_code == 0

    imap_user.dovecot.reset_uidvalidity(imap_user.login, "INBOX")  # every INBOX letter is read again
    m = env.run().mailboxes[0]
    assert m.ok, m.errors
    assert (m.archived, m.remapped) == (0, 5)
    assert m.skipped == 3 + 1  # the three that concern nobody, and the purged one
    assert env.store.db["letters"].count == letters - 1
    assert not env.store.db.execute("SELECT 1 FROM letters WHERE message_id = 'order-17@azuolas.lt'").fetchall()


def test_purged_words_are_not_left_in_the_database_file(env, imap_user):
    token = f"zebrafinch{secrets.token_hex(6)}"
    imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", sample.STAFF, f"Subject {token}", f"Body {token} text.", message_id=f"<{token}@azuolas.lt>"))
    deliver_sample(imap_user)
    env.add(imap_user)
    assert env.run().ok
    env.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert file_bytes(env).count(token.encode()) >= 4  # raw, body, subject, identity, Message-ID, index: it can fail

    assert cli_run(env, "purge", str(letter_id(env, f"{token}@azuolas.lt")), "--yes", "--no-vacuum").exit_code == 0
    assert token.encode() not in file_bytes(env)
    env.store.vacuum()
    assert token.encode() not in file_bytes(env)
    assert env.store.search("Krovinys") and env.store.quick_check() == []


def test_vacuum_runs_when_a_quarter_is_free_and_never_breaks_a_reader(env, imap_user):
    for n in range(30):  # letters large enough that purging them frees most of the file
        imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
            "ruta@azuolas.lt", sample.STAFF, f"Didelis {n}", f"{n} " + secrets.token_hex(8000),
            message_id=f"<big-{n}@azuolas.lt>"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    ids = env.store.export_ids(customer="C-1001")
    env.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = env.config.database.stat().st_size

    result = cli_run(env, "purge", *map(str, ids[:15]), "--yes", "--no-vacuum", "--json")
    assert json.loads(result.stdout)["vacuumed"] is False
    assert env.store.free_share() >= retention.VACUUM_FREE_SHARE

    # A reader in another process holds its snapshot while the purge VACUUMs: it goes on reading it.
    reader = sqlite3.connect(env.config.database, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM letters").fetchone()[0] == 15
    store = Store(env.config.database, busy_timeout_ms=300)  # the truncating checkpoint waits for the reader
    removal = retention.purge(store, env.config, ids[15:25])
    assert removal.vacuumed and store.free_share() == 0
    assert reader.execute("SELECT count(*) FROM letters").fetchone()[0] == 15
    assert len(reader.execute("SELECT raw FROM letter_sources").fetchall()) == 15
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM letters").fetchone()[0] == 5
    reader.close()
    store.vacuum()  # now nothing holds the log: it is truncated
    store.close()
    assert env.config.database.stat().st_size < size / 3
    assert env.config.database.with_name("hs.db-wal").stat().st_size == 0


def dated(days_ago: int, n: int) -> bytes:
    when = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return sample.letter("ruta@azuolas.lt", sample.STAFF, f"Laiškas {n}", "Tekstas.",
                         message_id=f"<dated-{n}@azuolas.lt>", date=when)


def test_retention_deletes_old_letters_at_the_next_pass_and_never_archives_them(env, imap_user, caplog):
    for n, days_ago in enumerate((11 * 365, 6 * 365, 30, 1)):
        imap_user.dovecot.deliver(imap_user.login, "INBOX", dated(days_ago, n))
    box = env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    assert env.store.db["letters"].count == 4
    undated = letter_id(env, "dated-2@azuolas.lt")  # no usable Date: its archiving time counts
    env.store.db.execute("UPDATE letters SET date_utc = NULL, archived_at = '2001-01-01T00:00:00+00:00' WHERE id = ?",
                         [undated])

    env.config = replace(env.config, retention=RetentionConfig(years=5))
    passed = env.run()
    assert passed.ok and passed.purged_by_retention == 3
    assert "3 deleted by retention;" in passed.summary_line()
    assert [r["message_id"] for r in env.store.letters()] == ["dated-3@azuolas.lt"]
    assert env.store.db.execute("SELECT count(*) FROM purged_letters").fetchone()[0] == 0  # no tombstones

    # New on the server: one too old to keep, one recent. Only the recent one is archived.
    imap_user.dovecot.deliver(imap_user.login, "INBOX", dated(8 * 365, 4))
    imap_user.dovecot.deliver(imap_user.login, "INBOX", dated(2, 5))
    m = env.run().mailboxes[0]
    assert (m.new, m.archived, m.skipped) == (2, 1, 1)
    assert sorted(r["message_id"] for r in env.store.letters()) == ["dated-3@azuolas.lt", "dated-5@azuolas.lt"]
    assert env.store.folder_state(box.id, "INBOX").skipped == 1

    # A failing clean-up never fails the pass; the next pass deletes, and `run --json` reports it.
    env.store.db.execute("UPDATE letters SET date_utc = '2001-01-01T00:00:00+00:00'")

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    env.store.purge_letters = broken
    with caplog.at_level(logging.WARNING):
        passed = env.run()
    assert passed.ok and passed.purged_by_retention == 0
    assert "retention: could not delete letters dated before" in caplog.text
    assert env.store.db["letters"].count == 2
    path = env.config_file()
    path.write_text(path.read_text() + "[retention]\nyears = 5\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "run", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["purged_by_retention"] == 2
    assert env.store.db["letters"].count == 0


def test_cutoff_dates():
    def cutoff(years, today):
        return retention.cutoff(Config(retention=RetentionConfig(years=years)), today)

    assert retention.cutoff(Config(), date(2026, 5, 1)) is None
    assert cutoff(7, date(2026, 5, 1)) == "2019-05-01"
    assert cutoff(1, date(2024, 2, 29)) == "2023-02-28"
    assert cutoff(2.5, date(2026, 5, 1)) == "2023-10-31"  # 2024-05-01 less 183 days
    assert cutoff(1e9, date(2026, 5, 1)) == cutoff(2025.9, date(2026, 5, 1)) == "0001-01-01"


@pytest.mark.parametrize("text, says", [
    ("[retention]\nyears = 0\n", "'retention.years' must be > 0"),
    ("[retention]\nyears = \"7\"\n", "'retention.years' must be a number of years > 0"),
    ("[retention]\nyear = 7\n", "did you mean 'retention.years'?"),
])
def test_retention_config_is_checked(tmp_path, text, says):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says.replace("?", r"\?")):
        load_config(path)
    path.write_text("[retention]\nyears = 7\n")
    assert load_config(path).retention.years == 7.0


@pytest.fixture
def ms(tmp_path, monkeypatch):
    from tests.fakes_microsoft import Microsoft

    fakes = Microsoft.start(tmp_path / "microsoft")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fakes.ca.ca_file))
    yield fakes
    fakes.close()


def test_graph_passes_skip_purged_and_too_old_letters_too(tmp_path, ms):
    from hanna_sync.admin import o365_mailboxes
    from hanna_sync.config import O365Config
    from hanna_sync.remote.oauth import MicrosoftSignIn

    ms.graph.mailbox(sample.STAFF, ("Inbox", "Sent Items"))
    for folder, raw, _ in sample.mailbox_letters():
        ms.graph.deliver(sample.STAFF, "Inbox" if folder == "INBOX" else "Sent Items", raw)
    env = Env(tmp_path)
    env.config = replace(env.config, o365=O365Config(
        tenant_id=ms.identity.tenant, client_id=ms.identity.client_id, authority=ms.identity.authority,
        graph_url=ms.graph.url))
    ms.identity.approve_as = sample.STAFF
    box = o365_mailboxes.new_mailbox("staff", sample.STAFF, "o365-scan", {})
    o365_mailboxes.add(env.store, env.secrets, MicrosoftSignIn.for_config(env.config, env.secrets), box, verify_first=True, timeout=10,
                       show=lambda _: None)
    assert env.run().ok
    letters = env.store.db["letters"].count
    assert cli_run(env, "purge", str(letter_id(env, "order-17@azuolas.lt")), "--yes").exit_code == 0

    env.config = replace(env.config, retention=RetentionConfig(years=5))
    ms.graph.expire_delta(sample.STAFF, "Inbox")  # the Inbox is read again from the start
    ms.graph.deliver(sample.STAFF, "Inbox", dated(8 * 365, 6))
    m = env.run().mailboxes[0]
    assert m.ok, m.errors
    assert (m.archived, m.skipped) == (0, 2)  # the purged one; the old one (the three of nobody: skipped before)
    assert env.store.db["letters"].count == letters - 1
    assert not env.store.db.execute(
        "SELECT count(*) FROM letters WHERE message_id IN ('order-17@azuolas.lt', 'dated-6@azuolas.lt')").fetchone()[0]
