"""Gmail API scanning (google-scan): the real requests against a local HTTPS fake of the Gmail API that checks
what Gmail checks (tests/fakes_gmail.py), fed with the sample mailbox's letters and linked against the
sample directory. Every test ends by checking that no write request ever reached the fake.

Most tests hand the source the fake's tokens directly (`gmail_source.connect(token=...)`), to count and
refuse them at will; the Google sign-in's own path, through the CLI, is
`test_google_scan_end_to_end_through_the_cli_with_the_google_sign_in`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import hanna_sync.scan as scan_package
from hanna_sync.config import GoogleConfig
from hanna_sync.demo import sample
from hanna_sync.demo.sandbox import CertificateAuthority
from hanna_sync.errors import AuthError, ReauthRequired
from hanna_sync.linking.relink import relink
from hanna_sync.models import Mailbox
from hanna_sync.remote import gmail as gmail_module
from hanna_sync.remote.gmail import MAX_RETRIES, METADATA_HEADERS
from hanna_sync.remote.google_auth import GMAIL_READONLY
from hanna_sync.remote.providers import GMAIL_LABELS
from hanna_sync.scan import gmail_source
from tests.fakes_gmail import FULL, FakeGmail
from tests.fakes_google import JWT_BEARER, Google
from tests.helpers import Env

STAFF = sample.STAFF
SAMPLE_MATCHED = 8  # of the sample mailbox's 11 letters, 8 concern the directory (3 are skipped)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGmail]:
    ca = CertificateAuthority(tmp_path / "google", name="fake Google CA")
    gmail = FakeGmail(ca)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_file))
    yield gmail
    gmail.close()
    assert gmail.writes == []  # read-only: nothing but GET ever arrived


def sample_mailbox(fake: FakeGmail, user: str = STAFF) -> dict[str, bytes]:
    """The sample staff mailbox (INBOX -> INBOX, Išsiųsti -> SENT): Gmail message id -> raw letter."""
    raws = {}
    for folder, raw, _ in sample.mailbox_letters():
        message = fake.deliver(user, raw, ("INBOX",) if folder == "INBOX" else ("SENT",))
        raws[message.id] = raw
    return raws


class Tokens:
    """The token provider a google-scan mailbox gets: here, the fake's tokens, counted."""

    def __init__(self, fake: FakeGmail, user: str = STAFF, **issue) -> None:
        self.token = fake.issue(user, **issue)
        self.calls = 0

    def __call__(self, fresh: bool) -> str:
        self.calls += 1
        return self.token


def gmail_env(tmp_path: Path, fake: FakeGmail, monkeypatch: pytest.MonkeyPatch, providers: dict[str, object] | None = None,
              **scan: int) -> Env:
    """An environment whose google-scan mailboxes read the fake, each with its provider (by email)."""
    env = Env(tmp_path / "env", **scan)
    providers = providers if providers is not None else {}

    def open_source(ctx, mailbox, result):
        assert mailbox.kind == "google-scan"
        provider = providers.setdefault(mailbox.email, Tokens(fake, mailbox.email))
        return gmail_source.connect(ctx, mailbox, result, token=provider, base_url=fake.url)

    monkeypatch.setattr(scan_package, "open_source", open_source)
    return env


def add(env: Env, email: str = STAFF, folders: tuple[str, ...] = GMAIL_LABELS) -> Mailbox:
    box = Mailbox("staff", email, "google", kind="google-scan", folders=list(folders), folders_chosen=True,
                  secret_ref=f"google-scan:{email}")
    env.store.add_mailbox(box, allow_duplicate=True)
    return box


def count(env: Env, sql: str, *args: object) -> int:
    return env.store.db.execute(sql, args).fetchone()[0]


def no_duplicates(env: Env) -> None:
    assert count(env, "SELECT count(*) FROM (SELECT 1 FROM letter_locations GROUP BY mailbox_id, folder, graph_id"
                      " HAVING count(*) > 1)") == 0
    assert count(env, "SELECT count(*) FROM (SELECT 1 FROM letters GROUP BY identity HAVING count(*) > 1)") == 0


# -- passes -------------------------------------------------------------------------------------------

