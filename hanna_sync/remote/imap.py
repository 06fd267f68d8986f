"""IMAP transport: open a session the way a mailbox's settings say, and list its folders.

Failures become a `ConnectError` whose one line names the cause a sysadmin can act on (unknown host,
refused port, TLS spoken on a plaintext port, untrusted certificate, refused login); `hanna-sync test`
digs deeper, stage by stage.
"""

from __future__ import annotations

import base64
import functools
import imaplib
import logging
import os
import re
import socket
import ssl
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from hanna_sync.errors import AuthError, ConnectError
from hanna_sync.models import Mailbox, merged_folders
from hanna_sync.remote import imap_wire, overload

log = logging.getLogger(__name__)

APP_PASSWORD_PROVIDERS = {"gmail": "Google", "yahoo": "Yahoo"}


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying context: system CAs (or $SSL_CERT_FILE), plus the mailbox's private CA if it has one.

    One per CA file and process: loading the system CA bundle costs ~20 ms and holds the GIL, which
    for a pass over 1,000 mailboxes was half of all the work.
    """
    try:
        return _ssl_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot load CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None


@lru_cache(maxsize=64)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def system_ssl_context() -> ssl.SSLContext:
    """A verifying context with the system's CAs alone, as a service started without SSL_CERT_FILE or
    SSL_CERT_DIR gets them: OpenSSL's built-in paths, the variables ignored."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    return context


def trusted_without_environment(mailbox: Mailbox, timeout: float) -> bool | None:
    """Whether the IMAP server's certificate is trusted by the system's CAs (and the mailbox's CA file)
    without SSL_CERT_FILE/SSL_CERT_DIR; None when it could not be found out (no TLS, the server went away)."""
    security = mailbox.imap_security or "ssl"
    if security == "none":
        return None
    context = system_ssl_context()
    try:
        if mailbox.ca_file:
            context.load_verify_locations(cafile=mailbox.ca_file)
        client = IMAPClient(mailbox.imap_host, port=mailbox.imap_port, ssl=security == "ssl",
                            ssl_context=context if security == "ssl" else None, timeout=timeout)
        try:
            if security == "starttls":
                client.starttls(context)
        finally:
            _end(client)
    except ssl.SSLCertVerificationError:
        return False
    except (OSError, IMAPClientError):
        return None
    return True


def _transport_error(exc: BaseException, mailbox: Mailbox, timeout: float) -> ConnectError:
    host, port = mailbox.imap_host, mailbox.imap_port
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve IMAP server name {host}: check --imap-host for typos")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(
            f"{where} refused the connection: wrong port or firewall (IMAP uses 993 with ssl, 143 with starttls)"
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectError(f"{where} did not answer within {timeout:g} s: blocked by a firewall, or wrong port")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(
            f"the certificate of {host} is not trusted ({exc.verify_message});"
            " for a private CA pass --ca-file, or check the server name"
        )
    if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
        return ConnectError(
            f"{where} does not speak implicit TLS: use --imap-security starttls (usually port 143),"
            " or the ssl port 993"
        )
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS with {where} failed: {exc.reason or exc}")
    return ConnectError(f"cannot talk to {where}: {exc}")


def connect(mailbox: Mailbox, timeout: float) -> IMAPClient:
    """A connected, not yet logged-in client, TLS set up as the mailbox's security setting says."""
    security = mailbox.imap_security or "ssl"
    try:
        client = imap_wire.Client(
            mailbox.imap_host,
            port=mailbox.imap_port,
            ssl=security == "ssl",
            ssl_context=ssl_context(mailbox.ca_file) if security == "ssl" else None,
            timeout=timeout,
        )
        quiet_protocol_log(client)
        if security == "starttls":
            client.starttls(ssl_context(mailbox.ca_file))
        return client
    except ConnectError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise _transport_error(exc, mailbox, timeout) from None
    except IMAPClientError as exc:
        raise ConnectError(f"{mailbox.imap_host}:{mailbox.imap_port}: {exc}") from None


def quiet_protocol_log(client: IMAPClient) -> None:
    """Turn off imaplib's protocol log unless someone reads it (`-v` with the imapclient logger on).

    imapclient sets imaplib's debug level to 5, which makes imaplib format the repr of every response,
    literal included, before the logger even looks at its level: a fifth of a first pass's time.
    """
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


