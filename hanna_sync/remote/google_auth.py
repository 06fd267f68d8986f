"""Google sign-in for the Google kinds (google-scan, google-client): access tokens for a mailbox, pass after pass.

Workspace admins can switch app passwords off, and an admin archiving every staff mailbox cannot ask each
person for one, so Gmail is also read with OAuth2 tokens, through the admin's OWN Google Cloud project
(`[google]` in the config; hanna-sync ships no client id: a borrowed one is another's to switch off):

* **service account** (`auth = "service-account"`): Workspace domain-wide delegation. google-auth signs a
  JWT with the service account's key and `sub` = the mailbox (the JWT bearer grant); nobody signs in.
  The key is a JSON file of mode 0600, or a systemd credential (like the secrets key).
* **user** (`auth = "user"`): the admin's own OAuth client (a Desktop app client). The mailbox's person
  consents once in a browser: the installed-app flow, with the redirect to a listener on 127.0.0.1 (state
  and PKCE checked), or, on a server without a browser, the consent URL printed and the URL the browser
  was sent to pasted back. Google's device flow does not allow Gmail scopes, so it is not used. The
  refresh token and the current access token are kept in the encrypted secrets store under the
  mailbox's secret_ref, renewed with google-auth under the same token lock as Microsoft's caches;
  `invalid_grant` (consent revoked or expired) is SignInLost: "needs re-authorisation", backed off.

The scope follows the kind (`scope_for`): google-client asks for https://mail.google.com/ (the only scope
Gmail's IMAP and SMTP take), google-scan for gmail.readonly, which can neither change nor send anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets as random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from hanna_sync.errors import AuthError, ConfigError, ConnectError, InputError, SecretsError
from hanna_sync.remote.graph import network_reason
from hanna_sync.remote.oauth import LOCK_NAME, KeptInMemory, Secrets, SignInLost, TokenRefused, token_lock

if TYPE_CHECKING:
    from hanna_sync.config import Config, GoogleConfig
    from hanna_sync.models import Mailbox

log = logging.getLogger(__name__)

MAIL_SCOPE = "https://mail.google.com/"  # Gmail's IMAP and SMTP take no narrower scope
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"  # google-scan: the Gmail API, reading only


# What the consent page calls each scope's box, for the person told to tick it.
CONSENT_BOXES = {
    MAIL_SCOPE: '"Read, compose, send and permanently delete all your email from Gmail"',
    GMAIL_READONLY: '"View your email messages and settings"',
}


def scope_for(mailbox: Mailbox) -> str:
    """The one scope a mailbox's tokens are asked for: the narrowest its kind can work with."""
    return GMAIL_READONLY if mailbox.kind == "google-scan" else MAIL_SCOPE
IDENTITY_SCOPES = ("openid", "email")  # who consented, from the id_token: it must be the mailbox's own account
CLIENT_SECRET_REF = "google-client-secret"  # the OAuth client's secret, for auth = "user"
CREDENTIAL_NAME = "hanna-sync-google"  # the service account's key as a systemd credential (LoadCredential=)
RENEW_BEFORE = timedelta(minutes=5)  # a kept access token this close to its expiry is renewed first
CONSENT_WAIT = 300.0  # seconds the loopback listener waits for the browser
_TRANSIENT_ERRORS = ("temporarily_unavailable", "server_error", "internal_failure")  # the next pass tries again


@dataclass(frozen=True)
class GoogleToken:
    value: str
    scope: str
    service_account: bool
    source: str  # "cache" or "token endpoint"


@dataclass(frozen=True)
class ServiceAccountKey:
    """A service account's key as google-auth reads it, and what the admin console's delegation page needs."""

    info: dict[str, Any]
    client_email: str
    client_id: str  # the numeric OAuth client id that domain-wide delegation is granted to
    where: str  # the file, or the systemd credential, for messages


