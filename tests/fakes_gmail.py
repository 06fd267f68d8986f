"""A local fake of the Gmail API (users.labels.list, getProfile, messages.list, messages.get, history.list),
over HTTPS on 127.0.0.1 with the sandbox CA, that checks what Gmail checks:

* a Bearer token it issued, still valid, for the user asked about ("me" or the address), with the scope
  gmail.readonly or https://mail.google.com/; else 401 (UNAUTHENTICATED) or 403 (PERMISSION_DENIED:
  insufficient scopes, delegation denied) in Google's JSON error shape;
* pageToken paging (opaque tokens bound to their label, stable when mail arrives between pages);
* history ids that only grow, and 404 notFound for a startHistoryId older than the history it keeps;
* format=metadata with only the headers asked for, format=raw as base64url;
* 429 RESOURCE_EXHAUSTED with Retry-After (or none) on demand, for one user or all, and a SIGKILL of the client at the Nth request of a kind;
* GET only: any other method is recorded in `writes` and refused (the archive must never ask for one).

Messages are real RFC 5322 bytes (the sample mailbox's letters); a reply lands in its parent's thread.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import secrets
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

from hanna_sync.demo.sandbox import CertificateAuthority
from tests.fakes_google import FakeGoogleOAuth
from tests.fakes_microsoft import HttpsFake, HttpsHandler, Reply

READONLY = "https://www.googleapis.com/auth/gmail.readonly"
FULL = "https://mail.google.com/"
HISTORY_KEYS = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted", "labelAdded": "labelsAdded",
                "labelRemoved": "labelsRemoved"}
SYSTEM = ("INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "IMPORTANT", "STARRED", "UNREAD")


class _AnyMethod(HttpsHandler):
    """Every method reaches `handle`, so that a write the client should never send is seen and refused."""

    def do_PUT(self) -> None:  # http.server's naming
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


def google_error(status: int, message: str, reason: str, state: str, domain: str = "global") -> Reply:
    return Reply(status, {"error": {"code": status, "message": message, "status": state,
                                    "errors": [{"message": message, "domain": domain, "reason": reason}]}})


@dataclass
class Message:
    id: str
    thread_id: str
    raw: bytes
    labels: set[str]
    seq: int  # arrival order: listings are newest first


@dataclass
class Box:
    messages: dict[str, Message] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # id -> name
    history: list[dict[str, Any]] = field(default_factory=list)
    oldest: int = 0  # history ids below this are forgotten: startHistoryId < oldest is a 404


class FakeGmail(HttpsFake):
    """The Gmail API. Its tokens are its own (`issue`), or, given `oauth`, those tests/fakes_google.py's
    token endpoint issued (a service account's delegated token from the real google-auth)."""

    def __init__(self, ca: CertificateAuthority, oauth: FakeGoogleOAuth | None = None) -> None:
        super().__init__(ca)
        self.oauth = oauth
        self.httpd.RequestHandlerClass = _AnyMethod
        self.url = f"{self.base}/gmail/v1"
        self.boxes: dict[str, Box] = {}
        self.tokens: dict[str, tuple[str, tuple[str, ...]]] = {}  # token -> (user, scopes)
        self.calls: collections.Counter[str] = collections.Counter()  # "messages.get/raw", "history.list", ...
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.writes: list[tuple[str, str]] = []
        self.throttle_next, self.throttle_status, self.retry_after = 0, 429, "0"
        self.throttle_user: str | None = None  # None: every user's requests are throttled
        self.kill: tuple[str, int, int] | None = None  # (kind, at, pid): SIGKILL pid at the at-th request of kind
        self.before: Callable[[str, str], object] | None = None  # called with (kind, path) before each answer
        self.api_disabled = False  # the Gmail API is not enabled in the caller's Cloud project
        self._history_ids = itertools.count(1000)
        self._seq = itertools.count(1)
        self._label_ids = itertools.count(1)  # never reused, as Gmail's
        self._history_id = 999
        self._lock = threading.RLock()

    # -- the test's side ----------------------------------------------------------------------------

    def issue(self, user: str, scopes: tuple[str, ...] = (READONLY,)) -> str:
        token = f"ya29.{secrets.token_urlsafe(24)}"
        self.tokens[token] = (user.casefold(), scopes)
        return token

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    def mailbox(self, user: str) -> Box:
        return self.boxes.setdefault(user.casefold(), Box(labels={name: name for name in SYSTEM}))

    def label_id(self, user: str, name: str) -> str:
        box = self.mailbox(user)
        found = next((i for i, n in box.labels.items() if n == name), None)
        if found is None:
            found = f"Label_{next(self._label_ids)}"
            box.labels[found] = name
        return found

    def deliver(self, user: str, raw: bytes, labels: tuple[str, ...] = ("INBOX",)) -> Message:
        box = self.mailbox(user)
        parsed = message_from_bytes(raw, policy=policy.default)
        parent = str(parsed.get("In-Reply-To") or "").strip()
        thread = next((m.thread_id for m in box.messages.values() if parent and _header(m.raw, "Message-ID") == parent),
                      None)
        with self._lock:
            message_id = f"{next(self._seq):016x}"
            message = Message(message_id, thread or message_id, raw, {self.label_id(user, n) for n in labels},
                              int(message_id, 16))
            box.messages[message_id] = message
            self._record(box, "messagesAdded", message)
        return message

    def add_label(self, user: str, message_id: str, name: str) -> None:
        box = self.mailbox(user)
        with self._lock:
            label = self.label_id(user, name)
            box.messages[message_id].labels.add(label)
            self._record(box, "labelsAdded", box.messages[message_id], [label])

    def remove_label(self, user: str, message_id: str, name: str) -> None:
        box = self.mailbox(user)
        with self._lock:
            label = self.label_id(user, name)
            box.messages[message_id].labels.discard(label)
            self._record(box, "labelsRemoved", box.messages[message_id], [label])

    def delete(self, user: str, message_id: str) -> None:
        box = self.mailbox(user)
        with self._lock:
            self._record(box, "messagesDeleted", box.messages.pop(message_id))

    def expire_history(self, user: str) -> None:
        """Gmail keeps history for about a week: everything before now is forgotten."""
        self.mailbox(user).oldest = self._history_id

    def _record(self, box: Box, kind: str, message: Message, labels: list[str] | None = None) -> None:
        self._history_id = next(self._history_ids)
        item: dict[str, Any] = {"message": {"id": message.id, "threadId": message.thread_id,
                                            "labelIds": sorted(message.labels)}}
        if labels is not None:
            item["labelIds"] = labels
        box.history.append({"id": str(self._history_id), "messages": [item["message"]], kind: [item]})

    # -- serving ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        with self._lock:
            self.requests.append((method, path, query))
            if method != "GET":
                self.writes.append((method, path))
                return google_error(403, "hanna-sync's fake refuses every write", "forbidden", "PERMISSION_DENIED")
            kind = _kind(path, query)
            self.calls[kind] += 1
            if self.kill and self.kill[0] == kind and self.calls[kind] == self.kill[1]:
                os.kill(self.kill[2], signal.SIGKILL)
            if self.before is not None:
                self.before(kind, path)
            return self._route(path, query, headers)

    def _route(self, path: str, query: dict[str, list[str]], headers: Any) -> Reply:
        token = str(headers.get("Authorization", "")).removeprefix("Bearer ")
        grant = self.tokens.get(token)
        issued = self.oauth.validate(token) if self.oauth is not None and grant is None else None
        if issued is not None:
            grant = (issued.user.casefold(), tuple(issued.scopes))
        if grant is None:
            return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token,"
                                " login cookie or other valid authentication credential.", "authError",
                                "UNAUTHENTICATED")
        user, scopes = grant
        if self.api_disabled:
            return google_error(403, "Gmail API has not been used in project 123456789012 before or it is disabled."
                                " Enable it by visiting https://console.developers.google.com/apis/api/gmail.googleapis"
                                ".com/overview?project=123456789012 then retry.", "accessNotConfigured",
                                "PERMISSION_DENIED", "usageLimits")
        if not {READONLY, FULL} & set(scopes):
            return google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions",
                                "PERMISSION_DENIED")
        if self.throttle_next > 0 and self.throttle_user in (None, user):
            self.throttle_next -= 1
            reply = google_error(self.throttle_status, "User-rate limit exceeded.", "rateLimitExceeded",
                                 "RESOURCE_EXHAUSTED", "usageLimits")
            if self.retry_after is not None:
                reply.headers["Retry-After"] = self.retry_after
            return reply
        parts = path.split("/")
        if parts[:4] != ["", "gmail", "v1", "users"] or len(parts) < 6:
            return google_error(404, "Not Found", "notFound", "NOT_FOUND")
        if parts[4] not in ("me", user) or user not in self.boxes:
            return google_error(403, f"Delegation denied for {user}", "forbidden", "PERMISSION_DENIED")
        box, rest = self.boxes[user], parts[5:]
        one = {k: v[0] for k, v in query.items()}
        if rest == ["labels"]:
            return Reply(200, {"labels": [{"id": i, "name": n, "type": "system" if i in SYSTEM else "user"}
                                          for i, n in box.labels.items()]})
        if rest == ["profile"]:
            return Reply(200, {"emailAddress": user, "messagesTotal": len(box.messages),
                               "historyId": str(self._history_id)})
        if rest == ["messages"]:
            return self._list(box, one)
        if len(rest) == 2 and rest[0] == "messages":
            message = box.messages.get(rest[1])
            if message is None:
                return google_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
            return Reply(200, self._message(message, one.get("format", "full"), query.get("metadataHeaders")))
        if rest == ["history"]:
            return self._history(box, one, query.get("historyTypes", []))
        return google_error(404, "Not Found", "notFound", "NOT_FOUND")

    def _list(self, box: Box, query: dict[str, str]) -> Reply:
        label = query.get("labelIds")
        size = int(query.get("maxResults", "100"))
        after = None
        if "pageToken" in query:
            try:
                token = json.loads(base64.urlsafe_b64decode(query["pageToken"]))
            except ValueError:
                token = {}
            if token.get("label") != label:
                return google_error(400, "Invalid pageToken", "invalidArgument", "INVALID_ARGUMENT")
            after = token["below"]
        chosen = sorted((m for m in box.messages.values() if label is None or label in m.labels),
                        key=lambda m: -m.seq)
        page = [m for m in chosen if after is None or m.seq < after][:size]
        out: dict[str, Any] = {"resultSizeEstimate": len(chosen)}
        if page:
            out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if page and any(m.seq < page[-1].seq for m in chosen):
            out["nextPageToken"] = base64.urlsafe_b64encode(json.dumps({"label": label, "below": page[-1].seq})
                                                            .encode()).decode()
        return Reply(200, out)

    def _message(self, message: Message, form: str, wanted: list[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": message.id, "threadId": message.thread_id, "labelIds": sorted(message.labels),
                               "sizeEstimate": len(message.raw), "historyId": str(self._history_id)}
        if form == "raw":
            out["raw"] = base64.urlsafe_b64encode(message.raw).decode()
        elif form == "metadata":
            names = {n.casefold() for n in wanted} if wanted else None
            out["payload"] = {"headers": [{"name": n, "value": v} for n, v in _headers(message.raw)
                                          if names is None or n.casefold() in names]}
        else:
            raise AssertionError(f"the archive asked for format={form}")
        return out

    def _history(self, box: Box, query: dict[str, str], types: list[str]) -> Reply:
        start = int(query["startHistoryId"])
        if start < box.oldest:
            return google_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
        label = query.get("labelId")
        kinds = {HISTORY_KEYS[t] for t in types}
        records = [r for r in box.history if int(r["id"]) > start
                   and (label is None or any(label in m["labelIds"] for m in r["messages"])
                        or any(label in item.get("labelIds", []) for k in r if k.endswith("Removed") for item in r[k]))]
        records = [{k: v for k, v in r.items() if k in ("id", "messages") or not kinds or k in kinds} for r in records]
        size = int(query.get("maxResults", "100"))
        offset = int(query.get("pageToken", "0"))
        out: dict[str, Any] = {"historyId": str(self._history_id)}
        if records[offset : offset + size]:
            out["history"] = records[offset : offset + size]
        if offset + size < len(records):
            out["nextPageToken"] = str(offset + size)
        return Reply(200, out)


def _kind(path: str, query: dict[str, list[str]]) -> str:
    rest = path.split("/")[5:]
    if rest[:1] == ["messages"] and len(rest) == 2:
        return f"messages.get/{query.get('format', ['full'])[0]}"
    return {"labels": "labels.list", "profile": "getProfile", "messages": "messages.list",
            "history": "history.list"}.get("/".join(rest), "other")


def _headers(raw: bytes) -> list[tuple[str, str]]:
    block = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in block.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            out.append((name, value.strip()))
    return out


def _header(raw: bytes, name: str) -> str:
    return next((v for n, v in _headers(raw) if n.casefold() == name.casefold()), "")
