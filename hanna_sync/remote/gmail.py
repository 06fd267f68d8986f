"""Gmail API transport (google-scan): a mailbox's labels, pages of message ids, envelopes, originals and history.

Only GET requests exist here: the archive reads a Gmail mailbox and can change nothing in it. Quota, in
Google's units per call (developers.google.com/gmail/api/reference/quota): labels.list 1, getProfile 1,
history.list 2, messages.list 5, messages.get 5; a user may spend 15,000 units a minute, a project 1,200,000.
Gmail answers a request over the budget with 429 (or 403 rateLimitExceeded / userRateLimitExceeded), and a
passing failure with 500/502/503/504: such a request waits (Retry-After, else 2, 4, 8, 16 s) and is tried
again a bounded number of times, then the failure is the mailbox's for this pass. The access token comes
from a provider (the Google sign-in's `token_source`), kept for the pass; a 401 asks it once for a fresh
one, then the mailbox fails as refused.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from hanna_sync.errors import AuthError, ConnectError
from hanna_sync.remote.graph import MAX_RETRIES, MAX_RETRY_WAIT, Mime, network_reason, retry_after

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4  # envelopes and originals fetched at once per mailbox: 4 x 5 units, far below 250 a second
# The header fields the matching reads (the IMAP path's, and Subject and Date for a dry run's list).
METADATA_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "In-Reply-To",
                    "References", "Auto-Submitted", "List-Id", "Precedence")
# Quota units per request, by the first part of its path (labels.list, getProfile, history.list, messages.*).
QUOTA_UNITS = {"labels": 1, "profile": 1, "history": 2, "messages": 5}
HISTORY_TYPES = ("messageAdded", "labelAdded", "labelRemoved", "messageDeleted")
_RETRIED = {429, 500, 502, 503, 504}
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}  # Gmail's 403 for a quota spent


# Gmail's system labels: their ids are their names, so they need no labels.list (a pass over an unchanged
# mailbox with these only makes history calls).
SYSTEM_LABELS = frozenset({"INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "IMPORTANT", "STARRED", "UNREAD",
                           "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES",
                           "CATEGORY_FORUMS"})

class GmailError(ConnectError):
    """The Gmail API answered with an error (or not at all); the message says which and what to do."""


class HistoryExpired(GmailError):
    """404 for a startHistoryId: Gmail keeps history for about a week; the label is listed again."""


class MessageGone(GmailError):
    """404 for one message: deleted between its listing and its download."""


class _AuthGmailError(GmailError, AuthError):
    """A refusal of the credentials or the project (401/403): backed off like a refused login."""


@dataclass(frozen=True)
class GmailLabel:
    id: str  # INBOX, SENT, ... for system labels; Label_12 for the user's
    name: str


@dataclass(frozen=True)
class ListPage:
    ids: list[str]  # Gmail's message ids, newest first
    next_token: str | None
    estimate: int  # resultSizeEstimate: about how many messages the label holds


@dataclass(frozen=True)
class Envelope:
    """A message as `format=metadata` gives it: the header fields asked for, as a header block to parse."""

    id: str
    thread_id: str | None
    headers: bytes  # "Name: value" lines, as the message has them, ending with an empty line
    size: int  # sizeEstimate of the whole letter


@dataclass
class Changes:
    """What history.list says happened to a label's messages since a history id, all pages read."""

    history_id: str  # where the next read starts
    added: dict[str, None] = field(default_factory=dict)  # came into the label (new, or labelled), in order
    removed: dict[str, None] = field(default_factory=dict)  # left it (label taken off, or deleted)