def authenticate(
    client: IMAPClient, login_name: str, password: str, *, then: Callable[[], object] | None = None,
) -> bytes:
    """LOGIN, or AUTHENTICATE PLAIN (UTF-8) for a name or password beyond ASCII, which LOGIN cannot carry:
    with its credentials in the command itself where the server offers SASL-IR (RFC 4959), else after
    the server's go-ahead. `then` writes commands that go out in the same write as the login, their
    answers read after its (a refused login makes them fail harmlessly: the session ends).

    Returns the server's reply; raises imapclient's LoginError when refused.
    """
    imap = client._imap
    if not (login_name + password).isascii() and b"SASL-IR" not in client.capabilities():
        reply = client.plain_login(login_name, password)
        if then is not None:
            with imap_wire.one_write(imap):
                then()
        return reply
    with imap_wire.one_write(imap):
        if (login_name + password).isascii():
            name, tag = "LOGIN", imap._command("LOGIN", login_name, imap._quote(password))
        else:
            plain = base64.b64encode(f"\0{login_name}\0{password}".encode()).decode("ascii")
            name, tag = "AUTHENTICATE", imap._command("AUTHENTICATE", "PLAIN", plain)
        if then is not None:
            then()
    try:
        typ, data = imap._command_complete(name, tag)
    except IMAPClientError as exc:  # BAD
        raise LoginError(str(exc)) from None
    if typ != "OK":
        raise LoginError(str(data[-1]))
    imap.state = "AUTH"
    return bytes(data[0])


def login(client: IMAPClient, mailbox: Mailbox, password: str, *, then: Callable[[], object] | None = None) -> None:
    """Log in, or refuse to: a password goes over a connection without TLS only when the admin allowed it."""
    if (mailbox.imap_security or "ssl") == "none" and not mailbox.allow_plaintext:
        which = mailbox.id if mailbox.id is not None else "ID"
        raise ConnectError(
            f"refusing to send the password for {mailbox.login_name} to {mailbox.imap_host}:{mailbox.imap_port}"
            f" unencrypted (IMAP security none); fix: 'hanna-sync edit-mailbox {which} --imap-security ssl'"
            f" (or starttls), or on a network you trust 'hanna-sync edit-mailbox {which} --allow-plaintext'"
        )
    try:
        authenticate(client, mailbox.login_name, password, then=then)
    except LoginError as exc:
        text = server_text(exc) or "authentication failed"
        overload.busy_login(mailbox.imap_host, mailbox.login_name, text)  # overload or a dropped connection
        hint = "check the password"
        if mailbox.username is None:
            hint += ", and --username if the login name differs from the email"
        if mailbox.provider in APP_PASSWORD_PROVIDERS:
            hint += (
                f"; with 2-step verification on, {APP_PASSWORD_PROVIDERS[mailbox.provider]}"
                " needs an app password instead of the account password"
            )
        raise AuthError(f"{mailbox.imap_host} refused the login for {mailbox.login_name} ({text}); {hint}") from None
    except (OSError, ssl.SSLError) as exc:
        raise overload.lost_during_login(mailbox.imap_host, exc) from None


def server_text(exc: BaseException) -> str:
    """What the server said, as text: imapclient passes the raw bytes of the reply along."""
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace").strip()
    text = str(arg).strip()
    if text.startswith(("b'", 'b"')) and text.endswith(text[1]):
        return text[2:-1]
    return text


@contextmanager
def session(mailbox: Mailbox, password: str, timeout: float, *, status_of: list[str] | None = None,
            ) -> Iterator[IMAPClient]:
    """A logged-in client, logged out (or at least closed) however the block ends. With `status_of`, the
    STATUS of those folders is written with the login (`imap_wire.Client.status_request` reads it)."""
    client = connect(mailbox, timeout)
    try:
        login(client, mailbox, password,
              then=None if status_of is None else functools.partial(imap_wire.write_status, client, status_of))
        yield client
    finally:
        _end(client)


def _end(client: IMAPClient) -> None:
    try:
        imap_wire.logout_and_close(client)
    except Exception:  # the connection may already be gone; nothing left to release
        with suppress(Exception):
            client.shutdown()


def connection_failed(exc: BaseException, mailbox: Mailbox, timeout: float) -> str:
    """One line for a session that broke mid-pass. Never what the server was sending (a cut-off line may
    quote a letter), and saying what the admin wants to know: nothing saved is lost, the next pass goes on."""
    where = f"{mailbox.imap_host}:{mailbox.imap_port}" if mailbox.imap_host else "the server"
    text = server_text(exc) if isinstance(exc, IMAPClientError) else str(exc)
    if isinstance(exc, TimeoutError) or "timed out" in text:
        what = f"no answer within {timeout:g} s"
    else:
        # imaplib says "command: UID => socket error: unterminated line: b'* 10 FETCH ...'": keep the reason only.
        what = text.split(" => ", 1)[-1].split(": b'", 1)[0].split(': b"', 1)[0][:200] or type(exc).__name__
    if isinstance(exc, IMAPClientError) and not isinstance(exc, imaplib.IMAP4.abort):
        return f"{where} answered with an error ({what}); the letters saved so far stay, the next pass tries again"
    return f"connection to {where} broke ({what}); the letters saved so far stay, the next pass goes on from there"


