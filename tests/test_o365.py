"""Office 365: Microsoft sign-in (MSAL), Graph scanning, and IMAP/SMTP with XOAUTH2, against local fakes.

The real msal and requests talk HTTPS to fakes of the identity platform and Graph on 127.0.0.1 (a CA made
for the test, trusted through REQUESTS_CA_BUNDLE); IMAP goes through a fake of Exchange's XOAUTH2 front
door to the sandbox Dovecot, SMTP to aiosmtpd. Nothing leaves loopback (tests/fakes_microsoft.py).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hanna_sync.admin import mailboxes, o365_mailboxes, setup_guide
from hanna_sync.admin.status import health
from hanna_sync.cli import cli
from hanna_sync.config import O365Config, parse_config
from hanna_sync.demo import sample
from hanna_sync.errors import AuthError, ConfigError, ExitCode, ReauthRequired
from hanna_sync.linking import manual
from hanna_sync.linking.relink import relink
from hanna_sync.remote import imap, oauth
from hanna_sync.remote.graph import (
    ENVELOPE_FIELDS,
    MAX_IN_FLIGHT,
    MAX_RETRIES,
    GraphClient,
)
from hanna_sync.remote.oauth import CLIENT_SECRET_REF, MicrosoftSignIn, TokenRefused
from tests.fakes_microsoft import Microsoft, Reply, claims_of
from tests.helpers import Env, deliver_sample, server_flags

STAFF = sample.STAFF  # jonas@imone.lt
SAMPLE_MATCHED = 8  # of the sample mailbox's 11 letters, 8 concern the directory (3 are skipped)


@pytest.fixture
def ms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Microsoft]:
    fakes = Microsoft.start(tmp_path / "microsoft")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fakes.ca.ca_file))  # requests (and so msal) trust the fake CA
    yield fakes
    fakes.close()


def o365_env(tmp_path: Path, ms: Microsoft, auth: str = "delegated", **scan: int) -> Env:
    env = Env(tmp_path, **scan)
    env.config = replace(env.config, o365=O365Config(
        tenant_id=ms.identity.tenant, client_id=ms.identity.client_id, auth=auth,
        authority=ms.identity.authority, graph_url=ms.graph.url))
    return env


def signer(env: Env) -> MicrosoftSignIn:
    return MicrosoftSignIn.for_config(env.config, env.secrets)


def graph_mailbox(ms: Microsoft, user: str = STAFF) -> dict[str, bytes]:
    """The sample staff mailbox in Graph (INBOX -> Inbox, Išsiųsti -> Sent Items), plus an empty subfolder."""
    ms.graph.mailbox(user, ("Inbox", "Inbox/Projektai", "Sent Items"))
    raws = {}
    for folder, raw, _ in sample.mailbox_letters():
        message = ms.graph.deliver(user, "Inbox" if folder == "INBOX" else "Sent Items", raw)
        raws[message.id] = raw
    return raws


def add_scan(env: Env, ms: Microsoft, folders: tuple[str, ...] = (), verify: bool = True):
    ms.identity.approve_as = STAFF
    shown: list[str] = []
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {"folders": list(folders)})
    saved = o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=verify, timeout=10, show=shown.append)
    return saved.mailbox, shown


def letter(sender: str, subject: str, mid: str) -> bytes:
    return sample.letter(sender, STAFF, subject, f"{subject}.", message_id=mid)


def count(env: Env, sql: str) -> int:
    return env.store.db.execute(sql).fetchone()[0]


# -- sign-in ----------------------------------------------------------------------------------------

def test_device_code_sign_in_then_silent_renewal_with_the_cache_in_the_secrets_store(tmp_path, ms):
    graph_mailbox(ms)
    ms.identity.lifetime = 120  # under 5 minutes: MSAL renews the access token at every pass
    env = o365_env(tmp_path, ms)
    box, shown = add_scan(env, ms)
    assert re.search(r"open the page https://microsoft.com/devicelogin and enter the code H\d{7}", shown[0])
    device = "urn:ietf:params:oauth:grant-type:device_code"
    assert ms.identity.grants[:2] == [device, device]  # authorization_pending once, then the sign-in
    assert box.folders == ["Inbox", "Sent Items"]  # the well-known folders' display names

    cache = json.loads(env.secrets.get(box.secret_ref))
    first_rt = next(iter(cache["RefreshToken"].values()))["secret"]
    assert first_rt.encode() not in env.config.secrets_file.read_bytes()  # encrypted at rest
    signed_in = len(ms.identity.grants)
    assert env.run().ok
    assert ms.identity.grants[signed_in:] == ["refresh_token"]  # silent: no device code, no person needed
    assert count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED
    assert env.run().ok
    assert ms.identity.grants[signed_in:] == ["refresh_token", "refresh_token"]
    rotated = next(iter(json.loads(env.secrets.get(box.secret_ref))["RefreshToken"].values()))["secret"]
    assert rotated != first_rt  # the renewed refresh token was saved (has_state_changed)


def test_revoked_refresh_token_needs_reauthorisation_without_retries_until_login(tmp_path, ms):
    graph_mailbox(ms)
    ms.identity.lifetime = 120
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms)
    ms.identity.revoke(STAFF)

    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "reauth"
    assert "AADSTS700082" in failed.errors[0] and f"'hanna-sync login {box.id}'" in failed.errors[0]
    row = health(env.store, timedelta(minutes=60))[0]
    assert row.state == "needs re-authorisation" and "hanna-sync login" in row.detail and row.retry_after

    requests_before = len(ms.identity.grants)
    waiting = env.run().mailboxes[0]
    assert waiting.backing_off_until and "needs re-authorisation" in waiting.errors[0]
    assert len(ms.identity.grants) == requests_before  # backed off: not even a token request

    ms.identity.revoked.clear()
    o365_mailboxes.login(env.store, signer(env), box.id, lambda message: None)
    assert health(env.store, timedelta(minutes=60))[0].state == "new"
    assert env.run().ok


def test_missing_consent_and_expired_refresh_tokens_name_their_own_fix(tmp_path, ms):
    graph_mailbox(ms)
    ms.identity.lifetime = 120  # every pass renews, so the identity platform has its say
    env = o365_env(tmp_path, ms)
    ms.identity.consent_missing = True  # nobody granted admin consent, and users may not consent themselves
    with pytest.raises(TokenRefused, match="AADSTS65001.*Grant admin consent"):
        add_scan(env, ms)
    assert env.store.mailboxes() == []

    ms.identity.consent_missing = False
    box, _ = add_scan(env, ms)
    ms.identity.consent_missing = True  # consent withdrawn later: the refresh is refused (invalid_grant)
    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "reauth"
    assert "AADSTS65001" in failed.errors[0] and "Grant admin consent" in failed.errors[0]
    assert failed.errors[0].endswith(f"then sign in again with 'hanna-sync login {box.id}'")
    assert health(env.store, timedelta(minutes=60))[0].state == "needs re-authorisation"
    tested = run_cli(env, ms, "test", str(box.id), "--json")
    token = json.loads(tested.stdout)["stages"][0]
    assert tested.exit_code == ExitCode.AUTH and (token["stage"], token["ok"]) == ("token", False)
    assert "AADSTS65001" in token["detail"] and "Grant admin consent" in token["hint"]

    ms.identity.consent_missing = False
    o365_mailboxes.login(env.store, signer(env), box.id, lambda message: None)
    ms.identity.revoke(STAFF, code="70008")
    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "reauth" and "AADSTS70008" in failed.errors[0]
    assert failed.errors[0].endswith(f"sign in again with 'hanna-sync login {box.id}'")


def test_signing_in_as_another_account_is_refused_and_nothing_is_kept(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    ms.identity.approve_as = "boss@imone.lt"
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {})
    with pytest.raises(AuthError, match="signed in as boss@imone.lt, but the mailbox is jonas@imone.lt"):
        o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda m: None)
    assert env.store.mailboxes() == [] and env.secrets.get(box.secret_ref) is None


def test_token_renewals_of_two_processes_take_turns(tmp_path, ms):
    graph_mailbox(ms)
    ms.identity.lifetime = 120
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms)
    sign_in = signer(env)
    got: list[str] = []
    with oauth.token_lock(sign_in.lock_path, 5):  # as another process renewing this very cache
        worker = threading.Thread(target=lambda: got.append(sign_in.token(box, oauth.GRAPH).value))
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive() and not got  # waits for the lock rather than renew with the same refresh token
    worker.join(10)
    assert got and claims_of(got[0])["aud"] == "https://graph.microsoft.com"


def test_app_only_with_a_client_secret_from_the_secrets_store(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms, auth="app")
    sign_in = signer(env)
    with pytest.raises(TokenRefused, match="AADSTS7000215") as refused:
        sign_in.store_client_secret("not-the-secret")
    assert "hanna-sync login --client-secret" in str(refused.value)
    assert env.secrets.get(CLIENT_SECRET_REF) is None
    sign_in.store_client_secret(ms.identity.client_secret)
    assert env.secrets.get(CLIENT_SECRET_REF) == ms.identity.client_secret
    assert ms.identity.client_secret.encode() not in env.config.secrets_file.read_bytes()

    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {})
    o365_mailboxes.add(env.store, env.secrets, sign_in, box, verify_first=True, timeout=10, show=lambda m: pytest.fail("no device code"))
    assert env.run().ok
    assert count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED
    assert set(ms.identity.grants) == {"client_credentials"}
    assert all(path.startswith(f"/v1.0/users/{STAFF}/") for _, path, _ in ms.graph.requests)


def test_app_only_with_a_certificate(tmp_path, ms):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hanna-sync")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = tmp_path / "o365-app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    ms.identity.certificate_thumbprint = base64.urlsafe_b64encode(bytes.fromhex(thumbprint)).decode()
    env = o365_env(tmp_path, ms, auth="app")
    env.config = replace(env.config, o365=replace(env.config.o365, certificate_file=pem,
                                                  certificate_thumbprint=thumbprint))
    token = signer(env).token(o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {}), oauth.GRAPH)
    assert token.app_only and claims_of(token.value)["roles"] == ["Mail.Read"]


def test_the_o365_config_table_is_checked(tmp_path):
    where = tmp_path / "config.toml"
    config = parse_config({"o365": {"tenant_id": "t", "client_id": "c", "authority": "https://login.example/"}}, where)
    assert config.o365.authority == "https://login.example" and config.o365.auth == "delegated"
    for bad, message in (({"auth": "password"}, "o365.auth"), ({"authority": "http://x"}, "https:// URL"),
                         ({"certificate_file": "a.pem"}, "go together"), ({"client_secret": "x"}, "unknown key")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({"o365": bad}, where)
    env = Env(tmp_path)
    with pytest.raises(ConfigError, match=r"set tenant_id and client_id under \[o365\]"):
        signer(env).token(o365_mailboxes.new_mailbox("u", STAFF, "o365-scan", {}), oauth.GRAPH)


# -- Graph scanning ---------------------------------------------------------------------------------

def test_graph_delta_pages_new_removed_and_changed_letters_across_passes(tmp_path, ms):
    raws = graph_mailbox(ms)
    env = o365_env(tmp_path, ms, batch_size=2)  # 2 per delta page: the paging is followed to the deltaLink
    add_scan(env, ms, folders=("Inbox", "inbox/projektai", "Sent Items"))
    first = env.run().mailboxes[0]
    assert first.ok and (first.new, first.archived, first.skipped) == (11, SAMPLE_MATCHED, 3)
    assert ms.graph.selects == [",".join(ENVELOPE_FIELDS)] * 3  # only the envelope, once per folder
    delta = [prefer for _, path, prefer in ms.graph.requests if path.endswith("/messages/delta")]
    assert len(delta) > 3 and all("odata.maxpagesize=2" in p and 'IdType="ImmutableId"' in p for p in delta)
    assert len(ms.graph.value_requests) == SAMPLE_MATCHED  # originals only for matched letters
    for message_id in ms.graph.value_requests:  # the archive holds the original bytes, as over IMAP
        letter_id = env.store.db.execute("SELECT letter_id FROM letter_locations WHERE graph_id = ?",
                                         [message_id]).fetchone()[0]
        assert env.store.letter_source(letter_id) == raws[message_id]
    locations = env.store.db.execute("SELECT DISTINCT uidvalidity FROM letter_locations").fetchall()
    assert locations == [(0,)]

    inbox = ms.graph.folder(STAFF, "Inbox")
    gone_id = next(i for i in ms.graph.value_requests if i in inbox.messages)
    read_id = next(i for i in ms.graph.value_requests if i in inbox.messages and i != gone_id)
    ms.graph.remove(STAFF, "Inbox", gone_id)
    ms.graph.touch(STAFF, "Inbox", read_id)  # e.g. read: Graph returns it again; nothing to do
    ms.graph.deliver(STAFF, "Inbox/Projektai", letter("Rūta <ruta@azuolas.lt>", "Brėžiniai", "<plans@azuolas.lt>"))
    fetched = len(ms.graph.value_requests)
    second = env.run().mailboxes[0]
    assert second.ok and (second.new, second.archived) == (1, 1)
    assert len(ms.graph.value_requests) == fetched + 1
    gone = env.store.db.execute("SELECT gone_at FROM letter_locations WHERE graph_id = ?", [gone_id]).fetchone()[0]
    assert gone is not None
    plans = next(r for r in env.store.letters(customer="C-1001") if r["subject"] == "Brėžiniai")
    location = env.store.letter(plans["id"])["locations"][0]
    assert location["folder"] == "inbox/projektai" and location["graph_id"] and location["uidvalidity"] == 0

    third = env.run().mailboxes[0]
    assert third.ok and (third.new, third.archived) == (0, 0)


def test_an_expired_delta_token_reads_the_folder_again_without_duplicates(tmp_path, ms, caplog):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms, batch_size=3)
    add_scan(env, ms)
    assert env.run().ok
    before = (count(env, "SELECT count(*) FROM letters"), count(env, "SELECT count(*) FROM letter_locations"))
    ms.graph.expire_delta(STAFF, "Inbox")
    ms.graph.deliver(STAFF, "Inbox", letter("Anna <anna@partners.eu>", "New schedule", "<sched2@partners.eu>"))
    with caplog.at_level(logging.WARNING, "hanna_sync"):
        result = env.run().mailboxes[0]
    assert result.ok and result.archived == 1
    assert "Graph no longer knows this folder's delta state (410 syncStateNotFound" in caplog.text
    assert (count(env, "SELECT count(*) FROM letters"), count(env, "SELECT count(*) FROM letter_locations")) == (
        before[0] + 1, before[1] + 1)
    assert count(env, "SELECT count(*) FROM (SELECT graph_id FROM letter_locations GROUP BY graph_id HAVING count(*) > 1)") == 0
    assert env.run().mailboxes[0].new == 0  # the new round's deltaLink was kept


def live_inbox_locations(env: Env) -> set[str]:
    return {r[0] for r in env.store.db.execute(
        "SELECT graph_id FROM letter_locations WHERE folder = 'Inbox' AND gone_at IS NULL").fetchall()}


def test_a_resync_marks_gone_the_letters_that_left_while_graph_had_forgotten_the_folder(tmp_path, ms, caplog):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms, batch_size=3)
    add_scan(env, ms)
    assert env.run().ok
    archived = live_inbox_locations(env)
    gone_id = sorted(archived)[0]
    ms.graph.remove(STAFF, "Inbox", gone_id)  # its @removed is in the window the lost delta token covered
    ms.graph.expire_delta(STAFF, "Inbox")
    letters = count(env, "SELECT count(*) FROM letters")
    with caplog.at_level(logging.WARNING, "hanna_sync"):
        assert env.run().ok
    assert live_inbox_locations(env) == archived - {gone_id}
    assert count(env, "SELECT count(*) FROM letter_locations WHERE gone_at IS NOT NULL") == 1
    assert count(env, "SELECT count(*) FROM letters") == letters  # the letter stays in the archive
    assert "Inbox: 1 archived letters are no longer in the folder" in caplog.text
    assert env.store.folder_state(1, "Inbox").graph_returned is None  # the round is complete: nothing tracked any more


def test_a_resync_cut_short_marks_nothing_and_the_next_pass_completes_it(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms, batch_size=2)
    add_scan(env, ms)
    assert env.run().ok
    archived = live_inbox_locations(env)
    gone_id = sorted(archived)[-1]
    ms.graph.remove(STAFF, "Inbox", gone_id)
    ms.graph.expire_delta(STAFF, "Inbox")
    ms.graph.outage_after_pages, ms.graph.throttle_status, ms.graph.retry_after = 3, 503, "0"
    cut = env.run().mailboxes[0]  # the 410, two pages of the new round, then Graph is down: like a kill
    assert not cut.ok and "503 ServiceUnavailable" in cut.errors[0]
    state = env.store.folder_state(1, "Inbox")
    assert state.next_link and state.delta_link is None and state.graph_returned is not None
    assert live_inbox_locations(env) == archived  # mid-round, nothing is known to be gone yet

    ms.graph.outage_after_pages = None
    assert env.run().ok  # goes on from the nextLink it kept, with what the first pages returned
    assert live_inbox_locations(env) == archived - {gone_id}
    assert count(env, "SELECT count(*) FROM letter_locations WHERE gone_at IS NOT NULL") == 1
    assert count(env, "SELECT count(*) FROM (SELECT graph_id FROM letter_locations GROUP BY graph_id HAVING count(*) > 1)") == 0


def test_throttling_waits_as_told_and_gives_up_after_bounded_retries(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    add_scan(env, ms)
    ms.graph.throttle_next, ms.graph.retry_after = 1, "1"
    started = len(ms.graph.requests)
    assert env.run().ok
    (throttled, _, _), (retried, _, _) = ms.graph.requests[started : started + 2]
    assert retried - throttled >= 0.95  # Retry-After: 1 honoured

    ms.graph.throttle_next, ms.graph.retry_after = 1000, "0"
    started = len(ms.graph.requests)
    failed = env.run().mailboxes[0]
    assert not failed.ok and failed.failure_kind == "connect"  # the next pass tries again: no back-off
    assert "throttling this mailbox (429 ApplicationThrottled" in failed.errors[0]
    assert f"after {MAX_RETRIES} retries" in failed.errors[0]
    assert len(ms.graph.requests) - started == MAX_RETRIES + 1


def test_503_and_a_retry_after_date_are_honoured_and_a_wait_too_long_is_not(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    add_scan(env, ms)
    ms.graph.throttle_status, ms.graph.throttle_next = 503, 1
    ms.graph.retry_after = formatdate(time.time() + 2, usegmt=True)  # an HTTP date, 1 to 2 s ahead
    started = len(ms.graph.requests)
    assert env.run().ok
    (throttled, _, _), (retried, _, _) = ms.graph.requests[started : started + 2]
    assert retried - throttled >= 0.9

    ms.graph.throttle_next, ms.graph.retry_after = 1, "3600"  # longer than a pass may wait: tried next pass
    started = time.monotonic(), len(ms.graph.requests)
    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "connect" and "(503 ServiceUnavailable: Service unavailable.) after 0 retries" in failed.errors[0]
    assert len(ms.graph.requests) - started[1] == 1 and time.monotonic() - started[0] < 10


def test_at_most_four_requests_in_flight_per_mailbox(tmp_path, ms):
    ms.graph.mailbox(STAFF)
    for i in range(24):
        ms.graph.deliver(STAFF, "Inbox", letter("Rūta <ruta@azuolas.lt>", f"Laiškas {i}", f"<l{i}@azuolas.lt>"))
    ms.graph.value_delay = 0.05
    env = o365_env(tmp_path, ms, batch_size=24)
    add_scan(env, ms)
    assert env.run().mailboxes[0].archived == 24
    assert 1 < ms.graph.max_in_flight <= MAX_IN_FLIGHT


def test_a_letter_in_an_imap_and_a_graph_mailbox_is_archived_once(tmp_path, ms, imap_user):
    deliver_sample(imap_user)
    env = o365_env(tmp_path, ms)
    env.add(imap_user, email=STAFF)
    ms.graph.mailbox("ona@imone.lt")
    for folder, raw, _ in sample.mailbox_letters():
        ms.graph.deliver("ona@imone.lt", "Inbox" if folder == "INBOX" else "Sent Items", raw)
    ms.identity.approve_as = "ona@imone.lt"
    box = o365_mailboxes.new_mailbox("staff", "ona@imone.lt", "o365-scan", {})
    o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda m: None)
    assert env.run().ok
    assert count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED
    assert count(env, "SELECT count(*) FROM letter_locations") == 2 * SAMPLE_MATCHED
    assert count(env, "SELECT count(*) FROM letters WHERE identity NOT LIKE 'mid:%'") == 0


# -- o365-client: IMAP and SMTP with XOAUTH2 -----------------------------------------------------------

def client_settings(ms: Microsoft) -> dict:
    return {"imap_host": "127.0.0.1", "imap_port": ms.imap.port, "ca_file": str(ms.ca.ca_file),
            "smtp_host": "127.0.0.1", "smtp_port": ms.smtp.port, "folders": ["INBOX", "Išsiųsti"]}


def add_client(env: Env, ms: Microsoft, imap_user) -> object:
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    ms.imap.accounts[STAFF] = imap_user
    ms.identity.approve_as = STAFF
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-client", client_settings(ms))
    return o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda m: None).mailbox


def test_o365_client_scans_over_imap_with_xoauth2_and_reconnects_when_the_token_expires(tmp_path, ms, imap_user):
    deliver_sample(imap_user)
    flags = server_flags(imap_user)
    env = o365_env(tmp_path, ms, batch_size=3)
    box = add_client(env, ms, imap_user)
    user, token = re.fullmatch(rb"user=(.+)\x01auth=Bearer (.+)\x01\x01", ms.imap.sasl[-1]).groups()
    claims = claims_of(token.decode())
    assert user.decode() == STAFF and claims["aud"] == "https://outlook.office.com"
    assert claims["scp"].split() == ["IMAP.AccessAsUser.All", "SMTP.Send"]

    logins, refreshes = ms.imap.logins, ms.identity.grants.count("refresh_token")
    ms.imap.expire_after = 6  # Exchange ends the session mid-pass: * BYE ... AccessTokenExpired
    result = env.run().mailboxes[0]
    assert result.ok, result.errors
    assert (result.new, result.archived) == (11, SAMPLE_MATCHED)
    assert ms.imap.logins == logins + 2  # the first login, and one more with a fresh token
    assert ms.identity.grants.count("refresh_token") == refreshes + 1
    assert count(env, "SELECT count(*) FROM letter_locations") == SAMPLE_MATCHED
    assert server_flags(imap_user) == flags  # read-only, as over a password login
    assert env.store.mailbox(box.id).kind == "o365-client"


def test_a_graph_token_never_serves_imap_nor_an_outlook_token_graph(tmp_path, ms, imap_user):
    deliver_sample(imap_user)
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    client = add_client(env, ms, imap_user)
    scanned = o365_mailboxes.add(env.store, env.secrets, signer(env),
                                 o365_mailboxes.new_mailbox("jonas", STAFF, "o365-scan", {}), verify_first=True, timeout=10,
                                 show=lambda m: None, allow_duplicate=True).mailbox  # the same mailbox, on purpose
    assert env.run().ok and count(env, "SELECT count(DISTINCT mailbox_id) FROM letter_locations") == 2
    presented = [re.fullmatch(rb"user=.+\x01auth=Bearer (.+)\x01\x01", sasl).group(1).decode()
                 for sasl in ms.imap.sasl + ms.smtp.sasl]
    assert {claims_of(token)["aud"] for token in presented} == {"https://outlook.office.com"}
    assert set(ms.graph.audiences) == {"https://graph.microsoft.com"}

    sign_in = signer(env)
    outlook, graph = sign_in.token(client, oauth.IMAP), sign_in.token(scanned, oauth.GRAPH)
    problems = graph.claims.problems(oauth.IMAP, False, STAFF)
    assert problems[0][0] == "the token is for https://graph.microsoft.com, not IMAP (https://outlook.office.com)"
    assert outlook.claims.problems(oauth.GRAPH, False, STAFF)[0][0].startswith("the token is for https://outlook")
    with pytest.raises(AuthError, match=r"refused the token for jonas@imone\.lt \(AUTHENTICATE failed"), \
            imap.oauth_session(client, lambda fresh: graph.value, 10):
        pass
    wrong = GraphClient(ms.graph.url, "me", lambda fresh: outlook.value, 10)
    with pytest.raises(AuthError, match="Graph refused the token .401 InvalidAuthenticationToken.*Invalid audience"):
        wrong.folders()
    wrong.close()


def test_an_o365_client_sign_in_revoked_is_needs_reauthorisation_not_a_permission_problem(tmp_path, ms, imap_user):
    deliver_sample(imap_user)
    env = o365_env(tmp_path, ms)  # tokens live an hour: the cached one looks valid here
    box = add_client(env, ms, imap_user)
    ms.identity.revoke(STAFF, access_tokens=True)  # Exchange refuses the issued token at once
    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "reauth" and "AADSTS700082" in failed.errors[0]
    assert f"'hanna-sync login {box.id}'" in failed.errors[0] and "IMAP.AccessAsUser.All" not in failed.errors[0]

    tested = run_cli(env, ms, "test", str(box.id), "--json")
    auth = next(s for s in json.loads(tested.stdout)["stages"] if not s["ok"])
    assert (tested.exit_code, auth["protocol"], auth["stage"]) == (ExitCode.AUTH, "imap", "auth")
    assert "the token is no longer honoured: renewing it fails" in auth["hint"]
    assert f"'hanna-sync login {box.id}'" in auth["hint"]


def run_cli(env: Env, ms: Microsoft, *args: str, input: str | None = None):
    config = env.config_file()
    config.write_text(config.read_text() + (
        f'[o365]\ntenant_id = "{ms.identity.tenant}"\nclient_id = "{ms.identity.client_id}"\n'
        f'auth = "{env.config.o365.auth}"\nauthority = "{ms.identity.authority}"\ngraph_url = "{ms.graph.url}"\n'))
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)


def test_test_command_checks_token_claims_and_xoauth2_imap_and_smtp(tmp_path, ms, imap_user):
    env = o365_env(tmp_path, ms)
    box = add_client(env, ms, imap_user)
    result = run_cli(env, ms, "test", str(box.id), "--json", "--send-to", "ona@imone.lt")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mailbox"]["kind"] == "o365-client"
    stages = [(s["protocol"], s["stage"]) for s in report["stages"]]
    assert stages[:3] == [("imap", "token"), ("imap", "claims"), ("imap", "charset")]
    assert ("imap", "auth") in stages and ("smtp", "token") in stages and stages[-1] == ("smtp", "send")
    claims = next(s for s in report["stages"] if s["stage"] == "claims")
    assert "audience https://outlook.office.com, scopes IMAP.AccessAsUser.All SMTP.Send, user jonas@imone.lt" in claims["detail"]
    assert re.fullmatch(rb"user=jonas@imone\.lt\x01auth=Bearer [\w.-]+\x01\x01", ms.smtp.sasl[-1])
    assert len(ms.smtp.messages) == 1

    traced = run_cli(env, ms, "test", str(box.id), "--trace")
    assert traced.exit_code == 0
    secrets_in_trace = [t for t in ms.identity.issued if t in traced.stderr or base64.b64encode(t.encode()).decode()[:40] in traced.stderr]
    assert "IMAP C: ***" in traced.stderr and "SMTP C: AUTH XOAUTH2 ***" in traced.stderr and not secrets_in_trace


def test_test_command_explains_office365_refusals(tmp_path, ms, imap_user):
    ms.identity.lifetime = 120  # tokens are renewed at every test, so the identity platform is asked
    env = o365_env(tmp_path, ms)
    box = add_client(env, ms, imap_user)

    def failure(*expected: str) -> dict:
        result = run_cli(env, ms, "test", str(box.id), "--json")
        failed = next(s for s in json.loads(result.stdout)["stages"] if not s["ok"])
        assert result.exit_code == ExitCode.AUTH, failed
        for text in expected:
            assert text in f"{failed['detail']} {failed['hint']}", failed
        return failed

    ms.imap.imap_disabled.add(STAFF)
    assert failure("AUTHENTICATE failed", "Set-CASMailbox -Identity jonas@imone.lt -ImapEnabled $true")["stage"] == "auth"
    ms.imap.imap_disabled.clear()
    ms.smtp.refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
    smtp = failure("SmtpClientAuthenticationDisabled $false")
    assert (smtp["protocol"], smtp["stage"]) == ("smtp", "auth")
    ms.smtp.refusal = None
    ms.identity.disabled = True
    assert failure("AADSTS7000112", "register your own app")["stage"] == "token"
    ms.identity.disabled = False
    ms.identity.revoke(STAFF)
    assert failure("AADSTS700082", f"hanna-sync login {box.id}")["stage"] == "token"
    ms.identity.revoked.clear()
    ms.identity.granted = {"IMAP.AccessAsUser.All"}  # admin consent for SMTP.Send missing
    o365_mailboxes.login(env.store, signer(env), box.id, lambda m: None)
    smtp = failure("lacks the delegated permission SMTP.Send", "grant admin consent")
    assert (smtp["protocol"], smtp["stage"]) == ("smtp", "claims")


def test_app_only_imap_without_the_exchange_service_principal_says_so(tmp_path, ms, imap_user):
    deliver_sample(imap_user)
    env = o365_env(tmp_path, ms, auth="app")
    signer(env).store_client_secret(ms.identity.client_secret)
    ms.imap.accounts[STAFF] = imap_user
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-client", client_settings(ms))
    with pytest.raises(AuthError, match="User is authenticated but not connected.*New-ServicePrincipal"):
        o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda m: None)
    ms.imap.app_mailboxes.add(STAFF)  # New-ServicePrincipal + Add-MailboxPermission done
    o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda m: None)
    assert env.run().mailboxes[0].archived == SAMPLE_MATCHED


# -- the command line ---------------------------------------------------------------------------------

def test_cli_add_mailbox_login_status_and_setup_guide(tmp_path, ms):
    graph_mailbox(ms)
    ms.identity.lifetime = 120  # every pass renews: a revoked sign-in shows at once
    env = o365_env(tmp_path, ms)
    ms.identity.approve_as = STAFF
    added = run_cli(env, ms, "add-mailbox", "--kind", "o365-scan", "--user", "jonas", "--email", STAFF)
    assert added.exit_code == 0, added.output
    assert "https://microsoft.com/devicelogin" in added.stderr and "Waiting for the sign-in" in added.stderr
    assert added.stdout.strip() == "Added mailbox 1: jonas@imone.lt for jonas (Microsoft Graph), folders: Inbox, Sent Items"

    unsigned = run_cli(env, ms, "add-mailbox", "--kind", "o365-client", "--email", "ona@imone.lt", "--no-verify")
    assert unsigned.exit_code == 0 and "Not signed in yet: run 'hanna-sync login 2'" in unsigned.stderr
    assert "outlook.office365.com:993 ssl XOAUTH2" in unsigned.stdout
    requests_before = len(ms.identity.grants)
    assert run_cli(env, ms, "run", "--mailbox", "2").exit_code == ExitCode.FAILURE
    never = json.loads(run_cli(env, ms, "status", "--json").stdout)["mailboxes"][1]
    assert never["state"] == "needs re-authorisation" and "is not signed in to Microsoft 365" in never["detail"]
    assert len(ms.identity.grants) == requests_before  # nothing to renew: no request, and no IMAP connection
    for args, message in ((["add-mailbox", "--kind", "o365-scan", "--email", "x@imone.lt", "--imap-host", "h"],
                           "--imap-host is for IMAP servers"),
                          (["set-password", "1"], "it signs in with Microsoft ('hanna-sync login 1')"),
                          (["login"], "give a MAILBOX to sign in, or --client-secret")):
        refused = run_cli(env, ms, *args, input="x\n")
        assert refused.exit_code == ExitCode.USAGE and message in refused.stderr, refused.output

    listed = json.loads(run_cli(env, ms, "folders", "1", "--json").stdout)
    assert [(f["name"], f["messages"], f["selected"]) for f in listed] == [
        ("Inbox", 9, True), ("Sent Items", 2, True), ("Inbox/Projektai", 0, False)]
    edited = run_cli(env, ms, "edit-mailbox", "1", "--folder", "Inbox", "--folder", "Inbox/Projektai")
    assert edited.exit_code == 0 and "folders: Inbox, Inbox/Projektai" in edited.stdout
    missing = run_cli(env, ms, "edit-mailbox", "1", "--folder", "Archyvas")
    assert missing.exit_code == ExitCode.FAILURE and "the mailbox has no folder 'Archyvas'" in missing.stderr
    assert "Inbox/Projektai" in missing.stderr  # what it has, to choose from
    assert run_cli(env, ms, "edit-mailbox", "1", "--folder", "Inbox", "--folder", "Sent Items").exit_code == 0

    assert run_cli(env, ms, "run", "--mailbox", "1").exit_code == 0
    letter_id = env.store.letters(customer="C-1001")[0]["id"]
    assert "Seen in:    mailbox 1 Inbox Graph id AAMkImmutable" in run_cli(env, ms, "show", str(letter_id)).stdout
    ms.identity.revoke(STAFF)
    assert run_cli(env, ms, "run", "--mailbox", "1").exit_code == ExitCode.FAILURE
    status = json.loads(run_cli(env, ms, "status", "--json").stdout)["mailboxes"][0]
    assert status["state"] == "needs re-authorisation" and "AADSTS700082" in status["detail"]
    ms.identity.revoked.clear()
    again = run_cli(env, ms, "login", "1")
    assert again.exit_code == 0 and "enter the code" in again.stderr
    assert "Mailbox 1 (jonas@imone.lt) is signed in" in again.stdout
    assert json.loads(run_cli(env, ms, "status", "--json").stdout)["mailboxes"][0]["state"] == "ok"

    guide = run_cli(env, ms, "setup-guide", "o365").stdout
    for text in ("Allow public client flows: Yes", "Grant admin consent", "IMAP.AccessAsUser.All", "SMTP.Send",
                 "Set-CASMailbox -Identity jonas@example.com -ImapEnabled $true", "New-ServicePrincipal -AppId hanna-app-id",
                 "Add-MailboxPermission", f'tenant_id = "{ms.identity.tenant}"'):
        assert text in guide
    assert run_cli(env, ms, "login", "--client-secret", "--secret-stdin", input="x\n").exit_code == ExitCode.FAILURE


def test_test_tries_an_office365_mailbox_before_it_is_saved_and_keeps_nothing(tmp_path, ms, imap_user):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    ms.identity.approve_as = STAFF
    secrets_before = env.config.secrets_file.read_bytes() if env.config.secrets_file.exists() else None
    scan = run_cli(env, ms, "test", "--kind", "o365-scan", "--email", STAFF)
    assert scan.exit_code == 0, scan.output
    assert "enter the code" in scan.stderr  # delegated: the mailbox's user signs in first
    assert re.search(r"^GRAPH token +ok .*delegated token for Graph", scan.stdout, re.M)  # a column apart
    assert "checking Inbox, Sent Items (by default: Inbox and Sent Items)" in scan.stdout
    assert scan.stdout.endswith("Graph passed.\n")

    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    ms.imap.accounts[STAFF] = imap_user
    servers = ["--imap-host", "127.0.0.1", "--imap-port", str(ms.imap.port), "--ca-file", str(ms.ca.ca_file),
               "--smtp-host", "127.0.0.1", "--smtp-port", str(ms.smtp.port)]
    client = run_cli(env, ms, "test", "--kind", "o365-client", "--email", STAFF, *servers, "--json")
    assert client.exit_code == 0, client.output
    report = json.loads(client.stdout)
    assert report["mailbox"]["id"] is None and report["mailbox"]["kind"] == "o365-client"
    assert [s["stage"] for s in report["stages"] if s["protocol"] == "smtp"][-2:] == ["auth", "send"]
    assert env.store.mailboxes() == []  # nothing saved: no mailbox, no token cache, no lock file
    assert (env.config.secrets_file.read_bytes() if env.config.secrets_file.exists() else None) == secrets_before
    assert not (env.config.database.parent / oauth.LOCK_NAME).exists()

    ms.identity.approve_as = "boss@imone.lt"
    other = run_cli(env, ms, "test", "--kind", "o365-scan", "--email", STAFF)
    assert other.exit_code == ExitCode.AUTH and "signed in as boss@imone.lt, but the mailbox is" in other.stderr
    for args, message in ((["--kind", "o365-scan", "--email", STAFF, "--password-stdin"], "has no password"),
                          (["--kind", "o365-scan", "--email", STAFF, "--provider", "gmail"], "--provider is for IMAP"),
                          (["--kind", "o365-scan", "--email", STAFF, "--send-to", "a@b.lt"], "--send-to needs SMTP"),
                          (["1", "--kind", "o365-scan"], "--kind is for a mailbox not saved yet")):
        refused = run_cli(env, ms, "test", *args, input="x\n")
        assert refused.exit_code == ExitCode.USAGE and message in refused.stderr, refused.output
    env.config = replace(env.config, o365=replace(env.config.o365, auth="app"))
    signer(env).store_client_secret(ms.identity.client_secret)
    ms.identity.approve_as = None  # app-only: nobody signs in
    app = run_cli(env, ms, "test", "--kind", "o365-scan", "--email", STAFF)
    assert app.exit_code == 0 and "app-only token for Graph" in app.stdout and "enter the code" not in app.stderr
    assert run_cli(env, ms, "add-mailbox", "--kind", "o365-scan", "--email", STAFF).exit_code == 0
    assert "Mailbox 1 (jonas@imone.lt): the app gets its tokens (app-only)" in run_cli(env, ms, "login", "1").stdout


def test_the_setup_guide_names_the_scopes_and_permissions_the_code_asks_for():
    guide = setup_guide.office365(O365Config(tenant_id="t-id", client_id="c-id"))
    for resource in (oauth.GRAPH, oauth.IMAP, oauth.SMTP):
        for text in (resource.delegated_scope, resource.app_scope, resource.delegated_permission,
                     resource.app_permission):
            assert text in guide, text
    for text in ("offline_access", "Allow public client flows: Yes", "Grant admin consent", 'tenant_id = "t-id"',
                 "New-ServicePrincipal -AppId c-id -ObjectId <ENTERPRISE_APP_OBJECT_ID>",
                 "Add-MailboxPermission -Identity jonas@example.com -User <SERVICE_PRINCIPAL_ID> -AccessRights FullAccess",
                 "Set-CASMailbox -Identity jonas@example.com -ImapEnabled $true",
                 "Set-CASMailbox -Identity jonas@example.com -SmtpClientAuthenticationDisabled $false"):
        assert text in guide, text
    assert "<APP_ID>" in setup_guide.office365(None)  # not configured yet: placeholders, and no error


def test_the_o365_modules_keep_to_the_house_rules():
    """No click below the CLI's floor (cli/, and web/ beside it for `serve`); HTTP only in remote/graph.py, remote/oauth.py and remote/crm_source.py (CRM
    exports), remote/google_auth.py (Google's token endpoint) and remote/gmail.py (the Gmail API); MSAL only in remote/oauth.py."""
    root = Path(__file__).resolve().parent.parent / "hanna_sync"
    for path in root.rglob("*.py"):
        module, text = path.relative_to(root).as_posix(), path.read_text()
        if not module.startswith(("cli/", "web/")):
            assert "import click" not in text, module
        assert ("import msal" in text) == (module == "remote/oauth.py"), module
        http_modules = ("remote/graph.py", "remote/oauth.py", "remote/crm_source.py", "remote/google_auth.py",
                        "remote/gmail.py")
        assert ("import requests" in text) == (module in http_modules), module


# -- thread links, automatic mail and backfill over Graph ------------------------------------------------

def test_graph_replies_inherit_their_conversations_links_and_auto_replies_are_not_linked(tmp_path, ms):
    ms.graph.mailbox(STAFF, ("Inbox", "Sent Items"))
    ms.graph.deliver(STAFF, "Inbox", letter("Rūta <ruta@azuolas.lt>", "Lentos", "<l1@azuolas.lt>"))
    colleague = sample.letter("ona@imone.lt", STAFF, "RE: Lentos", "Ar turim?", message_id="<l2@imone.lt>")
    ms.graph.deliver(STAFF, "Inbox", colleague)  # staff only, no In-Reply-To: the conversation tells
    news = b"List-Id: <news.azuolas.lt>\r\n" + letter("Rūta <ruta@azuolas.lt>", "Naujienos", "<n1@azuolas.lt>")
    news_id = ms.graph.deliver(STAFF, "Inbox", news).id  # a list letter passes nothing on to its conversation
    ms.graph.deliver(STAFF, "Inbox", sample.letter("ona@imone.lt", STAFF, "RE: Naujienos", "Matei?",
                                                   message_id="<n2@imone.lt>"))
    env = o365_env(tmp_path, ms)
    add_scan(env, ms, folders=("Inbox",))
    first = env.run().mailboxes[0]
    assert first.ok and (first.archived, first.skipped) == (1, 3)
    downloads = len(ms.graph.value_requests)
    assert news_id in ms.graph.value_requests  # matched by its sender: only its original tells it is a list's
    ms.graph.touch(STAFF, "Inbox", news_id)  # read: Graph reports it again
    second = env.run().mailboxes[0]  # the reply on the same page as its conversation's letter: next pass
    assert second.ok and second.backfilled == 1
    rows = {r["subject"]: r for r in env.store.letters(customer="C-1001")}
    assert set(rows) == {"Lentos", "RE: Lentos"}
    (link,) = rows["RE: Lentos"]["links"]
    assert link["rule"] == "thread" and link["address"].startswith("conversation:conv-")
    assert env.store.thread(rows["Lentos"]["id"])[-1]["subject"] == "RE: Lentos"  # one conversation
    assert env.run().mailboxes[0].backfilled == 0
    assert relink(env.store, env.config, env.secrets).links_removed == 0  # the pass and relink agree
    assert len(ms.graph.value_requests) == downloads + 1  # the list letter, skipped, is not downloaded again


def test_a_letter_unlinked_by_hand_and_found_again_in_another_graph_folder_stays_unlinked(tmp_path, ms):
    ms.graph.mailbox(STAFF, ("Inbox", "Inbox/Projektai"))
    raw = letter("Rūta <ruta@azuolas.lt>", "Lentos", "<u1@azuolas.lt>")
    ms.graph.deliver(STAFF, "Inbox", raw)
    env = o365_env(tmp_path, ms)
    add_scan(env, ms, folders=("Inbox", "Inbox/Projektai"))
    assert env.run().mailboxes[0].archived == 1
    (row,) = env.store.letters(customer="C-1001")
    done = manual.unlink(env.store, env.config, env.secrets, letter_id=row["id"], entity=("customer", "C-1001"))
    assert done.result == manual.UNLINKED and env.store.letter(row["id"])["links"] == []
    ms.graph.deliver(STAFF, "Inbox/Projektai", raw)  # the same letter, filed in a second folder
    again = env.run().mailboxes[0]
    assert again.ok and again.new == 1
    assert env.store.letter(row["id"])["links"] == [] and env.store.letters(customer="C-1001") == []
    assert len(env.store.letter(row["id"])["locations"]) == 2  # found again, archived once, still unlinked


def test_a_graph_mailbox_backfills_a_customer_added_later_fetching_only_its_letters(tmp_path, ms):
    ms.graph.mailbox(STAFF, ("Inbox", "Sent Items"))
    for n in range(6):
        ms.graph.deliver(STAFF, "Inbox", letter(f"n{n}@kitas.lt", f"Reklama {n}", f"<r{n}@kitas.lt>"))
    wanted = ms.graph.deliver(STAFF, "Inbox", letter("jonas@medis.lt", "Pasiūlymas", "<offer@medis.lt>"))
    env = o365_env(tmp_path, ms)
    add_scan(env, ms, folders=("Inbox",))
    assert env.run().mailboxes[0].skipped == 7 and ms.graph.value_requests == []

    env.store.save_entity("customer", sample.Entity("C-9", "UAB Medis", None, "medis.lt"), replace_contacts=True)
    assert relink(env.store, env.config, env.secrets).backfill_wanted == 1
    dry = env.run(dry_run=True).mailboxes[0]  # lists it, as IMAP's dry run does; downloads nothing
    assert [item.graph_id for item in dry.would_archive] == [wanted.id] and ms.graph.value_requests == []
    ms.graph.envelope_requests.clear()
    second = env.run().mailboxes[0]
    assert second.ok and (second.backfilled, second.archived, second.new) == (1, 1, 0)
    assert ms.graph.envelope_requests == ms.graph.value_requests == [wanted.id]  # only that letter was read
    (row,) = env.store.letters(customer="C-9")
    assert row["subject"] == "Pasiūlymas" and env.store.letter(row["id"])["locations"][0]["graph_id"] == wanted.id
    assert env.run().mailboxes[0].backfilled == 0


def test_a_graph_reply_skipped_before_its_conversation_was_linked_is_fetched_next_pass(tmp_path, ms):
    ms.graph.mailbox(STAFF, ("Inbox", "Sent Items"))
    reply = ms.graph.deliver(STAFF, "Inbox", sample.letter("ona@imone.lt", STAFF, "RE: Sutartis", "Pasirašyta?",
                                                           message_id="<s2@imone.lt>"))
    ms.graph.deliver(STAFF, "Sent Items", sample.letter(STAFF, "sviesa@inbox.lt", "Sutartis", "Siunčiu.",
                                                        message_id="<s1@imone.lt>"))
    env = o365_env(tmp_path, ms)
    add_scan(env, ms, folders=("Inbox", "Sent Items"))  # the reply's folder first: skipped then
    first = env.run().mailboxes[0]
    assert (first.archived, first.skipped) == (1, 1)
    second = env.run().mailboxes[0]
    assert second.backfilled == 1 and ms.graph.value_requests[-1] == reply.id
    assert sorted(r["subject"] for r in env.store.letters(customer="C-1003")) == ["RE: Sutartis", "Sutartis"]


# -- the identity platform failing, a bad certificate, a sign-in nobody finished ---------------------------

def refuse_renewals(ms: Microsoft, reply) -> None:
    """The fake identity platform answers refresh-token requests with `reply` (an outage, a proxy's page)."""
    real = ms.identity.handle

    def handle(method, path, query, headers, body):
        if method == "POST" and path.endswith("/oauth2/v2.0/token") and b"refresh_token" in body:
            return reply
        return real(method, path, query, headers, body)

    ms.identity.handle = handle


@pytest.mark.parametrize("reply, said", [
    (lambda: Reply(503, {"error": "temporarily_unavailable", "error_description": "AADSTS90033: A transient error."}),
     "the next pass tries again"),
    (lambda: Reply(429, {"error": "temporarily_unavailable", "error_description": "AADSTS50196: a client loop."},
                   {"Retry-After": "5"}), "the next pass tries again"),
    (lambda: Reply(502, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"}), "the next pass tries again"),
    (lambda: Reply(403, b"<html>Forbidden by proxy</html>", {"Content-Type": "text/html"}), "the next pass tries again"),
])
def test_identity_platform_trouble_fails_the_mailbox_for_this_pass_only_without_back_off(tmp_path, ms, reply, said):
    graph_mailbox(ms)
    ms.identity.lifetime = 120  # every pass renews
    env = o365_env(tmp_path, ms)
    add_scan(env, ms)
    refuse_renewals(ms, reply())
    result = env.run().mailboxes[0]
    assert result.failure_kind == "connect" and said in result.errors[0], result.errors
    assert env.store.mailboxes()[0].retry_after is None  # no back-off: nobody has to do anything


def test_the_openid_configuration_is_read_once_per_process_not_per_token(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms)
    asked: list[str] = []
    real = ms.identity.handle

    def handle(method, path, query, headers, body):
        asked.append(path.rsplit("/", 1)[-1])
        return real(method, path, query, headers, body)

    ms.identity.handle = handle
    sign_in = signer(env)
    for _ in range(3):
        assert sign_in.token(box, oauth.GRAPH).source == "cache"
    assert asked.count("openid-configuration") <= 1 and "token" not in asked


def test_a_device_code_nobody_used_says_so(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    real = ms.identity._device_code

    def short(form):
        reply = real(form)
        reply.body.update(expires_in=2, interval=1)
        return reply

    ms.identity._device_code = short
    ms.identity.approve_as = None  # nobody signs in
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {})
    with pytest.raises(AuthError, match="nobody signed in within 1 minute, so the code expired; run 'hanna-sync login"):
        o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10, show=lambda _: None)


def test_a_certificate_file_without_a_usable_key_is_a_config_error(tmp_path, ms):
    env = o365_env(tmp_path, ms, auth="app")
    encrypted = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    for name, data, why in (("garbled.pem", b"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", "none was found"),
                            ("encrypted.pem", encrypted, "it is encrypted")):
        (tmp_path / name).write_bytes(data)
        env.config = replace(env.config, o365=replace(env.config.o365, certificate_file=tmp_path / name,
                                                      certificate_thumbprint="AB" * 20))
        with pytest.raises(ConfigError, match=f"must hold the certificate's PEM private key \\({why}"):
            signer(env).token(o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {}), oauth.GRAPH)
    with pytest.raises(ConfigError, match="40 hex digits"):
        parse_config({"o365": {"certificate_file": "c.pem", "certificate_thumbprint": "not-hex"}}, tmp_path / "c.toml")


def test_a_removed_mailboxs_tokens_are_not_written_back_by_a_renewal_under_way(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms)
    sign_in = signer(env)
    with sign_in._cache(box.secret_ref) as cache:  # a renewal under way...
        env.secrets.delete(box.secret_ref)  # ...while remove-mailbox forgets the mailbox's secrets
        cache.has_state_changed = True
    assert env.secrets.get(box.secret_ref) is None


def test_default_folders_are_found_in_the_mailboxs_language_even_without_verification(tmp_path, ms):
    ms.graph.mailbox(STAFF, ("Gautieji laiškai", "Išsiųsti laiškai"))
    ms.graph.folder(STAFF, "Gautieji laiškai").well_known = "inbox"
    ms.graph.folder(STAFF, "Išsiųsti laiškai").well_known = "sentitems"
    ms.graph.deliver(STAFF, "Gautieji laiškai", letter("Rūta <ruta@azuolas.lt>", "Lentos", "<wk@azuolas.lt>"))
    env = o365_env(tmp_path, ms)
    ms.identity.approve_as = STAFF
    box = o365_mailboxes.new_mailbox("staff", STAFF, "o365-scan", {})
    saved = o365_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=False, timeout=10, show=lambda _: None).mailbox
    o365_mailboxes.login(env.store, signer(env), saved.id, lambda _: None)
    assert env.store.mailbox(saved.id).folders == ["Inbox", "Sent Items"]
    result = env.run().mailboxes[0]
    assert result.ok and result.archived == 1, result.errors


