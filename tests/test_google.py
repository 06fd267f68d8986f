"""Google sign-in and google-client mailboxes (Gmail's IMAP and SMTP with XOAUTH2), against local fakes.

The real google-auth and requests talk HTTPS to a fake of Google's consent page and token endpoint on
127.0.0.1 (a CA made for the test, trusted through REQUESTS_CA_BUNDLE), which checks the service account's
JWT signature and claims, PKCE, codes, refresh tokens and domain-wide delegation; IMAP goes through a fake of
Gmail's XOAUTH2 front door to the sandbox Dovecot, SMTP to aiosmtpd (tests/fakes_google.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from hanna_sync.admin import google_mailboxes, setup_guide
from hanna_sync.admin.status import health
from hanna_sync.cli import cli
from hanna_sync.config import GoogleConfig, parse_config
from hanna_sync.demo import sample
from hanna_sync.errors import AuthError, ConfigError, ExitCode, InputError, ReauthRequired
from hanna_sync.remote import google_auth
from hanna_sync.remote.google_auth import CLIENT_SECRET_REF, MAIL_SCOPE, Consent, GoogleSignIn
from tests.fakes_gmail_imap import gm_id
from tests.fakes_google import APP_PASSWORD_REQUIRED, IMAP_DISABLED, IMAP_OFF, Google
from tests.helpers import Env, deliver_sample, server_flags

STAFF = sample.STAFF  # jonas@imone.lt
SAMPLE_MATCHED = 8  # of the sample mailbox's 11 letters, 8 concern the directory (3 are skipped)


@pytest.fixture
def g(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Google]:
    fakes = Google.start(tmp_path / "google")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fakes.ca.ca_file))  # requests (and so google-auth) trust the fake CA
    fakes.oauth.users.add(STAFF)
    yield fakes
    fakes.close()


def service_account_env(tmp_path: Path, g: Google, scopes: set[str] = frozenset({MAIL_SCOPE})) -> Env:
    account, key_file = g.oauth.service_account(tmp_path)
    g.oauth.delegations[account.client_id] = set(scopes)
    env = Env(tmp_path)
    env.config = replace(env.config, google=GoogleConfig(auth="service-account", service_account_file=key_file,
                                                         token_uri=g.oauth.token_uri, auth_uri=g.oauth.auth_uri))
    return env


def user_env(tmp_path: Path, g: Google) -> Env:
    env = Env(tmp_path)
    env.config = replace(env.config, google=GoogleConfig(auth="user", client_id=g.oauth.client_id,
                                                         token_uri=g.oauth.token_uri, auth_uri=g.oauth.auth_uri))
    signer(env).store_client_secret(g.oauth.client_secret)
    return env


def signer(env: Env) -> GoogleSignIn:
    return GoogleSignIn.for_config(env.config, env.secrets)


def servers(g: Google) -> dict:
    return {"imap_host": "127.0.0.1", "imap_port": g.imap.port, "ca_file": str(g.ca.ca_file),
            "smtp_host": "127.0.0.1", "smtp_port": g.smtp.port, "folders": ["INBOX", "Išsiųsti"]}


def browser_consent(g: Google, shown: list[str] | None = None) -> Consent:
    """The person's browser: the consent page, then the redirect to the loopback listener, for real."""
    def show(url: str) -> None:
        if shown is not None:
            shown.append(url)

        def visit() -> None:
            requests.get(g.browser(url), timeout=10)  # the listener's page: "consent received"

        threading.Thread(target=visit, daemon=True).start()

    return Consent(show=show, wait=20)


def add_client(env: Env, g: Google, imap_user, consent: Consent | None = None):
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    g.imap.accounts[STAFF] = imap_user
    g.oauth.approve_as = STAFF
    box = google_mailboxes.new_mailbox("staff", STAFF, servers(g))
    return google_mailboxes.add(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10,
                                consent=consent or browser_consent(g)).mailbox


def count(env: Env, sql: str) -> int:
    return env.store.db.execute(sql).fetchone()[0]


