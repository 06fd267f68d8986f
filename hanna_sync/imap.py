"""IMAP transport: open a session the way a mailbox's settings say, and list its folders.

Failures become a `ConnectError` whose one line names the cause a sysadmin can act on (unknown host,
refused port, TLS spoken on a plaintext port, untrusted certificate, refused login); `hanna-sync test`
digs deeper, stage by stage.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from hanna_sync.errors import AuthError, ConnectError
from hanna_sync.store import Mailbox

APP_PASSWORD_PROVIDERS = {"gmail": "Google", "yahoo": "Yahoo"}


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying context: system CAs (or $SSL_CERT_FILE), plus the mailbox's private CA if it has one."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot load CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


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
        client = IMAPClient(
            mailbox.imap_host,
            port=mailbox.imap_port,
            ssl=security == "ssl",
            ssl_context=ssl_context(mailbox.ca_file) if security == "ssl" else None,
            timeout=timeout,
        )
        if security == "starttls":
            client.starttls(ssl_context(mailbox.ca_file))
        return client
    except ConnectError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise _transport_error(exc, mailbox, timeout) from None
    except IMAPClientError as exc:
        raise ConnectError(f"{mailbox.imap_host}:{mailbox.imap_port}: {exc}") from None


def authenticate(client: IMAPClient, login_name: str, password: str) -> bytes:
    """LOGIN, or AUTHENTICATE PLAIN (UTF-8) for a name or password beyond ASCII, which LOGIN cannot carry.

    Returns the server's reply; raises imapclient's LoginError when refused.
    """
    if (login_name + password).isascii():
        return client.login(login_name, password)
    return client.plain_login(login_name, password)


def login(client: IMAPClient, mailbox: Mailbox, password: str) -> None:
    try:
        authenticate(client, mailbox.login_name, password)
    except LoginError as exc:
        text = server_text(exc) or "authentication failed"
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
        raise ConnectError(f"connection to {mailbox.imap_host} lost during login: {exc}") from None


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
def session(mailbox: Mailbox, password: str, timeout: float) -> Iterator[IMAPClient]:
    """A logged-in client, logged out (or at least closed) however the block ends."""
    client = connect(mailbox, timeout)
    try:
        login(client, mailbox, password)
        yield client
    finally:
        try:
            client.logout()
        except Exception:  # the connection may already be gone; nothing left to release
            try:
                client.shutdown()
            except Exception:
                pass


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


def sent_folder(folders: list[FolderInfo], preset_name: str) -> str | None:
    """The Sent folder: the one the server flags \\Sent (RFC 6154), else the provider's usual name."""
    for folder in folders:
        if "\\Sent" in folder.flags:
            return folder.name
    names = {f.name for f in folders}
    return preset_name if preset_name in names else None


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


class _IMAP4OnSocket(imaplib.IMAP4):
    """imaplib speaking on a socket the caller connected (and, for ssl, wrapped in TLS) already.

    `hanna-sync test` resolves, connects and shakes hands itself, so that each of those stages is timed
    and explained on its own; from the greeting on, imaplib does the talking as it does in a scan.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, trace: Trace | None) -> None:
        self._connected = sock
        self._trace = trace
        super().__init__(host, port)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._connected

    def send(self, data: bytes) -> None:
        if self._trace:
            line = data.decode("utf-8", "replace").rstrip("\r\n")
            self._trace("C", _LOGIN_COMMAND.sub(r"\1\2 ***", line))
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
    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float, trace: Trace | None) -> None:
        self._given = sock, trace
        super().__init__(host, port=port, ssl=isinstance(sock, ssl.SSLSocket), timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        sock, trace = self._given
        return _IMAP4OnSocket(sock, self.host, self.port, trace)


def client_on_socket(
    sock: socket.socket, host: str, port: int, timeout: float, trace: Trace | None = None
) -> IMAPClient:
    """A client on a connected socket: it reads the greeting and asks CAPABILITY, as `connect` does.

    Raises what imapclient raises (`IMAPClientError`, `OSError`); `hanna-sync test` explains each.
    """
    return _ClientOnSocket(sock, host, port, timeout, trace)
