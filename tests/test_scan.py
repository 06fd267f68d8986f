"""The scan pass against a real Dovecot: what is archived, linked, skipped, and what is never touched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hanna_sync.demo import sample
from tests.helpers import Env, deliver_sample, server_bodies, server_flags


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def test_first_pass_archives_exactly_the_letters_that_concern_the_directory(env, imap_user):
    raws = deliver_sample(imap_user)
    box = env.add(imap_user)
    flags_before = server_flags(imap_user)

    result = env.run()

    assert result.ok, result.mailboxes[0].errors
    (m,) = result.mailboxes
    assert (m.folders_checked, m.new, m.archived, m.linked, m.skipped) == (2, 11, 8, 8, 3)
    links = {(r[0], r[1], r[2], r[3]) for r in env.store.db.execute(
        "SELECT l.message_id, k.entity_type, k.entity_id, k.rule FROM links k JOIN letters l ON l.id = k.letter_id")}
    assert links == {
        ("order-17@azuolas.lt", "customer", "C-1001", "customer_contact"),
        ("invoice-3@azuolas.lt", "customer", "C-1001", "customer_email"),
        ("cargo@azuolas.lt", "customer", "C-1001", "customer_domain"),
        ("ok@gmail.com", "customer", "C-1001", "customer_contact"),
        ("sched@partners.eu", "customer", "C-1002", "customer_contact"),
        ("meet@naujas.lt", "lead", "L-2001", "lead_contact"),
        ("reply-17@imone.lt", "customer", "C-1001", "customer_contact"),
        ("contract@imone.lt", "customer", "C-1003", "customer_email"),
    }
    # Private mail, newsletters and colleagues' mail is not archived at all.
    subjects = {s for (s,) in env.store.db.execute("SELECT subject FROM letters")}
    assert not subjects & {"Akcija!", "Šeštadienį?", "Pietūs"}
    # Originals are kept byte for byte.
    stored = {bytes(r) for (r,) in env.store.db.execute("SELECT raw FROM letter_sources")}
    assert stored <= set(raws) and len(stored) == 8
    # Read-only: every flag on the server is exactly as before, \Seen included.
    assert server_flags(imap_user) == flags_before
    assert env.store.mailbox(box.id).last_success_at is not None


def test_second_pass_adds_nothing_and_new_mail_is_picked_up(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user)
    env.run()
    before = env.snapshot()

    again = env.run().mailboxes[0]
    assert (again.new, again.archived, again.linked) == (0, 0, 0)
    assert env.snapshot() == before

    imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", sample.STAFF, "Dar vienas", "Ačiū!", message_id="<one-more@azuolas.lt>"))
    imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "spam@spam.example", sample.STAFF, "Spam", "x", message_id="<spam@spam.example>"))
    third = env.run().mailboxes[0]
    assert (third.new, third.archived, third.skipped) == (2, 1, 1)
    assert env.store.db["letters"].count == 9


def test_linked_counts_letters_newly_linked_not_their_folder_locations(env, imap_user):
    """Gmail's layout (every letter in INBOX or Sent and again in All Mail), then a folder renamed on the
    server and chosen again under its new name: `linked` counts letters that got links, once."""
    from hanna_sync.admin import mailboxes

    dc = imap_user.dovecot
    for folder, raw, flags in sample.mailbox_letters():
        dc.deliver(imap_user.login, folder, raw, flags)
        dc.deliver(imap_user.login, "Visi laiškai", raw, flags)
    box = env.add(imap_user, folders=("INBOX", "Išsiųsti", "Visi laiškai"))
    dry = env.run(dry_run=True).mailboxes[0]
    assert (len(dry.would_archive), dry.linked) == (16, 8)  # every place listed, each letter counted once

    result = env.run()
    (m,) = result.mailboxes
    assert m.ok, m.errors
    linked_letters = env.store.db.execute("SELECT count(DISTINCT letter_id) FROM links").fetchone()[0]
    assert (m.new, m.archived, m.linked) == (22, 8, 8) and linked_letters == 8
    assert env.store.db["letter_locations"].count == 16
    assert ", 8 archived, 8 linked," in result.summary_line()

    dc.rename_folder(imap_user.login, "Visi laiškai", "Visi laiškai 2024")
    mailboxes.edit(env.store, env.secrets, box.id, {"folders": ["INBOX", "Išsiųsti", "Visi laiškai 2024"]}, verify_first=False, timeout=10)
    links_before = env.store.db["links"].count
    again = env.run().mailboxes[0]
    assert again.ok, again.errors
    assert (again.new, again.archived, again.linked) == (11, 0, 0)
    assert env.store.db["links"].count == links_before


def test_a_customer_after_the_first_thousand_recipients_still_links_and_keeps_its_link(env, imap_user):
    """A mailing of 60,000 recipients (a 2.3 MB To header) whose last one is a customer's contact."""
    from hanna_sync.linking.relink import relink

    fillers = [b"recipient-%05d@list-server.example" % i for i in range(59_999)]
    raw = (b"From: " + sample.STAFF.encode() + b"\r\nTo: " + b",\r\n ".join(fillers + [b"Ruta <ruta@azuolas.lt>"])
           + b"\r\nSubject: Kvietimas\r\nMessage-ID: <mailing@imone.lt>\r\nDate: Mon, 3 Mar 2025 10:00:00 +0200"
           + b"\r\n\r\nSveiki.\r\n")
    imap_user.dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))

    m = env.run().mailboxes[0]
    assert (m.ok, m.archived, m.linked) == (True, 1, 1), m.errors
    (card,) = env.store.letters(customer="C-1001")
    assert card["subject"] == "Kvietimas"
    assert [(link["entity_id"], link["rule"], link["address"]) for link in env.store.links_of(card["id"])] == [
        ("C-1001", "customer_contact", "ruta@azuolas.lt")]
    participants, to_addrs = env.store.db.execute(
        "SELECT participants, to_addrs FROM letters WHERE id = ?", [card["id"]]).fetchone()
    assert "ruta@azuolas.lt" in json.loads(participants) and "ruta@azuolas.lt" in json.loads(to_addrs)
    assert len(json.loads(to_addrs)) == 1001  # the first 1,000 recipients, and the one that links it
    relinked = relink(env.store, env.config, env.secrets)  # from the stored participants: the link stays
    assert relinked.links_removed == 0 and len(env.store.links_of(card["id"])) == 1