class GmailClient:
    """One mailbox's Gmail API, as `users/me`: the token names the user (a delegated service account's `sub`,
    or the person who consented). `token(fresh)` gives an access token for GMAIL_READONLY; it is asked
    again (fresh) once when Gmail refuses the one it gave (401)."""

    def __init__(self, base_url: str, token: Callable[[bool], str], timeout: float) -> None:
        self.base = f"{base_url.rstrip('/')}/users/me"
        self.host = urlsplit(base_url).netloc
        self._token_source = token
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self.timeout = timeout
        import requests  # here, not at the top: a pass without Gmail mailboxes never needs it

        self.session = requests.Session()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self.units = 0  # quota units of the requests sent (retries too): logged after each pass
        self._units_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def labels(self) -> list[GmailLabel]:
        """Every label, system and user (1 unit)."""
        return [GmailLabel(str(item["id"]), str(item["name"])) for item in self._get("/labels").get("labels", [])]

    def history_id(self) -> str:
        """The mailbox's current history id (getProfile, 1 unit): taken before a label is listed, so that
        what changes during the listing is read from history afterwards."""
        return str(self._get("/profile")["historyId"])

    def list_page(self, label_id: str, page_token: str | None, page_size: int) -> ListPage:
        """One page of the label's message ids (messages.list, 5 units)."""
        params: dict[str, Any] = {"labelIds": label_id, "maxResults": min(max(page_size, 1), 500)}
        if page_token:
            params["pageToken"] = page_token
        page = self._get("/messages", params)
        return ListPage([str(m["id"]) for m in page.get("messages", [])], page.get("nextPageToken"),
                        int(page.get("resultSizeEstimate") or 0))

    def envelope(self, message_id: str, fields: tuple[str, ...] | None = METADATA_HEADERS) -> Envelope:
        """The message's header fields (format=metadata, 5 units): those named, or (None) all of them.
        Raises MessageGone when it is no longer in the mailbox."""
        params: dict[str, Any] = {"format": "metadata"}
        if fields is not None:
            params["metadataHeaders"] = list(fields)
        item = self._get(f"/messages/{quote(message_id, safe='')}", params)
        lines = b"".join(f"{h.get('name', '')}: {h.get('value', '')}\r\n".encode("utf-8", "replace")
                         for h in item.get("payload", {}).get("headers", []))
        return Envelope(str(item["id"]), item.get("threadId") or None, lines + b"\r\n",
                        int(item.get("sizeEstimate") or 0))

    def original(self, message_id: str, size: int, limit: int) -> Mime:
        """The letter byte for byte (format=raw, base64url, 5 units). Over `limit` (by the size Gmail gave)
        only its whole header block is fetched, as format=metadata: format=raw has no partial read."""
        if size > limit:
            envelope = self.envelope(message_id, None)
            return Mime(envelope.headers, size, True)
        item = self._get(f"/messages/{quote(message_id, safe='')}", {"format": "raw"})
        raw = str(item.get("raw", ""))
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return Mime(data, len(data), False)

    def history(self, start: str, label_id: str) -> Changes:
        """The label's changes since `start` (history.list, 2 units a page), every page. Raises
        HistoryExpired when Gmail no longer has history that old."""
        changes = Changes(start)
        token: str | None = None
        while True:
            params: dict[str, Any] = {"startHistoryId": start, "labelId": label_id, "historyTypes": list(HISTORY_TYPES),
                                      "maxResults": 500}
            if token:
                params["pageToken"] = token
            page = self._get("/history", params, history=True)
            for record in page.get("history", []):
                _apply(changes, record, label_id)
            changes.history_id = str(page.get("historyId") or changes.history_id)
            token = page.get("nextPageToken")
            if not token:
                return changes

    # -- HTTP -----------------------------------------------------------------------------------

    def _bearer(self, fresh: bool) -> str:
        with self._token_lock:
            if fresh or self._token is None:
                self._token = self._token_source(fresh)
            return self._token

    def _get(self, path: str, params: dict[str, Any] | None = None, *, history: bool = False) -> dict[str, Any]:
        """GET in one of the slots; throttling and passing failures waited out (bounded), one more token on 401."""
        import requests

        renewed = False
        attempt = 0
        while True:
            token = self._bearer(False)
            with self._units_lock:
                self.units += QUOTA_UNITS[path.split("/")[1]]
            with self._slots:
                try:
                    response = self.session.get(f"{self.base}{path}", params=params, timeout=self.timeout,
                                                headers={"Authorization": f"Bearer {token}"})
                except requests.RequestException as exc:
                    raise GmailError(f"cannot reach the Gmail API at {self.host}: {network_reason(exc)}") from None
            status = response.status_code
            if status == 200:
                try:
                    return dict(response.json())
                except ValueError:
                    raise GmailError(f"the Gmail API at {self.host} answered with no JSON") from None
            reason, message = _error_fields(response.content)
            throttled = status in _RETRIED or (status == 403 and reason in _RATE_REASONS)
            if throttled and attempt < MAX_RETRIES:
                wait = retry_after(response.headers.get("Retry-After"), attempt)
                if wait <= MAX_RETRY_WAIT:
                    attempt += 1
                    log.info("Gmail API answered %d %s: waiting %.0f s (retry %d of %d)", status, reason, wait,
                             attempt, MAX_RETRIES)
                    time.sleep(wait)
                    continue
            if status == 401 and not renewed:
                renewed = True
                self._bearer(True)
                continue
            raise _error(status, reason, message, attempt=attempt, history=history)


