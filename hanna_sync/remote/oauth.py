"""Microsoft sign-in for Office 365 mailboxes, with MSAL: tokens that keep working pass after pass.

Basic authentication is off in Exchange Online, so Office 365 mail is read with OAuth2 tokens, got through
the admin's own app registration (`[o365]` in the config): hanna-sync ships no client id, because borrowed
ones get disabled (AADSTS7000112) and then every mailbox of every user stops at once.

* **delegated** (`auth = "delegated"`): each mailbox signs in once with the device-code flow (the tool
  prints a code and a URL; the person signs in on any browser, MFA included) and MSAL renews the tokens
  silently with the refresh token from then on. No username/password flow (ROPC): deprecated, and it
  fails with MFA.
* **app-only** (`auth = "app"`): client credentials, a client secret from the secrets store or a
  certificate; an admin consents once for every mailbox of the organisation.

MSAL's token cache is serialised into the encrypted secrets store (one entry per mailbox, under its
secret_ref, and one for the app), read and written back under a file lock: a manual command and the timer
then never renew with the same refresh token at once and keep the older result. A token has one audience,
so each resource is asked for on its own: Graph tokens scan, Outlook tokens log in to IMAP and SMTP.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hanna_sync.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    InputError,
    ReauthRequired,
    SecretsError,
)
from hanna_sync.remote.graph import network_reason

if TYPE_CHECKING:
    import msal

    from hanna_sync.config import Config, O365Config
    from hanna_sync.models import Mailbox
    from hanna_sync.remote.graph import GraphClient

log = logging.getLogger(__name__)
# MSAL's HTTP session retries a failed connection once, and urllib3 logs a multi-line warning about it; the
# one line `_talking` raises afterwards says what failed and where.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

CLIENT_SECRET_REF = "o365-client-secret"  # the app registration's secret, for auth = "app"
APP_CACHE_REF = "o365-app-token-cache"  # MSAL's cache of app-only tokens, shared by every mailbox
LOCK_NAME = "hanna-sync-tokens.lock"  # beside the database: serialises reading, renewing and saving caches


@dataclass(frozen=True)
class Resource:
    """What a token is for: the scope asked for, the audiences the server accepts, the permission it must carry."""

    name: str  # Graph, IMAP, SMTP
    delegated_scope: str
    app_scope: str
    audience: str  # the resource, as people know it
    audiences: frozenset[str]  # every `aud` its tokens may carry (URIs and the application id)
    delegated_permission: str  # must be in the token's `scp`
    app_permission: str  # must be in the token's `roles`


_GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})
_OUTLOOK_AUDIENCES = frozenset({
    "https://outlook.office.com", "https://outlook.office365.com", "https://ps.outlook.com",
    "00000002-0000-0ff1-ce00-000000000000",
})
GRAPH = Resource("Graph", "https://graph.microsoft.com/Mail.Read", "https://graph.microsoft.com/.default",
                 "https://graph.microsoft.com", _GRAPH_AUDIENCES, "Mail.Read", "Mail.Read")
IMAP = Resource("IMAP", "https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office365.com/.default",
                "https://outlook.office.com", _OUTLOOK_AUDIENCES, "IMAP.AccessAsUser.All", "IMAP.AccessAsApp")
SMTP = Resource("SMTP", "https://outlook.office.com/SMTP.Send", "https://outlook.office365.com/.default",
                "https://outlook.office.com", _OUTLOOK_AUDIENCES, "SMTP.Send", "SMTP.SendAsApp")

# What each mailbox kind signs in for. MSAL adds offline_access (the refresh token), openid and profile itself.
RESOURCES = {"o365-scan": (GRAPH,), "o365-client": (IMAP, SMTP)}

# AADSTS codes seen in the field, and what to do about each (the identity platform's texts say what, not how).
_AADSTS_FIXES = {
    "7000112": (
        "the application is disabled (a borrowed client id its owner switched off, or disabled in this"
        " tenant): register your own app ('hanna-sync setup-guide o365') or enable it in Microsoft Entra"
        " admin center -> Enterprise applications -> the app -> Properties -> Enabled for users to sign-in"
    ),
    "700082": "the refresh token expired (unused for 90 days, or revoked): sign in again with 'hanna-sync login ID'",
    "70008": "the refresh token expired (unused for too long): sign in again with 'hanna-sync login ID'",
    "65001": (
        "consent is missing: Microsoft Entra admin center -> App registrations -> the app -> API permissions"
        " -> Grant admin consent (the permissions 'hanna-sync setup-guide o365' lists)"
    ),
    "90094": (
        "an administrator must approve the app: grant admin consent (App registrations -> the app -> API"
        " permissions -> Grant admin consent)"
    ),
    "7000218": (
        "device-code sign-in needs 'Allow public client flows' = Yes (App registrations -> the app ->"
        " Authentication -> Advanced settings)"
    ),
    "700016": "no application with [o365] client_id in that tenant: check client_id and tenant_id in the config",
    "90002": "no such tenant: check [o365] tenant_id (the Directory (tenant) ID of the app registration)",
    "7000215": (
        "the client secret is wrong or expired: make a new one (App registrations -> the app -> Certificates"
        " & secrets) and store it with 'hanna-sync login --client-secret'"
    ),
    "700027": (
        "the certificate is not the one uploaded to the app registration: check [o365] certificate_file and"
        " certificate_thumbprint against App registrations -> the app -> Certificates & secrets"
    ),
    "53003": (
        "Conditional Access blocked the sign-in (device-code flow or this location not allowed): an admin"
        " can exclude the app, or use app-only sign-in (auth = \"app\")"
    ),
    "50076": "multi-factor authentication is needed: sign in again with 'hanna-sync login ID' (the browser asks)",
    "50173": "the sign-in was revoked (password changed, or sessions revoked):"
             " sign in again with 'hanna-sync login ID'",
    "500011": "the tenant has no Exchange Online for this resource: is the mailbox licensed for Exchange Online?",
    "70011": "a scope was refused: check the API permissions of the app registration ('hanna-sync setup-guide o365')",
}
_REAUTH_ERRORS = ("invalid_grant", "interaction_required")
# The identity platform busy or failing for a moment: the next pass tries again, no back-off.
_TRANSIENT_ERRORS = ("temporarily_unavailable", "server_error", "slow_down")
# The device-code flow ended without a sign-in (msal returns the last poll's answer when the code expires).
_NOBODY_SIGNED_IN = ("authorization_pending", "expired_token", "code_expired")


class TokenRefused(AuthError):
    """The identity platform said no: what it said, and what to do when its AADSTS code is a known one."""

    def __init__(self, said: str, fix: str | None) -> None:
        super().__init__(f"{said}; {fix}" if fix else said)
        self.said, self.fix = said, fix


class SignInLost(ReauthRequired):
    """The mailbox's sign-in no longer gets tokens; `fix` is what a person does (sign in again, or first
    grant the consent the identity platform says is missing), kept apart for `hanna-sync test`'s fix line."""

    def __init__(self, said: str, fix: str) -> None:
        super().__init__(f"{said}; {fix}")
        self.said, self.fix = said, fix