def test_a_first_pass_archives_and_links_the_sample_and_a_pass_without_changes_only_reads_history(
        tmp_path, fake, monkeypatch, caplog):
    raws = sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch, batch_size=3)  # 3 ids a page: the paging is followed
    add(env)
    with caplog.at_level("INFO", "hanna_sync"):
        first = env.run().mailboxes[0]
    assert first.ok and (first.new, first.archived, first.skipped) == (11, SAMPLE_MATCHED, 3)
    # 2 getProfile, 4 messages.list, 11 envelopes, 8 originals, 2 history.list: 2 + 20 + 55 + 40 + 4
    assert "mailbox 1 (jonas@imone.lt): 121 Gmail API quota units" in caplog.text
    caplog.clear()
    assert fake.calls["getProfile"] == 2 and fake.calls["messages.list"] == 4  # INBOX: 9 in 3 pages; SENT: 2
    assert fake.calls["messages.get/metadata"] == 11 and fake.calls["messages.get/raw"] == SAMPLE_MATCHED
    assert fake.calls["labels.list"] == 0  # INBOX and SENT are system labels: their ids are their names
    asked = {tuple(q["metadataHeaders"]) for m, p, q in fake.requests if q.get("format") == ["metadata"]}
    assert asked == {METADATA_HEADERS}
    for message_id in [p.rsplit("/", 1)[1] for m, p, q in fake.requests if q.get("format") == ["raw"]]:
        letter_id = count(env, "SELECT letter_id FROM letter_locations WHERE graph_id = ?", message_id)
        assert env.store.letter_source(letter_id) == raws[message_id]  # the original, byte for byte
        thread = int(fake.mailbox(STAFF).messages[message_id].thread_id, 16)  # X-GM-THRID, as over IMAP
        assert count(env, "SELECT count(*) FROM letters WHERE id = ? AND conversation_id = ?", letter_id,
                     f"gmail:jonas@imone.lt:{thread}") == 1
    order = next(r for r in env.store.letters(customer="C-1001") if r["subject"].startswith("Užsakymas"))
    assert [(loc["folder"], loc["uidvalidity"]) for loc in env.store.letter(order["id"])["locations"]] == [("INBOX", 0)]
    assert env.store.folder_state(1, "INBOX").delta_link == "1010"  # the history id taken before the listing

    fake.calls.clear()
    with caplog.at_level("INFO", "hanna_sync"):
        second = env.run().mailboxes[0]
    assert second.ok and (second.new, second.archived) == (0, 0)
    assert dict(fake.calls) == {"history.list": 2}  # 2 quota units a label, nothing else
    assert "mailbox 1 (jonas@imone.lt): 4 Gmail API quota units" in caplog.text


def test_a_new_letter_and_a_label_added_between_passes_arrive(tmp_path, fake, monkeypatch):
    raws = sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env, folders=("INBOX", "SENT", "Klientai"))
    fake.label_id(STAFF, "Klientai")
    assert env.run().ok
    assert fake.calls["labels.list"] == 1  # a user label's id is looked up by its name
    order = next(i for i, raw in raws.items() if b"<order-17@azuolas.lt>" in raw)
    invoice = next(i for i, raw in raws.items() if b"<invoice-3@azuolas.lt>" in raw)
    fake.add_label(STAFF, order, "Klientai")  # archived from INBOX already: located without a request
    fake.remove_label(STAFF, invoice, "INBOX")  # archived from the inbox: its location there is gone
    new = fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Brėžiniai", "Prisegti.",
                                            message_id="<plans@azuolas.lt>"))
    old = fake.deliver(STAFF, sample.letter("Anna <anna@partners.eu>", STAFF, "Old", "x", message_id="<old@p.eu>"),
                       labels=("Archyvas",))
    fake.add_label(STAFF, old.id, "INBOX")  # moved to the inbox: a labelAdded
    fake.calls.clear()
    result = env.run().mailboxes[0]
    assert result.ok and (result.new, result.archived) == (3, 2)
    assert fake.calls["messages.get/raw"] == 2 and fake.calls["messages.get/metadata"] == 2
    assert fake.calls["messages.list"] == 0 and fake.calls["history.list"] == 3
    places = {(r[0], r[1], r[2]) for r in env.store.db.execute(
        "SELECT graph_id, folder, gone_at IS NULL FROM letter_locations WHERE graph_id IN (?, ?, ?, ?)",
        [order, invoice, new.id, old.id])}
    assert places == {(order, "INBOX", 1), (order, "Klientai", 1), (invoice, "INBOX", 0), (new.id, "INBOX", 1),
                      (old.id, "INBOX", 1)}
    no_duplicates(env)
    assert env.run().mailboxes[0].new == 0


