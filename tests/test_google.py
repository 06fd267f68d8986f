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

from hanna_sync.admin import mailboxes, setup_guide
from hanna_sync.admin.status import health
from hanna_sync.cli import cli
from hanna_sync.config import GoogleConfig, parse_config
from hanna_sync.demo import sample
from hanna_sync.errors import AuthError, ConfigError, ExitCode, InputError, ReauthRequired
from hanna_sync.remote import google_auth
from hanna_sync.remote.google_auth import CLIENT_SECRET_REF, MAIL_SCOPE, Consent, GoogleSignIn
from tests.fakes_google import APP_PASSWORD_REQUIRED, IMAP_DISABLED, Google
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
    box = mailboxes.new_google_mailbox("staff", STAFF, servers(g))
    return mailboxes.add_google(env.store, env.secrets, signer(env), box, verify_first=True, timeout=10,
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
        signer(env).token(replace(box, email="nobody@imone.lt", username=None), "https://www.googleapis.com/auth/gmail.readonly")


def test_the_service_account_key_must_be_private_and_a_key(tmp_path, g, monkeypatch):
    env = service_account_env(tmp_path, g)
    key_file = env.config.google.service_account_file
    box = mailboxes.new_google_mailbox("staff", STAFF, servers(g))
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
