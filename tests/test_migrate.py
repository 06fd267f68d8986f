"""`hanna-sync migrate` and `backup` around an upgrade: the backup is what the older version wrote, and the
migrations run once, only when something is pending."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlite_utils
from click.testing import CliRunner

from hanna_sync import __version__
from hanna_sync.cli import cli
from hanna_sync.db.store import Store, migrations

ALL = [m.name for m in migrations._migrations]
# An older release's database: the schema up to (not including) the last three migrations.
OLD = ALL[:-3]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n')

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    return invoke


def old_database(path) -> None:
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before=ALL[len(OLD)])
    db.execute("INSERT INTO customers (id, name, email, updated_at) VALUES ('C-1', 'UAB Alfa', 'info@alfa.lt', '2026-01-01')")
    db.close()


def applied_names(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]


def test_migrate_backs_up_the_old_schema_then_applies_only_what_is_pending(run, tmp_path):
    old_database(tmp_path / "hs.db")
    assert applied_names(tmp_path / "hs.db") == OLD

    result = run("migrate", "--backup", str(tmp_path / "before.db"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == {"database": str(tmp_path / "hs.db"), "version": __version__, "applied": ALL[len(OLD):],
                      "backup": str(tmp_path / "before.db")}
    # The backup is the database the older version wrote, data and all; the database is now whole.
    assert applied_names(tmp_path / "before.db") == OLD
    with sqlite3.connect(tmp_path / "before.db") as conn:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("UAB Alfa",)]
    assert applied_names(tmp_path / "hs.db") == ALL
    store = Store(tmp_path / "hs.db")
    versions = {m.name: m.version for m in store.applied_migrations()}
    assert all(versions[name] == __version__ for name in ALL[len(OLD):])
    assert store.entity("customer", "C-1") is not None

    # Once: a second run finds nothing, writes no backup.
    again = run("migrate", "--backup", str(tmp_path / "again.db"))
    assert again.exit_code == 0
    assert "nothing to apply" in again.output
    assert not (tmp_path / "again.db").exists()
    assert applied_names(tmp_path / "hs.db") == ALL


def test_backup_copies_the_database_as_found_and_does_not_migrate_it(run, tmp_path):
    old_database(tmp_path / "hs.db")
    result = run("backup", str(tmp_path / "copy.db"))
    assert result.exit_code == 0, result.output
    assert "0 letters" in result.output
    assert applied_names(tmp_path / "hs.db") == OLD
    assert applied_names(tmp_path / "copy.db") == OLD


def test_migrate_without_a_database_creates_none(run, tmp_path):
    result = run("migrate", "--backup", str(tmp_path / "b.db"))
    assert result.exit_code == 0
    assert f"No database at {tmp_path / 'hs.db'} yet" in result.output
    assert not (tmp_path / "hs.db").exists()
    assert not (tmp_path / "b.db").exists()
    assert json.loads(run("migrate", "--json").output)["applied"] == []


def test_a_backup_that_cannot_be_written_leaves_the_database_unmigrated(run, tmp_path):
    old_database(tmp_path / "hs.db")
    result = run("migrate", "--backup", str(tmp_path / "missing-dir" / "b.db"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert applied_names(tmp_path / "hs.db") == OLD


def test_migrate_never_replaces_an_earlier_backup(run, tmp_path):
    """A rerun after a migration failed half way (dpkg --configure -a) must not copy the half-migrated database
    over the only backup of what the older version wrote."""
    old_database(tmp_path / "hs.db")
    (tmp_path / "before.db").write_bytes(b"the older version's database")
    result = run("migrate", "--backup", str(tmp_path / "before.db"))
    assert result.exit_code == 2
    assert "exists: migrate never replaces a backup" in result.output
    assert (tmp_path / "before.db").read_bytes() == b"the older version's database"
    assert applied_names(tmp_path / "hs.db") == OLD