def test_one_letter_in_the_inbox_and_a_user_label_is_stored_once_with_two_locations_downloaded_once(
        tmp_path, fake, monkeypatch):
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env, folders=("INBOX", "Klientai/Ąžuolas"))
    message = fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Lentos", "40 m³",
                                                message_id="<boards@azuolas.lt>"), labels=("INBOX", "Klientai/Ąžuolas"))
    result = env.run().mailboxes[0]
    assert result.ok and result.archived == 1 and result.new == 2  # one letter, seen in two labels
    assert fake.calls["messages.get/raw"] == 1 and fake.calls["messages.get/metadata"] == 1
    assert count(env, "SELECT count(*) FROM letters") == 1
    assert sorted(r[0] for r in env.store.db.execute(
        "SELECT folder FROM letter_locations WHERE graph_id = ?", [message.id])) == ["INBOX", "Klientai/Ąžuolas"]
    assert count(env, "SELECT count(*) FROM links") == 1


def test_an_expired_history_id_lists_the_label_again_and_downloads_nothing_twice(tmp_path, fake, monkeypatch, caplog):
    raws = sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch, batch_size=4)
    add(env)
    assert env.run().ok
    before = count(env, "SELECT count(*) FROM letters")
    invoice = next(i for i, raw in raws.items() if b"<invoice-3@azuolas.lt>" in raw)
    fake.remove_label(STAFF, invoice, "INBOX")  # its news is in the history Gmail then forgets
    fake.deliver(STAFF, sample.letter("Anna <anna@partners.eu>", STAFF, "New schedule", "x",
                                      message_id="<sched2@partners.eu>"))
    fake.expire_history(STAFF)
    fake.calls.clear()
    with caplog.at_level("WARNING", "hanna_sync"):
        result = env.run().mailboxes[0]
    assert result.ok and result.archived == 1
    assert "Gmail no longer has this label's history (404 notFound: Requested entity was not found.)" in caplog.text
    assert fake.calls["messages.get/raw"] == 1  # the new letter only
    assert fake.calls["messages.get/metadata"] == 1  # what is archived or skipped is known by its message id
    assert fake.calls["messages.list"] >= 3
    assert count(env, "SELECT count(*) FROM letters") == before + 1
    assert count(env, "SELECT count(*) FROM letter_locations WHERE gone_at IS NOT NULL AND graph_id = ?", invoice) == 1
    assert "INBOX: 1 archived letters are no longer in the label" in caplog.text
    no_duplicates(env)
    fake.calls.clear()
    assert env.run().mailboxes[0].new == 0 and dict(fake.calls) == {"history.list": 2}


