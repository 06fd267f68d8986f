"""Local fakes of Microsoft's services, over HTTPS (or TLS) on 127.0.0.1 with a generated CA.

The real msal and requests run against them, so what the tests exercise is the code that runs against
Microsoft, and nothing leaves loopback:

* `FakeIdentity`: the Microsoft identity platform for one tenant: openid-configuration, the device-code
  endpoint, and the token endpoint with the device_code (authorization_pending first), refresh_token and
  client_credentials grants; unsigned JWT access tokens and an id_token with client_info, as MSAL needs;
  and its refusals: AADSTS700082/70008 (refresh token expired or revoked), 65001 (consent missing),
  7000112 (app disabled), 700016, 7000215, 700027.
* `FakeGraph`: Microsoft Graph's mail endpoints: mailFolders with childFolders, per-folder delta queries
  with paging, @removed entries and expiring delta tokens (410), throttling (429 or 503, with Retry-After
  in seconds, as a date, or none), `$value`.
* `FakeOutlookImap`: Exchange Online's IMAP front door: AUTHENTICATE XOAUTH2 checked byte for byte, then
  the session relayed to the sandbox Dovecot (which holds the mail); can end a session with
  `* BYE Session invalidated - AccessTokenExpired`.
* `FakeOutlookSmtp`: SMTP with STARTTLS and AUTH XOAUTH2 (aiosmtpd), checking the SASL string.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import re
import secrets
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.utils import getaddresses, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from hanna_sync.demo.sandbox import CertificateAuthority, SandboxUser
from tests.helpers import serve_each_connection


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT: MSAL and hanna-sync only decode tokens, never verify them."""
    return ".".join([b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                     b64url(json.dumps(claims).encode()), "fakesignature"])


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# -- HTTPS plumbing --------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)


class HttpsHandler(BaseHTTPRequestHandler):
    """Hands each request to its server's `owner.handle` (an `HttpsFake`); the Gmail fake adds methods."""

    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        reply = self.server.owner.handle(method, parts.path, parse_qs(parts.query), self.headers, body)  # type: ignore[attr-defined]
        payload = json.dumps(reply.body).encode() if isinstance(reply.body, dict) else reply.body
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class HttpsFake:
    """A threaded HTTPS server on 127.0.0.1 with a certificate from `ca`; subclasses implement `handle`."""

    def __init__(self, ca: CertificateAuthority) -> None:
        cert, key = ca.issue(["127.0.0.1", "localhost"])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), HttpsHandler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.base = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        raise NotImplementedError


# -- the identity platform ------------------------------------------------------------------------------

RESERVED_SCOPES = {"openid", "profile", "offline_access"}


def audience_of(scope: str) -> str:
    return scope.rsplit("/", 1)[0] if scope.startswith("https://") else "https://graph.microsoft.com"


