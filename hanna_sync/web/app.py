"""The WSGI application: a few regex routes, tokens, JSON answers in the CLI's --json shapes and pages.

Each serving thread reads through its own query_only SQLite connection (Store(read_only=True)), so a
pass writes beside the server and a slow page holds up no other. A token (a bearer header, or the login
form's cookie, which holds the token itself) is looked up on every request, so a revoked one stops at
once. Failed authentications (a wrong token, not a missing one) are limited per client address. Nothing
here logs a request's headers or the login form, so a token never reaches a log. Under /api/ errors
are JSON; elsewhere they are pages, and a missing or wrong token answers with the login form.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from hanna_sync.config import Config
from hanna_sync.db.errors import DatabaseError
from hanna_sync.db.store import Store
from hanna_sync.errors import HannaError, InputError, NotFound
from hanna_sync.web import api, pages
from hanna_sync.web.routing import Reply, Request
from hanna_sync.web.routing import json_body as _json

log = logging.getLogger(__name__)

FAILED_AUTH_LIMIT = 10  # failed attempts per client address and window, then 429
FAILED_AUTH_WINDOW = 60.0  # seconds
LAST_USED_EVERY = 60.0  # seconds between two writes of a token's last_used_at
COOKIE = "hanna_sync_token"
# Lax, not Strict: a link from the CRM's page to a card must arrive logged in. Every GET only reads; the
# two POSTs (login, logout) refuse other sites themselves.
COOKIE_FLAGS = "HttpOnly; SameSite=Lax; Path=/; Secure"
MAX_FORM_BYTES = 4096  # the login form: a token and a path

StartResponse = Callable[..., Any]
ROUTES = api.ROUTES + pages.ROUTES


class HttpError(Exception):
    def __init__(self, status: str, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = [("Allow", allow)] if allow else []  # a 405 says what is allowed


class Unauthorized(HttpError):
    """No valid token; `stale` when the browser sent a cookie that is no longer valid (revoked)."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__("401 Unauthorized", message)
        self.stale = stale


def local_path(value: str) -> str:
    """Where a login may send the browser on: a path on this server ("/", not "//" nor "/\\", which
    browsers read as another host), printable ASCII only; anything else is "/" (no open redirect)."""
    return value if re.fullmatch(r"/(?![/\\])[\x21-\x7e]*", value) else "/"


def _requested(environ: dict[str, Any]) -> str:
    """The path and query asked for, URL-encoded again (WSGI hands the path over decoded, as latin-1)."""
    path = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~", encoding="latin-1")
    query = environ.get("QUERY_STRING", "")
    return local_path(path + (f"?{query}" if query else ""))


def _cross_site(environ: dict[str, Any]) -> bool:
    """Whether a form was posted from another site: Sec-Fetch-Site says so; a browser too old to send it
    still sends Origin, which must then name this server's Host (a reverse proxy passes the Host on)."""
    fetch_site = environ.get("HTTP_SEC_FETCH_SITE")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = environ.get("HTTP_ORIGIN")
    return origin is not None and urlsplit(origin).netloc != environ.get("HTTP_HOST")


def _cookie(environ: dict[str, Any]) -> str:
    """The token cookie's value. Split by hand: http.cookies gives up on a whole header over one odd cookie."""
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value.strip()
    return ""


class FailedAuth:
    """Failed authentications per client address in a sliding window (in memory, per server process)."""

    def __init__(self, limit: int = FAILED_AUTH_LIMIT, window: float = FAILED_AUTH_WINDOW) -> None:
        self.limit, self.window = limit, window
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self.seen.get(address, []) if now - t < self.window]
        if times:
            self.seen[address] = times
        else:
            self.seen.pop(address, None)  # forgotten, so a stream of new addresses does not pile up
        return times

    def blocked(self, address: str) -> bool:
        with self.lock:
            return len(self._recent(address, time.monotonic())) >= self.limit

    def add(self, address: str) -> None:
        with self.lock:
            now = time.monotonic()
            self.seen[address] = [*self._recent(address, now), now]