def test_throttling_waits_as_told_and_a_mailbox_throttled_too_long_fails_alone(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    other = "ona@imone.lt"
    fake.deliver(other, sample.letter("Rūta <ruta@azuolas.lt>", other, "Sveiki", "x", message_id="<hi@azuolas.lt>"))
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    add(env, other)
    fake.throttle_next = 2  # 429 twice, with Retry-After: 0
    assert env.run().ok
    waits: list[float] = []
    monkeypatch.setattr(gmail_module.time, "sleep", waits.append)
    fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Dar", "x", message_id="<more@azuolas.lt>"))
    fake.throttle_user, fake.throttle_next, fake.retry_after = STAFF, 100, None
    result = env.run(mailbox_ids=[1, 2])
    staff, ona = result.mailboxes
    assert waits == [2.0, 4.0, 8.0, 16.0] and len(waits) == MAX_RETRIES  # no Retry-After: 2, 4, 8, 16 s
    assert not staff.ok and "429 rateLimitExceeded: User-rate limit exceeded." in staff.errors[0]
    assert staff.failure_kind == "connect"  # not a refusal: the next pass tries again
    assert ona.ok
    fake.throttle_next = 0
    assert env.run().mailboxes[0].archived == 1  # the letter waited for the next pass


def test_a_retry_after_of_7_seconds_is_waited_for_exactly_then_the_pass_goes_on(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    waits: list[float] = []
    monkeypatch.setattr(gmail_module.time, "sleep", waits.append)
    fake.throttle_next, fake.retry_after = 1, "7"
    result = env.run().mailboxes[0]
    assert waits == [7.0]  # as Gmail asked: not the 2 s of the back-off's own first step
    assert result.ok and result.archived == SAMPLE_MATCHED and fake.throttle_next == 0


def test_a_retry_after_of_300_seconds_fails_the_mailbox_at_once_and_the_others_go_on(tmp_path, fake, monkeypatch):
    """Over MAX_RETRY_WAIT (120 s) the pass does not wait: the mailbox fails for this pass without a
    single sleep or retry, and the next pass tries again."""
    sample_mailbox(fake)
    other = "ona@imone.lt"
    fake.deliver(other, sample.letter("Rūta <ruta@azuolas.lt>", other, "Sveiki", "x", message_id="<hi@azuolas.lt>"))
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    add(env, other)
    waits: list[float] = []
    monkeypatch.setattr(gmail_module.time, "sleep", waits.append)
    fake.throttle_user, fake.throttle_next, fake.retry_after = STAFF, 100, "300"
    staff, ona = env.run().mailboxes
    assert waits == [] and fake.throttle_next == 99  # one request answered 429, none after it
    assert not staff.ok and staff.failure_kind == "connect" and staff.archived == 0
    assert "429 rateLimitExceeded: User-rate limit exceeded." in staff.errors[0]
    assert ona.ok and ona.archived == 1
    fake.throttle_next = 0
    assert env.run().mailboxes[0].archived == SAMPLE_MATCHED


@pytest.mark.parametrize("status", [503, 403])  # a passing failure; Gmail's 403 rateLimitExceeded
def test_passing_failures_and_quota_refusals_are_waited_out_too(tmp_path, fake, monkeypatch, status):
    sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    fake.throttle_next, fake.throttle_status = 3, status
    result = env.run().mailboxes[0]
    assert result.ok and result.archived == SAMPLE_MATCHED and fake.throttle_next == 0


def test_the_gmail_api_not_enabled_in_the_project_says_where_to_enable_it(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    fake.api_disabled = True
    result = env.run().mailboxes[0]
    assert result.failure_kind == "auth"
    assert result.errors[0].startswith("the Gmail API is not enabled in the Google Cloud project (403 accessNotConfigured:"
                                       " Gmail API has not been used in project 123456789012")
    assert "APIs & Services > Library > Gmail API" in result.errors[0]


def test_messages_deleted_between_listing_and_download_are_left_out(tmp_path, fake, monkeypatch):
    raws = sample_mailbox(fake)
    order = next(i for i, raw in raws.items() if b"<order-17@azuolas.lt>" in raw)
    cargo = next(i for i, raw in raws.items() if b"<cargo@azuolas.lt>" in raw)

    def delete(kind: str, path: str) -> None:
        for message_id, when in ((order, "messages.get/metadata"), (cargo, "messages.get/raw")):
            if kind == when and path.endswith(message_id):
                fake.delete(STAFF, message_id)  # the answer to this very request is then a 404

    fake.before = delete
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    result = env.run().mailboxes[0]
    assert result.ok and result.archived == SAMPLE_MATCHED - 2
    kept = {r[0] for r in env.store.db.execute("SELECT message_id FROM letters")}
    assert len(kept) == SAMPLE_MATCHED - 2 and "ok@gmail.com" in kept
    assert not kept & {"order-17@azuolas.lt", "cargo@azuolas.lt"}
    fake.before = None
    assert env.run().mailboxes[0].new == 0  # their messagesDeleted: nothing to do


def test_a_label_deleted_and_made_again_under_the_same_name_is_read_from_the_start(tmp_path, fake, monkeypatch, caplog):
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env, folders=("INBOX", "Klientai"))
    first = fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "A", "x", message_id="<a@azuolas.lt>"),
                         labels=("INBOX", "Klientai"))
    assert env.run().mailboxes[0].archived == 1
    box = fake.mailbox(STAFF)
    old = fake.label_id(STAFF, "Klientai")
    del box.labels[old]  # deleted in Gmail (its messages lose it), then made again: a new id
    box.messages[first.id].labels.discard(old)
    second = fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "B", "x", message_id="<b@azuolas.lt>"),
                          labels=("Klientai",))
    assert fake.label_id(STAFF, "Klientai") != old
    with caplog.at_level("WARNING", "hanna_sync"):
        result = env.run().mailboxes[0]
    assert result.ok and result.archived == 1
    assert "Klientai: another label has this name now: reading it from the start" in caplog.text
    places = set(env.store.db.execute("SELECT graph_id, folder, gone_at IS NULL FROM letter_locations").fetchall())
    assert places == {(first.id, "INBOX", 1), (first.id, "Klientai", 0), (second.id, "Klientai", 1)}