class FakeIdentity(HttpsFake):
    """login.microsoftonline.com for one tenant and one app registration."""

    def __init__(self, ca: CertificateAuthority, tenant: str = "contoso-tenant", client_id: str = "hanna-app-id") -> None:
        super().__init__(ca)
        self.tenant, self.client_id = tenant, client_id
        self.approve_as: str | None = None  # who signs in when a device code is shown
        self.pending_polls = 1  # authorization_pending answers before the sign-in "happens"
        self.lifetime = 3600  # access tokens' expires_in; under 300 s MSAL renews on every request
        self.grants: list[str] = []  # grant_type of every token request, in order
        self.device_codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> user
        self.revoked: dict[str, str] = {}  # users whose refresh tokens stopped working -> the AADSTS error given
        self.consent_missing = False  # user tokens refused: AADSTS65001 (nobody consented to the permissions)
        self.client_secret = "s3cret-value"
        self.certificate_thumbprint: str | None = None  # x5t an assertion must carry
        self.app_roles: dict[str, list[str]] = {
            "https://graph.microsoft.com": ["Mail.Read"],
            "https://outlook.office365.com": ["IMAP.AccessAsApp", "SMTP.SendAsApp"],
        }
        self.granted: set[str] | None = None  # delegated permissions consented (None: whatever is asked)
        self.disabled = False  # AADSTS7000112
        self.issued: dict[str, dict[str, Any]] = {}  # access token -> claims
        self._lock = threading.Lock()

    @property
    def authority(self) -> str:
        return self.base  # hanna-sync appends /{tenant}

    def revoke(self, user: str, code: str = "700082", access_tokens: bool = False) -> None:
        """The user's refresh tokens stop working (`code`: 700082 or 70008); with `access_tokens`, the
        resources refuse the ones issued already too, as Exchange does at once (continuous access evaluation)."""
        self.revoked[user.casefold()] = code
        if access_tokens:
            for token in [t for t, c in self.issued.items() if c.get("upn", "").casefold() == user.casefold()]:
                del self.issued[token]

    def validate(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this fake issued that has not expired; None otherwise."""
        claims = self.issued.get(token)
        return claims if claims and claims["exp"] > time.time() else None

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        prefix = f"/{self.tenant}"
        if method == "GET" and path == f"{prefix}/v2.0/.well-known/openid-configuration":
            root = f"{self.base}{prefix}"
            return Reply(200, {
                "issuer": f"{root}/v2.0", "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{root}/discovery/v2.0/keys", "response_types_supported": ["code", "id_token"],
                "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
            })
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if method == "POST" and path == f"{prefix}/oauth2/v2.0/devicecode":
            return self._device_code(form)
        if method == "POST" and path == f"{prefix}/oauth2/v2.0/token":
            with self._lock:
                self.grants.append(form.get("grant_type", ""))
            return self._token(form)
        return Reply(404, {"error": "not_found"})

    def _error(self, status: int, error: str, description: str) -> Reply:
        return Reply(status, {"error": error, "error_description": f"{description}\r\nTrace ID: 0000 Correlation ID: 1111",
                              "error_codes": [int(re.search(r"AADSTS(\d+)", description).group(1))]
                              if "AADSTS" in description else []})

    def _device_code(self, form: dict[str, str]) -> Reply:
        if form.get("client_id") != self.client_id:
            return self._error(400, "unauthorized_client", f"AADSTS700016: Application with identifier"
                               f" '{form.get('client_id')}' was not found in the directory.")
        code = secrets.token_urlsafe(16)
        user_code = f"H{secrets.randbelow(10**7):07d}"
        self.device_codes[code] = {"scope": form.get("scope", ""), "polls": 0}
        return Reply(200, {
            "device_code": code, "user_code": user_code, "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900, "interval": 0,
            "message": f"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter"
                       f" the code {user_code} to authenticate.",
        })

    def _token(self, form: dict[str, str]) -> Reply:
        if self.disabled:
            return self._error(401, "unauthorized_client", "AADSTS7000112: Application 'hanna-app-id'(hanna-sync)"
                               " is disabled.")
        if form.get("client_id") != self.client_id:
            return self._error(400, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
        grant = form.get("grant_type")
        scopes = [s for s in form.get("scope", "").split() if s not in RESERVED_SCOPES]
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            flow = self.device_codes.get(form.get("device_code", ""))
            if flow is None:
                return self._error(400, "expired_token", "AADSTS70020: The provided value for device_code is expired.")
            flow["polls"] += 1
            if flow["polls"] <= self.pending_polls or self.approve_as is None:
                return self._error(400, "authorization_pending", "AADSTS70016: OAuth 2.0 device flow error."
                                   " Authorization is pending. Continue polling.")
            del self.device_codes[form["device_code"]]
            if self.consent_missing:
                return self._consent_missing()
            return self._user_tokens(self.approve_as, [s for s in flow["scope"].split() if s not in RESERVED_SCOPES])
        if grant == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            code = "700082" if user is None else self.revoked.get(user.casefold())
            if code == "70008":
                return self._error(400, "invalid_grant", "AADSTS70008: The provided authorization code or refresh"
                                   " token has expired due to inactivity. Send a new interactive authorization request"
                                   " for this user and resource.")
            if code is not None:
                return self._error(400, "invalid_grant", "AADSTS700082: The refresh token has expired due to"
                                   " inactivity. The token was issued on 2026-08-01 and was inactive for 90.00:00:00.")
            if self.consent_missing:
                return self._consent_missing()
            del self.refresh_tokens[form["refresh_token"]]  # rotated: the new one replaces it
            return self._user_tokens(user, scopes)
        if grant == "client_credentials":
            if "client_assertion" in form:
                header = json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[0] + "=="))
                if self.certificate_thumbprint is None or header.get("x5t") != self.certificate_thumbprint:
                    return self._error(401, "invalid_client", "AADSTS700027: The certificate with identifier used"
                                       " to sign the client assertion is not registered on application.")
            elif form.get("client_secret") != self.client_secret:
                return self._error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure"
                                   " the secret being sent in the request is the client secret value.")
            audience = audience_of(scopes[0])
            token = self._issue({"aud": audience, "roles": self.app_roles.get(audience, []), "appid": self.client_id,
                                 "tid": self.tenant, "idtyp": "app"})
            return Reply(200, {"token_type": "Bearer", "expires_in": self.lifetime, "access_token": token})
        return self._error(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type")

    def _consent_missing(self) -> Reply:
        return self._error(400, "invalid_grant", f"AADSTS65001: The user or administrator has not consented to use"
                           f" the application with ID '{self.client_id}' named 'hanna-sync'. Send an interactive"
                           " authorization request for this user and resource.")

    def _issue(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": f"https://sts.windows.net/{self.tenant}/", "iat": now, "nbf": now, "exp": now + self.lifetime,
                  "jti": secrets.token_hex(8), **claims}
        token = jwt(claims)
        self.issued[token] = claims
        return token

    def _user_tokens(self, user: str, scopes: list[str]) -> Reply:
        audience = audience_of(scopes[0])
        permissions = [s.rsplit("/", 1)[-1] for s in scopes]
        if self.granted is not None:
            permissions = [p for p in permissions if p in self.granted]
        oid = hashlib.sha1(user.encode()).hexdigest()[:12]
        access = self._issue({"aud": audience, "scp": " ".join(permissions), "upn": user, "unique_name": user,
                              "oid": oid, "tid": self.tenant, "appid": self.client_id})
        refresh = f"rt-{secrets.token_urlsafe(24)}"
        self.refresh_tokens[refresh] = user
        now = int(time.time())
        id_token = jwt({"aud": self.client_id, "iss": f"{self.base}/{self.tenant}/v2.0", "iat": now, "nbf": now,
                        "exp": now + 3600, "oid": oid, "sub": oid, "tid": self.tenant, "preferred_username": user,
                        "name": user.split("@")[0], "ver": "2.0"})
        return Reply(200, {
            "token_type": "Bearer", "scope": " ".join(scopes), "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime, "access_token": access, "refresh_token": refresh, "id_token": id_token,
            "client_info": b64url(json.dumps({"uid": oid, "utid": self.tenant}).encode()),
        })


# -- Microsoft Graph ---------------------------------------------------------------------------------

GRAPH_AUDIENCE = "https://graph.microsoft.com"
ENVELOPE = ["from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "subject", "receivedDateTime",
            "internetMessageId", "conversationId"]


@dataclass
class Message:
    id: str
    raw: bytes
    envelope: dict[str, Any]


@dataclass
class Folder:
    id: str
    name: str
    parent: Folder | None
    well_known: str | None = None
    messages: dict[str, Message] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)  # (sequence, message id): what changed when
    epoch: int = 0  # bumped by expire_delta(): older delta and skip tokens answer 410

    @property
    def path(self) -> str:
        return f"{self.parent.path}/{self.name}" if self.parent else self.name


def envelope_of(raw: bytes, message_id: str) -> dict[str, Any]:
    """What Graph would say of a letter: its addresses, subject, Message-ID and date, from the MIME itself."""
    msg = message_from_bytes(raw, policy=policy.compat32)

    def people(name: str) -> list[dict[str, Any]]:
        return [{"emailAddress": {"name": n, "address": a}} for n, a in getaddresses(msg.get_all(name, []))]

    date = msg.get("Date")
    sender = people("From")
    return {
        "id": message_id, "subject": str(msg.get("Subject", "")), "from": sender[0] if sender else None,
        "toRecipients": people("To"), "ccRecipients": people("Cc"), "bccRecipients": people("Bcc"),
        "replyTo": people("Reply-To"), "internetMessageId": msg.get("Message-ID"),
        "receivedDateTime": parsedate_to_datetime(date).isoformat() if date else None,
        # Outlook groups a conversation by its topic: the subject without Re:/Fw: prefixes.
        "conversationId": f"conv-{hashlib.sha1(_topic(str(msg.get('Subject', ''))).encode()).hexdigest()[:8]}",
    }


def _topic(subject: str) -> str:
    return re.sub(r"^(?:\s*(?:re|fw|fwd|aw|sv)\s*:\s*)+", "", subject, flags=re.IGNORECASE)


class FakeGraph(HttpsFake):
    """graph.microsoft.com/v1.0 for the mailboxes added with `mailbox()`; tokens checked with `identity`."""

    def __init__(self, ca: CertificateAuthority, identity: FakeIdentity) -> None:
        super().__init__(ca)
        self.identity = identity
        self.url = f"{self.base}/v1.0"
        self.mailboxes: dict[str, dict[str, Folder]] = {}  # user -> folder id -> folder
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self.requests: list[tuple[float, str, str]] = []  # (time, path, Prefer header)
        self.selects: list[str] = []
        self.value_requests: list[str] = []  # message ids whose $value was fetched
        self.envelope_requests: list[str] = []  # message ids whose envelope was fetched alone
        self.throttle_next = 0  # this many coming requests are answered `throttle_status` (429 or 503)
        self.throttle_status = 429
        self.retry_after: str | None = "1"  # the Retry-After of a throttled answer: seconds, an HTTP date, or none
        self.outage_after_pages: int | None = None  # after this many more delta pages, every request is throttled
        self.audiences: list[str | None] = []  # the audience of every bearer token presented (None: not ours)
        self.value_delay = 0.0  # seconds a $value takes (to see concurrency)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    # -- setting up mail -------------------------------------------------------------------------

    def mailbox(self, user: str, folders: tuple[str, ...] = ("Inbox", "Sent Items")) -> None:
        boxes: dict[str, Folder] = {}
        self.mailboxes[user.casefold()] = boxes
        for path in folders:
            self.folder(user, path)

    def folder(self, user: str, path: str) -> Folder:
        boxes = self.mailboxes[user.casefold()]
        parent = None
        for name in path.split("/"):
            found = next((f for f in boxes.values() if f.name == name and f.parent is parent), None)
            if found is None:
                well_known = {"Inbox": "inbox", "Sent Items": "sentitems"}.get(name) if parent is None else None
                found = Folder(f"AAMkFolder{next(self._ids)}==", name, parent, well_known)
                boxes[found.id] = found
            parent = found
        assert parent is not None
        return parent

    def deliver(self, user: str, path: str, raw: bytes) -> Message:
        folder = self.folder(user, path)
        message_id = f"AAMkImmutable{next(self._ids)}-{secrets.token_hex(4)}="
        message = Message(message_id, raw, envelope_of(raw, message_id))
        with self._lock:
            folder.messages[message_id] = message
            folder.events.append((next(self._seq), message_id))
        return message

    def remove(self, user: str, path: str, message_id: str) -> None:
        folder = self.folder(user, path)
        with self._lock:
            del folder.messages[message_id]
            folder.events.append((next(self._seq), message_id))

    def touch(self, user: str, path: str, message_id: str) -> None:
        """A change Graph reports again in the next delta round (read, flagged)."""
        folder = self.folder(user, path)
        with self._lock:
            folder.events.append((next(self._seq), message_id))

    def expire_delta(self, user: str, path: str) -> None:
        self.folder(user, path).epoch += 1

    # -- serving --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        with self._lock:
            self.requests.append((time.monotonic(), path, headers.get("Prefer", "")))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            throttled = self.throttle_next > 0
            self.throttle_next -= int(throttled)
            if self.outage_after_pages is not None:
                throttled = throttled or self.outage_after_pages <= 0
                self.outage_after_pages -= int(path.endswith("/messages/delta"))
        try:
            if throttled:
                code, message = (("ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
                                 if self.throttle_status == 429 else ("ServiceUnavailable", "Service unavailable."))
                return Reply(self.throttle_status, {"error": {"code": code, "message": message}},
                             {"Retry-After": self.retry_after} if self.retry_after is not None else {})
            return self._route(path, query, headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _route(self, path: str, query: dict[str, list[str]], headers: Any) -> Reply:
        token = str(headers.get("Authorization", "")).removeprefix("Bearer ")
        with self._lock:
            self.audiences.append(self.identity.issued.get(token, {}).get("aud"))
        claims = self.identity.validate(token)
        if claims is None:
            return Reply(401, {"error": {"code": "InvalidAuthenticationToken",
                                         "message": "Access token has expired or is not yet valid."}})
        if claims["aud"] != GRAPH_AUDIENCE:
            return Reply(401, {"error": {"code": "InvalidAuthenticationToken",
                                         "message": "Access token validation failure. Invalid audience."}})
        match = re.fullmatch(r"/v1\.0/(me|users/([^/]+))(/.*)", path)
        if not match:
            return Reply(404, {"error": {"code": "ResourceNotFound", "message": "Resource not found"}})
        if match.group(1) == "me":
            if "Mail.Read" not in claims.get("scp", "").split():
                return Reply(403, {"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}})
            user = claims["upn"]
        else:
            if "Mail.Read" not in claims.get("roles", []):
                return Reply(403, {"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}})
            user = unquote(match.group(2))
        boxes = self.mailboxes.get(user.casefold())
        if boxes is None:
            return Reply(404, {"error": {"code": "MailboxNotEnabledForRESTAPI", "message": "The mailbox is"
                                         " either inactive, soft-deleted, or is hosted on-premise."}})
        rest = match.group(3)
        base = f"{self.url}/{match.group(1)}"
        if rest == "/mailFolders":
            return self._folders(base, [f for f in boxes.values() if f.parent is None], query, "/mailFolders")
        if m := re.fullmatch(r"/mailFolders/([^/]+)/childFolders", rest):
            parent = boxes.get(unquote(m.group(1)))
            children = [f for f in boxes.values() if f.parent is parent] if parent else []
            return self._folders(base, children, query, rest)
        if m := re.fullmatch(r"/mailFolders/([^/]+)", rest):
            folder = next((f for f in boxes.values() if unquote(m.group(1)) in (f.id, f.well_known)), None)
            return Reply(200, self._folder_json(folder, boxes)) if folder else Reply(404, {"error": {
                "code": "ErrorItemNotFound", "message": "The specified object was not found in the store."}})
        if m := re.fullmatch(r"/mailFolders/([^/]+)/messages/delta", rest):
            folder = boxes.get(unquote(m.group(1)))
            if folder is None:
                return Reply(404, {"error": {"code": "ErrorItemNotFound", "message": "not found"}})
            return self._delta(base, folder, query, str(headers.get("Prefer", "")))
        if m := re.fullmatch(r"/messages/([^/$]+)", rest):  # one message's envelope ($select)
            message_id = unquote(m.group(1))
            for folder in boxes.values():
                if message_id in folder.messages:
                    with self._lock:
                        self.envelope_requests.append(message_id)
                    fields = query.get("$select", [""])[0].split(",")
                    envelope = envelope_of(folder.messages[message_id].raw, message_id)
                    return Reply(200, {k: v for k, v in envelope.items() if k == "id" or k in fields})
            return Reply(404, {"error": {"code": "ErrorItemNotFound", "message": "The specified object was not"
                                         " found in the store."}})
        if m := re.fullmatch(r"/messages/([^/]+)/\$value", rest):
            message_id = unquote(m.group(1))
            for folder in boxes.values():
                if message_id in folder.messages:
                    with self._lock:
                        self.value_requests.append(message_id)
                    time.sleep(self.value_delay)
                    return Reply(200, folder.messages[message_id].raw, {"Content-Type": "message/rfc822"})
            return Reply(404, {"error": {"code": "ErrorItemNotFound", "message": "The specified object was not"
                                         " found in the store."}})
        return Reply(404, {"error": {"code": "ResourceNotFound", "message": "Resource not found"}})

    def _folder_json(self, folder: Folder, boxes: dict[str, Folder]) -> dict[str, Any]:
        return {"id": folder.id, "displayName": folder.name, "parentFolderId": folder.parent.id if folder.parent else "root",
                "childFolderCount": sum(1 for f in boxes.values() if f.parent is folder),
                "unreadItemCount": 0, "totalItemCount": len(folder.messages), "isHidden": False}

    def _folders(self, base: str, folders: list[Folder], query: dict[str, list[str]], rest: str) -> Reply:
        boxes = {f.id: f for box in self.mailboxes.values() for f in box.values()}
        top = int(query.get("$top", ["10"])[0])
        skip = int(query.get("$skip", ["0"])[0])
        page = folders[skip : skip + top]
        body: dict[str, Any] = {"value": [self._folder_json(f, boxes) for f in page]}
        if skip + top < len(folders):
            body["@odata.nextLink"] = f"{base}{rest}?$top={top}&$skip={skip + top}"
        return Reply(200, body)

    def _delta(self, base: str, folder: Folder, query: dict[str, list[str]], prefer: str) -> Reply:
        size_match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = int(size_match.group(1)) if size_match else 10
        url = f"{base}/mailFolders/{folder.id}/messages/delta"
        with self._lock:
            latest = folder.events[-1][0] if folder.events else 0
        if "$deltatoken" in query or "$skiptoken" in query:
            token = (query.get("$deltatoken") or query["$skiptoken"])[0]
            state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if state["epoch"] != folder.epoch:
                return Reply(410, {"error": {"code": "syncStateNotFound", "message": "The sync state generation"
                                             " is not found."}})
            if "upto" not in state:  # a delta token: a new round, from where the last one ended
                state = {**state, "upto": latest, "offset": 0}
        else:
            self.selects.append(query.get("$select", [""])[0])
            state = {"since": 0, "upto": latest, "offset": 0, "epoch": folder.epoch, "select": self.selects[-1]}
        select = state["select"]
        changed: dict[str, int] = {}
        for seq, message_id in folder.events:
            if state["since"] < seq <= state["upto"]:
                changed[message_id] = seq
        items = []
        for message_id, _ in sorted(changed.items(), key=lambda kv: kv[1]):
            message = folder.messages.get(message_id)
            if message is None:
                if state["since"]:
                    items.append({"@odata.type": "#microsoft.graph.message", "id": message_id,
                                  "@removed": {"reason": "deleted"}})
            else:
                fields = select.split(",") if select else ENVELOPE
                items.append({"@odata.type": "#microsoft.graph.message", "@odata.etag": 'W/"x"', "id": message_id,
                              **{k: v for k, v in message.envelope.items() if k in fields}})
        page = items[state["offset"] : state["offset"] + size]
        body: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#Collection(message)", "value": page}
        if state["offset"] + size < len(items):
            token = b64url(json.dumps({**state, "offset": state["offset"] + size}).encode())
            body["@odata.nextLink"] = f"{url}?$skiptoken={token}"
        else:
            token = b64url(json.dumps({"since": state["upto"], "epoch": folder.epoch, "select": select}).encode())
            body["@odata.deltaLink"] = f"{url}?$deltatoken={token}"
        return Reply(200, body)


# -- Exchange Online IMAP and SMTP ----------------------------------------------------------------------

OUTLOOK_AUDIENCES = {"https://outlook.office.com", "https://outlook.office365.com"}
XOAUTH2 = re.compile(rb"user=([^\x01]+)\x01auth=Bearer ([^\x01]+)\x01\x01")


def token_for(identity: FakeIdentity, sasl: bytes, delegated: str, app_role: str) -> tuple[str, bool] | None:
    """(user, app-only) a XOAUTH2 string signs in, if its token is valid for that user and this service."""
    match = XOAUTH2.fullmatch(sasl)
    if not match:
        return None
    user, token = match.group(1).decode(), match.group(2).decode()
    claims = identity.validate(token)
    if claims is None or claims["aud"] not in OUTLOOK_AUDIENCES:
        return None
    if delegated in claims.get("scp", "").split() and claims.get("upn", "").casefold() == user.casefold():
        return user, False
    if app_role in claims.get("roles", []):
        return user, True
    return None


class FakeOutlookImap:
    """outlook.office365.com:993 as far as XOAUTH2 goes; after the login, the sandbox Dovecot speaks."""

    CAPABILITY = "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"

    def __init__(self, ca: CertificateAuthority, identity: FakeIdentity) -> None:
        cert, key = ca.issue(["127.0.0.1", "localhost"])
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.identity = identity
        self.accounts: dict[str, SandboxUser] = {}  # Office 365 user -> the Dovecot account with the mail
        self.app_mailboxes: set[str] = set()  # mailboxes the app's service principal may open (app-only)
        self.imap_disabled: set[str] = set()  # Set-CASMailbox -ImapEnabled $false
        self.sasl: list[bytes] = []  # every XOAUTH2 string received, decoded
        self.logins = 0
        self.expire_after: int | None = None  # end the next session after this many commands
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        serve_each_connection(self.sock, self._session)

    def close(self) -> None:
        self.sock.close()

    def _session(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        reader = tls.makefile("rb", buffering=0)  # unbuffered: the relay goes on reading `tls` itself
        try:
            tls.sendall(b"* OK The Microsoft Exchange IMAP4 service is ready. [RkFLRTpFWENI]\r\n")
            while True:
                line = reader.readline()
                if not line:
                    return
                tag, _, rest = line.decode().strip().partition(" ")
                command, _, args = rest.partition(" ")
                command = command.upper()
                if command == "CAPABILITY":
                    tls.sendall(f"{self.CAPABILITY}\r\n{tag} OK CAPABILITY completed.\r\n".encode())
                elif command == "LOGOUT":
                    tls.sendall(f"* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n{tag} OK LOGOUT completed.\r\n".encode())
                    return
                elif command == "LOGIN":
                    tls.sendall(f"{tag} NO LOGIN failed.\r\n".encode())
                elif command == "AUTHENTICATE" and args.split(" ")[0].upper() == "XOAUTH2":
                    initial = args.split(" ")[1] if " " in args else None
                    if initial is None:
                        tls.sendall(b"+ \r\n")
                        initial = reader.readline().decode().strip()
                    backend = self._authenticate(base64.b64decode(initial))
                    if backend is None:
                        tls.sendall(f"{tag} NO AUTHENTICATE failed.\r\n".encode())
                        continue
                    tls.sendall(f"{tag} OK AUTHENTICATE completed.\r\n".encode())
                    if backend == "not connected":  # app-only, without New-ServicePrincipal / Add-MailboxPermission
                        while line := reader.readline():
                            tag = line.decode().split(" ")[0]
                            tls.sendall(f"{tag} BAD User is authenticated but not connected.\r\n".encode())
                        return
                    self._relay(tls, backend)
                    return
                else:
                    tls.sendall(f"{tag} BAD Command Error. 10\r\n".encode())
        except (OSError, ValueError):
            pass
        finally:
            tls.close()

    def _authenticate(self, sasl: bytes) -> ssl.SSLSocket | str | None:
        self.sasl.append(sasl)
        signed_in = token_for(self.identity, sasl, "IMAP.AccessAsUser.All", "IMAP.AccessAsApp")
        if signed_in is None:
            return None
        user, app_only = signed_in
        if user.casefold() in self.imap_disabled or user.casefold() not in self.accounts:
            return None
        if app_only and user.casefold() not in self.app_mailboxes:
            return "not connected"
        account = self.accounts[user.casefold()]
        dc = account.dovecot
        backend = ssl.create_default_context(cafile=str(dc.ca_file)).wrap_socket(
            socket.create_connection((dc.host, dc.imaps_port), timeout=10), server_hostname=dc.host)
        backend.recv(4096)  # the greeting
        backend.sendall(f'hs1 LOGIN "{account.login}" "{account.password}"\r\n'.encode())
        answer = b""
        while b"hs1 " not in answer:
            answer += backend.recv(4096)
        assert b"hs1 OK" in answer, answer
        self.logins += 1
        return backend

    def _relay(self, tls: ssl.SSLSocket, backend: ssl.SSLSocket) -> None:
        """Client and Dovecot, both ways, in this one thread: a TLS connection read in one thread while
        another writes it can stall (OpenSSL's state is shared), which made passes hang now and then.
        Client lines are counted for `expire_after`; literals pass through uncounted."""
        waiting = b""  # client bytes not forwarded yet: the start of a line
        literal = 0  # bytes of a client literal still to pass through
        try:
            while True:
                ready = [sock for sock in (tls, backend) if sock.pending()]
                if not ready:
                    ready = select.select([tls, backend], [], [], 60)[0]
                    if not ready:
                        return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is backend:
                        tls.sendall(data)
                        continue
                    waiting += data
                    while waiting:
                        if literal:
                            chunk, waiting = waiting[:literal], waiting[literal:]
                            literal -= len(chunk)
                            backend.sendall(chunk)
                            continue
                        line, newline, rest = waiting.partition(b"\r\n")
                        if not newline:
                            break
                        waiting = rest
                        if self.expire_after is not None:
                            if self.expire_after <= 0:
                                self.expire_after = None
                                tls.sendall(b"* BYE Session invalidated - AccessTokenExpired\r\n")
                                return
                            self.expire_after -= 1
                        backend.sendall(line + newline)
                        if found := re.search(rb"\{(\d+)\+?\}$", line):
                            literal = int(found.group(1))
        except OSError:
            pass
        finally:
            backend.close()


class _SmtpHandler:
    def __init__(self, owner: FakeOutlookSmtp) -> None:
        self.owner = owner

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:  # aiosmtpd's naming
        owner = self.owner
        initial = args[1] if len(args) > 1 else None
        if initial is None:
            answer = await server.challenge_auth("")
            sasl = base64.b64decode(answer) if isinstance(answer, bytes) else b""
        else:
            sasl = base64.b64decode(initial)
        owner.sasl.append(sasl)
        signed_in = token_for(owner.identity, sasl, "SMTP.Send", "SMTP.SendAsApp")
        if owner.refusal:
            return AuthResult(success=False, handled=False, message=owner.refusal)
        if signed_in is None or (signed_in[1] and signed_in[0].casefold() not in owner.app_mailboxes):
            return AuthResult(success=False, handled=False,
                              message="535 5.7.3 Authentication unsuccessful [AM0PR10CA0011.EURPRD10.PROD.OUTLOOK.COM]")
        return AuthResult(success=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.owner.messages.append(envelope)
        return "250 2.0.0 OK"


class _LongLineSmtp(SMTP):
    """RFC 4954 allows 12,288 octets for an AUTH line: XOAUTH2's carries a whole token."""

    line_length_limit = 12288
    command_size_limits: ClassVar[dict[str, int]] = collections.defaultdict(lambda: 12288)


class LongLineController(Controller):
    """aiosmtpd's controller serving `_LongLineSmtp`: for the fakes of every provider's XOAUTH2 SMTP."""

    def factory(self) -> SMTP:
        return _LongLineSmtp(self.handler, **self.SMTP_kwargs)


class FakeOutlookSmtp:
    """smtp.office365.com:587: STARTTLS, then AUTH XOAUTH2 only (basic authentication is off)."""

    def __init__(self, ca: CertificateAuthority, identity: FakeIdentity) -> None:
        cert, key = ca.issue(["127.0.0.1", "localhost"])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.identity = identity
        self.app_mailboxes: set[str] = set()
        self.sasl: list[bytes] = []
        self.messages: list[Any] = []
        self.refusal: str | None = None  # e.g. 535 5.7.139 ... SmtpClientAuthentication is disabled
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = LongLineController(_SmtpHandler(self), hostname="127.0.0.1", port=self.port,
                                             tls_context=context, auth_exclude_mechanism=["LOGIN", "PLAIN"])
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@dataclass
class Microsoft:
    """Everything at once, sharing one CA: what a test's mailbox talks to."""

    ca: CertificateAuthority
    identity: FakeIdentity
    graph: FakeGraph
    imap: FakeOutlookImap
    smtp: FakeOutlookSmtp

    @classmethod
    def start(cls, directory: Path) -> Microsoft:
        ca = CertificateAuthority(directory, name="fake Microsoft CA")
        identity = FakeIdentity(ca)
        return cls(ca, identity, FakeGraph(ca, identity), FakeOutlookImap(ca, identity), FakeOutlookSmtp(ca, identity))

    def close(self) -> None:
        for server in (self.identity, self.graph, self.imap, self.smtp):
            server.close()