def service_account_key(settings: GoogleConfig) -> ServiceAccountKey:
    """The key from service_account_file (mode 0600 enforced: it acts as every mailbox of the domain), else
    from the systemd credential; each failure one line naming the file and the fix."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if settings.service_account_file is not None:
        path, where = settings.service_account_file, f"[google] service_account_file {settings.service_account_file}"
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
        if mode & 0o077:
            raise ConfigError(f"{where} is readable by others (mode {stat.S_IMODE(mode):04o}): it acts as every"
                              f" mailbox of the domain; chmod 600 {path} (owned by the user hanna-sync runs as)")
    elif credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        path, where = Path(credentials) / CREDENTIAL_NAME, f"the systemd credential {CREDENTIAL_NAME}"
    else:
        raise ConfigError('[google] auth = "service-account" needs the service account\'s key: set'
                          " service_account_file, or hand it over as the systemd credential"
                          f" {CREDENTIAL_NAME} (LoadCredential={CREDENTIAL_NAME}:/path/key.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"{where} is not JSON: give the key file the console downloaded (Keys -> Add key ->"
                          " Create new key -> JSON)") from None
    missing = [k for k in ("client_email", "client_id", "private_key") if not isinstance(info, dict) or k not in info]
    if missing or info.get("type") != "service_account":
        raise ConfigError(f"{where} is not a service account's JSON key (no {', '.join(missing) or 'type'}):"
                          " IAM & Admin -> Service accounts -> the account -> Keys -> Add key -> JSON")
    return ServiceAccountKey(info, str(info["client_email"]), str(info["client_id"]), where)


@dataclass(frozen=True)
class Consent:
    """How a person's consent comes back. `show` gets the consent URL to open. With `paste` (a server
    without a browser) the URL the browser was sent to is read back from it; otherwise a listener on
    127.0.0.1:`port` (0: any free one; fixed for an SSH port-forward) receives the browser itself."""

    show: Callable[[str], None]
    paste: Callable[[], str] | None = None
    port: int = 0
    wait: float = CONSENT_WAIT


# What Google's token endpoint says, and what to do. The codes are OAuth 2.0's (RFC 6749 5.2); the texts
# are Google's as its users report them: unauthorized_client for a service account without domain-wide
# delegation of the scope ("Client is unauthorized to retrieve access tokens using this method, or client not
# authorized for any of the scopes requested.", googleapis/google-api-php-client#1379 and #2214,
# googleapis/google-auth-library-ruby#210), invalid_grant "Token has been expired or revoked." for a refresh
# token whose consent is gone, "Invalid email or User ID" for a subject not in the domain.
def _fix(error: str, description: str, settings: GoogleConfig, key: ServiceAccountKey | None, *,
         scope: str = MAIL_SCOPE) -> str | None:
    service_account = settings.auth == "service-account"
    if error == "unauthorized_client" and service_account:
        client_id = key.client_id if key else "<the service account's Client ID>"
        return ("domain-wide delegation is missing for this scope: Google Admin console (admin.google.com) ->"
                " Security -> Access and data control -> API controls -> Manage Domain Wide Delegation -> Add new:"
                f" Client ID {client_id}, OAuth scopes {scope} (changes can take up to 24 hours);"
                " 'hanna-sync setup-guide google' shows every step")
    if error == "invalid_client":
        if service_account:
            return ("the service account or its key is deleted or disabled: IAM & Admin -> Service accounts ->"
                    " the account -> Keys -> Add key -> JSON, and point [google] service_account_file at it")
        return ("the OAuth client id or secret is wrong (the client deleted, or its secret reset): check [google]"
                " client_id and store the secret again with 'hanna-sync login --google-client-secret'")
    if error == "invalid_grant" and service_account:
        if "Invalid email or User ID" in description:
            return ("no such user in the Workspace domain: check the mailbox's address (the service account acts"
                    " as it), or that it is not a group or an alias")
        if "Signature" in description:
            return ("the key is not the service account's any more (deleted in the console): make a new JSON key"
                    " and point [google] service_account_file at it")
        return "check this machine's clock (date; keep it synchronised with NTP): a signed request is valid briefly"
    if error in ("access_denied", "admin_policy_enforced"):
        return ("the Workspace admin blocks this app: Admin console -> Security -> Access and data control ->"
                " API controls -> App access control -> Manage Third-Party App Access -> configure the OAuth"
                " client as Trusted")
    if error == "disabled_client":
        return "the OAuth client is disabled: Google Cloud console -> APIs & Services -> Credentials -> enable it"
    if error == "invalid_scope":
        return f"the OAuth client may not ask for {scope}: add it on the consent screen's Data Access page"
    return None


class _TriedOnly(KeptInMemory):
    """Consents of a mailbox not saved (`hanna-sync test --kind google-client`): in memory, gone when the
    command ends; the OAuth client's secret is read from the real store."""

    def get(self, ref: str) -> str | None:
        if ref in self._kept:
            return self._kept[ref]
        return self._secrets.get(ref) if ref == CLIENT_SECRET_REF else None


