"""Thread links, automatic mail, relinking and backfill: pure rules first, then passes on the sandbox Dovecot."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.config import LinkingConfig
from hanna_sync.demo import sample
from hanna_sync.linking.backfill import SkipIndex
from hanna_sync.linking.match import Link, inherited_links
from hanna_sync.linking.relink import RELINK_DUE, relink
from hanna_sync.lock import pass_lock
from hanna_sync.mail.message import is_automatic, parse_headers_only, thread_tokens
from hanna_sync.models import Contact, Entity
from tests.faults import ImapProxy
from tests.helpers import Env

LAST_MONTH = datetime.now(timezone.utc) - timedelta(days=30)


# -- pure rules ---------------------------------------------------------------------------------

def test_a_reply_inherits_the_links_of_what_it_answers_except_those_it_has():
    linked = {"a@x": [("customer", "C-1"), ("lead", "L-1")], "b@x": [("customer", "C-2")]}
    own = [Link("customer", "C-1", "customer_email", "ruta@azuolas.lt")]
    assert inherited_links(["zzz@x", "a@x", "b@x"], linked, own) == [
        Link("customer", "C-2", "thread", "b@x"), Link("lead", "L-1", "thread", "a@x")]
    assert inherited_links(["a@x"], linked, own, sync_leads=False) == []
    assert inherited_links(["nothing@x"], linked) == []


@pytest.mark.parametrize("header, automatic", [
    (b"Auto-Submitted: auto-replied", True),
    (b"Auto-Submitted: auto-generated; type=vacation", True),
    (b"Auto-Submitted: no", False),
    (b"Auto-Submitted: No", False),
    (b"Precedence: bulk", True),
    (b"Precedence: List", True),
    (b"Precedence: junk", True),
    (b"Precedence: first-class", False),
    (b"List-Id: Naujienos <news.azuolas.lt>", True),
    (b"X-Mailer: Outlook", False),
])
def test_letters_sent_by_programs_are_recognised(header, automatic):
    letter = parse_headers_only(b"From: ruta@azuolas.lt\r\nTo: a@imone.lt\r\n" + header + b"\r\n\r\n")
    assert is_automatic(letter) is automatic


def test_thread_tokens_read_the_answered_ids_as_the_parser_does():
    raw = (b"Message-ID: <own@x>\r\nReferences: <p0@azuolas.lt>\r\n\t<p1@azuolas.lt>\r\n"
           b"In-Reply-To: <p1@azuolas.lt>\r\nSubject: <not@an.id>\r\n\r\n")
    parsed = parse_headers_only(raw)
    assert thread_tokens(raw) == ["p1@azuolas.lt", "p0@azuolas.lt", "p1@azuolas.lt"]  # In-Reply-To first
    assert set(thread_tokens(raw)) == {parsed.in_reply_to, *parsed.references}


def test_skip_index_keys_depend_on_the_install_secret():
    one, other = SkipIndex(b"k" * 32), SkipIndex(b"j" * 32)
    raw = b"From: Ruta <Ruta@Azuolas.lt>\r\nTo: a@imone.lt\r\nMessage-ID: <self@x>\r\nReferences: <p0@x>\r\n\r\n"
    entry = one.letter_keys(raw)
    assert one.address_key("ruta@azuolas.lt") in entry.keys and one.domain_key("azuolas.lt") in entry.keys
    assert one.thread_key("p0@x") in entry.keys and entry.own == one.thread_key("self@x")
    assert one.address_key("ruta@azuolas.lt") != other.address_key("ruta@azuolas.lt")
    assert not entry.keys & other.letter_keys(raw).keys
    staff = SkipIndex(b"k" * 32, frozenset({"a@imone.lt"}), ("imone.lt",))
    assert staff.address_key("a@imone.lt") not in staff.letter_keys(raw).keys  # never links: not kept


# -- passes on the sandbox Dovecot ---------------------------------------------------------------

@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def cli_run(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def linked_subjects(env, entity_type, entity_id):
    return sorted(r["subject"] for r in env.store.letters(**{entity_type: entity_id}))


def fetched_bodies(proxy) -> set[int]:
    """UIDs whose whole letter a client fetched through the proxy."""
    text = proxy.client_bytes.decode("ascii", "replace")
    return {int(uid) for line in re.findall(r"UID FETCH ([\d,:]+) \(BODY\.PEEK\[\]\)", text)
            for uid in line.split(",") if uid.isdigit()}


def test_a_customer_imported_today_finds_last_months_letters_without_rereading_the_mailbox(
        env, imap_user, dovecot):
    deliver = lambda raw: dovecot.deliver(imap_user.login, "INBOX", raw)  # noqa: E731
    deliver(sample.letter("ruta@azuolas.lt", imap_user.login, "Lentos", "Kaina?", date=LAST_MONTH))  # C-1001
    deliver(sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "Siūlome.", date=LAST_MONTH))
    deliver(sample.letter(imap_user.login, "ona@medis.lt", "Re: Pasiūlymas", "Ačiū.", date=LAST_MONTH))
    deliver(sample.letter("kazys@kitas.lt", imap_user.login, "Nieko bendro", "x", date=LAST_MONTH))
    for n in range(30):
        deliver(sample.letter(f"n{n}@spam.lt", imap_user.login, f"Reklama {n}", "x", date=LAST_MONTH))
    with ImapProxy(dovecot) as proxy:
        box = env.add(imap_user, folders=("INBOX",))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        first = env.run()
        assert first.ok and first.mailboxes[0].archived == 1 and first.mailboxes[0].skipped == 33
        assert env.store.skipped_count() == 33

        # Today's import: a customer by domain (medis.lt), and a lead by one address (kazys@kitas.lt).
        path = env.tmp / "new.csv"
        path.write_text("id,name,email,domain,contacts\nC-9,UAB Medis,,medis.lt,\n")
        result = cli_run(env, "import", "customers", str(path), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["relink"]["backfill_wanted"] == 2
        path.write_text("id,name,email,contacts\nL-9,Kazys,kazys@kitas.lt,\n")
        assert cli_run(env, "import", "leads", str(path)).exit_code == 0

        proxy.reset()
        second = env.run()
        mailbox = second.mailboxes[0]
        assert second.ok and (mailbox.backfilled, mailbox.archived, mailbox.new) == (3, 3, 0)
        assert "3 backfilled" in second.summary_line()
        # Only the three letters were read again: no other header, no other body.
        text = proxy.client_bytes.decode("ascii", "replace")
        header_fetches = re.findall(r"UID FETCH ([\d,:]+) \(UID RFC822\.SIZE BODY\.PEEK\[HEADER\.FIELDS", text)
        assert [sorted(int(u) for u in f.split(",")) for f in header_fetches] == [[2, 3, 4]]
        assert fetched_bodies(proxy) == {2, 3, 4}

    assert linked_subjects(env, "customer", "C-9") == ["Pasiūlymas", "Re: Pasiūlymas"]
    assert linked_subjects(env, "lead", "L-9") == ["Nieko bendro"]
    assert env.store.skipped_count() == 30
    third = env.run()  # nothing wanted any more: the folder is unchanged again
    assert third.ok and third.mailboxes[0].backfilled == 0 and third.mailboxes[0].new == 0


def test_the_skip_index_keeps_no_address_in_clear(env, imap_user, dovecot):
    secret_address = f"slaptas-{secrets.token_hex(4)}@niekas.lt"
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(secret_address, imap_user.login, "x", "y"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and env.store.skipped_count() == 1
    env.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = env.config.database.read_bytes()
    assert secret_address.encode() not in data and b"niekas.lt" not in data


def test_a_staff_only_reply_is_linked_through_its_thread_in_the_same_batch_and_later(env, imap_user, dovecot):
    colleague = f"kolega@{sample.OWN_DOMAINS[0]}"
    start = datetime(2025, 5, 1, 9, tzinfo=timezone.utc)
    offer = sample.letter("ruta@azuolas.lt", imap_user.login, "Pasiūlymas", "Kaina?", message_id="<o1@azuolas.lt>",
                          date=start)
    internal = sample.letter(imap_user.login, colleague, "Re: Pasiūlymas", "Ar turim?", message_id="<o2@imone.lt>",
                             in_reply_to="<o1@azuolas.lt>", date=start + timedelta(hours=1))
    deeper = sample.letter(colleague, imap_user.login, "Re: Re: Pasiūlymas", "Turim.", message_id="<o3@imone.lt>",
                           in_reply_to="<o2@imone.lt>", references=["<o2@imone.lt>"], date=start + timedelta(hours=2))
    unrelated = sample.letter(colleague, imap_user.login, "Pietūs", "12:00?", message_id="<p@imone.lt>", date=start)
    for raw in (deeper, internal, offer, unrelated):  # replies first: the batch must still see the chain
        dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    assert linked_subjects(env, "customer", "C-1001") == ["Pasiūlymas", "Re: Pasiūlymas", "Re: Re: Pasiūlymas"]
    rules = {r["subject"]: r["links"][0] for r in env.store.letters(customer="C-1001")}
    assert rules["Re: Pasiūlymas"] == {"entity_type": "customer", "entity_id": "C-1001", "rule": "thread",
                                       "address": "o1@azuolas.lt"}
    assert rules["Re: Re: Pasiūlymas"]["rule"] == "thread"

    # A later staff-only reply, in a later pass: linked from the archive.
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        imap_user.login, colleague, "Re: Pasiūlymas", "Išsiųsta.", message_id="<o4@imone.lt>",
        references=["<o1@azuolas.lt>", "<o2@imone.lt>"], date=start + timedelta(days=1)))
    assert env.run().ok
    assert len(env.store.letters(customer="C-1001")) == 4 and env.store.skipped_count() == 1


def test_thread_replies_can_be_turned_off(env, imap_user, dovecot):
    env.config = replace(env.config, linking=LinkingConfig(thread_replies=False))
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Lentos", "?", message_id="<q1@azuolas.lt>"))
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        imap_user.login, f"kolega@{sample.OWN_DOMAINS[0]}", "Re: Lentos", "!", in_reply_to="<q1@azuolas.lt>"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    assert linked_subjects(env, "customer", "C-1001") == ["Lentos"]


def test_a_reply_skipped_before_its_parent_was_archived_is_fetched_by_the_next_pass(env, imap_user, dovecot):
    """The reply is in a folder scanned first; the letter it answers arrives in another folder later."""
    colleague = f"kolega@{sample.OWN_DOMAINS[0]}"
    dovecot.deliver(imap_user.login, "Vidiniai", sample.letter(
        colleague, imap_user.login, "Fwd: Lentos", "Žiūrėk.", in_reply_to="<r1@azuolas.lt>"))
    env.add(imap_user, folders=("Vidiniai", "INBOX"))
    assert env.run().ok and env.store.skipped_count() == 1
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Lentos", "?", message_id="<r1@azuolas.lt>"))
    assert env.run().ok  # archives the parent, then marks the reply wanted
    assert linked_subjects(env, "customer", "C-1001") == ["Lentos"]
    third = env.run()
    assert third.mailboxes[0].backfilled == 1
    assert linked_subjects(env, "customer", "C-1001") == ["Fwd: Lentos", "Lentos"]
    assert env.store.skipped_count() == 0


def test_a_chain_of_skipped_replies_is_fetched_in_one_pass_once_its_start_is_archived(env, imap_user, dovecot):
    colleague = f"kolega@{sample.OWN_DOMAINS[0]}"
    ids = [f"<c{n}@imone.lt>" for n in range(4)]
    for n in range(1, 4):  # three staff-only replies, each to the one before, in a folder scanned first
        dovecot.deliver(imap_user.login, "Vidiniai", sample.letter(
            colleague if n % 2 else imap_user.login, imap_user.login if n % 2 else colleague, f"Re: Lentos {n}",
            "...", message_id=ids[n], in_reply_to=ids[n - 1]))
    env.add(imap_user, folders=("Vidiniai", "INBOX"))
    assert env.run().ok and env.store.skipped_count() == 3
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Lentos", "?", message_id=ids[0]))
    assert env.run().ok  # archives the start of the chain and marks the whole chain
    assert env.store.wanted_count(1, ["Vidiniai", "INBOX"]) == 3
    assert env.run().mailboxes[0].backfilled == 3  # one pass, not one per level
    assert len(env.store.letters(customer="C-1001")) == 4 and env.store.skipped_count() == 0


@pytest.mark.parametrize("extra_header", [
    b"Auto-Submitted: auto-replied\r\n", b"Precedence: bulk\r\n", b"List-Id: <news.azuolas.lt>\r\n"])
def test_auto_replies_and_bulk_mail_are_not_linked_unless_configured(env, imap_user, dovecot, extra_header):
    raw = extra_header + sample.letter("ruta@azuolas.lt", imap_user.login, "Automatinis atsakymas", "Atostogauju.",
                                       message_id=f"<auto-{secrets.token_hex(4)}@azuolas.lt>")
    dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))
    result = env.run()
    assert result.ok and result.mailboxes[0].skipped == 1 and env.store.letters() == []

    env.config = replace(env.config, linking=LinkingConfig(automatic=True))
    assert relink(env.store, env.config, env.secrets).backfill_wanted == 1  # a [linking] change re-reads it
    assert env.run().mailboxes[0].backfilled == 1
    (letter,) = env.store.letters()
    assert letter["subject"] == "Automatinis atsakymas" and letter["links"][0]["entity_id"] == "C-1001"
    env.config = replace(env.config, linking=LinkingConfig(automatic=False))
    assert relink(env.store, env.config, env.secrets).unlinked == 1
    assert env.store.letters(customer="C-1001") == [] and len(env.store.letters()) == 1  # kept, unlinked


def test_relink_follows_directory_edits_and_removed_contacts(env, imap_user, dovecot):
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("anna@partners.eu", imap_user.login, "Krovinys", "x"))
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("info@azuolas.lt", imap_user.login, "Sąskaita", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    assert linked_subjects(env, "customer", "C-1002") == ["Krovinys"]

    # Anna moves from Baltic Freight to a new lead; C-1001 loses its main email but keeps its domain.
    env.store.save_entity("customer", Entity("C-1002", "Baltic Freight Ltd", "office@balticfreight.co.uk"),
                          replace_contacts=True)
    env.store.save_entity("lead", Entity("L-7", "Anna's firm", None, None, [Contact("anna@partners.eu")]),
                          replace_contacts=True)
    env.store.save_entity("customer", Entity("C-1001", "UAB Ąžuolas", None, "azuolas.lt"), replace_contacts=True)
    result = cli_run(env, "relink", "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["letters"], counts["links_added"], counts["links_removed"], counts["links_changed"],
            counts["unlinked"]) == (2, 1, 1, 1, 0)
    assert linked_subjects(env, "customer", "C-1002") == [] and linked_subjects(env, "lead", "L-7") == ["Krovinys"]
    (link,) = env.store.letters(customer="C-1001")[0]["links"]
    assert (link["rule"], link["address"]) == ("customer_domain", "info@azuolas.lt")

    # Nothing changed since: relinking again changes nothing.
    again = relink(env.store, env.config, env.secrets)
    assert (again.links_added, again.links_removed, again.links_changed) == (0, 0, 0)


def test_an_import_during_a_pass_leaves_the_relink_to_that_pass(env, imap_user, dovecot):
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and env.store.skipped_count() == 1
    path = env.tmp / "c.csv"
    path.write_text("id,name,email,domain,contacts\nC-9,UAB Medis,jonas@medis.lt,,\n")
    with pass_lock(env.config.database):  # as if a pass were running
        result = cli_run(env, "import", "customers", str(path))
        assert result.exit_code == 0 and "a pass is running; it relinks the archive at its end" in result.output
        busy = cli_run(env, "relink")
        assert busy.exit_code == 75 and busy.output.startswith("Error: a pass is running")
    assert env.store.state_value(RELINK_DUE)
    assert env.run().ok  # relinks at its end: the letter is wanted
    assert env.store.state_value(RELINK_DUE) is None
    assert env.run().mailboxes[0].backfilled == 1
    assert linked_subjects(env, "customer", "C-9") == ["Pasiūlymas"]


def test_an_import_that_would_unlink_archived_letters_lists_them_writes_nothing_unless_allowed(env, imap_user, dovecot):
    """A new customer claiming an existing customer's domain: that domain then links to neither, so the
    letters C-1001 has by its domain would lose their link. Refused (CSV and JSON alike), listing them."""
    for sender, subject in (("petras@azuolas.lt", "Kaina"), ("ruta@azuolas.lt", "Užsakymas")):
        dovecot.deliver(imap_user.login, "INBOX", sample.letter(sender, imap_user.login, subject, "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    (by_domain,) = [r for r in env.store.letters(customer="C-1001") if r["subject"] == "Kaina"]
    dump = lambda: "\n".join(env.store.db.conn.iterdump())  # noqa: E731
    before = dump()
    csv_file, json_file = env.tmp / "new.csv", env.tmp / "new.json"
    csv_file.write_text("id,name,domain\nC-9,Kitas Ąžuolas,azuolas.lt\n")
    json_file.write_text(json.dumps([{"id": "C-9", "name": "Kitas Ąžuolas", "domain": "azuolas.lt"}]))
    for path in (csv_file, json_file):
        result = cli_run(env, "import", "customers", str(path))
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            "  conflict: domain azuolas.lt is claimed by customers C-1001, C-9: it links to neither",
            f"  unlinks customer C-1001 (customer_domain) from 1 letter(s): {by_domain['id']}",
            "Error: this import would remove 1 links from archived letters (listed above): correct the file,"
            " or give --allow-conflicts to import it anyway",
        ]
        assert result.stdout == "" and dump() == before

    result = cli_run(env, "import", "customers", str(csv_file), "--allow-conflicts", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added"] == 1 and summary["relink"]["links_removed"] == 1
    assert summary["removed_links"] == [{"letter": by_domain["id"], "entity_type": "customer", "entity_id": "C-1001",
                                         "rule": "customer_domain", "address": "petras@azuolas.lt"}]
    assert linked_subjects(env, "customer", "C-1001") == ["Užsakymas"]  # ruta@ is a contact: kept
    # An import that takes no link away needs no permission.
    csv_file.write_text("id,name,email\nC-10,Medis,jonas@medis.lt\n")
    assert cli_run(env, "import", "customers", str(csv_file)).exit_code == 0


def test_a_new_uidvalidity_drops_the_folders_skipped_letters_and_records_them_again(env, imap_user, dovecot):
    for n in range(3):
        dovecot.deliver(imap_user.login, "INBOX", sample.letter(f"n{n}@kitas.lt", imap_user.login, "x", "y"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    before = env.store.db.execute("SELECT uidvalidity FROM skipped_letters").fetchall()
    dovecot.reset_uidvalidity(imap_user.login, "INBOX")
    assert env.run().ok
    after = env.store.db.execute("SELECT uidvalidity FROM skipped_letters").fetchall()
    assert len(before) == len(after) == 3 and set(before) != set(after)


def test_status_tells_how_many_older_letters_the_next_pass_fetches(env, imap_user, dovecot):
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "x"))
    box = env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    env.store.save_entity("customer", Entity("C-9", "UAB Medis", None, "medis.lt"), replace_contacts=True)
    assert relink(env.store, env.config, env.secrets).backfill_wanted == 1
    result = cli_run(env, "status", "--json")
    (mailbox,) = json.loads(result.stdout)["mailboxes"]
    assert mailbox["id"] == box.id and mailbox["wanted"] == 1
    assert "1 older letter(s) the directory now concerns are fetched by the next pass" in mailbox["detail"]
    assert env.run().ok
    assert json.loads(cli_run(env, "status", "--json").stdout)["mailboxes"][0]["wanted"] == 0


# -- what a review found: backfill that must not be lost, links that must not go, no churn ------------

def test_purging_the_letter_a_reply_inherited_from_keeps_the_replys_link(env, imap_user, dovecot):
    from hanna_sync.db.retention import purge

    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Lentos", "?", message_id="<k1@azuolas.lt>"))
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        imap_user.login, f"kolega@{sample.OWN_DOMAINS[0]}", "Re: Lentos", "!", in_reply_to="<k1@azuolas.lt>"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    parent = next(r for r in env.store.letters() if r["subject"] == "Lentos")
    purge(env.store, env.config, [parent["id"]])  # a privacy request for the customer's letter only
    result = relink(env.store, env.config, env.secrets)
    assert (result.links_removed, result.unlinked) == (0, 0)
    assert linked_subjects(env, "customer", "C-1001") == ["Re: Lentos"]


def test_a_domain_two_customers_claimed_backfills_when_one_lets_go(env, imap_user, dovecot):
    for entity_id in ("C-8", "C-9"):
        env.store.save_entity("customer", Entity(entity_id, entity_id, None, "medis.lt"), replace_contacts=True)
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and env.store.skipped_count() == 1  # an ambiguous domain links neither
    env.store.save_entity("customer", Entity("C-9", "C-9", None, "kitas.lt"), replace_contacts=True)
    assert relink(env.store, env.config, env.secrets).backfill_wanted == 1  # same key, another meaning
    assert env.run().mailboxes[0].backfilled == 1
    assert linked_subjects(env, "customer", "C-8") == ["Pasiūlymas"]


def test_a_relink_whose_secrets_store_fails_leaves_the_backfill_to_the_next_pass(env, imap_user, dovecot, monkeypatch):
    import hanna_sync.linking.relink as relink_module
    from hanna_sync.errors import SecretsError

    dovecot.deliver(imap_user.login, "INBOX", sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    env.store.save_entity("customer", Entity("C-9", "UAB Medis", None, "medis.lt"), replace_contacts=True)

    def refuse(*args, **kwargs):
        raise SecretsError("the keyring did not answer within 5 s")

    with monkeypatch.context() as patched:
        patched.setattr(relink_module, "load_skip_index", refuse)
        assert relink(env.store, env.config, env.secrets).backfill_wanted == 0
    assert env.run().ok  # its end does the marking left due
    assert env.run().mailboxes[0].backfilled == 1
    assert linked_subjects(env, "customer", "C-9") == ["Pasiūlymas"]


def test_relinking_again_does_not_fetch_skipped_replies_again(env, imap_user, dovecot):
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Lentos", "?", message_id="<j1@azuolas.lt>"))
    auto = b"Auto-Submitted: auto-replied\r\n" + sample.letter(
        imap_user.login, "ruta@azuolas.lt", "Re: Lentos", "Atostogauju.", in_reply_to="<j1@azuolas.lt>")
    dovecot.deliver(imap_user.login, "INBOX", auto)
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and env.run().ok  # the auto-reply: looked at once more after its parent, still skipped
    for _ in range(2):
        assert relink(env.store, env.config, env.secrets).backfill_wanted == 0
    assert env.store.wanted_count(1, ["INBOX"]) == 0


def test_a_new_skip_index_key_has_every_skipped_letter_looked_at_again(env, imap_user, dovecot):
    from hanna_sync.linking.backfill import SECRET_REF

    dovecot.deliver(imap_user.login, "INBOX", sample.letter("jonas@medis.lt", imap_user.login, "Pasiūlymas", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    env.secrets.delete(SECRET_REF)  # e.g. the secrets store restored from an older backup
    env.store.save_entity("customer", Entity("C-9", "UAB Medis", None, "medis.lt"), replace_contacts=True)
    assert relink(env.store, env.config, env.secrets).backfill_wanted >= 0
    assert env.store.wanted_count(1, ["INBOX"]) == 1  # found again despite the lost key
    assert env.run().mailboxes[0].backfilled == 1


def test_a_forgotten_skipped_letters_keys_never_pass_to_another(env, imap_user):
    from hanna_sync.linking.backfill import LetterKeys

    box = env.add(imap_user, folders=("INBOX",))
    with env.store.transaction():
        env.store.record_skipped(box.id, "INBOX", 1, {2: LetterKeys({222})})
        env.store.forget_skipped(box.id, "INBOX", 1, [2])  # its key row stays until drop_orphan_keys
        env.store.record_skipped(box.id, "INBOX", 1, {3: LetterKeys({333})})
        assert env.store.mark_wanted({222}) == 0  # uid 3 did not get uid 2's id, nor its key
        assert env.store.mark_wanted({333}) == 1


def test_recording_the_directory_inside_a_transaction_never_waits_for_the_directorys_lock(env):
    """skip_index() holds LazyDirectory's lock while it reads the key, then takes a transaction; a scanner
    thread inside a transaction must not need that lock, or the two threads wait for each other forever."""
    import threading

    from hanna_sync.scan import LazyDirectory

    lazy = LazyDirectory(env.store, env.config, env.secrets)
    lazy.get()
    done = threading.Event()

    def record() -> None:
        with env.store.transaction():
            lazy.remember_directory(SkipIndex(b"k" * 32))
        done.set()

    with lazy._lock:  # as skip_index() holds it
        threading.Thread(target=record, daemon=True).start()
        assert done.wait(5), "remember_directory waited for the directory's lock inside a transaction"
    assert env.store.backfill_keys()