def fix_for(text: str) -> str | None:
    """The fix for an AADSTS error in an identity platform's reply, if we know that code."""
    match = re.search(r"AADSTS(\d+)", text)
    return _AADSTS_FIXES.get(match.group(1)) if match else None


def _reply_text(result: dict[str, Any]) -> str:
    """error: the first line of error_description, without the trace/correlation ids that follow."""
    description = str(result.get("error_description") or "")
    description = re.split(r"\r?\n| Trace ID:", description, maxsplit=1)[0].strip()
    return f"{result.get('error', 'error')}: {description}" if description else str(result.get("error", "error"))


@dataclass(frozen=True)
class Claims:
    """What an access token says about itself, decoded locally and NOT verified: only for diagnostics."""

    audience: str | None
    scopes: tuple[str, ...]  # delegated permissions (scp)
    roles: tuple[str, ...]  # application permissions
    user: str | None  # upn / preferred_username; None for app-only tokens
    expires: datetime | None

    @classmethod
    def of(cls, access_token: str) -> Claims | None:
        """None for a token that is not a JWT (personal Microsoft accounts get opaque ones)."""
        parts = access_token.split(".")
        if len(parts) != 3:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict):
            return None
        exp = data.get("exp")
        return cls(
            audience=str(data["aud"]).rstrip("/") if data.get("aud") else None,
            scopes=tuple(str(data.get("scp") or "").split()),
            roles=tuple(str(r) for r in data.get("roles") or ()),
            user=data.get("upn") or data.get("preferred_username") or data.get("unique_name"),
            expires=datetime.fromtimestamp(exp, timezone.utc) if isinstance(exp, (int, float)) else None,
        )

    def describe(self) -> str:
        parts = [f"audience {self.audience or '?'}"]
        if self.scopes:
            parts.append(f"scopes {' '.join(self.scopes)}")
        if self.roles:
            parts.append(f"roles {' '.join(self.roles)}")
        parts.append(f"user {self.user}" if self.user else "app-only (no user)")
        if self.expires:
            parts.append(f"expires {self.expires:%Y-%m-%d %H:%M} UTC")
        return ", ".join(parts)

    def problems(self, resource: Resource, app_only: bool, login: str) -> list[tuple[str, str]]:
        """What makes this token wrong for `resource` and this mailbox: (what, fix) pairs."""
        found = []
        if self.audience not in resource.audiences:
            found.append((f"the token is for {self.audience}, not {resource.name} ({resource.audience})",
                          f"a token serves one audience only: {resource.name} needs its own (hanna-sync asks for"
                          f" {resource.app_scope if app_only else resource.delegated_scope})"))
        if app_only and resource.app_permission not in self.roles:
            found.append((f"the token lacks the application permission {resource.app_permission}"
                          f" (roles: {' '.join(self.roles) or 'none'})",
                          f"add {resource.app_permission} to the app registration's API permissions (Application"
                          " permissions) and grant admin consent; 'hanna-sync setup-guide o365' lists them"))
        if not app_only and resource.delegated_permission not in self.scopes:
            found.append((f"the token lacks the delegated permission {resource.delegated_permission}"
                          f" (scopes: {' '.join(self.scopes) or 'none'})",
                          f"add {resource.delegated_permission} (Delegated permissions) to the app registration,"
                          " grant admin consent, then sign in again with 'hanna-sync login ID'"))
        if not app_only and self.user and self.user.casefold() != login.casefold():
            found.append((f"the token is for {self.user}, but the mailbox logs in as {login}",
                          f"sign in as {login} with 'hanna-sync login ID' (or, if {self.user} is this mailbox's"
                          f" sign-in name, set it with 'hanna-sync edit-mailbox ID --username {self.user}')"))
        if self.expires and self.expires < datetime.now(timezone.utc):
            found.append((f"the token expired at {self.expires:%Y-%m-%d %H:%M} UTC",
                          "check this machine's clock (date; keep it synchronised with NTP)"))
        return found


