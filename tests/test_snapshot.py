"""Snapshot imports (the CRM's whole list: absent entities removed), the guard against a truncated export,
leads converted to customers, remove-entity, [directory.columns], and a SIGKILL during a snapshot.

Letters come from real passes on the sandbox Dovecot where a pass matters (converted leads: no re-download);
elsewhere they are archived straight into the store, as a pass would store them, and linked by relink."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.config import Config, DirectoryConfig
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.errors import InputError
from hanna_sync.linking.directory import SnapshotRefused, import_entities, remove_entity
from hanna_sync.linking.relink import RELINK_DUE, relink
from hanna_sync.mail.message import parse_letter
from tests.helpers import Env

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("HANNA_SEED", random.randrange(2**32)))

CUSTOMERS = "id,name,email,domain,contacts\n" + "".join(
    f"C{n},Customer {n},info@c{n}.lt,c{n}.lt,\n" for n in range(1, 21))


def archive(store: Store, sender: str, subject: str, to: str = "staff@imone.lt") -> int:
    raw = sample.letter(sender, to, subject, "text", message_id=f"<{subject}@x>")
    with store.transaction():
        letter_id, _ = store.archive_letter(subject, parse_letter(raw), raw, len(raw))
    return letter_id


@pytest.fixture
def world(tmp_path):
    """20 customers (C1..C20, domain cN.lt) and one letter from each, linked."""
    config = Config(database=tmp_path / "hs.db", own_domains=("imone.lt",))
    store = Store(config.database)
    (tmp_path / "all.csv").write_text(CUSTOMERS)
    import_entities(store, "customer", tmp_path / "all.csv", config=config)
    letters = {n: archive(store, f"jonas@c{n}.lt", f"letter-{n}") for n in range(1, 21)}
    relink(store, config, None)
    return config, store, letters


def without(*numbers: int, extra: str = "") -> str:
    return "id,name,email,domain,contacts\n" + "".join(
        f"C{n},Customer {n},info@c{n}.lt,c{n}.lt,\n" for n in range(1, 21) if n not in numbers) + extra


def directory_dump(store: Store):
    return ([(e.id, e.name, e.email, e.domain, [c.email for c in e.contacts]) for e in store.entities("customer")],
            sorted((i, *k) for i, links in store.all_links().items() for k in links))


def test_a_snapshot_removes_the_absent_their_links_go_and_their_letters_stay_reported(world, tmp_path):
    config, store, letters = world
    (tmp_path / "s.csv").write_text(without(5, extra="C21,New,info@c21.lt,c21.lt,\n").replace("Customer 1,", "Renamed,"))
    result = import_entities(store, "customer", tmp_path / "s.csv", config=config, snapshot=True)
    assert (result.added, result.updated, result.unchanged, result.removed) == (1, 1, 18, ["C5"])
    assert result.orphaned == [letters[5]]
    assert [(i, link.entity_id) for i, link in result.removed_links] == [(letters[5], "C5")]
    assert "C5" not in {e.id for e in store.entities("customer")}
    assert store.state_value(RELINK_DUE) == "1"  # the relink is due in the same transaction
    assert letters[5] not in store.all_links()  # no link outlives its entity
    assert store.letter(letters[5]) is not None  # the letter stays archived


def test_without_snapshot_an_import_still_upserts_and_removes_nothing(world, tmp_path):
    config, store, _ = world
    (tmp_path / "s.csv").write_text(without(*range(2, 21)))
    result = import_entities(store, "customer", tmp_path / "s.csv", config=config)
    assert result.removed == [] and len(store.entities("customer")) == 20


def test_a_dry_run_shows_the_difference_and_writes_nothing(world, tmp_path):
    config, store, letters = world
    before = directory_dump(store)
    (tmp_path / "s.csv").write_text(without(7, extra="C21,New,info@c21.lt,c21.lt,\n"))
    result = import_entities(store, "customer", tmp_path / "s.csv", config=config, snapshot=True, dry_run=True)
    assert (result.added, result.removed, result.orphaned, result.dry_run) == (1, ["C7"], [letters[7]], True)
    assert directory_dump(store) == before and store.state_value(RELINK_DUE) is None


def test_the_cli_dry_run_prints_added_updated_removed_and_the_links(world, tmp_path):
    config, store, letters = world
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'database = "{config.database}"\nown_domains = ["imone.lt"]\n')
    (tmp_path / "s.csv").write_text(without(7))
    before = directory_dump(store)
    result = CliRunner().invoke(cli, ["--config", str(config_file), "import", "customers", str(tmp_path / "s.csv"),
                                      "--snapshot", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Customers: 0 added, 0 updated, 1 removed, 19 unchanged, 0 rejected (dry run: nothing written)." in result.output
    assert "Links that would change: 0 added, 1 removed, 1 letters left linked to nobody" in result.output
    assert f"unlinks customer C7 (customer_domain) from 1 letter(s): {letters[7]}" in result.output
    assert directory_dump(store) == before
    as_json = CliRunner().invoke(cli, ["--config", str(config_file), "import", "customers", str(tmp_path / "s.csv"),
                                       "--snapshot", "--dry-run", "--json"])
    data = json.loads(as_json.stdout)
    assert (data["removed"], data["orphaned"], data["dry_run"], data["relink"]) == (["C7"], [letters[7]], True, None)
    assert {"added", "updated", "unchanged", "rejected", "conflicts", "ignored_columns", "removed_links"} <= set(data)


def test_the_guard_refuses_a_truncated_export_with_the_numbers_unless_forced(world, tmp_path):
    config, store, _ = world
    before = directory_dump(store)
    (tmp_path / "s.csv").write_text(without(1, 2, 3))  # 3 of 20: 15% > 10%
    with pytest.raises(SnapshotRefused) as refused:
        import_entities(store, "customer", tmp_path / "s.csv", config=config, snapshot=True)
    assert str(refused.value) == (f"{tmp_path / 's.csv'}: this snapshot would remove 3 of 20 customers (15%), over"
                                  " directory.max_removed_percent (10%): nothing written; check the export, or give"
                                  " --force")
    assert refused.value.exit_code == 1 and directory_dump(store) == before
    (tmp_path / "two.csv").write_text(without(1, 2))  # 10%: not over
    assert import_entities(store, "customer", tmp_path / "two.csv", config=config, snapshot=True).removed == ["C1", "C2"]
    result = import_entities(store, "customer", tmp_path / "s.csv", config=config, snapshot=True, force=True)
    assert result.removed == ["C3"]
    loose = Config(database=config.database, directory=DirectoryConfig(max_removed_percent=100))
    (tmp_path / "half.csv").write_text(without(*range(1, 12)))
    assert len(import_entities(store, "customer", tmp_path / "half.csv", config=loose, snapshot=True).removed) == 8


def test_an_empty_source_removes_nothing_unless_forced(world, tmp_path):
    config, store, _ = world
    (tmp_path / "empty.csv").write_text("id,name,email,domain\n")
    loose = Config(database=config.database, directory=DirectoryConfig(max_removed_percent=100))
    with pytest.raises(SnapshotRefused, match="empty.csv has no customers: a snapshot of it would remove all 20"):
        import_entities(store, "customer", tmp_path / "empty.csv", config=loose, snapshot=True)
    assert len(store.entities("customer")) == 20
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(SnapshotRefused):
        import_entities(store, "customer", tmp_path / "empty.json", config=loose, snapshot=True)
    assert len(import_entities(store, "customer", tmp_path / "empty.csv", config=config, snapshot=True,
                               force=True).removed) == 20


@pytest.mark.parametrize("extra, message", [
    ("C4,Again,x@c4.lt,,\n", "line 22: id C4 already given on line 5: a snapshot must list every customer"),
    ("C30,No address,,,\n", "line 22: no address to link letters by"),
    ("C30,Bad,not-an-email,,\n", "line 22: 'not-an-email' is not an email address"),
])
def test_bad_rows_refuse_the_whole_snapshot_naming_source_and_line(world, tmp_path, extra, message):
    config, store, _ = world
    before = directory_dump(store)
    (tmp_path / "s.csv").write_text(without(extra=extra))
    with pytest.raises(InputError) as refused:
        import_entities(store, "customer", tmp_path / "s.csv", config=config, snapshot=True)
    assert str(refused.value).startswith(f"{tmp_path / 's.csv'}, {message}")
    assert "\n" not in str(refused.value) and refused.value.exit_code == 2
    assert directory_dump(store) == before and store.state_value(RELINK_DUE) is None


def test_an_unparsable_source_names_itself_as_the_caller_names_it(world):
    config, store, _ = world
    with pytest.raises(InputError, match=r"^cmd:crm-export is not valid JSON: .* at line 1$"):
        import_entities(store, "customer", None, stdin_data=b"[{", config=config, snapshot=True,
                        source_name="cmd:crm-export")
    with pytest.raises(InputError, match=r"^https://crm.example/c.csv, line 3: the quote opened"):
        import_entities(store, "customer", None, stdin_data=b'id,name,email\nC1,A,a@a.lt\nC2,"B,b@b.lt\n',
                        config=config, source_name="https://crm.example/c.csv")


def test_the_column_mapping_reads_a_crms_own_names(world, tmp_path):
    config, store, _ = world
    mapped = Config(database=config.database, directory=DirectoryConfig(
        columns={"id": "Customer No.", "email": "E-mail address", "domain": "Web domain", "contacts": "People"}))
    (tmp_path / "crm.csv").write_text("Customer No.,Name,E-mail address,Web domain,People,Owner\n"
                                      "C1,Acme,sales@c1.lt,c1.lt,ona@c1.lt,x\n")
    result = import_entities(store, "customer", tmp_path / "crm.csv", config=mapped)
    assert (result.updated, result.ignored_columns) == (1, ["Owner"])
    c1 = store.entity("customer", "C1")
    assert (c1.name, c1.email, [c.email for c in c1.contacts]) == ("Acme", "sales@c1.lt", ["ona@c1.lt"])
    (tmp_path / "json.json").write_text(json.dumps([{"Customer No.": "C2", "E-mail address": "b@c2.lt",
                                                     "Web domain": "c2.lt", "People": []}]))
    assert import_entities(store, "customer", tmp_path / "json.json", config=mapped).updated == 1


def test_a_mapping_naming_a_missing_column_is_bad_input_naming_it_and_the_files_columns(world, tmp_path):
    config, store, _ = world
    before = directory_dump(store)
    mapped = Config(database=config.database, directory=DirectoryConfig(columns={"email": "E-mail address"}))
    (tmp_path / "crm.csv").write_text("id,name,Email\nC1,Acme,sales@c1.lt\n")
    with pytest.raises(InputError) as refused:
        import_entities(store, "customer", tmp_path / "crm.csv", config=mapped, snapshot=True, force=True)
    assert str(refused.value) == (
        f"{tmp_path / 'crm.csv'}: [directory.columns] email = 'E-mail address' names a column the file does not have"
        " (its columns: 'id', 'name', 'Email'): correct the mapping in the config, or the export")
    assert refused.value.exit_code == 2 and directory_dump(store) == before
    leads_only = Config(database=config.database, directory=DirectoryConfig(columns={"domain": "Web"}))
    (tmp_path / "leads.csv").write_text("id,name,email\nL1,Lead,l@l.lt\n")
    assert import_entities(store, "lead", tmp_path / "leads.csv", config=leads_only).added == 1  # leads: no domain


def test_remove_entity_removes_links_relinks_and_reports_letters_left_to_nobody(world, tmp_path):
    config, store, letters = world
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'database = "{config.database}"\nown_domains = ["imone.lt"]\n')
    run = lambda *a, **kw: CliRunner().invoke(cli, ["--config", str(config_file), *a], **kw)  # noqa: E731
    declined = run("remove-entity", "customer", "C3", input="n\n")
    assert declined.exit_code == 1 and "Remove customer C3 and its links to 1 letters?" in declined.output
    assert store.entity("customer", "C3") is not None
    result = run("remove-entity", "customer", "C3", "--yes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["removed"], data["orphaned"], data["relink"]["letters"]) == (["C3"], [letters[3]], 20)
    assert store.entity("customer", "C3") is None and letters[3] not in store.all_links()
    assert store.state_value(RELINK_DUE) is None  # relinked
    missing = run("remove-entity", "lead", "L-404", "--yes")
    assert missing.exit_code == 3 and "Error: no lead 'L-404'" in missing.output


def test_a_removed_contact_moves_letters_to_who_the_rules_now_say(world, tmp_path):
    """C2 has a contact at c9.lt (a contact outranks C9's domain); removing C2 moves the letter to C9."""
    config, store, letters = world
    (tmp_path / "a.csv").write_text(without(extra="C2,Customer 2,info@c2.lt,c2.lt,petras@c9.lt\n").replace(
        "C2,Customer 2,info@c2.lt,c2.lt,\n", "", 1))
    import_entities(store, "customer", tmp_path / "a.csv", config=config, allow_conflicts=True)
    letter = archive(store, "petras@c9.lt", "petras")
    relink(store, config, None)
    assert set(store.all_links()[letter]) == {("customer", "C2")}
    result = remove_entity(store, config, "customer", "C2")
    assert (result.orphaned, result.links_added) == ([letters[2]], 1)  # petras's letter is C9's now
    relink(store, config, None)
    assert set(store.all_links()[letter]) == {("customer", "C9")}


# -- leads converted to customers, with real passes ------------------------------------------------

def test_a_lead_converted_to_a_customer_moves_its_letters_without_a_download(tmp_path, imap_user, dovecot):
    env = Env(tmp_path)
    for n in range(3):
        dovecot.deliver(imap_user.login, "INBOX", sample.letter(
            "Vadovas <vadovas@naujas.lt>", imap_user.login, f"Pasiūlymas {n}", "Domina.", message_id=f"<l{n}@naujas.lt>"))
    env.add(imap_user, folders=("INBOX",))
    first = env.run()
    assert first.ok and first.mailboxes[0].archived == 3
    assert {r["subject"] for r in env.store.letters(lead="L-2001")} == {f"Pasiūlymas {n}" for n in range(3)}
    run = lambda *a: CliRunner().invoke(cli, ["--config", str(env.config_file()), *a])  # noqa: E731
    # The CRM converted the lead: the customers' export has it, with the same contact; the leads' export lacks it.
    (tmp_path / "c.csv").write_text("id,name,email,domain,contacts\nC-1001,UAB Ąžuolas,info@azuolas.lt,azuolas.lt,\n"
                                    "C-1002,Baltic,office@balticfreight.co.uk,,\nC-1003,Šviesa,sviesa@inbox.lt,,\n"
                                    "C-2001,Naujas Klientas,pirkimai@naujas.lt,,vadovas@naujas.lt\n")
    (tmp_path / "l.csv").write_text("id,name,email,contacts\n")
    assert run("import", "customers", str(tmp_path / "c.csv"), "--snapshot").exit_code == 0
    result = run("import", "leads", str(tmp_path / "l.csv"), "--snapshot", "--force")
    assert result.exit_code == 0, result.output
    assert "Leads: 0 added, 0 updated, 1 removed (1 converted to a customer), 0 unchanged" in result.output
    assert "converted: lead L-2001 is customer C-2001" in result.output
    assert env.store.letters(lead="L-2001") == []
    assert {r["subject"] for r in env.store.letters(customer="C-2001")} == {f"Pasiūlymas {n}" for n in range(3)}
    second = env.run()
    assert second.ok and (second.mailboxes[0].archived, second.mailboxes[0].backfilled) == (0, 0)  # no re-download


def test_the_json_says_which_lead_became_which_customer(world, tmp_path):
    config, store, _ = world
    (tmp_path / "l.csv").write_text("id,name,email,contacts\nL1,Lead,boss@c4.lt,\nL2,Other,x@other.lt,\n")
    import_entities(store, "lead", tmp_path / "l.csv", config=config)
    (tmp_path / "c.csv").write_text(without(extra="C4b,Now a customer,,,Boss <boss@c4.lt>\n"))
    import_entities(store, "customer", tmp_path / "c.csv", config=config, snapshot=True)
    (tmp_path / "l2.csv").write_text("id,name,email,contacts\nL2,Other,x@other.lt,\n")
    result = import_entities(store, "lead", tmp_path / "l2.csv", config=config, snapshot=True, force=True)
    assert result.as_dict()["converted"] == [{"lead": "L1", "customer": "C4b"}]
    assert result.summary("lead") == "Leads: 0 added, 0 updated, 1 removed (1 converted to a customer), 1 unchanged, 0 rejected."


def test_a_converted_lead_is_not_counted_by_the_guard_a_vanished_one_is(world, tmp_path):
    config, store, _ = world
    (tmp_path / "l.csv").write_text("id,name,email,contacts\nL1,Lead,boss@c4.lt,\nL2,Other,x@other.lt,\n")
    import_entities(store, "lead", tmp_path / "l.csv", config=config)
    (tmp_path / "c.csv").write_text(without(extra="C4b,Now a customer,,,Boss <boss@c4.lt>\n"))
    import_entities(store, "customer", tmp_path / "c.csv", config=config, snapshot=True)
    # L2 vanished (1 of 2 leads, 50%): refused without --force, the numbers shown.
    (tmp_path / "l1.csv").write_text("id,name,email,contacts\nL1,Lead,boss@c4.lt,\n")
    with pytest.raises(SnapshotRefused, match="would remove 1 of 2 leads \\(50%\\)"):
        import_entities(store, "lead", tmp_path / "l1.csv", config=config, snapshot=True)
    # L1 became customer C4b (1 of 2 leads, but converted): a normal day, no --force needed.
    (tmp_path / "l2.csv").write_text("id,name,email,contacts\nL2,Other,x@other.lt,\n")
    result = import_entities(store, "lead", tmp_path / "l2.csv", config=config, snapshot=True)
    assert result.converted == [("L1", "C4b")] and [e.id for e in store.entities("lead")] == ["L2"]


# -- a kill at any point leaves the old directory or the new one ----------------------------------

def test_sigkill_during_a_snapshot_leaves_the_old_directory_or_the_new_one(tmp_path):
    rng = random.Random(SEED)
    base = tmp_path / "base.db"
    config = Config(database=base, own_domains=("imone.lt",))
    store = Store(base)
    old = "id,name,email,domain,contacts\n" + "".join(
        f"C{n},Old {n},info@c{n}.lt,c{n}.lt,a@c{n}.lt; b@c{n}.lt\n" for n in range(3000))
    (tmp_path / "old.csv").write_text(old)
    import_entities(store, "customer", tmp_path / "old.csv", config=config)
    for n in range(0, 3000, 10):
        archive(store, f"x@c{n}.lt", f"kill-{n}")
    relink(store, config, None)
    store.db.conn.close()
    new = "id,name,email,domain,contacts\n" + "".join(
        f"C{n},New {n},info@c{n}.lt,c{n}.lt,c@c{n}.lt\n" for n in range(3000) if n % 10 != 5)  # 300 removed
    (tmp_path / "new.csv").write_text(new)

    def clone(name: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        (target / "hs.db").write_bytes(base.read_bytes())
        (target / "c.toml").write_text(f'database = "{target / "hs.db"}"\nown_domains = ["imone.lt"]\n'
                                       "[directory]\nmax_removed_percent = 20\n")
        return target

    def start(target: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(target / "c.toml"), "import",
                                 "customers", str(tmp_path / "new.csv"), "--snapshot"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)

    def state(target: Path):
        s = Store(target / "hs.db")
        try:
            return directory_dump(s)[0], s.state_value(RELINK_DUE), s.all_links()
        finally:
            s.db.conn.close()

    old_state = state(clone("old"))[0]
    clean = clone("clean")
    began = time.monotonic()
    assert start(clean).wait(120) == 0
    took = time.monotonic() - began
    new_state, due, clean_links = state(clean)
    assert due is None and len(new_state) == 2700
    seen = {"old": 0, "new": 0, "killed": 0}
    for n in range(12):
        target = clone(f"kill-{n}")
        delay = rng.uniform(0.2, 1.0) * took
        proc = start(target)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(60)
        seen["killed"] += code == -signal.SIGKILL
        directory, due, links = state(target)
        where = f"seed {SEED}, kill {n} after {delay:.2f}s of {took:.2f}s"
        assert directory in (old_state, new_state), f"{where}: a mix of the old directory and the new"
        if directory == new_state:
            seen["new"] += 1
            kept = {("customer", entity[0]) for entity in directory}
            assert all(k in kept for ls in links.values() for k in ls), f"{where}: a link to a removed customer"
            if due is not None:  # killed before the relink: the next relink completes it
                subprocess.run([sys.executable, "-m", "hanna_sync", "--config", str(target / "c.toml"), "relink"],
                               check=True, capture_output=True, cwd=ROOT)
                links = state(target)[2]
            assert links == clean_links, where
        else:
            seen["old"] += 1
    print(f"seed {SEED}: {seen}")
    assert seen["killed"] >= 6, (SEED, seen)
