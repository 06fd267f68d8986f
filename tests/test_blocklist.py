"""The blocklist ([linking] blocked): a blocked address links by no rule, so it archives nothing, and adding one
relinks the archive by itself. Pure matching first, then passes on the sandbox Dovecot."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.config import LinkingConfig, load_config
from hanna_sync.demo import sample
from hanna_sync.linking.match import Directory, Link, match
from hanna_sync.linking.relink import linking_settings
from tests.helpers import Env

START = datetime(2025, 5, 1, 9, tzinfo=timezone.utc)
COLLEAGUE = f"kolega@{sample.OWN_DOMAINS[0]}"


def directory(*blocked: str) -> Directory:
    return Directory.build(sample.CUSTOMERS, sample.LEADS, [sample.STAFF], own_domains=sample.OWN_DOMAINS,
                           blocked=blocked)


# -- pure rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("address, glob", [
    ("info@azuolas.lt", "info@azuolas.lt"),  # a customer's main email
    ("ruta@azuolas.lt", "ruta@*"),  # a customer contact's
    ("pirkimai@naujas.lt", "*@naujas.lt"),  # a lead's main email (a bare domain in the config)
    ("vadovas@naujas.lt", "*@naujas.lt"),  # a lead contact's
    ("noreply@azuolas.lt", "noreply@*"),  # the customer's domain
    ("Noreply@Azuolas.LT", "noreply@*"),  # whatever its case
])
def test_a_blocked_address_links_by_no_rule(address, glob):
    assert match([address], directory()) != []
    assert match([address], directory(glob)) == []
    assert match([address], directory("other@*", "*@kitas.lt")) != []


def test_a_blocked_address_leaves_the_letters_other_addresses_to_link():
    found = match(["info@azuolas.lt", "anna@partners.eu"], directory("info@azuolas.lt"))
    assert found == [Link("customer", "C-1002", "customer_contact", "anna@partners.eu")]
    # The exact address blocked does not make its domain link instead, nor another customer's claim count.
    assert match(["info@azuolas.lt", "petras@azuolas.lt"], directory("info@azuolas.lt")) == [
        Link("customer", "C-1001", "customer_domain", "petras@azuolas.lt")]


def test_the_config_turns_a_bare_domain_into_every_address_at_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('database = "hs.db"\n[linking]\nblocked = ["Noreply@*", "Notifications.Example"]\n')
    config = load_config(path)
    assert config.linking.blocked == ("noreply@*", "*@notifications.example")
    assert "noreply@*" in linking_settings(config)  # a change is a change of the linking settings


# -- passes on the sandbox Dovecot ---------------------------------------------------------------

@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def block(env, *globs):
    env.config = replace(env.config, linking=LinkingConfig(blocked=globs))


def subjects(env, **entity):
    return sorted(r["subject"] for r in env.store.letters(**entity))


def test_a_blocked_customer_address_archives_nothing(env, imap_user, dovecot):
    block(env, "info@azuolas.lt", "*@partners.eu")
    for raw in (
        sample.letter("info@azuolas.lt", imap_user.login, "Sąskaita", "x", message_id="<s@azuolas.lt>", date=START),
        sample.letter(imap_user.login, COLLEAGUE, "Re: Sąskaita", "?", in_reply_to="<s@azuolas.lt>",
                      date=START + timedelta(hours=1)),  # answers a blocked letter: no thread to inherit
        sample.letter("anna@partners.eu", imap_user.login, "Krovinys", "x", date=START),
        sample.letter("ruta@azuolas.lt", imap_user.login, "Lentos", "x", date=START),
    ):
        dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))
    result = env.run()
    assert result.ok and (result.mailboxes[0].archived, result.mailboxes[0].skipped) == (1, 3)
    assert subjects(env) == ["Lentos"]


def test_adding_a_blocked_address_unlinks_archived_letters_at_the_next_pass_and_keeps_them(
        env, imap_user, dovecot, caplog):
    for raw in (
        sample.letter("anna@partners.eu", imap_user.login, "Krovinys", "x", message_id="<k@partners.eu>", date=START),
        sample.letter(imap_user.login, COLLEAGUE, "Re: Krovinys", "?", in_reply_to="<k@partners.eu>",
                      date=START + timedelta(hours=1)),
        sample.letter("anna@partners.eu", imap_user.login, "Krovinys ir lentos", "x", cc=["ruta@azuolas.lt"],
                      date=START),
        sample.letter("ruta@azuolas.lt", imap_user.login, "Lentos", "x", date=START),
    ):
        dovecot.deliver(imap_user.login, "INBOX", raw)
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    assert subjects(env, customer="C-1002") == ["Krovinys", "Krovinys ir lentos", "Re: Krovinys"]

    block(env, "*@partners.eu")  # as the config has a bare domain "partners.eu"
    caplog.set_level(logging.INFO, logger="hanna_sync")
    assert env.run().ok  # nothing new on the server: the pass relinks because [linking] changed
    assert "letters left unlinked" in caplog.text and "[linking] settings or own domains changed" in caplog.text
    assert "2 letters left unlinked" in caplog.text  # the letter and its reply; "ir lentos" keeps C-1001
    assert subjects(env, customer="C-1002") == []
    assert subjects(env, customer="C-1001") == ["Krovinys ir lentos", "Lentos"]
    assert len(env.store.letters()) == 4  # kept: retention decides about them

    caplog.clear()
    assert env.run().ok  # nothing changed since: no relink
    assert "Relinked" not in caplog.text


def test_removing_a_blocked_address_brings_its_skipped_letters_back_through_backfill(env, imap_user, dovecot):
    block(env, "info@azuolas.lt")
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("info@azuolas.lt", imap_user.login, "Sąskaita", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and env.store.skipped_count() == 1
    block(env)
    assert env.run().ok  # relinks: the skipped letter is wanted
    assert env.run().mailboxes[0].backfilled == 1
    assert subjects(env, customer="C-1001") == ["Sąskaita"]


def test_the_blocklist_in_the_config_file_drives_relink_and_run(env, imap_user, dovecot):
    dovecot.deliver(imap_user.login, "INBOX", sample.letter("mindaugas.k@gmail.com", imap_user.login, "Kaina", "x"))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok and subjects(env, customer="C-1001") == ["Kaina"]
    config = env.config_file()
    config.write_text(config.read_text() + '[linking]\nblocked = ["Mindaugas.K@gmail.com"]\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "relink", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["links_removed"], counts["unlinked"]) == (1, 1)
    assert subjects(env, customer="C-1001") == [] and subjects(env) == ["Kaina"]
    run = CliRunner().invoke(cli, ["--config", str(config), "run"])
    assert run.exit_code == 0, run.output
    assert subjects(env, customer="C-1001") == []