# -- Office 365: XOAUTH2 ---------------------------------------------------------------------------

XOAUTH2_HINT = (
    "the token needs IMAP.AccessAsUser.All (delegated) or IMAP.AccessAsApp with the Exchange service principal and"
    " mailbox permission (app-only), and IMAP must be on for the mailbox (Set-CASMailbox -Identity {login}"
    " -ImapEnabled $true); 'hanna-sync test ID' shows what the token holds"
)
APP_ONLY_HINT = (
    "the app-only token was accepted but Exchange has not given the app this mailbox: register the app's service"
    " principal and grant it the mailbox (Exchange Online PowerShell: New-ServicePrincipal -AppId APP_ID -ObjectId"
    " ENTERPRISE_APP_OBJECT_ID, then Add-MailboxPermission -Identity {login} -User SERVICE_PRINCIPAL_ID"
    " -AccessRights FullAccess); the ObjectId is the enterprise application's, not the app registration's"
    " ('hanna-sync setup-guide o365')"
)
GOOGLE_XOAUTH2_HINT = (
    "the token needs the scope https://mail.google.com/ (delegated to the service account, or consented), and IMAP"
    " must be on for the user (Google Admin console -> Apps -> Google Workspace -> Gmail -> End User Access -> POP"
    " and IMAP access); 'hanna-sync test ID' says which"
)
MAX_TOKEN_RENEWALS = 3  # reconnections per session after AccessTokenExpired, so a server that keeps saying it ends


