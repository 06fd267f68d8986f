"""Microsoft Graph transport: an Office 365 mailbox's folders, delta pages of envelopes, and original letters.

Exchange Online allows 4 requests in flight per mailbox and throttles beyond its budget with 429 (or 503)
and a Retry-After; so every request takes one of 4 slots, and a throttled one waits as told and tries
again, a bounded number of times, before the failure is the mailbox's for this pass. Messages are named by
their immutable id (`Prefer: IdType="ImmutableId"`), which survives moves between folders, so a location
recorded today still names the same message next year.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from hanna_sync.errors import AuthError, ConnectError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4  # Exchange Online's concurrent-request limit per mailbox
MAX_RETRIES = 4  # throttled (429/503) requests tried again at most this many times
MAX_RETRY_WAIT = 120.0  # a Retry-After longer than this is not waited for: the next pass goes on
# The envelope matching needs: no bodies, no previews (a delta round over a big mailbox stays small).
ENVELOPE_FIELDS = ("from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo", "subject",
                   "receivedDateTime", "internetMessageId", "conversationId")
_IMMUTABLE_IDS = 'IdType="ImmutableId"'
_DELTA_EXPIRED_CODES = {"syncStateNotFound", "SyncStateNotFound", "syncStateInvalid", "resyncRequired"}

T = TypeVar("T")


class GraphError(ConnectError):
    """Graph answered with an error (or not at all); the message says which and what to do."""


class DeltaExpired(GraphError):
    """410 / syncStateNotFound: the folder's delta token is no longer known; read the folder again."""


class MessageGone(GraphError):
    """404 for one message: deleted between its delta page and the download."""


@dataclass(frozen=True)
class GraphFolder:
    id: str
    path: str  # display names from the top, joined by "/": "Inbox/Projektai"
    total: int  # totalItemCount
    unread: int


@dataclass(frozen=True)
class Envelope:
    """One item of a delta page: a message's envelope, or the news that it left the folder."""

    id: str  # immutable id
    removed: bool
    subject: str = ""
    internet_message_id: str | None = None
    addresses: tuple[str, ...] = ()  # From, Reply-To, To, Cc, Bcc
    conversation_id: str | None = None  # Outlook's conversation: what thread links follow over Graph

    @classmethod
    def of(cls, item: dict[str, Any]) -> Envelope:
        if "@removed" in item:
            return cls(str(item["id"]), True)

        def emails(value: Any) -> list[str]:
            entries = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
            return [str(e["emailAddress"]["address"]) for e in entries if isinstance(e, dict)
                    and isinstance(e.get("emailAddress"), dict) and e["emailAddress"].get("address")]

        fields = ("from", "replyTo", "toRecipients", "ccRecipients", "bccRecipients")
        return cls(str(item["id"]), False, str(item.get("subject") or ""), item.get("internetMessageId") or None,
                   tuple(a for name in fields for a in emails(item.get(name))), item.get("conversationId") or None)


@dataclass(frozen=True)
class DeltaPage:
    items: list[Envelope]
    next_link: str | None  # more of this round
    delta_link: str | None  # the round is complete: where the next one starts


@dataclass(frozen=True)
class Mime:
    raw: bytes  # the letter, or only its header block when it is over the size limit
    size: int  # the whole letter's size, as far as known
    truncated: bool