def test_a_401_asks_the_provider_once_more_then_the_mailbox_is_refused(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    stale, renewed = fake.issue(STAFF), fake.issue(STAFF)
    fake.revoke(stale)  # e.g. revoked before its expiry: the provider's kept token, until asked for a fresh one
    asked: list[bool] = []

    def provider(fresh: bool) -> str:
        asked.append(fresh)
        return renewed if fresh else stale

    env = gmail_env(tmp_path, fake, monkeypatch, {STAFF: provider})
    add(env)
    assert env.run().ok  # the first request's 401, then a fresh token, kept for the rest of the pass
    assert asked == [False, True]
    stale = renewed
    fake.revoke(renewed)
    fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Dar", "x", message_id="<more@azuolas.lt>"))
    fake.calls.clear()
    result = env.run().mailboxes[0]
    assert not result.ok and result.failure_kind == "auth"
    assert "Gmail refused the token (401 authError: Request had invalid authentication credentials." in result.errors[0]
    assert dict(fake.calls) == {"history.list": 2}  # asked once more, then refused: no third request


def test_a_sign_in_gone_is_needs_reauthorisation_and_a_missing_scope_is_named(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    other = "ona@imone.lt"
    fake.mailbox(other)

    def gone(fresh: bool) -> str:
        raise ReauthRequired("the Google sign-in of jonas@imone.lt was revoked: sign in again with 'hanna-sync login 1'")

    narrow = Tokens(fake, other, scopes=("https://www.googleapis.com/auth/gmail.metadata",))
    env = gmail_env(tmp_path, fake, monkeypatch, {STAFF: gone, other: narrow})
    add(env)
    add(env, other)
    staff, ona = env.run().mailboxes
    assert staff.failure_kind == "reauth" and "sign in again with 'hanna-sync login 1'" in staff.errors[0]
    assert ona.failure_kind == "auth"
    assert "403 insufficientPermissions: Request had insufficient authentication scopes." in ona.errors[0]
    assert "https://www.googleapis.com/auth/gmail.readonly" in ona.errors[0]
    assert env.store.mailbox(1).failure_kind == "reauth" and env.store.mailbox(1).retry_after  # backed off


def test_the_full_mail_scope_serves_too_and_a_label_not_in_the_mailbox_fails_that_label_only(
        tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch, {STAFF: Tokens(fake, scopes=(FULL,))})
    add(env, folders=("INBOX", "Nėra"))
    result = env.run().mailboxes[0]
    assert result.archived == 6 and result.failure_kind == "folder"
    assert "label 'Nėra' is not in the mailbox" in result.errors[0]


def test_a_dry_run_downloads_nothing_and_writes_nothing(tmp_path, fake, monkeypatch):
    sample_mailbox(fake)
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env)
    result = env.run(dry_run=True).mailboxes[0]
    assert result.ok and len(result.would_archive) == SAMPLE_MATCHED and result.linked == SAMPLE_MATCHED
    assert all(w.graph_id for w in result.would_archive)
    assert fake.calls["messages.get/raw"] == 0
    assert count(env, "SELECT count(*) FROM letters") == 0 and count(env, "SELECT count(*) FROM folder_states") == 0


def test_replies_inherit_their_gmail_threads_links_and_list_letters_are_never_downloaded(tmp_path, fake, monkeypatch):
    fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Lentos", "40 m³", message_id="<l1@azuolas.lt>"))
    colleague = fake.deliver(STAFF, sample.letter("ona@imone.lt", STAFF, "RE: Lentos", "Ar turim?",
                                                  message_id="<l2@imone.lt>", in_reply_to="<l1@azuolas.lt>"))
    news = b"List-Id: <news.azuolas.lt>\r\n" + sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Naujienos", "x",
                                                               message_id="<n1@azuolas.lt>")
    news_id = fake.deliver(STAFF, news).id
    fake.deliver(STAFF, sample.letter("ona@imone.lt", STAFF, "RE: Naujienos", "Matei?", message_id="<n2@imone.lt>",
                                      in_reply_to="<n1@azuolas.lt>"))
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env, folders=("INBOX",))
    first = env.run().mailboxes[0]
    assert first.ok and (first.archived, first.skipped) == (1, 3)
    raws = [p.rsplit("/", 1)[1] for m, p, q in fake.requests if q.get("format") == ["raw"]]
    assert news_id not in raws  # a list letter is known from its header fields: never downloaded
    second = env.run().mailboxes[0]  # the reply was in the same batch as its thread's first letter: next pass
    assert second.ok and second.backfilled == 1
    rows = {r["subject"]: r for r in env.store.letters(customer="C-1001")}
    assert set(rows) == {"Lentos", "RE: Lentos"}
    (link,) = rows["RE: Lentos"]["links"]
    thread = int(fake.mailbox(STAFF).messages[colleague.id].thread_id, 16)
    assert link["rule"] == "thread" and link["address"] == f"conversation:gmail:jonas@imone.lt:{thread}"
    assert env.store.thread(rows["Lentos"]["id"])[-1]["subject"] == "RE: Lentos"
    assert env.run().mailboxes[0].backfilled == 0
    assert relink(env.store, env.config, env.secrets).links_removed == 0  # the pass and relink agree