@dataclass(frozen=True)
class Token:
    value: str
    resource: Resource
    app_only: bool
    source: str  # "cache" or "identity_provider" (renewed or newly issued), as MSAL says

    @property
    def claims(self) -> Claims | None:
        return Claims.of(self.value)


@contextmanager
def token_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock on `path`, waited for at most `timeout` seconds.

    Held while a cache is read, renewed and written back, so two processes (or two scanner threads:
    each opens its own descriptor) never renew with the same refresh token and keep the older cache.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # e.g. `login` once run as root made it root's
        raise SecretsError(f"cannot open the token lock {path}: {exc.strerror or exc}; run hanna-sync as the user"
                           " that owns the state directory (e.g. sudo -u hanna-sync hanna-sync ...)") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SecretsError(f"another hanna-sync process has held {path} for {timeout:g} s while renewing"
                                       " a Microsoft token; wait for it, or stop the stuck process") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


class Secrets(Protocol):
    """Where token caches and the client secret are kept: the secrets store (credentials.SecretStore)."""

    def get(self, ref: str) -> str | None: ...

    def set(self, ref: str, secret: str) -> None: ...


class KeptInMemory:
    """Token caches of a mailbox that is not saved (`hanna-sync test --kind o365-...`): kept in memory and gone
    when the command ends, so trying a mailbox leaves nothing behind. The app's client secret is read from
    the real store."""

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets
        self._kept: dict[str, str] = {}

    def get(self, ref: str) -> str | None:
        if ref in self._kept:
            return self._kept[ref]
        return self._secrets.get(ref) if ref == CLIENT_SECRET_REF else None

    def set(self, ref: str, secret: str) -> None:
        self._kept[ref] = secret