def _apply(changes: Changes, record: dict[str, Any], label_id: str) -> None:
    """One history record: its messages that came into the label or left it; a later record overrules."""

    def ids(kind: str, *, labelled: bool) -> list[str]:
        return [str(item["message"]["id"]) for item in record.get(kind, [])
                if not labelled or label_id in (item.get("labelIds") or item["message"].get("labelIds") or [])]

    for into, message_ids in ((True, ids("messagesAdded", labelled=True) + ids("labelsAdded", labelled=True)),
                              (False, ids("labelsRemoved", labelled=True) + ids("messagesDeleted", labelled=False))):
        for message_id in message_ids:
            (changes.removed if into else changes.added).pop(message_id, None)
            (changes.added if into else changes.removed)[message_id] = None


def _error_fields(body: bytes) -> tuple[str, str]:
    """Google's error shape: {"error": {"code", "message", "status", "errors": [{"reason", ...}]}}."""
    try:
        error = json.loads(body.decode("utf-8", "replace")).get("error", {})
        reasons = [str(e.get("reason", "")) for e in error.get("errors", []) if isinstance(e, dict)]
        reason = next((r for r in reasons if r), str(error.get("status", "")))
        return reason, " ".join(str(error.get("message", "")).split())
    except (ValueError, AttributeError):
        return "", " ".join(body.decode("utf-8", "replace").split())[:200]


def _error(status: int, reason: str, message: str, *, attempt: int, history: bool) -> GmailError:
    said = f"{status} {reason}: {message}" if reason else f"{status} {message}".strip()
    if status == 404 and history:
        return HistoryExpired(f"Gmail no longer has this label's history ({said})")
    if status == 404:
        return MessageGone(f"not found ({said})")
    if status == 401:
        return _AuthGmailError(f"Gmail refused the token ({said}): 'hanna-sync test ID' shows why")
    if status == 403 and reason == "accessNotConfigured":
        return _AuthGmailError(f"the Gmail API is not enabled in the Google Cloud project ({said}): enable it in the"
                               " console (APIs & Services > Library > Gmail API)")
    if status == 403 and reason in ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
        return _AuthGmailError(f"Gmail denied access ({said}): the token needs the scope"
                               " https://www.googleapis.com/auth/gmail.readonly (for a service account: granted to"
                               " its client id in the Admin console's domain-wide delegation)")
    if status == 403 and reason not in _RATE_REASONS:  # a quota of the day, a domain policy: Gmail's own words
        return _AuthGmailError(f"Gmail denied access ({said})")
    if status in _RETRIED or status == 403:
        return GmailError(f"the Gmail API is throttling or failing ({said}) after {attempt} retries; the next pass"
                          " goes on")
    if status == 400 and reason == "failedPrecondition":
        return GmailError(f"Gmail refused ({said}): the account has no Gmail service (a Workspace licence"
                          " without Gmail?)")
    return GmailError(f"the Gmail API failed ({said})")