class GraphClient:
    """One mailbox's Graph endpoint. `token(fresh)` gives an access token; it is asked again (fresh) once when
    Graph says the token expired mid-pass."""

    def __init__(self, base_url: str, user_path: str, token: Callable[[bool], str], timeout: float) -> None:
        self.base = f"{base_url.rstrip('/')}/{quote(user_path, safe='/@')}"
        self.host = urlsplit(base_url).netloc
        self._token_source = token
        self._token: str | None = None
        self.timeout = timeout
        import requests  # here, not at the top: a pass without Office 365 mailboxes never needs it

        self.session = requests.Session()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- what callers use ------------------------------------------------------------------------

    def folders(self) -> list[GraphFolder]:
        """Every mail folder, children included (Graph lists one level per request)."""
        out: list[GraphFolder] = []
        pending: list[tuple[str, str]] = [(f"{self.base}/mailFolders?$top=100", "")]
        while pending:
            url, parent = pending.pop(0)
            for item in self._all(url):
                path = f"{parent}/{item['displayName']}" if parent else str(item["displayName"])
                out.append(GraphFolder(str(item["id"]), path, int(item.get("totalItemCount") or 0),
                                       int(item.get("unreadItemCount") or 0)))
                if item.get("childFolderCount"):
                    pending.append((f"{self.base}/mailFolders/{quote(str(item['id']), safe='')}/childFolders?$top=100",
                                    path))
        return out

    def well_known(self, name: str) -> GraphFolder:
        """A well-known folder by its fixed name (inbox, sentitems), whatever the mailbox's language calls it."""
        item = self._get(f"{self.base}/mailFolders/{name}", {}, lambda r: r.json())
        return GraphFolder(str(item["id"]), str(item["displayName"]), int(item.get("totalItemCount") or 0),
                           int(item.get("unreadItemCount") or 0))

    def delta(self, folder_id: str, link: str | None, page_size: int) -> DeltaPage:
        """One page of the folder's delta round: from `link` (a nextLink or deltaLink), or a new round."""
        url = link or (f"{self.base}/mailFolders/{quote(folder_id, safe='')}/messages/delta"
                       f"?$select={','.join(ENVELOPE_FIELDS)}")
        page = self._get(url, {"Prefer": f"odata.maxpagesize={page_size}, {_IMMUTABLE_IDS}"}, lambda r: r.json())
        return DeltaPage([Envelope.of(item) for item in page.get("value", [])], page.get("@odata.nextLink"),
                         page.get("@odata.deltaLink"))

    def envelope(self, message_id: str) -> Envelope:
        """One message's envelope by its immutable id, as a delta page gives it: what a backfill matches
        before downloading anything. Raises MessageGone when it is no longer in the mailbox."""
        url = f"{self.base}/messages/{quote(message_id, safe='')}?$select={','.join(ENVELOPE_FIELDS)}"
        return self._get(url, {}, lambda r: Envelope.of(r.json()))

    def mime(self, message_id: str, limit: int) -> Mime:
        """The original letter (`$value`), byte for byte; past `limit` bytes only its header block is kept."""

        def read(response: requests.Response) -> Mime:
            data = bytearray()
            for chunk in response.iter_content(65536):
                data += chunk
                if len(data) > limit:
                    end = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=len(data))
                    size = int(response.headers.get("Content-Length") or len(data))
                    return Mime(bytes(data[:end]) + b"\r\n\r\n", size, True)
            return Mime(bytes(data), len(data), False)

        return self._get(f"{self.base}/messages/{quote(message_id, safe='')}/$value", {}, read)

    # -- HTTP -----------------------------------------------------------------------------------

    def _all(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = self._get(next_url, {}, lambda r: r.json())
            items.extend(page.get("value", []))
            next_url = page.get("@odata.nextLink")
        return items

    def _bearer(self, fresh: bool) -> str:
        with self._token_lock:
            if fresh or self._token is None:
                self._token = self._token_source(fresh)
            return self._token

    def _get(self, url: str, headers: dict[str, str], read: Callable[[requests.Response], T]) -> T:
        """GET with a slot of the 4, throttling honoured (bounded), one fresh token on 401; `read` runs in the slot."""
        import requests

        renewed = False
        attempt = 0
        while True:
            token = self._bearer(False)
            with self._slots:
                try:
                    response = self.session.get(url, timeout=self.timeout, stream=True, headers={
                        "Authorization": f"Bearer {token}", "Prefer": _IMMUTABLE_IDS, **headers})
                    try:
                        if response.status_code == 200:
                            return read(response)
                        body = response.content[:65536]
                    finally:
                        response.close()
                except requests.RequestException as exc:
                    raise GraphError(f"cannot reach Microsoft Graph at {self.host}: {network_reason(exc)}") from None
            status = response.status_code
            if status in (429, 503) and attempt < MAX_RETRIES:
                wait = retry_after(response.headers.get("Retry-After"), attempt)
                if wait <= MAX_RETRY_WAIT:
                    attempt += 1
                    log.info("Graph throttled a request (%d): waiting %.0f s as told (retry %d of %d)", status, wait,
                             attempt, MAX_RETRIES)
                    time.sleep(wait)
                    continue
            if status == 401 and not renewed and _code_of(body) == "InvalidAuthenticationToken":
                renewed = True
                self._bearer(True)
                continue
            raise _error(status, body, attempt)


def network_reason(exc: requests.RequestException) -> str:
    """What went wrong on the wire, without urllib3's nested reprs: "Connection refused", "certificate verify
    failed: unable to get local issuer certificate", "timed out"."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] ([^'\"()]+)", r"(certificate verify failed: [^'\"()]+)", r"(timed out)"):
        if found := re.search(pattern, text):
            return found.group(1).strip()
    return f"{type(exc).__name__}: {text}"


def retry_after(header: str | None, attempt: int) -> float:
    """Retry-After in seconds or as an HTTP date; without one, 2, 4, 8... seconds."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return float(2 ** (attempt + 1))


def _code_of(body: bytes) -> str:
    return _error_fields(body)[0]


def _error_fields(body: bytes) -> tuple[str, str]:
    try:
        error = json.loads(body.decode("utf-8", "replace")).get("error", {})
        return str(error.get("code", "")), " ".join(str(error.get("message", "")).split())
    except (ValueError, AttributeError):
        return "", " ".join(body.decode("utf-8", "replace").split())[:200]


def _error(status: int, body: bytes, retries: int) -> GraphError:
    code, message = _error_fields(body)
    said = f"{status} {code}: {message}" if code else f"{status} {message}".strip()
    if status == 410 or code in _DELTA_EXPIRED_CODES:
        return DeltaExpired(f"Graph no longer knows this folder's delta state ({said})")
    if status == 401:
        return _AuthGraphError(f"Graph refused the token ({said}): 'hanna-sync test ID' shows what the token holds")
    if status == 403:
        return _AuthGraphError(
            f"Graph denied access ({said}): the app registration needs Mail.Read with admin consent; for app-only"
            " access an Exchange application access policy or RBAC scope may leave this mailbox out"
        )
    if status == 404 and code in ("ErrorItemNotFound", "ResourceNotFound"):
        return MessageGone(f"not found ({said})")
    if status == 404:
        return GraphError(f"Graph does not find the mailbox or folder ({said}): is the mailbox in Exchange Online,"
                          " with a licence?")
    if status in (429, 503):
        return GraphError(f"Graph is throttling this mailbox ({said}) after {retries} retries; the next pass goes on")
    return GraphError(f"Graph failed ({said})")


class _AuthGraphError(GraphError, AuthError):
    """A refusal of the credentials (401/403): backed off like a refused login, not retried every pass."""
