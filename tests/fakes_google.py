"""Local fakes of Google's sign-in and Gmail's IMAP and SMTP front doors, over TLS on 127.0.0.1.

The real google-auth and requests run against them, and they check what Google checks:

* `FakeGoogleOAuth`: the consent page (`/auth`: client id, loopback redirect_uri, S256 code challenge,
  scopes; answers with a redirect to the loopback listener, as the browser is sent after consent) and the
  token endpoint (`/token`) with three grants: the JWT bearer grant of a service account (the assertion's
  RS256 signature against the account's public key, `iss`, `sub`, `aud` = Google's token endpoint, `scope`, `iat`/`exp`,
  and domain-wide delegation of every scope asked for: else unauthorized_client), the authorization code
  (client secret, code once, redirect_uri, PKCE verifier) and the refresh token (revoked: invalid_grant).
  Access tokens are opaque (ya29...), as Google's are; `validate` says whose they are and for what.
* `FakeGmailImap`: imap.gmail.com's front door: Gimap's greeting and capabilities, AUTHENTICATE XOAUTH2 with
  the SASL string checked byte for byte, Google's error challenge and refusal for a bad token, "IMAP access is
  disabled for your domain", "Your account is not enabled for IMAP use" (the user's own Gmail settings), and a
  password LOGIN refused with Google's words; after a good login the session is relayed (`FakeOutlookImap`'s
  relay) to `upstream`, tests/fakes_gmail_imap.py's Gmail IMAP in front of the sandbox Dovecot, so that
  X-GM-EXT-1 (X-GM-MSGID, X-GM-THRID, \\All) holds after the login too.
* `FakeGmailSmtp`: smtp.gmail.com:465 (implicit TLS), AUTH XOAUTH2 only with Google's 334 error challenge
  and 535-5.7.8 refusal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from aiosmtpd.smtp import AuthResult
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hanna_sync.demo.sandbox import CertificateAuthority, SandboxUser
from tests.fakes_gmail_imap import FakeGmailImap as GmailExtensions
from tests.fakes_microsoft import FakeOutlookImap, HttpsFake, LongLineController, Reply, b64url, jwt

MAIL = "https://mail.google.com/"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google's token endpoint requires of an assertion: its own public name (google-auth puts it in
# every assertion, wherever the request is sent), so a fake at another address checks it too.
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
CLIENT_ID = "1234567890-hannasync.apps.googleusercontent.com"
# What Gmail sends as the error challenge of a refused XOAUTH2 login: base64 of
# {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"} (google/gmail-oauth2-tools#78).
ERROR_CHALLENGE = base64.b64encode(b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}').decode()
INVALID_CREDENTIALS = "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"
APP_PASSWORD_REQUIRED = "[ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)"
IMAP_DISABLED = ("[ALERT] IMAP access is disabled for your domain. Please contact your domain administrator for"
                 " questions about this feature. (Failure)")
IMAP_OFF = ("[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and enable your"
            " account for IMAP access. (Failure)")
SMTP_REFUSED = ("535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
                "535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1-20020a05600c - gsmtp")


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class ServiceAccount:
    email: str
    client_id: str  # numeric: what domain-wide delegation is granted to
    key: rsa.RSAPrivateKey
    key_id: str

    def key_json(self, token_uri: str) -> dict[str, Any]:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": "hanna-sync-test", "private_key_id": self.key_id,
                "private_key": pem, "client_email": self.email, "client_id": self.client_id,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri}


@dataclass
class Issued:
    user: str
    scopes: set[str]
    expires: float
    refresh_token: str | None = None  # the one it was issued from (user consent), revoked with it


class FakeGoogleOAuth(HttpsFake):
    """accounts.google.com/o/oauth2/v2/auth and oauth2.googleapis.com/token, for one project."""

    def __init__(self, ca: CertificateAuthority) -> None:
        super().__init__(ca)
        self.client_id, self.client_secret = CLIENT_ID, "GOCSPX-" + secrets.token_urlsafe(18)
        self.users: set[str] = set()  # the Workspace's accounts (service account subjects, consenting people)
        self.accounts: dict[str, ServiceAccount] = {}  # client_email -> service account
        self.delegations: dict[str, set[str]] = {}  # client id -> scopes (Admin console: domain-wide delegation)
        self.approve_as: str | None = None  # who consents in the browser; None: the person clicks Cancel
        self.granted_scopes: set[str] | None = None  # what the person ticks; None: everything asked
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, tuple[str, set[str]]] = {}  # token -> (user, scopes)
        self.revoked: set[str] = set()
        self.issued: dict[str, Issued] = {}
        self.grants: list[str] = []  # every grant type asked for, in order
        self.lifetime = 3599
        self.busy = False  # answer 503 (temporarily_unavailable)

    @property
    def token_uri(self) -> str:
        return f"{self.base}/token"

    @property
    def auth_uri(self) -> str:
        return f"{self.base}/auth"

    def service_account(self, directory: Path, name: str = "hanna-sync") -> tuple[ServiceAccount, Path]:
        """A service account and its key file (mode 0600), as the console's Keys -> Add key -> JSON gives it."""
        account = ServiceAccount(f"{name}@hanna-sync-test.iam.gserviceaccount.com",
                                 str(100000000000000000000 + len(self.accounts)),
                                 rsa.generate_private_key(public_exponent=65537, key_size=2048), secrets.token_hex(20))
        self.accounts[account.email] = account
        path = directory / f"{name}.json"
        path.write_text(json.dumps(account.key_json("https://oauth2.googleapis.com/token")))
        path.chmod(0o600)
        return account, path

    def revoke(self, user: str) -> None:
        """The person removed hanna-sync at myaccount.google.com/permissions: its tokens stop at once."""
        for token, (owner, _) in self.refresh_tokens.items():
            if owner.casefold() == user.casefold():
                self.revoked.add(token)

    def validate(self, token: str) -> Issued | None:
        issued = self.issued.get(token)
        if issued is None or issued.expires < time.time() or issued.refresh_token in self.revoked:
            return None
        return issued

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        if method == "GET" and path == "/auth":
            return self._consent({k: v[0] for k, v in query.items()})
        if method == "POST" and path == "/token":
            if self.busy:
                return self._error(503, "temporarily_unavailable", "The service is currently unavailable.")
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            self.grants.append(form.get("grant_type", ""))
            grant = {JWT_BEARER: self._jwt_bearer, "authorization_code": self._code,
                     "refresh_token": self._refresh}.get(form.get("grant_type", ""))
            return grant(form) if grant else self._error(400, "unsupported_grant_type", "Invalid grant_type")
        return Reply(404, {"error": "not_found"})

    def _error(self, status: int, error: str, description: str) -> Reply:
        return Reply(status, {"error": error, "error_description": description})

    def _access_token(self, user: str, scopes: set[str], refresh_token: str | None = None) -> str:
        token = "ya29." + secrets.token_urlsafe(40)
        self.issued[token] = Issued(user, scopes, time.time() + self.lifetime, refresh_token)
        return token

    # -- the consent page --------------------------------------------------------------------------

    def _consent(self, q: dict[str, str]) -> Reply:
        if q.get("client_id") != self.client_id:
            return Reply(401, b"Error 401: invalid_client\nThe OAuth client was not found.")
        redirect = q.get("redirect_uri", "")
        if not re.fullmatch(r"http://127\.0\.0\.1:\d+/", redirect):
            return Reply(400, b"Error 400: redirect_uri_mismatch")
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return Reply(400, b"Error 400: invalid_request (PKCE S256 expected)")
        if self.approve_as is None:
            return Reply(302, headers={"Location": redirect + "?" + urlencode({"error": "access_denied",
                                                                               "state": q.get("state", "")})})
        asked = set(q.get("scope", "").split())
        granted = asked if self.granted_scopes is None else asked & (self.granted_scopes | {"openid", "email"})
        code = "4/0A" + secrets.token_urlsafe(30)
        self.codes[code] = {"user": self.approve_as, "scopes": granted, "redirect_uri": redirect,
                            "challenge": q["code_challenge"]}
        return Reply(302, headers={"Location": redirect + "?" + urlencode(
            {"state": q.get("state", ""), "code": code, "scope": " ".join(sorted(granted))})})

    # -- the grants --------------------------------------------------------------------------------

    def _client_ok(self, form: dict[str, str]) -> bool:
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    def _code(self, form: dict[str, str]) -> Reply:
        if not self._client_ok(form):
            return self._error(401, "invalid_client", "Unauthorized")
        code = self.codes.pop(form.get("code", ""), None)
        if code is None:
            return self._error(400, "invalid_grant", "Malformed auth code.")
        if form.get("redirect_uri") != code["redirect_uri"]:
            return self._error(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != code["challenge"]:
            return self._error(400, "invalid_grant", "Invalid code verifier.")
        refresh = "1//0g" + secrets.token_urlsafe(40)
        self.refresh_tokens[refresh] = (code["user"], code["scopes"])
        return Reply(200, {
            "access_token": self._access_token(code["user"], code["scopes"], refresh), "expires_in": self.lifetime,
            "refresh_token": refresh, "scope": " ".join(sorted(code["scopes"])), "token_type": "Bearer",
            "id_token": jwt({"iss": "https://accounts.google.com", "aud": self.client_id, "email": code["user"],
                             "email_verified": True, "sub": str(abs(hash(code["user"])))}),
        })

    def _refresh(self, form: dict[str, str]) -> Reply:
        if not self._client_ok(form):
            return self._error(401, "invalid_client", "Unauthorized")
        token = form.get("refresh_token", "")
        if token not in self.refresh_tokens or token in self.revoked:
            return self._error(400, "invalid_grant", "Token has been expired or revoked.")
        user, scopes = self.refresh_tokens[token]
        asked = set(form.get("scope", "").split()) or scopes
        if not asked <= scopes:
            return self._error(400, "invalid_scope", "Bad Request")
        return Reply(200, {"access_token": self._access_token(user, asked, token), "expires_in": self.lifetime,
                           "scope": " ".join(sorted(asked)), "token_type": "Bearer"})

    def _jwt_bearer(self, form: dict[str, str]) -> Reply:
        """What Google checks of a service account's assertion, in its words where they are known."""
        parts = form.get("assertion", "").split(".")
        if len(parts) != 3:
            return self._error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token.")
        header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
        account = self.accounts.get(claims.get("iss", ""))
        if header.get("alg") != "RS256" or account is None:
            return self._error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            account.key.public_key().verify(b64url_decode(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                                            padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self._error(400, "invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if claims.get("aud") != GOOGLE_TOKEN_ENDPOINT:
            return self._error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        if not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0) and claims["exp"] - claims["iat"] <= 3600):
            return self._error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)"
                                                     " and in a reasonable timeframe. Check your iat and exp values"
                                                     " in the JWT claim.")
        scopes = set(str(claims.get("scope", "")).split())
        subject = claims.get("sub")
        if not scopes:
            return self._error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        if subject is None or not scopes <= self.delegations.get(account.client_id, set()):
            return self._error(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using"
                                                           " this method, or client not authorized for any of the"
                                                           " scopes requested.")
        if subject.casefold() not in {u.casefold() for u in self.users}:
            return self._error(400, "invalid_grant", "Invalid email or User ID")
        return Reply(200, {"access_token": self._access_token(subject, scopes), "expires_in": self.lifetime,
                           "token_type": "Bearer"})