def test_a_sign_in_of_another_account_than_the_mailboxs_gives_no_token(tmp_path, ms):
    graph_mailbox(ms)
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms)
    renamed = replace(box, email="ona@imone.lt", username=None)  # edited with --no-verify after the sign-in
    with pytest.raises(ReauthRequired, match="is another account's"):
        signer(env).token(renamed, oauth.GRAPH)


def test_a_graph_folder_deleted_or_taken_off_the_folder_list_has_its_locations_marked_gone(tmp_path, ms):
    graph_mailbox(ms)
    ms.graph.deliver(STAFF, "Inbox/Projektai", letter("Rūta <ruta@azuolas.lt>", "Brėžiniai", "<plans@azuolas.lt>"))
    env = o365_env(tmp_path, ms)
    box, _ = add_scan(env, ms, folders=("Inbox", "Inbox/Projektai", "Sent Items"))
    assert env.run().ok

    def places(folder: str) -> tuple[int, int, int]:
        """(live locations, gone locations, state rows) of a folder"""
        return (count(env, f"SELECT count(*) FROM letter_locations WHERE folder = '{folder}' AND gone_at IS NULL"),
                count(env, f"SELECT count(*) FROM letter_locations WHERE folder = '{folder}' AND gone_at IS NOT NULL"),
                count(env, f"SELECT count(*) FROM folder_states WHERE folder = '{folder}'"))

    inbox, sent = places("Inbox"), places("Sent Items")
    assert places("Inbox/Projektai") == (1, 0, 1) and inbox[0] > 0 and sent[0] > 0

    # Deleted in Outlook: Graph's folder list no longer has it.
    projects = ms.graph.folder(STAFF, "Inbox/Projektai")
    del ms.graph.mailboxes[STAFF.casefold()][projects.id]
    m = env.run().mailboxes[0]
    assert not m.ok and "folder 'Inbox/Projektai' is not in the mailbox" in m.errors[0], m.errors
    assert places("Inbox/Projektai") == (0, 1, 0)
    assert (places("Inbox"), places("Sent Items")) == (inbox, sent)

    # Taken off the mailbox's folder list.
    mailboxes.edit(env.store, env.secrets, box.id, {"folders": ["Inbox"]}, verify_first=False, timeout=10)
    assert env.run().ok
    assert places("Sent Items") == (0, sent[0], 0) and places("Inbox") == inbox