def test_a_customer_added_later_is_backfilled_reading_only_its_letters(tmp_path, fake, monkeypatch):
    for n in range(6):
        fake.deliver(STAFF, sample.letter(f"n{n}@kitas.lt", STAFF, f"Reklama {n}", "x", message_id=f"<r{n}@kitas.lt>"))
    wanted = fake.deliver(STAFF, sample.letter("jonas@medis.lt", STAFF, "Pasiūlymas", "x", message_id="<of@medis.lt>"))
    env = gmail_env(tmp_path, fake, monkeypatch)
    add(env, folders=("INBOX",))
    assert env.run().mailboxes[0].skipped == 7 and fake.calls["messages.get/raw"] == 0
    env.store.save_entity("customer", sample.Entity("C-9", "UAB Medis", None, "medis.lt"), replace_contacts=True)
    assert relink(env.store, env.config, env.secrets).backfill_wanted == 1
    dry = env.run(dry_run=True).mailboxes[0]
    assert [item.graph_id for item in dry.would_archive] == [wanted.id] and fake.calls["messages.get/raw"] == 0
    fake.requests.clear()
    second = env.run().mailboxes[0]
    assert second.ok and (second.backfilled, second.archived, second.new) == (1, 1, 0)
    read = [p.rsplit("/", 1)[1] for m, p, q in fake.requests if "format" in q]
    assert read == [wanted.id, wanted.id]  # its envelope, then its original: nothing else
    (row,) = env.store.letters(customer="C-9")
    assert env.store.letter(row["id"])["locations"][0]["graph_id"] == wanted.id
    assert env.run().mailboxes[0].backfilled == 0


def test_a_letter_over_the_size_limit_keeps_its_whole_header_block_without_a_raw_download(tmp_path, fake, monkeypatch):
    big = fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Brėžiniai", "x" * 200_000,
                                            message_id="<big@azuolas.lt>"))
    env = gmail_env(tmp_path, fake, monkeypatch)
    env.config = replace(env.config, scan=replace(env.config.scan, max_letter_size_mb=0.1))
    add(env, folders=("INBOX",))
    assert env.run().mailboxes[0].archived == 1
    assert fake.calls["messages.get/raw"] == 0
    assert [q.get("metadataHeaders") for m, p, q in fake.requests if q.get("format") == ["metadata"]] == [
        list(METADATA_HEADERS), None]  # the second: every header field
    letter_id = count(env, "SELECT letter_id FROM letter_locations WHERE graph_id = ?", big.id)
    source = env.store.letter_source(letter_id)
    assert source.endswith(b"\r\n\r\n") and b"Message-ID: <big@azuolas.lt>" in source and b"xxxx" not in source
    assert count(env, "SELECT size FROM letters WHERE id = ?", letter_id) == len(big.raw)