# -- service account (domain-wide delegation) -------------------------------------------------------------

def test_a_service_account_scans_over_imap_with_xoauth2_read_only(tmp_path, g, imap_user):
    deliver_sample(imap_user)
    flags = server_flags(imap_user)
    env = service_account_env(tmp_path, g)
    box = add_client(env, g, imap_user)
    assert box.kind == "google-client" and box.folders == ["INBOX", "Išsiųsti"]
    assert g.oauth.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]  # nobody signed in
    sasl = g.imap.sasl[-1]
    assert re.fullmatch(rb"user=jonas@imone\.lt\x01auth=Bearer ya29\.[\w-]+\x01\x01", sasl)  # byte for byte

    result = env.run().mailboxes[0]
    assert result.ok, result.errors
    assert (result.new, result.archived) == (11, SAMPLE_MATCHED)
    assert count(env, "SELECT count(*) FROM letter_locations") == SAMPLE_MATCHED
    assert env.store.letters(customer="C-1001")  # linked to the directory's customers
    assert server_flags(imap_user) == flags  # read-only: not a flag changed
    assert env.run().mailboxes[0].ok and count(env, "SELECT count(*) FROM letters") == SAMPLE_MATCHED
    assert env.secrets.get(box.secret_ref) is None  # a service account keeps nothing per mailbox


def test_google_client_stores_a_letter_in_inbox_a_label_and_all_mail_once_by_gmails_ids(tmp_path, g, imap_user):
    """Gmail's IMAP speaks X-GM-EXT-1 after an XOAUTH2 login too: one message in INBOX, a label's folder and
    [Gmail]/All Mail is stored once with three locations and downloaded once, and X-GM-THRID links a
    colleague's letter in the customer's thread (no In-Reply-To, no References, no customer address)."""
    label, all_mail, sent_mail = "Klientai", "[Gmail]/All Mail", "[Gmail]/Sent Mail"
    folders = ("INBOX", label, all_mail, sent_mail)
    dovecot = imap_user.dovecot
    for folder in folders:
        dovecot.create_folder(imap_user.login, folder)
    order = sample.letter("Rūta <ruta@azuolas.lt>", STAFF, "Užsakymas", "Kiek?", message_id="<o1@azuolas.lt>")
    internal = sample.letter(STAFF, "kolega@imone.lt", "Užsakymas", "Ką atsakom?", message_id="<int@imone.lt>")
    for folder in ("INBOX", label, all_mail):
        dovecot.deliver(imap_user.login, folder, order)
    for folder in (sent_mail, all_mail):
        dovecot.deliver(imap_user.login, folder, internal)
    flags = server_flags(imap_user, folders)
    env = service_account_env(tmp_path, g)
    g.imap.accounts[STAFF] = imap_user
    box = google_mailboxes.add(env.store, env.secrets, signer(env),
                               google_mailboxes.new_mailbox("staff", STAFF, {**servers(g), "folders": list(folders)}),
                               verify_first=True, timeout=10, consent=browser_consent(g)).mailbox
    gmail = g.imap.upstream  # Gmail's IMAP behind the XOAUTH2 front door, started by the login that checked the folders
    assert gmail is not None
    gmail.threads["<int@imone.lt>"] = "<o1@azuolas.lt>"  # Gmail threads by subject too
    gmail.commands.clear()

    result = env.run().mailboxes[0]
    assert result.ok, result.errors
    order_id, internal_id = str(gm_id("<o1@azuolas.lt>")), str(gm_id("<int@imone.lt>"))
    assert count(env, "SELECT count(*) FROM letters") == 2
    places = env.store.db.execute("SELECT l.message_id, p.folder, p.gm_msgid FROM letters l"
                                  " JOIN letter_locations p ON p.letter_id = l.id").fetchall()
    assert sorted(tuple(r) for r in places) == sorted([
        ("o1@azuolas.lt", "INBOX", order_id), ("o1@azuolas.lt", label, order_id), ("o1@azuolas.lt", all_mail, order_id),
        ("int@imone.lt", sent_mail, internal_id), ("int@imone.lt", all_mail, internal_id)])
    assert len(gmail.body_fetches()) == 2, gmail.body_fetches()  # each letter downloaded once
    links = env.store.db.execute("SELECT l.message_id, k.rule, l.conversation_id FROM letters l"
                                 " JOIN links k ON k.letter_id = l.id ORDER BY l.id").fetchall()
    thread = f"gmail:{box.login_name.lower()}:{order_id}"  # the X-GM-THRID of the thread's first letter
    assert [tuple(r) for r in links] == [("o1@azuolas.lt", "customer_contact", thread),
                                         ("int@imone.lt", "thread", thread)]
    # Read-only behind the front door too: Dovecot's flags as they were; no SELECT, no STORE.
    assert server_flags(imap_user, folders) == flags
    verbs = {c.line.split(b" ")[1].upper() for c in gmail.commands}
    assert b"EXAMINE" in verbs and not verbs & {b"SELECT", b"STORE", b"COPY", b"MOVE", b"EXPUNGE", b"APPEND"}, verbs

    gmail.commands.clear()  # the next pass downloads nothing again
    assert env.run().ok and gmail.body_fetches() == [] and count(env, "SELECT count(*) FROM letter_locations") == 5


