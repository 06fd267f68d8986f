"""Full-text search and conversations, over letters archived by a real pass from the sandbox Dovecot."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.db.store import fts_query
from hanna_sync.demo import sample
from hanna_sync.errors import InputError
from tests.helpers import Env, deliver_sample


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def archived(env, imap_user):
    """The sample mailbox, archived by one pass."""
    deliver_sample(imap_user)
    env.add(imap_user)
    assert env.run().ok
    return env


def cli_run(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def subjects(rows):
    return [r["subject"] for r in rows]


def test_a_phrase_from_a_body_is_found_with_the_term_highlighted(archived):
    (hit,) = archived.store.search('"40 m³ lentų"')
    assert hit["subject"] == "Užsakymas Nr. 17: ąžuolinės lentos"
    assert hit["snippet"] == "Laba diena, prašome pateikti pasiūlymą **40 m³ lentų**. Rūta"
    assert hit["links"][0]["entity_id"] == "C-1001"

    result = cli_run(archived, "search", "pasiūlymą lentų", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert set(row) == {"id", "date_utc", "from_addr", "subject", "snippet", "rank", "links"}
    assert row["id"] == hit["id"] and "**pasiūlymą**" in row["snippet"]


def test_diacritics_match_both_ways_and_addresses_and_attachment_names_are_searched(archived):
    with_accents = subjects(archived.store.search("sąskaita"))
    assert with_accents == subjects(archived.store.search("saskaita")) == ["Sąskaita faktūra 2025-03"]
    assert subjects(archived.store.search("azuolines")) == subjects(archived.store.search("ąžuolinės"))
    assert len(archived.store.search("ąžuolinės")) == 2
    assert "**Sąskaita**" in archived.store.search("saskaita")[0]["snippet"]
    assert subjects(archived.store.search("sviesa@inbox.lt")) == ["Sutartis"]  # a To address
    assert subjects(archived.store.search("pdf")) == ["Sąskaita faktūra 2025-03"]  # the attachment's name
    assert subjects(archived.store.search("krovin*")) == ["Krovinys išvyko"]


def test_filters_by_customer_lead_and_date(archived):
    assert subjects(archived.store.search("lentos", customer="C-1001")) != []
    assert archived.store.search("lentos", customer="C-1003") == []
    assert subjects(archived.store.search("susitikti", lead="L-2001")) == ["Domina jūsų paslaugos"]
    assert archived.store.search("lentos", since="2025-03-04") == []

    result = cli_run(archived, "search", "sutartį", "--customer", "C-1003")
    assert result.exit_code == 0 and "Sutartis" in result.output
    result = cli_run(archived, "search", "sutartį", "--customer", "C-9")
    assert result.exit_code == 3 and "no customer 'C-9'" in result.output


def test_a_bad_query_is_a_one_line_usage_error(archived):
    result = cli_run(archived, "search", '"ąžuolinės lentos')
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("Error: the search has an unclosed quote") and '"ąžuolinės lentos" kaina' in line
    assert cli_run(archived, "search", "  ").exit_code == 2
    # FTS5's own syntax is plain text here, never an error.
    assert cli_run(archived, "search", "NOT (lentos OR", "--json").exit_code == 0


def test_query_words_are_quoted_and_anded():
    assert fts_query('ruta@azuolas.lt "40 m³" kain* NOT') == '"ruta@azuolas.lt" "40 m³" "kain"* "NOT"'
    with pytest.raises(InputError):
        fts_query('""')


def test_the_index_follows_deletes_and_updates(archived):
    (hit,) = archived.store.search("krovinys")
    archived.store.db.execute("UPDATE letters SET subject = 'Siunta' WHERE id = ?", [hit["id"]])
    assert subjects(archived.store.search("siunta")) == ["Siunta"]
    archived.store.db.execute("DELETE FROM letters WHERE id = ?", [hit["id"]])
    assert archived.store.search("krovinys") == archived.store.search("siunta") == []
    archived.store.db.execute("INSERT INTO letters_fts (letters_fts) VALUES ('integrity-check')")
    assert archived.store.db.execute(
        "SELECT count(*) FROM letter_thread_ids WHERE letter_id = ?", [hit["id"]]).fetchone()[0] == 0


def test_a_thread_across_two_mailboxes_is_one_conversation_in_order(env, imap_user, dovecot):
    colleague = dovecot.add_user(f"petras-{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(10))
    start = datetime(2025, 4, 1, 8, 0, tzinfo=timezone.utc)
    ids = [f"<t{n}@azuolas.lt>" for n in range(5)]
    steps = [  # (mailbox user, folder, sender, recipient): the customer writes to both staff, they answer
        (imap_user, "INBOX", "ruta@azuolas.lt", imap_user.login),
        (imap_user, "Sent", imap_user.login, "ruta@azuolas.lt"),
        (colleague, "INBOX", "ruta@azuolas.lt", colleague.login),
        (colleague, "Sent", colleague.login, "ruta@azuolas.lt"),
        (imap_user, "INBOX", "ruta@azuolas.lt", imap_user.login),
    ]
    for n, (user, folder, sender, to) in reversed(list(enumerate(steps))):  # delivered out of order
        raw = sample.letter(sender, to, "Re: Lentos" if n else "Lentos", f"Laiškas {n}.", message_id=ids[n],
                            date=start + timedelta(hours=n), in_reply_to=ids[n - 1] if n else None,
                            references=ids[:n] or None)
        dovecot.deliver(user.login, folder, raw)
    dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "ruta@azuolas.lt", imap_user.login, "Kitas reikalas", "x", message_id="<other@azuolas.lt>", date=start))
    boxes = [env.add(user, folders=("INBOX", "Sent")) for user in (imap_user, colleague)]
    assert env.run().ok  # one pass over both mailboxes

    by_subject = {r["message_id"]: r["id"] for r in env.store.letters()}
    for message_id in ids:  # from any letter of it, the same conversation
        conversation = env.store.thread(by_subject[message_id.strip("<>")])
        assert [r["message_id"] for r in conversation] == [i.strip("<>") for i in ids]
    assert [r["mailboxes"] for r in conversation] == [
        [boxes[0].email], [boxes[0].email], [boxes[1].email], [boxes[1].email], [boxes[0].email]]
    assert conversation[0]["links"][0]["entity_id"] == "C-1001"
    assert len(env.store.thread(by_subject["other@azuolas.lt"])) == 1

    middle = by_subject["t2@azuolas.lt"]
    result = cli_run(env, "thread", str(middle), "--json")
    assert result.exit_code == 0, result.output
    assert [r["date_utc"] for r in json.loads(result.stdout)] == [
        (start + timedelta(hours=n)).isoformat() for n in range(5)]
    result = cli_run(env, "thread", str(middle))
    assert result.exit_code == 0 and "5 letter(s)" in result.output and f"{middle}*" in result.output
    missing = cli_run(env, "thread", "9999")
    assert missing.exit_code == 3 and missing.output.strip() == "Error: no letter 9999; 'hanna-sync letters' lists them"


def test_a_word_starting_with_a_dash_is_searched_not_read_as_an_option(archived):
    """The README says '-' needs no escaping: `search -03 Sąskaita` is a query on the command line too."""
    expected = subjects(archived.store.search("Sąskaita faktūra"))
    assert expected == ["Sąskaita faktūra 2025-03"]
    for args in (["-", "Sąskaita", "faktūra", "--json"], ["Sąskaita", "faktūra", "--json"],
                 ["--json", "Sąskaita", "faktūra"], ["--limit", "5", "Sąskaita", "--json", "faktūra"],
                 ["--json", "--", "Sąskaita", "faktūra"]):
        result = cli_run(archived, "search", *args)
        assert result.exit_code == 0, (args, result.output)
        assert subjects(json.loads(result.stdout)) == expected, args
    result = cli_run(archived, "search", "-x", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [], result.output  # a word, found nowhere
    result = cli_run(archived, "search", "-2025", "sąskaita", "--json")
    assert result.exit_code == 0 and subjects(json.loads(result.stdout)) == expected, result.output
    # A mistyped long option is still an error, not a search for "--limt".
    result = cli_run(archived, "search", "sąskaita", "--limt", "5")
    assert result.exit_code == 2 and "No such option '--limt'" in result.output