class MicrosoftSignIn:
    """Tokens for Office 365 mailboxes: silent (from the cache, renewed when due), app-only, or a new sign-in.

    `lock_path` is None only for caches nobody else can see (`unsaved`): there is nothing to take turns on.
    """

    def __init__(self, settings: O365Config, secrets: Secrets, lock_path: Path | None, timeout: float) -> None:
        self.settings, self.secrets, self.lock_path, self.timeout = settings, secrets, lock_path, timeout
        # MSAL keeps the authority's openid-configuration here: read once per process, not per token (so a
        # cached token needs no request at all, and an identity platform down for a moment costs nothing).
        self._http_cache: dict[Any, Any] = {}

    @classmethod
    def for_config(cls, config: Config, secrets: Secrets) -> MicrosoftSignIn:
        return cls(config.o365, secrets, config.database.parent / LOCK_NAME, config.network.timeout)

    def unsaved(self) -> MicrosoftSignIn:
        """The same app registration, with token caches kept in memory: for a mailbox tried before it is saved."""
        return MicrosoftSignIn(self.settings, KeptInMemory(self.secrets), None, self.timeout)

    @property
    def app_only(self) -> bool:
        return self.settings.auth == "app"

    @property
    def authority(self) -> str:
        return f"{self.settings.authority}/{self.settings.tenant_id}"

    def _check_settings(self) -> None:
        if not self.settings.tenant_id or not self.settings.client_id:
            raise ConfigError(
                "Office 365 mailboxes need your own app registration: set tenant_id and client_id under [o365]"
                " in the config ('hanna-sync setup-guide o365' shows how to register one)"
            )

    # -- tokens ------------------------------------------------------------------------------------

    def token(self, mailbox: Mailbox, resource: Resource, fresh: bool = False) -> Token:
        """A token for `resource` on this mailbox; `fresh` renews even a valid cached one (the server said it expired).

        Raises ReauthRequired when only a new sign-in helps, AuthError when the identity platform refuses,
        ConnectError when it cannot be reached.
        """
        self._check_settings()
        with self._talking():
            if self.app_only:
                return self._app_token(resource, fresh)
            return self._user_token(mailbox, resource, fresh)

    def token_source(self, mailbox: Mailbox, resource: Resource) -> Callable[[bool], str]:
        """`fresh -> access token` for a transport that asks again when the server says its token expired."""
        return lambda fresh: self.token(mailbox, resource, fresh).value

    def graph(self, mailbox: Mailbox) -> GraphClient:
        """A Graph client for this mailbox: /me for a delegated token (verified at sign-in to be the mailbox's
        own account), /users/{login} for an app-only one."""
        from hanna_sync.remote.graph import GraphClient

        return GraphClient(self.settings.graph_url, "me" if not self.app_only else f"users/{mailbox.login_name}",
                           self.token_source(mailbox, GRAPH), self.timeout)

    def _user_token(self, mailbox: Mailbox, resource: Resource, fresh: bool) -> Token:
        login = f"'hanna-sync login {mailbox.id if mailbox.id is not None else 'ID'}'"
        sign_in_again = f"sign in again with {login}"
        with self._cache(mailbox.secret_ref) as cache:
            if not list(cache.search(cache.CredentialType.ACCOUNT)):  # known without asking the network
                raise SignInLost(f"{mailbox.email} is not signed in to Microsoft 365", f"sign in with {login}")
            app = self._public_app(cache)
            # Only the mailbox's own account: a token of another (the mailbox's address edited since the
            # sign-in) would read that other mailbox through /me.
            accounts = app.get_accounts(username=mailbox.login_name) or app.get_accounts(username=mailbox.email)
            if not accounts:
                raise SignInLost(f"the Microsoft sign-in kept for {mailbox.email} is another account's (the"
                                 " mailbox's address or username changed since)", sign_in_again)
            result = app.acquire_token_silent_with_error([resource.delegated_scope], account=accounts[0],
                                                         force_refresh=fresh)
        if result is None:  # e.g. signed in through another app registration (client_id changed since)
            raise SignInLost(f"the Microsoft sign-in of {mailbox.email} holds no refresh token for {resource.name}"
                             " (it was signed in with another client_id)", sign_in_again)
        if "access_token" in result:
            return Token(result["access_token"], resource, False, str(result.get("token_source", "cache")))
        text = _reply_text(result)
        if result.get("error") in _REAUTH_ERRORS:
            # AADSTS65001 (consent withdrawn) comes as invalid_grant too: a sign-in alone would fail again.
            fix = fix_for(text) or sign_in_again
            if "hanna-sync login" not in fix:
                fix += f"; then {sign_in_again}"
            raise SignInLost(f"the Microsoft sign-in of {mailbox.email} no longer gets tokens ({text})",
                             fix.replace("'hanna-sync login ID'", login))
        raise self._refused(result)

    def _app_token(self, resource: Resource, fresh: bool) -> Token:
        with self._cache(APP_CACHE_REF, load=not fresh) as cache:
            result = self._confidential_app(cache).acquire_token_for_client([resource.app_scope])
        if "access_token" in result:
            return Token(result["access_token"], resource, True, str(result.get("token_source", "cache")))
        raise self._refused(result)

    def _refused(self, result: dict[str, Any]) -> TokenRefused | ConnectError:
        """A refusal (the mailbox backs off: a person must act), or a moment's trouble (the next pass retries)."""
        text = _reply_text(result)
        if result.get("error") in _TRANSIENT_ERRORS or "AADSTS50196" in text:  # 50196: a client loop, throttled
            return ConnectError(f"the Microsoft identity platform is busy or failing for now ({text});"
                                " the next pass tries again")
        return TokenRefused(f"the Microsoft identity platform refused the token request ({text})", fix_for(text))

    # -- signing in ----------------------------------------------------------------------------------

    def sign_in(self, mailbox: Mailbox, show: Callable[[str], None]) -> str:
        """The device-code flow for a mailbox: show the code and URL, wait for the person, keep the tokens.

        Returns the account signed in, which must be the mailbox's own: a delegated token reads the mailbox
        of whoever signed in, so an admin signing in for a colleague would archive the admin's mail.
        """
        self._check_settings()
        if self.app_only:
            raise InputError('[o365] auth = "app": mailboxes need no sign-in of their own (client credentials);'
                             " store the client secret with 'hanna-sync login --client-secret'")
        import msal

        cache = msal.SerializableTokenCache()  # a new sign-in replaces whatever the mailbox had
        scopes = [r.delegated_scope for r in RESOURCES[mailbox.kind]]
        with self._talking():
            app = self._public_app(cache)
            flow = app.initiate_device_flow(scopes=scopes)
            if "user_code" not in flow:
                raise self._refused(flow)
            show(flow["message"])
            result = app.acquire_token_by_device_flow(flow)
        if "access_token" not in result:
            raise device_flow_failure(result, max(1, round(int(flow.get("expires_in") or 900) / 60)), mailbox)
        user = str((result.get("id_token_claims") or {}).get("preferred_username") or "")
        if user.casefold() not in {mailbox.email.casefold(), mailbox.login_name.casefold()}:
            raise AuthError(
                f"signed in as {user or 'an unknown account'}, but the mailbox is {mailbox.login_name}: sign in as"
                f" {mailbox.login_name} (if {user} is this mailbox's sign-in name, give it with --username)"
            )
        with self._lock():
            self.secrets.set(mailbox.secret_ref, cache.serialize())
        log.info("%s signed in to Microsoft 365", user)
        return user

    def store_client_secret(self, secret: str) -> None:
        """Check the app's client secret gets a token, then keep it in the secrets store (never the config)."""
        self._check_settings()
        if not secret:
            raise InputError("the client secret is empty")
        import msal

        with self._talking():
            app = self._confidential_app(msal.SerializableTokenCache(), secret)
            result = app.acquire_token_for_client([GRAPH.app_scope])
        if "access_token" not in result:
            raise self._refused(result)
        self.secrets.set(CLIENT_SECRET_REF, secret)

    # -- MSAL ---------------------------------------------------------------------------------------

    def _lock(self) -> AbstractContextManager[None]:
        if self.lock_path is None:
            return nullcontext()
        # A renewal takes one request; 4 scanner threads may queue.
        return token_lock(self.lock_path, 4 * self.timeout + 10)

    @contextmanager
    def _cache(self, ref: str, load: bool = True) -> Iterator[msal.SerializableTokenCache]:
        """MSAL's cache for `ref`, from the secrets store, saved back when MSAL changed it, all under the lock."""
        import msal

        with self._lock():
            cache = msal.SerializableTokenCache()
            stored = self.secrets.get(ref) if load else None
            if stored:
                cache.deserialize(stored)
            yield cache
            # Not when the mailbox was removed meanwhile: its refresh token must not come back.
            if cache.has_state_changed and not (stored and self.secrets.get(ref) is None):
                self.secrets.set(ref, cache.serialize())

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """The identity platform unreachable, or the authority not a usable URL: one line each."""
        import msal
        import requests

        try:
            yield
        except requests.RequestException as exc:
            raise ConnectError(f"cannot reach the Microsoft identity platform at {self.settings.authority}:"
                               f" {network_reason(exc)}") from None
        except msal.exceptions.MsalError as exc:  # e.g. HTTP 5xx from its token or openid-configuration endpoint
            said = " ".join(str(exc).split())[:200]
            raise ConnectError(f"the Microsoft identity platform at {self.settings.authority} failed ({said});"
                               " the next pass tries again") from None
        except ValueError as exc:  # MSAL: an authority that is not https://host/tenant, a bad openid configuration
            if str(exc).startswith("Unable to get authority configuration"):  # its openid-configuration is not there
                raise ConfigError(f"the identity platform at {self.settings.authority} does not know the tenant"
                                  f" '{self.settings.tenant_id}': check [o365] tenant_id (the Directory (tenant) ID"
                                  " on the app registration's Overview page)") from None
            if "authority" in str(exc).lower():
                raise ConfigError(f"[o365] authority {self.authority} is not usable: {exc}") from None
            # Anything else (a reply that is not JSON: a proxy's error page) is the network's doing, not the config's.
            raise ConnectError(f"the Microsoft identity platform at {self.settings.authority} gave an answer that"
                               f" is not a token reply ({' '.join(str(exc).split())[:120]}),"
                               " perhaps from a proxy in between;"
                               " the next pass tries again") from None

    def _public_app(self, cache: msal.SerializableTokenCache) -> msal.PublicClientApplication:
        import msal

        # instance_discovery=False: the authority is taken as given (its openid-configuration is read
        # directly), so another cloud or a test's fake identity platform works the same way.
        return msal.PublicClientApplication(self.settings.client_id, authority=self.authority, token_cache=cache,
                                            instance_discovery=False, timeout=self.timeout,
                                            http_cache=self._http_cache)

    def _confidential_app(self, cache: msal.SerializableTokenCache,
                          secret: str | None = None) -> msal.ConfidentialClientApplication:
        import msal

        credential: str | dict[str, str]
        if secret is not None:
            credential = secret
        elif self.settings.certificate_file:
            try:
                pem = Path(self.settings.certificate_file).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read [o365] certificate_file {self.settings.certificate_file}:"
                                  f" {exc.strerror or exc}") from None
            assert self.settings.certificate_thumbprint is not None  # the config checks they come together
            _check_private_key(pem, self.settings.certificate_file)
            credential = {"private_key": pem, "thumbprint": self.settings.certificate_thumbprint}
        else:
            stored = self.secrets.get(CLIENT_SECRET_REF)
            if stored is None:
                raise SecretsError('[o365] auth = "app" needs a client secret in the secrets store (store it'
                                   " with 'hanna-sync login --client-secret') or certificate_file and"
                                   " certificate_thumbprint")
            credential = stored
        return msal.ConfidentialClientApplication(self.settings.client_id, client_credential=credential,
                                                  authority=self.authority, token_cache=cache,
                                                  instance_discovery=False, timeout=self.timeout,
                                                  http_cache=self._http_cache)