def test_delegation_missing_for_the_scope_names_the_client_id_and_scope_and_backs_off(tmp_path, g, imap_user):
    deliver_sample(imap_user)
    env = service_account_env(tmp_path, g)
    box = add_client(env, g, imap_user)
    account = next(iter(g.oauth.accounts.values()))
    g.oauth.delegations[account.client_id] = {"https://www.googleapis.com/auth/gmail.readonly"}
    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "auth"
    assert "unauthorized_client: Client is unauthorized to retrieve access tokens" in failed.errors[0]
    assert f"Client ID {account.client_id}, OAuth scopes {MAIL_SCOPE}" in failed.errors[0]
    assert health(env.store, timedelta(minutes=60))[0].retry_after  # backed off like a refused login

    with pytest.raises(google_auth.TokenRefused, match="no such user in the Workspace domain"):
        signer(env).token(replace(box, email="nobody@imone.lt", username=None, kind="google-scan"))  # gmail.readonly


def test_the_service_account_key_must_be_private_and_a_key(tmp_path, g, monkeypatch):
    env = service_account_env(tmp_path, g)
    key_file = env.config.google.service_account_file
    box = google_mailboxes.new_mailbox("staff", STAFF, servers(g))
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\).*chmod 600"):
        signer(env).token(box)
    key_file.chmod(0o600)
    key_file.write_text('{"type": "authorized_user"}')
    with pytest.raises(ConfigError, match="is not a service account's JSON key"):
        signer(env).token(box)

    # Handed over as a systemd credential instead of a file named in the config.
    account, key = g.oauth.service_account(tmp_path, "credential")
    g.oauth.delegations[account.client_id] = {MAIL_SCOPE}
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hanna-sync-google").write_text(key.read_text())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    env.config = replace(env.config, google=replace(env.config.google, service_account_file=None))
    token = signer(env).token(box)
    assert token.service_account and g.oauth.validate(token.value).user == STAFF
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="needs the service account's key: set service_account_file"):
        signer(env).token(box)