def xoauth2_login(client: IMAPClient, mailbox: Mailbox, token: str) -> None:
    """AUTHENTICATE XOAUTH2: base64("user=" login "\\x01auth=Bearer " token "\\x01\\x01"), then a NOOP: Exchange
    accepts an app-only token for a mailbox the app has no rights on, and answers BAD to every command after."""
    try:
        client.oauth2_login(mailbox.login_name, token)
        client.noop()
    except IMAPClientError as exc:
        text = server_text(exc) or "authentication failed"
        hint = APP_ONLY_HINT if "not connected" in text else XOAUTH2_HINT
        if mailbox.kind == "google-client":
            hint = GOOGLE_XOAUTH2_HINT
        raise AuthError(f"{mailbox.imap_host} refused the token for {mailbox.login_name} ({text});"
                        f" {hint.format(login=mailbox.login_name)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"connection to {mailbox.imap_host} lost during login: {exc}") from None


def token_expired(exc: BaseException) -> bool:
    """Exchange's word for a session whose token ran out: `* BYE Session invalidated - AccessTokenExpired`."""
    return "AccessTokenExpired" in server_text(exc)


class TokenRenewingClient:
    """An IMAPClient for Office 365 that outlives its token.

    Exchange ends a session whose access token expires (AccessTokenExpired); this client then connects
    again with a fresh token, selects the folder that was selected (read-only as before) and repeats the
    command, so the scan above it never notices. Every IMAPClient method is passed through: the commands
    a scan uses (STATUS, EXAMINE, SEARCH, FETCH) may be repeated without effect.
    """

    def __init__(self, mailbox: Mailbox, token: Callable[[bool], str], timeout: float) -> None:
        self.mailbox, self._token, self.timeout = mailbox, token, timeout
        self.renewals = 0
        self._selected: tuple[Any, ...] | None = None
        self._client = self._open(fresh=False)

    def _open(self, fresh: bool) -> IMAPClient:
        token = self._token(fresh)  # first: without a sign-in, there is no point in connecting
        client = connect(self.mailbox, self.timeout)
        try:
            xoauth2_login(client, self.mailbox, token)
        except BaseException:
            _end(client)
            raise
        return client

    def select_folder(self, *args: Any, **kwargs: Any) -> Any:
        result = self._call("select_folder", *args, **kwargs)
        self._selected = (args, kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        if name == "_client":  # not connected (yet): no recursion into ourselves
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        return functools.partial(self._call, name) if callable(attribute) else attribute

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return getattr(self._client, name)(*args, **kwargs)
            except IMAPClientError as exc:
                if not token_expired(exc) or self.renewals >= MAX_TOKEN_RENEWALS:
                    raise
            self.renewals += 1
            log.info("%s: the IMAP session's token expired (AccessTokenExpired): reconnecting with a new one",
                     self.mailbox.email)
            _end(self._client)
            self._client = self._open(fresh=True)
            if self._selected is not None and name != "select_folder":
                select_args, select_kwargs = self._selected
                self._client.select_folder(*select_args, **select_kwargs)

    def end(self) -> None:
        _end(self._client)


@contextmanager
def oauth_session(mailbox: Mailbox, token: Callable[[bool], str], timeout: float) -> Iterator[TokenRenewingClient]:
    """A client logged in with XOAUTH2 (a fresh token per connection), ended however the block ends."""
    client = TokenRenewingClient(mailbox, token, timeout)
    try:
        yield client
    finally:
        client.end()


@dataclass(frozen=True)
class FolderInfo:
    name: str  # decoded from IMAP's modified UTF-7: "Išsiųsti", not "I&AWE-si&AXM-sti"
    flags: tuple[str, ...]
    selectable: bool


def list_folders(client: IMAPClient) -> list[FolderInfo]:
    out = []
    for flags, _delimiter, name in client.list_folders():
        names = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
        name = name.decode() if isinstance(name, bytes) else name
        out.append(FolderInfo(name=name, flags=names, selectable="\\Noselect" not in names))
    return out


# Names mail programs and servers give the Sent folder, compared by `_folded` (case and accents ignored):
# a server without SPECIAL-USE (RFC 6154) flags names it so, and Courier-style servers put it under "INBOX.".
SENT_NAMES = (
    "Sent", "Sent Items", "Sent Messages", "Sent Mail", "Sent-Mail", "Sent Objects",
    "Išsiųsti", "Išsiųsti laiškai", "Išsiųsti elementai", "Išsiųstieji",  # Lithuanian
    "Enviados", "Elementos enviados", "Mensajes enviados", "Itens enviados",  # Spanish, Portuguese
    "Gesendet", "Gesendete Elemente", "Gesendete Objekte", "Gesendete Nachrichten",  # German
    "Éléments envoyés", "Envoyés", "Messages envoyés",  # French
    "Inviati", "Posta inviata", "Elementi inviati",  # Italian
    "Verzonden", "Verzonden items", "Verzonden berichten",  # Dutch
    "Wysłane", "Elementy wysłane",  # Polish
    "Nosūtītie", "Nosūtītās", "Saadetud", "Saadetud kirjad",  # Latvian, Estonian
    "Отправленные", "Надіслані",  # Russian, Ukrainian
    "Skickat", "Skickade objekt", "Sendt", "Sendte elementer", "Sendte", "Lähetetyt",  # Nordic
    "Odeslané", "Odoslané", "Elküldött",  # Czech, Slovak, Hungarian
)
_INBOX_PREFIXES = ("inbox.", "inbox/")


def _folded(name: str) -> str:
    """A folder name as people mean it: Unicode form, case and accents ignored ("Išsiųsti" = "ISSIUSTI")."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


_SENT_FOLDED = frozenset(_folded(n) for n in SENT_NAMES)


@dataclass(frozen=True)
class SentFolder:
    """Which folder is taken for the Sent folder, and why: what add-mailbox and `test` say about it."""

    name: str | None
    flagged: bool = False  # the server flags it \Sent
    candidates: tuple[str, ...] = ()  # with no flag: the folders with a usual Sent name (one is taken)


def sent_folder(folders: list[FolderInfo], preset_name: str) -> SentFolder:
    """The Sent folder: the one the server flags \\Sent (RFC 6154), else the one folder with a usual Sent
    name (the provider's, or one of SENT_NAMES, also under "INBOX." or "INBOX/"), case and accents ignored.

    Two folders with such names (e.g. "Sent" and "Sent Items") leave the choice to the admin: archiving
    the wrong one would miss the sent letters just as silently as archiving none.
    """
    for folder in folders:
        if "\\Sent" in folder.flags and folder.selectable:
            return SentFolder(folder.name, flagged=True)
    preset = _folded(preset_name)
    candidates = []
    for folder in folders:
        folded = _folded(folder.name)
        if folded.startswith(_INBOX_PREFIXES):
            folded = folded[len("inbox."):]
        if folder.selectable and (folded in _SENT_FOLDED or folded == preset):
            candidates.append(folder.name)
    return SentFolder(candidates[0] if len(candidates) == 1 else None, candidates=tuple(candidates))


@dataclass(frozen=True)
class ResolvedFolders:
    names: list[str]  # the chosen folders as the server spells them, each once
    missing: list[str]  # chosen folders the server does not have
    notes: list[str]  # what was merged or respelled
    near: dict[str, list[str]]  # a missing folder -> server folders that differ from it in case or accents only


def resolved_folders(chosen: list[str], folders: list[FolderInfo]) -> ResolvedFolders:
    """The chosen folders matched to the server's: exactly, INBOX in any case, or, for a name that differs
    only in its Unicode form (typed decomposed, as some terminals and macOS do, s + combining caron for "š",
    where the server lists the composed "Išsiųsti"), by its composed form;
    kept as the server spells them, since that is what SELECT must be given."""
    names = [f.name for f in folders if f.selectable]
    by_form: dict[str, list[str]] = {}
    by_folded: dict[str, list[str]] = {}
    for name in names:
        by_form.setdefault(unicodedata.normalize("NFC", name), []).append(name)
        by_folded.setdefault(_folded(name), []).append(name)
    resolved, missing, notes, near = [], [], [], {}
    for name in chosen:
        same_form = by_form.get(unicodedata.normalize("NFC", name), [])
        if name in names or name.upper() == "INBOX":
            resolved.append(name)
        elif len(same_form) == 1:
            resolved.append(same_form[0])
            notes.append(f"folder {name!r} differs from the server's {same_form[0]!r} only in its Unicode form"
                         " (decomposed letters): the server's name is kept")
        else:
            missing.append(name)
            near[name] = by_folded.get(_folded(name), [])
    merged, merge_notes = merged_folders(resolved)
    return ResolvedFolders(merged, missing, notes + merge_notes, near)


def message_counts(client: IMAPClient, names: list[str]) -> dict[str, int]:
    """Message count per folder by STATUS, which does not select the folder or touch flags."""
    counts = {}
    for name in names:
        status = client.folder_status(name, [b"MESSAGES"])
        counts[name] = int(status[b"MESSAGES"])
    return counts


# -- a session on a socket connected beforehand (`hanna-sync test`, add-mailbox's verification) ---

Trace = Callable[[str, str], None]
"""Gets each protocol line as ("C", what was sent) or ("S", what came back), the password masked."""

_LOGIN_COMMAND = re.compile(r'^(\S+ LOGIN )("(?:[^"\\]|\\.)*"|\S+) .*', re.IGNORECASE | re.DOTALL)
_AUTHENTICATE_COMMAND = re.compile(r"^\S+ AUTHENTICATE ", re.IGNORECASE)


class _IMAP4OnSocket(imaplib.IMAP4):
    """imaplib speaking on a socket the caller connected (and, for ssl, wrapped in TLS) already.

    `hanna-sync test` resolves, connects and shakes hands itself, so that each of those stages is timed
    and explained on its own; from the greeting on, imaplib does the talking as it does in a scan.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, trace: Trace | None) -> None:
        self._connected = sock
        self._trace = trace
        self._sasl = False  # AUTHENTICATE was sent: the next line is credentials (XOAUTH2: the token)
        super().__init__(host, port)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._connected

    def send(self, data: bytes) -> None:  # type: ignore[override]  # imaplib only ever sends bytes
        if self._trace:
            line = data.decode("utf-8", "replace").rstrip("\r\n")
            self._trace("C", "***" if self._sasl else _LOGIN_COMMAND.sub(r"\1\2 ***", line))
            self._sasl = _AUTHENTICATE_COMMAND.match(line) is not None
        super().send(data)

    def readline(self) -> bytes:
        line = super().readline()
        if self._trace:
            self._trace("S", line.decode("utf-8", "replace").rstrip("\r\n"))
        return line

    def read(self, size: int) -> bytes:
        data = super().read(size)
        if self._trace:
            self._trace("S", data.decode("utf-8", "replace"))
        return data


class _ClientOnSocket(IMAPClient):
    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float, *, trace: Trace | None) -> None:
        self._given = sock, trace
        super().__init__(host, port=port, ssl=isinstance(sock, ssl.SSLSocket), timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        sock, trace = self._given
        return _IMAP4OnSocket(sock, self.host, self.port, trace)


def client_on_socket(
    sock: socket.socket, host: str, port: int, timeout: float, *, trace: Trace | None = None
) -> IMAPClient:
    """A client on a connected socket: it reads the greeting and asks CAPABILITY, as `connect` does.

    Raises what imapclient raises (`IMAPClientError`, `OSError`); `hanna-sync test` explains each.
    """
    return _ClientOnSocket(sock, host, port, timeout, trace=trace)