def device_flow_failure(result: dict[str, Any], minutes: int, mailbox: Mailbox) -> AuthError:
    """Why a device-code sign-in ended without tokens, in words: nobody signed in in time (msal then
    returns the last poll's "authorization_pending"), the person declined, or a refusal to look up."""
    login = f"'hanna-sync login {mailbox.id if mailbox.id is not None else 'ID'}'"
    error = result.get("error")
    if error in _NOBODY_SIGNED_IN:
        return AuthError(f"nobody signed in within {minutes} minute{'s' if minutes != 1 else ''}, so the code"
                         f" expired; run {login} again"
                         " and enter the code it shows at the address it shows")
    if error == "authorization_declined":
        return AuthError(f"the sign-in was declined in the browser; run {login} again and accept")
    text = _reply_text(result)
    return TokenRefused(f"the Microsoft identity platform refused the token request ({text})", fix_for(text))


def _check_private_key(pem: str, path: Path) -> None:
    """The certificate file must hold an unencrypted PEM private key (MSAL signs its assertion with it):
    said here in one line rather than as a parsing error from deep inside a pass."""
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        why = "it is encrypted: export it without a passphrase" if "encrypted" in str(exc) else "none was found"
        raise ConfigError(f"[o365] certificate_file {path} must hold the certificate's PEM private key"
                          f" ({why})") from None
