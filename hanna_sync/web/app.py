"""The WSGI application: a few regex routes, bearer tokens, JSON answers in the CLI's --json shapes.

Requests read through one query_only SQLite connection (Store(read_only=True)), taking turns, so a
pass writes beside the server; a token is looked up on every request, so a revoked one stops at
once. Failed authentications are limited per client address. Nothing here logs a request's
headers, so a token never reaches a log.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import HannaError, InputError, NotFound
from hanna_sync.web import api
from hanna_sync.web.routing import Reply, Request
from hanna_sync.web.routing import json_body as _json

log = logging.getLogger(__name__)

FAILED_AUTH_LIMIT = 10  # failed attempts per client address and window, then 429
FAILED_AUTH_WINDOW = 60.0  # seconds
LAST_USED_EVERY = 60.0  # seconds between two writes of a token's last_used_at

StartResponse = Callable[..., Any]
ROUTES = api.ROUTES


class HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class FailedAuth:
    """Failed authentications per client address in a sliding window (in memory, per server process)."""

    def __init__(self, limit: int = FAILED_AUTH_LIMIT, window: float = FAILED_AUTH_WINDOW) -> None:
        self.limit, self.window = limit, window
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self.seen.get(address, []) if now - t < self.window]
        self.seen[address] = times
        return times

    def blocked(self, address: str) -> bool:
        with self.lock:
            return len(self._recent(address, time.monotonic())) >= self.limit

    def add(self, address: str) -> None:
        with self.lock:
            now = time.monotonic()
            self._recent(address, now).append(now)


class WebApp:
    """The WSGI callable `hanna-sync serve` runs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.failed = FailedAuth()
        self.last_written: dict[str, float] = {}
        self.store: Store | None = None  # one read-only connection for the server's life, opened on first use
        self.opening = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self.answer(environ)
        except HttpError as exc:
            reply = Reply(status=exc.status, content_type="application/json", body=_json({"error": str(exc)}))
        headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *reply.headers]
        if reply.status.startswith("200 "):  # a strong validator from the body: an unchanged answer costs no body
            etag = f'"{hashlib.sha256(reply.body).hexdigest()[:32]}"'
            if environ.get("PATH_INFO", "").startswith("/api/"):  # the client may keep it, revalidated each time
                headers[0] = ("Cache-Control", "private, no-cache")
            headers.append(("ETag", etag))
            wanted = environ.get("HTTP_IF_NONE_MATCH", "").strip()
            if wanted == "*" or etag in (tag.strip().removeprefix("W/") for tag in wanted.split(",")):
                start_response("304 Not Modified", headers)
                return []
        start_response(reply.status, [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))),
                                      *headers])
        return [reply.body]

    def answer(self, environ: dict[str, Any]) -> Reply:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            raise HttpError("405 Method Not Allowed", "the API is read-only: GET only")
        route, match = next(((route, m) for route in ROUTES if (m := route.match(path))), (None, None))
        if route is None or match is None:
            raise HttpError("404 Not Found", f"no such page: {path}")
        address = environ.get("REMOTE_ADDR", "")
        if self.failed.blocked(address):
            raise HttpError("429 Too Many Requests", "too many failed authentications: try again in a minute")
        try:
            store = self.reader()
        except HannaError as exc:
            raise HttpError("503 Service Unavailable", str(exc)) from None
        with store.lock:  # one request at a time on the one connection: each sees the database as committed now
            owner = self.authenticate(store, environ, address)
            if route.admin and not owner["admin"]:
                raise HttpError("403 Forbidden", f"token '{owner['name']}' is not an admin token")
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            try:
                data = route.handler(Request(store=store, config=self.config, match=match, query=query, owner=owner))
            except NotFound as exc:
                raise HttpError("404 Not Found", str(exc)) from None
            except InputError as exc:
                raise HttpError("400 Bad Request", str(exc)) from None
        self.note_use(owner["name"])
        if isinstance(data, Reply):
            return data
        return Reply(content_type="application/json; charset=utf-8", body=_json(data))

    def reader(self) -> Store:
        """The server's read-only Store. One for the server's life, not one per request: a process whose
        last connection closes checkpoints the write-ahead log away, which broke other processes' readers."""
        with self.opening:
            if self.store is None:
                self.store = Store(self.config.database, read_only=True)
            return self.store

    def authenticate(self, store: Store, environ: dict[str, Any], address: str) -> dict[str, Any]:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        owner = store.token_owner(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if owner is None:
            self.failed.add(address)
            log.warning("web: refused a request from %s: no valid token", address)
            raise HttpError("401 Unauthorized", "a valid token is needed: Authorization: Bearer <token>"
                            " ('hanna-sync token create NAME' makes one)")
        return owner

    def note_use(self, name: str) -> None:
        """The token's last_used_at, at most once a minute, through a short read-write Store of its own
        (every answer is read read-only); skipped, with a warning, when a pass holds the write lock."""
        now = time.monotonic()
        if now - self.last_written.get(name, -LAST_USED_EVERY) < LAST_USED_EVERY:
            return
        self.last_written[name] = now
        try:
            writer = Store(self.config.database, busy_timeout_ms=200)
            try:
                writer.token_used(name)
            finally:
                writer.close()
        except (HannaError, sqlite3.Error) as exc:
            log.warning("web: could not note token %r's use: %s", name, exc)