def test_letters_query_gives_the_customer_card(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user)
    env.run()
    card = env.store.letters(customer="C-1001")
    assert [r["subject"] for r in card] == [
        "Re: kaina", "Krovinys išvyko", "Sąskaita faktūra 2025-03", "Re: Užsakymas Nr. 17: ąžuolinės lentos",
        "Užsakymas Nr. 17: ąžuolinės lentos",
    ]
    invoice = env.store.letter(card[2]["id"])
    assert invoice["attachments"][0]["filename"] == "sąskaita.pdf"
    assert invoice["locations"][0]["folder"] == "INBOX"


def test_same_letter_in_two_mailboxes_is_stored_once_with_two_locations(env, imap_user, dovecot):
    import secrets as pysecrets

    other = dovecot.add_user(f"second-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(10))
    raw = sample.letter("info@azuolas.lt", [imap_user.login, other.login], "Bendras laiškas", "Abiem.",
                        message_id="<shared@azuolas.lt>")
    no_id = sample.letter("ruta@azuolas.lt", [imap_user.login, other.login], "Be Message-ID", "x")
    for user in (imap_user, other):
        dovecot.deliver(user.login, "INBOX", raw)
        dovecot.deliver(user.login, "INBOX", no_id)
        env.add(user, folders=("INBOX",))
    result = env.run()
    assert sum(m.archived for m in result.mailboxes) == 2  # whichever mailbox came first stored them
    # Linked once, by whichever mailbox came first: the other found them with their links already.
    assert sorted(m.linked for m in result.mailboxes) == [0, 2]
    assert env.store.db.execute("SELECT count(DISTINCT letter_id) FROM links").fetchone()[0] == 2
    assert env.store.db["letters"].count == 2
    assert env.store.db["letter_locations"].count == 4


def test_uidvalidity_reset_remaps_without_duplicates_or_downloads(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user)
    env.run()
    letters_before = env.store.db["letters"].count
    imap_user.dovecot.reset_uidvalidity(imap_user.login, "INBOX")

    m = env.run().mailboxes[0]
    assert m.ok, m.errors
    assert (m.archived, m.remapped) == (0, 6)
    assert env.store.db["letters"].count == letters_before
    live = env.store.db.execute(
        "SELECT count(*) FROM letter_locations WHERE folder = 'INBOX' AND gone_at IS NULL").fetchone()[0]
    gone = env.store.db.execute(
        "SELECT count(*) FROM letter_locations WHERE folder = 'INBOX' AND gone_at IS NOT NULL").fetchone()[0]
    assert (live, gone) == (6, 6)
    assert env.run().mailboxes[0].new == 0


def test_a_mailbox_with_a_wrong_password_fails_alone(env, imap_user, dovecot):
    import secrets as pysecrets

    good = dovecot.add_user(f"good-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(10))
    deliver_sample(good)
    bad_box = env.add(imap_user)
    env.secrets.set(bad_box.secret_ref, "wrong password")
    good_box = env.add(good)

    result = env.run()
    bad, ok = result.mailboxes
    assert not result.ok
    assert "refused the login" in bad.errors[0]
    assert ok.ok and ok.archived == 8
    assert env.store.mailbox(bad_box.id).last_error.startswith(f"{dovecot.host} refused the login")
    assert env.store.mailbox(good_box.id).last_error is None


def test_sync_leads_off_gives_no_lead_links(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user, sync_leads=False)
    env.run()
    types = {t for (t,) in env.store.db.execute("SELECT DISTINCT entity_type FROM links")}
    assert types == {"customer"}


def test_missing_folder_is_reported_and_other_folders_still_scanned(env, imap_user):
    deliver_sample(imap_user)
    box = env.add(imap_user)
    imap_user.dovecot.delete_folder(imap_user.login, "Išsiųsti")
    m = env.run().mailboxes[0]
    assert not m.ok
    assert "folder 'Išsiųsti' cannot be read" in m.errors[0]
    assert m.archived == 6
    assert env.store.mailbox(box.id).last_error.startswith("folder 'Išsiųsti'")


def test_large_letters_keep_headers_and_a_marker(tmp_path, imap_user):
    env = Env(tmp_path)
    env.config = replace(env.config, scan=replace(env.config.scan, max_letter_size_mb=0.01))
    big = sample.letter("info@azuolas.lt", imap_user.login, "Didelis", "x" * 20_000, message_id="<big@azuolas.lt>")
    imap_user.dovecot.deliver(imap_user.login, "INBOX", big)
    env.add(imap_user, folders=("INBOX",))
    m = env.run().mailboxes[0]
    assert m.archived == 1
    (letter,) = env.store.letters()
    full = env.store.letter(letter["id"])
    assert full["body_skipped"] is True and full["subject"] == "Didelis" and full["size"] == len(big)
    assert len(env.store.letter_source(letter["id"])) < 2000


def test_dry_run_writes_nothing(env, imap_user):
    deliver_sample(imap_user)
    env.add(imap_user)
    result = env.run(dry_run=True)
    m = result.mailboxes[0]
    assert len(m.would_archive) == 8 and m.archived == 0
    assert env.store.db["letters"].count == 0
    assert env.store.db["folder_states"].count == 0
    assert env.store.db["scan_runs"].count == 0


def test_dry_run_lists_each_letter_with_its_subject_in_the_table_and_in_json(env, imap_user):
    from click.testing import CliRunner

    from hanna_sync.cli import cli

    deliver_sample(imap_user)
    env.add(imap_user)
    config = env.config_file()

    as_json = CliRunner().invoke(cli, ["--config", str(config), "run", "--dry-run", "--json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)["mailboxes"][0]["would_archive"]
    shown = CliRunner().invoke(cli, ["--config", str(config), "run", "--dry-run"])
    assert shown.exit_code == 0, shown.output

    env.run()  # the real pass: the subjects it archives are the ones the dry run must have shown
    archived = sorted(s for (s,) in env.store.db.execute("SELECT subject FROM letters"))
    assert len(archived) == 8 and "" not in archived
    assert sorted(item["subject"] for item in listed) == archived
    for subject in archived:
        assert f"{subject!r} -> " in shown.output


def test_killed_pass_then_rerun_equals_an_uninterrupted_pass(tmp_path, imap_user, dovecot):
    """SIGKILL a `hanna-sync run` subprocess mid-pass; the re-run must end with the clean run's archive."""
    import secrets as pysecrets

    clean_user = dovecot.add_user(f"clean-{pysecrets.token_hex(4)}@example.test", imap_user.password)
    for i in range(400):
        raw = sample.letter("Rūta <ruta@azuolas.lt>", sample.STAFF, f"Laiškas {i}", f"Tekstas {i} " * 50,
                            message_id=None if i % 10 == 0 else f"<m{i}@azuolas.lt>")
        skip = sample.letter("x@spam.example", sample.STAFF, f"Spam {i}", "x", message_id=f"<s{i}@spam.example>")
        for user in (imap_user, clean_user):
            dovecot.deliver(user.login, "INBOX", raw)
            dovecot.deliver(user.login, "INBOX", skip)

    def prepared(user, name):
        env = Env(tmp_path / name, batch_size=7)
        env.add(user, folders=("INBOX",), email=sample.STAFF)
        return env, env.config_file()

    def hanna(config, *args):
        return subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(config), "run", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    clean_env, clean_config = prepared(clean_user, "clean")
    assert hanna(clean_config).wait(120) == 0

    env, config = prepared(imap_user, "killed")
    kills = 0
    for threshold in (30, 150, 290):
        proc = hanna(config)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            count = sqlite3.connect(env.config.database).execute("SELECT count(*) FROM letters").fetchone()[0]
            if count >= threshold:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait(60)
    assert kills >= 2, "the pass finished before it could be killed: make the mailbox bigger"
    assert hanna(config).wait(120) == 0

    def normalised(snapshot):
        letters, sources, locations, links, states = snapshot
        return letters, sources, [loc[:1] + loc[2:] for loc in locations], links, [s[1:] for s in states]

    assert normalised(Env.snapshot(env)) == normalised(Env.snapshot(clean_env))
    assert env.store.db["letters"].count == 400


def test_cli_run_letters_show_export(tmp_path, imap_user):
    """The commands a sysadmin uses, through click: run, letters --customer, show, export."""
    import json

    from click.testing import CliRunner

    from hanna_sync.cli import cli

    raws = deliver_sample(imap_user)
    env = Env(tmp_path)
    box = env.add(imap_user)
    config = env.config_file()

    def hanna(*args):
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    result = hanna("run", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert summary["mailboxes"][0]["id"] == box.id and summary["mailboxes"][0]["archived"] == 8

    card = json.loads(hanna("letters", "--customer", "C-1001", "--json").stdout)
    assert len(card) == 5 and all("id" in row for row in card)
    assert json.loads(hanna("letters", "--customer", "C-1001", "--since", "2025-03-05", "--json").stdout)[0][
        "subject"] == "Re: kaina"
    assert hanna("letters", "--since", "yesterday").exit_code == 2

    table = hanna("letters", "--customer", "C-1001")
    assert "customer_domain" in table.output and "Krovinys išvyko" in table.output

    letter_id = card[0]["id"]
    shown = hanna("show", str(letter_id))
    assert "Linked:     customer C-1001 by customer_contact (mindaugas.k@gmail.com)" in shown.output
    assert "Tinka, tvirtinu." in shown.output

    out = tmp_path / "letter.eml"
    assert hanna("export", str(letter_id), "-o", str(out)).exit_code == 0
    assert out.read_bytes() in raws
    assert hanna("export", "999").exit_code == 3  # not found


def test_cli_run_exit_code_is_1_when_a_mailbox_fails(tmp_path, imap_user):
    from click.testing import CliRunner

    from hanna_sync.cli import cli

    env = Env(tmp_path)
    box = env.add(imap_user)
    env.secrets.set(box.secret_ref, "wrong")
    config = env.config_file()
    result = CliRunner().invoke(cli, ["--config", str(config), "run"])
    assert result.exit_code == 1
    assert "refused the login" in result.output
    assert "wrong" not in result.output.replace("wrong port", "")


def test_malformed_letters_are_archived_byte_identical_without_a_crash(env, imap_user):
    """Every letter of the nasty corpus, made to concern a customer by one extra header, goes through a pass."""
    corpus = sorted((Path(__file__).parent / "corpus").glob("*.eml"))
    raws = [b"Cc: ruta@azuolas.lt\r\n" + path.read_bytes() for path in corpus]
    for raw in raws:
        imap_user.dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))

    m = env.run().mailboxes[0]

    assert m.ok, m.errors
    assert m.new == len(raws) and m.skipped == 0
    stored = {bytes(r) for (r,) in env.store.db.execute("SELECT raw FROM letter_sources")}
    # Every stored letter is exactly what the server serves (Dovecot itself rewrites NULs and bare LFs).
    assert stored <= set(server_bodies(imap_user, "INBOX"))
    assert env.store.db.execute("SELECT count(*) FROM letter_locations").fetchone()[0] == len(raws)


def test_a_password_beyond_ascii_logs_in(env, dovecot):
    """IMAP LOGIN carries ASCII only; such a password goes through AUTHENTICATE PLAIN in UTF-8."""
    import secrets as pysecrets

    user = dovecot.add_user(f"utf8-{pysecrets.token_hex(4)}@example.test", "Ąžuolas-ėglė-" + pysecrets.token_hex(4))
    deliver_sample(user)
    env.add(user)
    assert env.run().mailboxes[0].archived == 8