class GoogleSignIn:
    """Tokens for google-client mailboxes: from a service account, or from the person's kept consent.

    `lock_path` is None only for tokens nobody else can see (`unsaved`): there is nothing to take turns on.
    """

    def __init__(self, settings: GoogleConfig, secrets: Secrets, lock_path: Path | None, timeout: float) -> None:
        self.settings, self.secrets, self.lock_path, self.timeout = settings, secrets, lock_path, timeout
        self._delegated: dict[tuple[str, str], Any] = {}  # (mailbox, scope) -> service account credentials
        self._key: ServiceAccountKey | None = None

    @classmethod
    def for_config(cls, config: Config, secrets: Secrets) -> GoogleSignIn:
        return cls(config.google, secrets, config.database.parent / LOCK_NAME, config.network.timeout)

    def unsaved(self) -> GoogleSignIn:
        """The same settings, consents kept in memory: for a mailbox tried before it is saved."""
        return GoogleSignIn(self.settings, _TriedOnly(self.secrets), None, self.timeout)

    @property
    def service_account(self) -> bool:
        return self.settings.auth == "service-account"

    def key(self) -> ServiceAccountKey:
        if self._key is None:
            self._key = service_account_key(self.settings)
        return self._key

    def check_settings(self) -> None:
        if self.settings.auth is None:
            raise ConfigError("Google mailboxes need your own Google Cloud project: add a [google] table to the"
                              ' config with auth = "service-account" or "user" (\'hanna-sync setup-guide google\''
                              " shows how)")

    # -- tokens ------------------------------------------------------------------------------------

    def token(self, mailbox: Mailbox, fresh: bool = False) -> GoogleToken:
        """A token for the mailbox, for its kind's scope; `fresh` renews even a valid kept one (the server
        refused it).

        Raises SignInLost when only a new consent helps, TokenRefused when the token endpoint says no,
        ConfigError for a missing or unsafe key, ConnectError when Google cannot be reached.
        """
        self.check_settings()
        scope = scope_for(mailbox)
        if self.service_account:
            return self._delegated_token(mailbox, scope, fresh)
        return self._user_token(mailbox, scope, fresh)

    def token_source(self, mailbox: Mailbox) -> Callable[[bool], str]:
        """`fresh -> access token` for a transport that asks again when the server says its token expired."""
        return lambda fresh: self.token(mailbox, fresh).value

    def _delegated_token(self, mailbox: Mailbox, scope: str, fresh: bool) -> GoogleToken:
        from google.oauth2 import service_account

        key = self.key()
        credentials = self._delegated.get((mailbox.login_name, scope))
        if credentials is not None and credentials.valid and not fresh:
            return GoogleToken(credentials.token, scope, True, "cache")
        info = {**key.info, "token_uri": self.settings.token_uri}  # where the grant is sent (a test's fake)
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[scope], subject=mailbox.login_name)
        except (ValueError, TypeError) as exc:  # a private key that does not parse
            raise ConfigError(f"{key.where}: its private_key is not usable ({exc})") from None
        self._refresh(credentials, mailbox)
        self._delegated[(mailbox.login_name, scope)] = credentials
        return GoogleToken(str(credentials.token), scope, True, "token endpoint")

    def _user_token(self, mailbox: Mailbox, scope: str, fresh: bool) -> GoogleToken:
        from google.oauth2.credentials import Credentials

        login = f"'hanna-sync login {mailbox.id if mailbox.id is not None else 'ID'}'"
        with self._lock():
            stored = self._consent_of(mailbox, scope, login)
            kept = stored.get("tokens", {}).get(scope)
            if kept and not fresh and datetime.fromisoformat(kept["expiry"]) - RENEW_BEFORE > _now():
                return GoogleToken(kept["token"], scope, False, "cache")
            credentials = Credentials(None, refresh_token=stored["refresh_token"], token_uri=self.settings.token_uri,
                                      client_id=self.settings.client_id, client_secret=self._client_secret(),
                                      scopes=[scope])
            self._refresh(credentials, mailbox, login)
            expiry = credentials.expiry.replace(tzinfo=timezone.utc) if credentials.expiry else _now()
            stored.setdefault("tokens", {})[scope] = {"token": credentials.token, "expiry": expiry.isoformat()}
            if credentials.refresh_token:
                stored["refresh_token"] = credentials.refresh_token
            if self.secrets.get(mailbox.secret_ref) is not None:  # not when the mailbox was removed meanwhile
                self.secrets.set(mailbox.secret_ref, json.dumps(stored))
        return GoogleToken(str(credentials.token), scope, False, "token endpoint")

    def _consent_of(self, mailbox: Mailbox, scope: str, login: str) -> dict[str, Any]:
        """The mailbox's kept consent, known without asking the network to be there, its own and for `scope`."""
        raw = self.secrets.get(mailbox.secret_ref)
        if not raw:
            raise SignInLost(f"{mailbox.email} is not signed in to Google", f"sign in with {login}")
        stored: dict[str, Any] = json.loads(raw)
        if stored["account"].casefold() not in {mailbox.email.casefold(), mailbox.login_name.casefold()}:
            raise SignInLost(f"the Google consent kept for {mailbox.email} is {stored['account']}'s (the mailbox's"
                             " address changed since)", f"sign in again with {login}")
        if scope not in stored["scopes"]:
            raise SignInLost(f"the Google consent of {mailbox.email} does not include {scope}",
                             f"sign in again with {login}")
        return stored

    def _refresh(self, credentials: Any, mailbox: Mailbox, login: str | None = None) -> None:
        """google-auth's refresh (the JWT bearer grant, or the refresh token grant), its failures in words."""
        import google.auth.exceptions
        import google.auth.transport.requests

        request = google.auth.transport.requests.Request()
        try:
            with self._talking():
                credentials.refresh(lambda *args, **kwargs: request(*args, **{**kwargs, "timeout": self.timeout}))
        except google.auth.exceptions.RefreshError as exc:
            reply = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            error, description = str(reply.get("error") or ""), str(reply.get("error_description") or "")
            said = f"{error}: {description}" if error else " ".join(str(exc.args[0] if exc.args else exc).split())
            if getattr(exc, "retryable", False) or error in _TRANSIENT_ERRORS:
                raise ConnectError(f"Google's token endpoint is busy or failing for now ({said}); the next pass"
                                   " tries again") from None
            if error == "invalid_grant" and login is not None:  # a person's consent: only they can give it again
                raise SignInLost(f"the Google consent of {mailbox.email} no longer gets tokens ({said})",
                                 f"the consent was revoked or expired (a consent screen in Testing expires it after"
                                 f" 7 days; see README): sign in again with {login}") from None
            key = self.key() if self.service_account else None
            raise TokenRefused(f"Google's token endpoint refused the token request ({said})",
                               _fix(error, description, self.settings, key, scope=scope_for(mailbox))) from None

    # -- consent -----------------------------------------------------------------------------------

    def sign_in(self, mailbox: Mailbox, consent: Consent) -> str:
        """The installed-app flow for a mailbox: the consent URL, the code back (loopback or pasted), checked
        (state, PKCE), exchanged, and the refresh token kept. Returns the account that consented, which must be
        the mailbox's own: a token reads the mailbox of whoever consented."""
        scope = scope_for(mailbox)
        self.check_settings()
        if self.service_account:
            raise InputError('[google] auth = "service-account": mailboxes need no sign-in of their own (domain-wide'
                             " delegation); 'hanna-sync test ID' checks the delegation")
        secret = self._client_secret()
        verifier, state = random.token_urlsafe(48), random.token_urlsafe(24)
        listener = None if consent.paste else _Listener(consent.port, state)
        try:
            port = listener.port if listener else (consent.port or _free_port())
            redirect_uri = f"http://127.0.0.1:{port}/"
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            consent.show(self.settings.auth_uri + "?" + urlencode({
                "client_id": self.settings.client_id, "redirect_uri": redirect_uri, "response_type": "code",
                "scope": " ".join((*IDENTITY_SCOPES, scope)), "state": state, "code_challenge": challenge,
                "code_challenge_method": "S256", "access_type": "offline", "prompt": "consent",
                "login_hint": mailbox.login_name,
            }))
            if listener is not None:
                query = listener.wait(consent.wait, mailbox)
            else:
                assert consent.paste is not None
                query = _pasted(consent.paste(), state)
        finally:
            if listener is not None:
                listener.close()
        reply = self._exchange(query["code"], verifier, redirect_uri, secret)
        account = _consenting_account(reply)
        if account.casefold() not in {mailbox.email.casefold(), mailbox.login_name.casefold()}:
            raise AuthError(f"consent was given as {account or 'an unknown account'}, but the mailbox is"
                            f" {mailbox.login_name}: sign in as {mailbox.login_name} (the browser's account chooser)")
        granted = str(reply.get("scope", "")).split()
        if scope not in granted:
            raise AuthError(f"the consent did not include {scope} (granted: {' '.join(granted) or 'nothing'}): sign in"
                            f" again and tick {CONSENT_BOXES.get(scope, 'the Gmail box')}")
        if not reply.get("refresh_token"):
            raise AuthError("Google sent no refresh token: remove hanna-sync at https://myaccount.google.com/permissions"
                            " and sign in again")
        expiry = _now() + timedelta(seconds=int(reply.get("expires_in") or 0))
        with self._lock():
            self.secrets.set(mailbox.secret_ref, json.dumps({
                "account": account, "refresh_token": reply["refresh_token"], "scopes": granted,
                "tokens": {scope: {"token": reply["access_token"], "expiry": expiry.isoformat()}},
            }))
        log.info("%s consented to hanna-sync in Google", account)
        return account

    def _exchange(self, code: str, verifier: str, redirect_uri: str, secret: str) -> dict[str, Any]:
        import requests

        with self._talking():
            answer = requests.post(self.settings.token_uri, timeout=self.timeout, data={
                "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": redirect_uri, "client_id": self.settings.client_id, "client_secret": secret})
        try:
            reply: dict[str, Any] = answer.json()
        except ValueError:
            raise ConnectError(f"Google's token endpoint answered {answer.status_code} without a token reply;"
                               " the next pass tries again") from None
        if "access_token" not in reply:
            error, description = str(reply.get("error", answer.status_code)), str(reply.get("error_description", ""))
            raise TokenRefused(f"Google's token endpoint refused the code ({error}: {description})",
                               _fix(error, description, self.settings, None))
        return reply

    def store_client_secret(self, secret: str) -> None:
        """Check the OAuth client's secret against the token endpoint, then keep it in the secrets store.

        Google has no grant an installed app's client alone may use, so a refresh token known to be bad is
        sent: a wrong client is refused as invalid_client before the token is looked at (invalid_grant)."""
        import requests

        self.check_settings()
        if self.service_account:
            raise InputError('[google] auth = "service-account" uses its key, no client secret')
        if not secret:
            raise InputError("the client secret is empty")
        with self._talking():
            answer = requests.post(self.settings.token_uri, timeout=self.timeout, data={
                "grant_type": "refresh_token", "refresh_token": "hanna-sync-checks-its-client-secret",
                "client_id": self.settings.client_id, "client_secret": secret})
        try:
            error = answer.json().get("error")
        except ValueError:
            error = None
        if error != "invalid_grant":
            raise TokenRefused(f"Google's token endpoint refused the client ({error or answer.status_code})",
                               _fix(str(error), "", self.settings, None))
        self.secrets.set(CLIENT_SECRET_REF, secret)

    def _client_secret(self) -> str:
        secret = self.secrets.get(CLIENT_SECRET_REF)
        if secret is None:
            raise SecretsError('[google] auth = "user" needs the OAuth client\'s secret in the secrets store: store it'
                               " with 'hanna-sync login --google-client-secret'")
        return secret

    def _lock(self) -> AbstractContextManager[None]:
        return nullcontext() if self.lock_path is None else token_lock(self.lock_path, 4 * self.timeout + 10)

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Google unreachable: one line, and the next pass tries again."""
        import google.auth.exceptions
        import requests

        try:
            yield
        except (requests.RequestException, google.auth.exceptions.TransportError) as exc:
            reason = network_reason(exc) if isinstance(exc, requests.RequestException) else str(exc)[:200]
            raise ConnectError(f"cannot reach Google's token endpoint at {self.settings.token_uri}: {reason}") from None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _free_port() -> int:
    """A port nothing listens on now: the browser's redirect fails there, and shows the URL to paste."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pasted(text: str, state: str) -> dict[str, str]:
    """The code from the URL the browser was sent to, pasted back; its state must be ours."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(text.strip()).query).items()}
    if query.get("error"):
        raise AuthError(f"the consent was not given ({query['error']}); run 'hanna-sync login' again and allow it")
    if not query.get("code"):
        raise InputError("that is not the address the browser was sent to: paste the whole URL from its address bar"
                         " (http://127.0.0.1:PORT/?state=...&code=...)")
    if query.get("state") != state:
        raise AuthError("the pasted address belongs to another sign-in (its state differs): paste the one this"
                        " consent URL led to")
    return query


def _consenting_account(reply: dict[str, Any]) -> str:
    """The email in the id_token. Not verified: it came straight from the token endpoint over TLS, which
    Google's OpenID Connect documentation accepts in place of checking the signature."""
    parts = str(reply.get("id_token") or "").split(".")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))) if len(parts) == 3 else {}
    except (ValueError, binascii.Error):
        claims = {}
    return str(claims.get("email") or "") if isinstance(claims, dict) else ""