# -- Gmail's IMAP and SMTP ---------------------------------------------------------------------------

XOAUTH2 = re.compile(rb"user=([^\x01]+)\x01auth=Bearer ([^\x01]+)\x01\x01")


def signed_in(oauth: FakeGoogleOAuth, sasl: bytes) -> str | None:
    """The user a XOAUTH2 string signs in, if its token is Google's, live, for Gmail, and that user's."""
    match = XOAUTH2.fullmatch(sasl)
    if not match:
        return None
    user, token = match.group(1).decode(), match.group(2).decode()
    issued = oauth.validate(token)
    if issued is None or MAIL not in issued.scopes or issued.user.casefold() != user.casefold():
        return None
    return user


class FakeGmailImap(FakeOutlookImap):
    """imap.gmail.com:993 as far as the login goes; after it, the sandbox Dovecot speaks."""

    CAPABILITY = ("* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY SASL-IR"
                  " AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER")

    def __init__(self, ca: CertificateAuthority, oauth: FakeGoogleOAuth) -> None:
        super().__init__(ca, identity=None)  # type: ignore[arg-type]  # Google's tokens are checked by `oauth`
        self.oauth = oauth
        self.login_refusal = INVALID_CREDENTIALS  # what a password LOGIN gets (APP_PASSWORD_REQUIRED, ...)
        self.imap_off: set[str] = set()  # users with IMAP off in their own Gmail settings (the admin allows it)
        # What speaks after the login: Gmail's IMAP with X-GM-EXT-1 (tests/fakes_gmail_imap.py) in front of the
        # accounts' Dovecot, logged into with the Dovecot password; started at the first login. Its `commands`
        # are what the client sent after the login.
        self.ca = ca
        self.upstream: GmailExtensions | None = None
        self._starting = threading.Lock()

    def _session(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        reader = tls.makefile("rb", buffering=0)
        try:
            tls.sendall(b"* OK Gimap ready for requests from 127.0.0.1 x9mb123456789abc\r\n")
            while line := reader.readline():
                tag, _, rest = line.decode().strip().partition(" ")
                command, _, args = rest.partition(" ")
                command = command.upper()
                if command == "CAPABILITY":
                    tls.sendall(f"{self.CAPABILITY}\r\n{tag} OK Thats all she wrote! x9mb\r\n".encode())
                elif command == "LOGOUT":
                    tls.sendall(f"* BYE LOGOUT Requested\r\n{tag} OK 73 good day (Success) x9mb\r\n".encode())
                    return
                elif command == "LOGIN":
                    tls.sendall(f"{tag} NO {self.login_refusal}\r\n".encode())
                elif command == "AUTHENTICATE" and args.split(" ")[0].upper() == "XOAUTH2":
                    initial = args.split(" ")[1] if " " in args else None
                    if initial is None:
                        tls.sendall(b"+ \r\n")
                        initial = reader.readline().decode().strip()
                    self.sasl.append(base64.b64decode(initial))
                    user = signed_in(self.oauth, self.sasl[-1])
                    if user is None:  # the error challenge; whatever the client answers, the refusal
                        tls.sendall(f"+ {ERROR_CHALLENGE}\r\n".encode())
                        reader.readline()
                        tls.sendall(f"{tag} NO {INVALID_CREDENTIALS}\r\n".encode())
                        continue
                    if user.casefold() in self.imap_disabled or user.casefold() not in self.accounts:
                        tls.sendall(f"{tag} NO {IMAP_DISABLED}\r\n".encode())
                        continue
                    if user.casefold() in self.imap_off:
                        tls.sendall(f"{tag} NO {IMAP_OFF}\r\n".encode())
                        continue
                    backend = self._backend(self.accounts[user.casefold()])
                    tls.sendall(f"{tag} OK {user} authenticated (Success)\r\n".encode())
                    self._relay(tls, backend)
                    return
                else:
                    tls.sendall(f"{tag} BAD Unknown command x9mb\r\n".encode())
        except (OSError, ValueError):
            pass
        finally:
            tls.close()

    def _backend(self, account: SandboxUser) -> ssl.SSLSocket:
        with self._starting:
            if self.upstream is None:
                self.upstream = GmailExtensions(self.ca, account.dovecot)
        assert self.upstream.dovecot is account.dovecot, "one sandbox Dovecot behind the front door"
        backend = ssl.create_default_context(cafile=str(self.ca.ca_file)).wrap_socket(
            socket.create_connection(("127.0.0.1", self.upstream.port), timeout=10), server_hostname="127.0.0.1")
        backend.recv(4096)  # the greeting
        backend.sendall(f'hs1 LOGIN "{account.login}" "{account.password}"\r\n'.encode())
        answer = b""
        while b"hs1 " not in answer:
            answer += backend.recv(4096)
        assert b"hs1 OK" in answer, answer
        self.logins += 1
        return backend


class _GmailSmtpHandler:
    def __init__(self, owner: FakeGmailSmtp) -> None:
        self.owner = owner

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:  # aiosmtpd's naming
        initial = args[1] if len(args) > 1 else None
        if initial is None:
            answer = await server.challenge_auth("")
            sasl = base64.b64decode(answer) if isinstance(answer, bytes) else b""
        else:
            sasl = base64.b64decode(initial)
        self.owner.sasl.append(sasl)
        if signed_in(self.owner.oauth, sasl) is None:
            await server.challenge_auth(ERROR_CHALLENGE, encode_to_b64=False)  # the client answers with an empty line
            return AuthResult(success=False, handled=False, message=SMTP_REFUSED)
        return AuthResult(success=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.owner.messages.append(envelope)
        return "250 2.0.0 OK  1700000000 a1-20020a05600c - gsmtp"


class FakeGmailSmtp:
    """smtp.gmail.com:465: implicit TLS, AUTH XOAUTH2 (passwords are the imap kind's, not tested here)."""

    def __init__(self, ca: CertificateAuthority, oauth: FakeGoogleOAuth) -> None:
        cert, key = ca.issue(["127.0.0.1", "localhost"])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.oauth = oauth
        self.sasl: list[bytes] = []
        self.messages: list[Any] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = LongLineController(_GmailSmtpHandler(self), hostname="127.0.0.1", port=self.port,
                                             ssl_context=context, auth_require_tls=False,
                                             auth_exclude_mechanism=["LOGIN", "PLAIN"])
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@dataclass
class Google:
    """Everything at once, sharing one CA."""

    ca: CertificateAuthority
    oauth: FakeGoogleOAuth
    imap: FakeGmailImap
    smtp: FakeGmailSmtp
    directory: Path = field(default=Path("."))

    @classmethod
    def start(cls, directory: Path) -> Google:
        ca = CertificateAuthority(directory, name="fake Google CA")
        oauth = FakeGoogleOAuth(ca)
        return cls(ca, oauth, FakeGmailImap(ca, oauth), FakeGmailSmtp(ca, oauth), directory)

    def close(self) -> None:
        for server in (self.oauth, self.imap, self.imap.upstream, self.smtp):
            if server is not None:
                server.close()

    def browser(self, consent_url: str) -> str:
        """What a browser does with the consent URL: the consent page, then the redirect it answers with;
        returns where the browser was sent (the loopback listener's URL with the code)."""
        import requests

        parts = urlsplit(consent_url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == self.oauth.auth_uri, consent_url
        answer = requests.get(consent_url, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]