class WebApp:
    """The WSGI callable `hanna-sync serve` runs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.failed = FailedAuth()
        self.last_written: dict[str, float] = {}
        self.readers = threading.local()  # each serving thread's read-only Store (.store) and its file (.file)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self.answer(environ)
        except HttpError as exc:
            reply = Reply(status=exc.status, content_type="application/json", body=_json({"error": str(exc)}),
                          headers=exc.headers)
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
        # waitress sends what it is given, also for HEAD: a body there would be read as the next answer on
        # a kept-alive connection (a reverse proxy's), and a letter's bytes could pose as that answer.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]

    def answer(self, environ: dict[str, Any]) -> Reply:
        # WSGI hands the path over as latin-1 text (PEP 3333); links are UTF-8, so /customers/C-%C4%84 is C-Ą.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        if path.startswith("/api/"):
            return self.dispatch(environ, path)
        try:
            return self.page(environ, path)
        except Unauthorized as exc:
            forget = [("Set-Cookie", f"{COOKIE}=; Max-Age=0; {COOKIE_FLAGS}")] if exc.stale else []
            return pages.login_page(next_path=_requested(environ), status=exc.status, headers=forget,
                                    error="Your session ended (the token was revoked): log in again." if exc.stale
                                    else None)
        except HttpError as exc:
            page = pages.error_page(exc.status, str(exc))
            page.headers += exc.headers
            return page

    def page(self, environ: dict[str, Any], path: str) -> Reply:
        """What is not under /api/: the public stylesheet, logging in and out, and the pages."""
        method = environ.get("REQUEST_METHOD")
        if path == "/static/hanna.css" and method in ("GET", "HEAD"):
            return pages.stylesheet()
        if path == "/login" and method in ("GET", "HEAD"):
            query = parse_qs(environ.get("QUERY_STRING", ""))
            return pages.login_page(next_path=local_path(query.get("next", ["/"])[-1]))
        if path in ("/login", "/logout") and method == "POST":
            if _cross_site(environ):
                raise HttpError("403 Forbidden", "a form from another site cannot log in or out here")
            if path == "/logout":
                return Reply(status="303 See Other", content_type="text/plain; charset=utf-8", body=b"",
                             headers=[("Location", "/login"), ("Set-Cookie", f"{COOKIE}=; Max-Age=0; {COOKIE_FLAGS}")])
            return self.login(environ)
        if path == "/logout":
            raise HttpError("405 Method Not Allowed", "log out with the page's button (a POST)", allow="POST")
        return self.dispatch(environ, path)

    def login(self, environ: dict[str, Any]) -> Reply:
        """POST /login: a valid token sets the cookie and goes on to `next`; a wrong one counts as a
        failed authentication and shows the form again."""
        address = environ.get("REMOTE_ADDR", "")
        if self.failed.blocked(address):
            raise HttpError("429 Too Many Requests", "too many failed authentications: try again in a minute")
        form = _form(environ)
        token, next_path = form.get("token", [""])[-1].strip(), local_path(form.get("next", ["/"])[-1])
        try:
            store = self.reader()
        except HannaError as exc:
            raise HttpError("503 Service Unavailable", str(exc)) from None
        owner = store.token_owner(token) if token else None
        if owner is None:
            self.failed.add(address)
            log.warning("web: refused a login from %s: not a valid token", address)
            return pages.login_page(next_path=next_path, status="401 Unauthorized",
                                    error="That is not a valid token (unknown, mistyped or revoked).")
        self.note_use(store, owner["name"])
        return Reply(status="303 See Other", content_type="text/plain; charset=utf-8", body=b"",
                     headers=[("Location", next_path), ("Set-Cookie", f"{COOKIE}={token}; {COOKIE_FLAGS}")])

    def dispatch(self, environ: dict[str, Any], path: str) -> Reply:
        """A route's answer for an authenticated request (JSON unless the handler returns a Reply)."""
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            raise HttpError("405 Method Not Allowed", "the API is read-only: GET only", allow="GET, HEAD")
        route, match = next(((route, m) for route in ROUTES if (m := route.match(path))), (None, None))
        address = environ.get("REMOTE_ADDR", "")
        if self.failed.blocked(address):
            raise HttpError("429 Too Many Requests", "too many failed authentications: try again in a minute")
        try:
            store = self.reader()
        except HannaError as exc:
            raise HttpError("503 Service Unavailable", str(exc)) from None
        owner = self.authenticate(store, environ, address)
        if route is None or match is None:  # after the token: without one, every path is 401 alike
            raise HttpError("404 Not Found", f"no such page: {path}")
        if route.admin and not owner["admin"]:
            raise HttpError("403 Forbidden", f"token '{owner['name']}' is not an admin token")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        try:
            data = route.handler(Request(store=store, config=self.config, match=match, query=query, owner=owner))
        except NotFound as exc:
            raise HttpError("404 Not Found", str(exc)) from None
        except InputError as exc:
            raise HttpError("400 Bad Request", str(exc)) from None
        self.note_use(store, owner["name"])
        if isinstance(data, Reply):
            return data
        return Reply(content_type="application/json; charset=utf-8", body=_json(data))

    def reader(self) -> Store:
        """This serving thread's read-only Store: each thread has its own connection, so a slow page does not
        hold up the others, kept for the server's life, not one per request: a process whose last
        connection closes checkpoints the write-ahead log away, which broke other processes' readers.
        Unless the file at the database's path is another one now (restored, replaced): then that one, so a
        token revoked in it is refused at once; a path with no file is an error, never a new database."""
        path = self.config.database
        try:
            found = os.stat(path)
        except OSError:
            self._drop_reader()
            raise DatabaseError(f"cannot open database {path}: it is missing (moved or deleted?)") from None
        mine = self.readers
        if getattr(mine, "store", None) is not None and (found.st_dev, found.st_ino) != mine.file:
            log.warning("web: %s is another file now (restored or replaced): reading that one", path)
            self._drop_reader()
        if getattr(mine, "store", None) is None:
            mine.store, mine.file = Store(path, read_only=True), (found.st_dev, found.st_ino)
        store: Store = mine.store
        return store

    def _drop_reader(self) -> None:
        if getattr(self.readers, "store", None) is not None:
            self.readers.store.close()
            self.readers.store = None

    def authenticate(self, store: Store, environ: dict[str, Any], address: str) -> dict[str, Any]:
        """The token's owner: from `Authorization: Bearer`, else from the login cookie. A wrong token counts
        as a failed authentication; none at all does not (a browser's first visit is not a guess)."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        token = (token.strip() if scheme.lower() == "bearer" else "") if header else _cookie(environ)
        owner = store.token_owner(token) if token else None
        if owner is None:
            if header or token:
                self.failed.add(address)
            log.warning("web: refused a request from %s: no valid token", address)
            raise Unauthorized("a valid token is needed: Authorization: Bearer <token>"
                               " ('hanna-sync token create NAME' makes one)", stale=bool(token) and not header)
        return owner

    def note_use(self, store: Store, name: str) -> None:
        """The token's last_used_at, at most once a minute, through the reader's own connection; skipped,
        with a warning, when a pass holds the write lock."""
        now = time.monotonic()
        if now - self.last_written.get(name, -LAST_USED_EVERY) < LAST_USED_EVERY:
            return
        self.last_written[name] = now
        try:
            store.token_used(name)
        except sqlite3.Error as exc:
            log.warning("web: could not note token %r's use: %s", name, exc)


def _form(environ: dict[str, Any]) -> dict[str, list[str]]:
    """A small application/x-www-form-urlencoded body (the login form)."""
    if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise HttpError("415 Unsupported Media Type", "the login form is sent as application/x-www-form-urlencoded")
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise HttpError("413 Content Too Large", f"the login form is at most {MAX_FORM_BYTES} bytes")
    body = environ["wsgi.input"].read(int(length)).decode("utf-8", "replace")
    try:
        return parse_qs(body, keep_blank_values=True, max_num_fields=10)
    except ValueError:
        raise HttpError("400 Bad Request", "the login form has more fields than a token and a path") from None