class _Listener:
    """The loopback redirect's receiver: one HTTP server on 127.0.0.1, answering the browser once it brings
    a code (or an error) with our state; anything else (another state, a favicon) is refused and waited past."""

    def __init__(self, port: int, state: str) -> None:
        self.state, self.query = state, None
        self.done = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                ours = query.get("state") == listener.state and ("code" in query or "error" in query)
                text = ("hanna-sync: consent received. You may close this page." if ours and "code" in query else
                        "hanna-sync: consent refused; run 'hanna-sync login' again." if ours else
                        "hanna-sync: not the answer this sign-in waits for.")
                body = text.encode()
                self.send_response(200 if ours else 400)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if ours:
                    listener.query = query
                    listener.done.set()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        try:
            self.server = HTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise InputError(f"cannot listen on 127.0.0.1:{port} for the browser's redirect ({exc.strerror or exc}):"
                             " choose another --port, or use --paste") from None
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def wait(self, seconds: float, mailbox: Mailbox) -> dict[str, str]:
        login = f"'hanna-sync login {mailbox.id if mailbox.id is not None else 'ID'}'"
        deadline = time.monotonic() + seconds
        while not self.done.wait(0.1):
            if time.monotonic() > deadline:
                raise AuthError(f"no consent came back within {seconds / 60:g} minutes; run {login} again, open the"
                                " URL and allow access (on a server without a browser: --paste)")
        assert self.query is not None
        if self.query.get("error"):
            raise AuthError(f"the consent was not given ({self.query['error']}); run {login} again and allow it")
        return self.query

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