def test_google_scan_end_to_end_through_the_cli_with_the_google_sign_in(tmp_path, monkeypatch):
    """Nothing handed in: add-mailbox --kind google-scan, test, folders, run and login as an admin runs them.
    google-auth signs the service account's JWT for gmail.readonly, the fake token endpoint checks it and the
    delegation, and the fake Gmail API takes the token it issued."""
    from tests.test_google import config_file, run_cli

    google = Google.start(tmp_path / "google")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(google.ca.ca_file))
    fake = FakeGmail(google.ca, google.oauth)
    try:
        google.oauth.users.add(STAFF)
        sample_mailbox(fake)
        account, key_file = google.oauth.service_account(tmp_path)
        env = Env(tmp_path / "env")
        env.config = replace(env.config, google=GoogleConfig(
            auth="service-account", service_account_file=key_file, token_uri=google.oauth.token_uri,
            auth_uri=google.oauth.auth_uri, gmail_url=fake.url))
        config_file(env)

        # The Admin console grants the client id nothing yet: refused before anything is saved, with the fix.
        refused = run_cli(env, "add-mailbox", "--kind", "google-scan", "--user", "jonas", "--email", STAFF)
        assert refused.exit_code != 0 and "unauthorized_client" in refused.output
        assert GMAIL_READONLY in refused.output and account.client_id in refused.output
        assert env.store.mailboxes() == [] and fake.calls == {}

        google.oauth.delegations[account.client_id] = {GMAIL_READONLY}  # only the Gmail API's read-only scope
        tried = run_cli(env, "test", "--kind", "google-scan", "--email", STAFF, "--json")
        assert tried.exit_code == 0, tried.output
        stages = [(s["protocol"], s["stage"], s["ok"]) for s in json.loads(tried.stdout)["stages"]]
        assert stages == [("gmail", "token", True), ("gmail", "labels", True)] and env.store.mailboxes() == []
        added = run_cli(env, "add-mailbox", "--kind", "google-scan", "--user", "jonas", "--email", STAFF)
        assert added.exit_code == 0, added.output
        assert added.stdout.startswith("Added mailbox 1: jonas@imone.lt for jonas (Gmail API), folders: INBOX, SENT")
        listed = json.loads(run_cli(env, "folders", "1", "--json").stdout)
        assert {f["name"] for f in listed if f["selected"]} == {"INBOX", "SENT"}
        assert run_cli(env, "run").exit_code == 0
        assert count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED
        shown = run_cli(env, "show", "1").stdout
        assert re.search(r"Seen in:    mailbox 1 (INBOX|SENT) Gmail id [0-9a-f]+\n", shown), shown
        assert "the service account gets its tokens" in run_cli(env, "login", "1").stdout
        for args, message in ((["set-password", "1"], "it signs in with Google ('hanna-sync login 1')"),
                              (["add-mailbox", "--kind", "google-scan", "--email", "x@imone.lt", "--imap-host", "x"],
                               "--imap-host is for IMAP servers: a google-scan mailbox is read through the Gmail API"),
                              (["test", "1", "--send-to", "me@example.com"], "--send-to needs SMTP")):
            answer = run_cli(env, *args, input="x\n")
            assert answer.exit_code == 2 and message in answer.stderr, answer.output
        missing = run_cli(env, "test", "1", "--folder", "Nėra")
        assert missing.exit_code == 18 and "the mailbox has no label 'Nėra'" in missing.output
        fake.api_disabled = True  # the Gmail API switched off in the Cloud project
        disabled = run_cli(env, "test", "1")
        assert disabled.exit_code == 16 and "the Gmail API is not enabled in the Google Cloud project" in disabled.output
        assert "APIs & Services > Library > Gmail API" in disabled.output
        assert {grant for grant in google.oauth.grants} == {JWT_BEARER} and fake.writes == []
    finally:
        fake.close()
        google.close()


# -- kills ----------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    import hanna_sync.scan as scan
    from hanna_sync.config import load_config
    from hanna_sync.credentials import open_secret_store
    from hanna_sync.db.store import Store
    from hanna_sync.scan import gmail_source

    config = load_config(sys.argv[1])
    store = Store(config.database)
    secrets = open_secret_store("file", config.secrets_file, config.secrets_key_file, 5)
    scan.open_source = lambda ctx, mailbox, result: gmail_source.connect(
        ctx, mailbox, result, token=lambda fresh: os.environ["HS_TEST_TOKEN"], base_url=os.environ["HS_TEST_GMAIL"])
    sys.exit(0 if scan.run_pass(store, secrets, config).ok else 1)