def test_the_google_config_table_is_checked(tmp_path):
    where = tmp_path / "config.toml"
    for google, message in (
        ({"auth": "oauth"}, "'google.auth' must be \"service-account\""),
        ({"auth": "user"}, "needs client_id"),
        ({"auth": "user", "client_id": "123"}, "ending in .apps.googleusercontent.com"),
        ({"auth": "service-account", "client_id": "1-x.apps.googleusercontent.com"}, "client_id' is for auth = \"user\""),
        ({"auth": "user", "client_id": "1-x.apps.googleusercontent.com", "service_account_file": "k.json"},
         "service_account_file' is for auth = \"service-account\""),
        ({"auth": "user", "client_id": "1-x.apps.googleusercontent.com", "client_secret": "s"},
         "'google.client_secret' does not belong in the config"),
        ({"auth": "service-account", "token_uri": "http://127.0.0.1/token"}, "must be an https:// URL"),
        ({"auth": "service-account", "secret": "x"}, "unknown key 'google.secret'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({"google": google}, where)
    config = parse_config({"google": {"auth": "service-account", "service_account_file": "k.json"}}, where)
    assert config.google.service_account_file == tmp_path / "k.json"
    assert config.google.token_uri == "https://oauth2.googleapis.com/token"
    assert parse_config({}, where).google.auth is None


# -- user consent (the admin's own OAuth client) ----------------------------------------------------------

def test_user_consent_through_the_loopback_listener_for_real_then_silent_renewal(tmp_path, g, imap_user):
    deliver_sample(imap_user)
    env = user_env(tmp_path, g)
    shown: list[str] = []
    consent = browser_consent(g, shown)
    original_show = consent.show

    def show(url: str) -> None:  # a stray request first (another state): refused, and the listener waits on
        redirect = re.search(r"redirect_uri=([^&]+)", url).group(1)
        listener = requests.utils.unquote(redirect)
        assert requests.get(f"{listener}?state=forged&code=stolen", timeout=5).status_code == 400
        original_show(url)

    box = add_client(env, g, imap_user, replace(consent, show=show))
    url = shown[0]
    for part in ("response_type=code", "code_challenge_method=S256", "access_type=offline", "login_hint=jonas%40imone.lt",
                 "scope=openid+email+https%3A%2F%2Fmail.google.com%2F", f"client_id={g.oauth.client_id}"):
        assert part in url, part
    assert g.oauth.grants == ["refresh_token", "authorization_code"]  # the secret's check, then the code (PKCE checked)
    kept = json.loads(env.secrets.get(box.secret_ref))
    assert kept["account"] == STAFF and kept["scopes"] == ["email", "https://mail.google.com/", "openid"]
    assert kept["refresh_token"].encode() not in env.config.secrets_file.read_bytes()  # encrypted at rest
    assert env.secrets.get(CLIENT_SECRET_REF) == g.oauth.client_secret

    assert env.run().mailboxes[0].archived == SAMPLE_MATCHED
    assert g.oauth.grants[2:] == []  # the access token got with the consent served the pass
    g.oauth.lifetime = 120  # under 5 minutes: renewed at every use from now on
    signer(env).token(box, fresh=True)
    assert env.run().ok and g.oauth.grants[2:] == ["refresh_token", "refresh_token"]


def test_a_consent_of_another_account_or_without_gmail_or_declined_keeps_nothing(tmp_path, g, imap_user):
    env = user_env(tmp_path, g)
    g.imap.accounts[STAFF] = imap_user
    box = google_mailboxes.new_mailbox("staff", STAFF, servers(g))
    g.oauth.users.add("boss@imone.lt")
    for approve_as, granted, message in (("boss@imone.lt", None, "consent was given as boss@imone.lt"),
                                         (STAFF, {"openid", "email"}, "the consent did not include https://mail.google.com/"),
                                         (None, None, r"the consent was not given \(access_denied\)")):
        g.oauth.approve_as, g.oauth.granted_scopes = approve_as, granted
        with pytest.raises(AuthError, match=message):
            google_mailboxes.add(env.store, env.secrets, signer(env), replace(box), verify_first=True, timeout=10,
                                 consent=browser_consent(g))
    assert env.store.mailboxes() == []
    g.oauth.approve_as, g.oauth.granted_scopes = STAFF, None

    # Pasted back (a server without a browser): the state must be this sign-in's.
    def pasted_from_elsewhere() -> str:
        return "http://127.0.0.1:9/?state=another&code=4%2F0Astolen"

    with pytest.raises(AuthError, match="belongs to another sign-in"):
        signer(env).sign_in(box, Consent(show=lambda url: None, paste=pasted_from_elsewhere))
    with pytest.raises(InputError, match="paste the whole URL"):
        signer(env).sign_in(box, Consent(show=lambda url: None, paste=lambda: "4/0Ajustacode"))
    urls: list[str] = []
    signer(env).sign_in(replace(box, secret_ref="pasted"), Consent(show=urls.append, paste=lambda: g.browser(urls[0])))
    assert json.loads(env.secrets.get("pasted"))["account"] == STAFF


def test_a_wrong_client_secret_is_refused_before_it_is_stored(tmp_path, g):
    env = user_env(tmp_path, g)
    env.secrets.delete(CLIENT_SECRET_REF)
    with pytest.raises(google_auth.TokenRefused, match="invalid_client.*store the secret again"):
        signer(env).store_client_secret("GOCSPX-wrong")
    assert env.secrets.get(CLIENT_SECRET_REF) is None
    with pytest.raises(Exception, match="needs the OAuth client's secret in the secrets store"):
        signer(env).sign_in(google_mailboxes.new_mailbox("s", STAFF, servers(g)), browser_consent(g))


def run_cli(env: Env, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--config", str(config_file(env)), *args], input=input)


def config_file(env: Env) -> Path:
    config = env.config_file()
    google = env.config.google
    if google.auth is None:
        return config
    lines = [f'auth = "{google.auth}"', f'token_uri = "{google.token_uri}"', f'auth_uri = "{google.auth_uri}"']
    if google.service_account_file:
        lines.append(f'service_account_file = "{google.service_account_file}"')
    if google.client_id:
        lines.append(f'client_id = "{google.client_id}"')
    if google.gmail_url != GoogleConfig.gmail_url:
        lines.append(f'gmail_url = "{google.gmail_url}"')
    config.write_text(config.read_text() + "[google]\n" + "\n".join(lines) + "\n")
    return config


def login_pasting(env: Env, g: Google, mailbox_id: int) -> subprocess.CompletedProcess:
    """`hanna-sync login ID --paste` as an admin on a server runs it: the URL read from its output, opened in
    'a browser' elsewhere, and the address the browser was sent to pasted back on its standard input."""
    process = subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(config_file(env)), "login",
                                str(mailbox_id), "--paste"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stderr is not None and process.stdin is not None
    for line in process.stderr:
        if line.startswith(g.oauth.auth_uri):
            process.stdin.write(g.browser(line.strip()) + "\n")
            process.stdin.flush()
            break
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_revoked_consent_needs_reauthorisation_backs_off_and_login_paste_fixes_it(tmp_path, g, imap_user):
    deliver_sample(imap_user)
    env = user_env(tmp_path, g)
    box = add_client(env, g, imap_user)
    g.oauth.revoke(STAFF)  # removed at myaccount.google.com/permissions: the access token stops at once too

    failed = env.run().mailboxes[0]
    assert failed.failure_kind == "reauth", failed.errors
    assert "invalid_grant: Token has been expired or revoked." in failed.errors[0]
    assert f"sign in again with 'hanna-sync login {box.id}'" in failed.errors[0]
    row = health(env.store, timedelta(minutes=60))[0]
    assert row.state == "needs re-authorisation" and row.retry_after
    status = json.loads(run_cli(env, "status", "--json").stdout)["mailboxes"][0]
    assert status["state"] == "needs re-authorisation"
    grants = len(g.oauth.grants)
    waiting = env.run().mailboxes[0]
    assert waiting.backing_off_until and "needs re-authorisation" in waiting.errors[0]
    assert len(g.oauth.grants) == grants  # backed off: not even a token request

    tested = run_cli(env, "test", str(box.id), "--json")
    auth = next(s for s in json.loads(tested.stdout)["stages"] if not s["ok"])  # the kept token looked valid
    assert (tested.exit_code, auth["protocol"], auth["stage"]) == (ExitCode.AUTH, "imap", "auth")
    assert "Invalid credentials" in auth["detail"]
    assert "the token is no longer honoured: renewing it fails (the Google consent" in auth["hint"]
    assert f"'hanna-sync login {box.id}'" in auth["hint"]

    done = login_pasting(env, g, box.id)
    assert done.returncode == 0, done.stderr
    assert f"Mailbox {box.id} (jonas@imone.lt) is signed in; the next pass scans it." in done.stdout
    assert json.loads(run_cli(env, "status", "--json").stdout)["mailboxes"][0]["state"] == "new"  # no back-off
    assert env.run().mailboxes[0].archived == SAMPLE_MATCHED
    assert json.loads(run_cli(env, "status", "--json").stdout)["mailboxes"][0]["state"] == "ok"


def test_without_a_consent_a_user_mailbox_needs_one_before_any_connection(tmp_path, g, imap_user):
    env = user_env(tmp_path, g)
    g.imap.accounts[STAFF] = imap_user
    added = run_cli(env, "add-mailbox", "--kind", "google-client", "--email", STAFF, "--no-verify",
                    *(f"--{k.replace('_', '-')}={v}" for k, v in servers(g).items() if k != "folders"))
    assert added.exit_code == 0, added.output
    assert "Not signed in yet: run 'hanna-sync login 1'" in added.stderr and "XOAUTH2" in added.stdout
    logins = g.imap.logins
    with pytest.raises(ReauthRequired, match="is not signed in to Google"):
        signer(env).token(env.store.mailbox(1))
    assert env.run().mailboxes[0].failure_kind == "reauth" and g.imap.logins == logins


# -- hanna-sync test, add-mailbox and setup-guide -------------------------------------------------------------

def stages_of(result) -> list[tuple[str, str]]:
    return [(s["protocol"], s["stage"]) for s in json.loads(result.stdout)["stages"]]


def failed_stage(result) -> dict:
    return next(s for s in json.loads(result.stdout)["stages"] if not s["ok"])


def test_test_checks_the_token_then_imap_and_smtp_with_xoauth2_and_explains_googles_refusals(tmp_path, g, imap_user):
    env = service_account_env(tmp_path, g)
    box = add_client(env, g, imap_user)
    passed = run_cli(env, "test", str(box.id), "--json", "--send-to", "ona@imone.lt")
    assert passed.exit_code == 0, passed.output
    stages = stages_of(passed)
    assert stages[:5] == [("imap", "token"), ("imap", "charset"), ("imap", "dns"), ("imap", "tcp"), ("imap", "tls")]
    assert ("imap", "auth") in stages and ("smtp", "token") in stages and stages[-1] == ("smtp", "send")
    token = json.loads(passed.stdout)["stages"][0]
    account = next(iter(g.oauth.accounts.values()))
    assert f"token for {MAIL_SCOPE} (service account {account.email} acting as jonas@imone.lt)" in token["detail"]
    assert "X-GM-EXT-1" in next(s for s in json.loads(passed.stdout)["stages"] if s["stage"] == "capabilities")["detail"]
    assert re.fullmatch(rb"user=jonas@imone\.lt\x01auth=Bearer ya29\.[\w-]+\x01\x01", g.smtp.sasl[-1])
    assert len(g.smtp.messages) == 1
    traced = run_cli(env, "test", str(box.id), "--trace")
    assert traced.exit_code == 0 and not [t for t in g.oauth.issued if t in traced.stderr]  # tokens masked

    g.imap.imap_disabled.add(STAFF)
    off = failed_stage(run_cli(env, "test", str(box.id), "--json"))
    assert (off["protocol"], off["stage"]) == ("imap", "auth") and "IMAP access is disabled for your domain" in off["detail"]
    assert "End User Access -> POP and IMAP access" in off["hint"]
    g.imap.imap_disabled.clear()

    g.oauth.delegations[account.client_id] = set()  # the Admin console's delegation removed
    missing = run_cli(env, "test", str(box.id), "--json")
    token = failed_stage(missing)
    assert (missing.exit_code, token["stage"]) == (ExitCode.AUTH, "token")
    assert "unauthorized_client" in token["detail"] and f"Client ID {account.client_id}" in token["hint"]
    assert "Manage Domain Wide Delegation" in token["hint"]
    g.oauth.delegations[account.client_id] = {MAIL_SCOPE}

    env.config.google.service_account_file.chmod(0o640)
    unsafe = run_cli(env, "test", str(box.id))
    assert unsafe.exit_code == ExitCode.USAGE and "chmod 600" in unsafe.stdout
    env.config.google.service_account_file.chmod(0o600)

    unknown = run_cli(env, "test", str(box.id), "--imap-host", "imap.gmail.invalid", "--json")
    assert (unknown.exit_code, failed_stage(unknown)["stage"]) == (ExitCode.CONNECT, "dns")


def test_test_of_a_user_mailbox_never_signed_in_stops_at_the_token_with_login_as_the_fix(tmp_path, g, imap_user):
    env = user_env(tmp_path, g)
    g.imap.accounts[STAFF] = imap_user
    added = run_cli(env, "add-mailbox", "--kind", "google-client", "--email", STAFF, "--no-verify",
                    *(f"--{k.replace('_', '-')}={v}" for k, v in servers(g).items() if k != "folders"))
    assert added.exit_code == 0, added.output
    grants, logins = len(g.oauth.grants), g.imap.logins
    tested = run_cli(env, "test", "1", "--json")
    assert tested.exit_code == ExitCode.AUTH == 16, tested.output
    token = failed_stage(tested)
    assert (token["protocol"], token["stage"]) == ("imap", "token"), token
    assert "'hanna-sync login 1'" in token["hint"], token
    assert token["detail"] == "jonas@imone.lt is not signed in to Google"
    assert stages_of(tested) == [("imap", "token"), ("smtp", "token")]  # no connection without a token
    assert (len(g.oauth.grants), g.imap.logins) == (grants, logins)
    plain = run_cli(env, "test", "1")
    assert plain.exit_code == 16 and "hanna-sync login 1" in plain.stdout, plain.output


def test_test_explains_imap_off_in_the_accounts_gmail_settings(tmp_path, g, imap_user):
    """Gmail's "[ALERT] Your account is not enabled for IMAP use": the fix is in the person's Gmail settings
    (not the Admin console's), for the google-client kind and for an app password alike."""
    env = service_account_env(tmp_path, g)
    box = add_client(env, g, imap_user)
    g.imap.imap_off.add(STAFF)
    off = run_cli(env, "test", str(box.id), "--json")
    assert off.exit_code == ExitCode.AUTH == 16, off.output
    auth = failed_stage(off)
    assert (auth["protocol"], auth["stage"]) == ("imap", "auth") and "not enabled for IMAP use" in auth["detail"]
    assert "Forwarding and POP/IMAP -> IMAP access: Enable IMAP" in auth["hint"], auth

    g.imap.login_refusal = IMAP_OFF
    password = run_cli(Env(tmp_path / "imap"), "test", "--email", "ona@gmail.com", "--imap-host", "127.0.0.1",
                       "--imap-port", str(g.imap.port), "--ca-file", str(g.ca.ca_file), "--no-smtp",
                       "--password-stdin", "--json", input="app-password\n")
    assert password.exit_code == 16, password.output
    assert "Forwarding and POP/IMAP -> IMAP access: Enable IMAP" in failed_stage(password)["hint"]


def test_test_explains_gmails_refusal_of_a_password_for_the_imap_kind(tmp_path, g):
    env = Env(tmp_path)
    where = ["--email", "ona@gmail.com", "--imap-host", "127.0.0.1", "--imap-port", str(g.imap.port),
             "--ca-file", str(g.ca.ca_file), "--no-smtp", "--password-stdin", "--json"]
    g.imap.login_refusal = APP_PASSWORD_REQUIRED
    needs = run_cli(env, "test", *where, input="account-password\n")
    assert needs.stdout, needs.output
    auth = failed_stage(needs)
    assert needs.exit_code == ExitCode.AUTH and "Application-specific password required" in auth["detail"]
    assert "App passwords" in auth["hint"] and "--kind google-client" in auth["hint"]
    g.imap.login_refusal = "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    wrong = failed_stage(run_cli(env, "test", *where, input="app-password\n"))
    assert "app password" in wrong["hint"] and "--kind google-client" in wrong["hint"]
    g.imap.login_refusal = IMAP_DISABLED
    assert "End User Access" in failed_stage(run_cli(env, "test", *where, input="app-password\n"))["hint"]


def test_cli_add_mailbox_folders_and_the_setup_guide_with_the_ids_filled_in(tmp_path, g, imap_user):
    deliver_sample(imap_user)
    env = service_account_env(tmp_path, g)
    imap_user.dovecot.create_folder(imap_user.login, "Išsiųsti")
    g.imap.accounts[STAFF] = imap_user
    options = [f"--{k.replace('_', '-')}={v}" for k, v in servers(g).items() if k != "folders"]
    tried = run_cli(env, "test", "--kind", "google-client", "--email", STAFF, *options, "--json")
    assert tried.exit_code == 0, tried.output
    assert json.loads(tried.stdout)["mailbox"]["id"] is None and env.store.mailboxes() == []  # nothing saved
    added = run_cli(env, "add-mailbox", "--kind", "google-client", "--user", "jonas", "--email", STAFF, *options)
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith(f"Added mailbox 1: jonas@imone.lt for jonas (127.0.0.1:{g.imap.port} ssl XOAUTH2)")
    listed = json.loads(run_cli(env, "folders", "1", "--json").stdout)
    assert {f["name"] for f in listed if f["selected"]} == {"INBOX", "Išsiųsti"}
    assert run_cli(env, "run").exit_code == 0
    assert "Mailbox 1 (jonas@imone.lt): the service account gets its tokens" in run_cli(env, "login", "1").stdout
    for args, message in ((["set-password", "1"], "it signs in with Google ('hanna-sync login 1')"),
                          (["add-mailbox", "--kind", "google-client", "--email", "x@imone.lt", "--password-stdin"],
                           "has no password"),
                          (["add-mailbox", "--email", "x@imone.lt", "--paste"], "are for --kind google-scan and google-client"),
                          (["login", "1", "--paste", "--port", "8765"], "contradict each other")):
        refused = run_cli(env, *args, input="x\n")
        assert refused.exit_code == ExitCode.USAGE and message in refused.stderr, refused.output

    account = next(iter(g.oauth.accounts.values()))
    guide = run_cli(env, "setup-guide", "google").stdout
    for text in (f"Client ID:    {account.client_id}", "OAuth scopes: https://www.googleapis.com/auth/gmail.readonly,https://mail.google.com/",
                 "Manage Domain Wide Delegation", "Gmail API -> Enable", "Desktop app", "Test users",
                 f'service_account_file = "{env.config.google.service_account_file}"', "--paste",
                 "ssh -L 8765:127.0.0.1:8765", "POP and IMAP access"):
        assert text in guide, text
    assert "<CLIENT_ID>.apps.googleusercontent.com" in setup_guide.google(None)
    assert f'client_id = "{g.oauth.client_id}"' in setup_guide.google(
        GoogleConfig(auth="user", client_id=g.oauth.client_id))


def test_google_auth_is_used_in_one_module_only():
    """google-auth (and so Google's token endpoint) only in remote/google_auth.py; the diagnosis and the CLI
    go through it."""
    root = Path(__file__).resolve().parent.parent / "hanna_sync"
    for path in root.rglob("*.py"):
        module, text = path.relative_to(root).as_posix(), path.read_text()
        assert bool(re.search(r"^\s*(import|from) google[. ]", text, re.M)) == (module == "remote/google_auth.py"), module