""")


def test_a_kill_mid_pass_loses_nothing_and_duplicates_nothing(tmp_path, fake, monkeypatch):
    """SIGKILL the pass (a process of its own) at a download, twice, mid-listing and mid-history; the re-run
    ends with what an uninterrupted pass over the same mailbox gives."""
    sample_mailbox(fake)
    for i in range(30):
        fake.deliver(STAFF, sample.letter("Rūta <ruta@azuolas.lt>", STAFF, f"Laiškas {i}", f"Tekstas {i}",
                                          message_id=None if i % 7 == 0 else f"<m{i}@azuolas.lt>"))
        fake.deliver(STAFF, sample.letter("x@spam.example", STAFF, f"Spam {i}", "x", message_id=f"<s{i}@spam.example>"))
    token = fake.issue(STAFF)

    def prepared(name: str) -> tuple[Env, Path]:
        env = Env(tmp_path / name, batch_size=5)
        add(env)
        return env, env.config_file()

    def child(config: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(config)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "HS_TEST_TOKEN": token,
                                                             "HS_TEST_GMAIL": fake.url})

    env, config = prepared("killed")
    for at in (6, 17):
        proc = child(config)
        fake.kill = ("messages.get/raw", fake.calls["messages.get/raw"] + at, proc.pid)
        assert proc.wait(60) == -signal.SIGKILL
    fake.kill = None
    late = fake.deliver(STAFF, sample.letter("Anna <anna@partners.eu>", STAFF, "Vėlai", "x", message_id="<late@p.eu>"))
    proc = child(config)
    fake.kill = ("messages.get/raw", fake.calls["messages.get/raw"] + 3, proc.pid)
    assert proc.wait(60) == -signal.SIGKILL  # the history of the late letter, or the listing's end, cut short
    fake.kill = None
    assert child(config).wait(60) == 0, "the re-run fails"

    clean, clean_config = prepared("clean")
    assert child(clean_config).wait(60) == 0

    def archive(e: Env) -> tuple:
        q = e.store.db.execute
        return (sorted(q("SELECT l.identity, s.raw FROM letters l JOIN letter_sources s ON s.letter_id = l.id")),
                sorted(q("SELECT l.identity, p.folder, p.graph_id, p.gone_at IS NULL FROM letter_locations p"
                         " JOIN letters l ON l.id = p.letter_id")),
                sorted(q("SELECT l.identity, k.entity_type, k.entity_id, k.rule FROM links k"
                         " JOIN letters l ON l.id = k.letter_id")))

    assert archive(env) == archive(clean)
    assert count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED + 31
    assert count(env, "SELECT count(*) FROM letter_locations WHERE graph_id = ?", late.id) == 1
    no_duplicates(env)


def test_google_scan_with_a_persons_consent_for_gmail_readonly_only(tmp_path, monkeypatch):
    """auth = "user": the consent asks for gmail.readonly (not all of Gmail), through the loopback listener for
    real; the pass reads with the kept consent's token."""
    from hanna_sync.admin import google_mailboxes
    from tests.test_google import browser_consent, signer, user_env

    google = Google.start(tmp_path / "google")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(google.ca.ca_file))
    fake = FakeGmail(google.ca, google.oauth)
    try:
        google.oauth.users.add(STAFF)
        google.oauth.approve_as = STAFF
        sample_mailbox(fake)
        env = user_env(tmp_path / "env", google)
        env.config = replace(env.config, google=replace(env.config.google, gmail_url=fake.url))
        shown: list[str] = []
        box = google_mailboxes.new_mailbox("staff", STAFF, {}, "google-scan")
        google_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10,
                             consent=browser_consent(google, shown))
        assert "gmail.readonly" in shown[0] and "mail.google.com" not in shown[0]
        result = env.run().mailboxes[0]
        assert result.ok and result.archived == SAMPLE_MATCHED and fake.writes == []
    finally:
        fake.close()
        google.close()


def test_a_403_is_named_a_missing_scope_only_when_gmail_says_so():
    """Other refusals (a daily limit, a domain policy) are said in Gmail's own words, not blamed on the scope."""
    scope = gmail_module._error(403, "insufficientPermissions", "Request had insufficient authentication scopes.",
                                attempt=0, history=False)
    assert "the token needs the scope https://www.googleapis.com/auth/gmail.readonly" in str(scope)
    policy = gmail_module._error(403, "domainPolicy", "The domain administrators have disabled Gmail apps.",
                                 attempt=0, history=False)
    assert str(policy) == ("Gmail denied access (403 domainPolicy: The domain administrators have disabled Gmail"
                           " apps.)") and isinstance(policy, AuthError)
