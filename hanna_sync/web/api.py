"""The JSON API's routes: each answers with what the CLI's --json prints (admin/views builds both).

Lists page by keyset: `?limit=N` answers N rows and, when more follow, names the next page in `Link: <...>;
rel="next"` and `X-Next-Cursor`. The cursor is the last row's sort key (urlsafe base64 of JSON), so the
next page starts right behind that row whatever was archived or deleted in between: no row repeats, none
is skipped. Downloads (an original, an attachment) are always `attachment`s, never shown inline.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from hanna_sync.admin import views
from hanna_sync.admin.export import eml_name
from hanna_sync.admin.status import overview
from hanna_sync.errors import InputError, NotFound
from hanna_sync.mail.filenames import safe_filename
from hanna_sync.mail.message import attachment_contents
from hanna_sync.web.routing import Reply, Request, Route, json_body

# Attachment types a browser does not render, so they keep their type; any other goes as octet-stream
# (HTML, SVG, images, PDF, text: a download either way, but nothing a browser would open as a page).
DOWNLOAD_TYPES = frozenset({
    "application/zip", "application/gzip", "application/x-7z-compressed", "application/vnd.rar",
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
})

SortKey = Callable[[Any], list[Any]]


def limit_of(request: Request) -> int | None:
    """?limit=N, None when not given. ASCII digits only (str.isdigit takes '²'), and few enough for SQLite."""
    value = request.query.get("limit", [None])[-1]
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) < 1:
        raise InputError(f"limit '{value}' is not a whole number from 1 to 999999999")
    return int(value)


def status_overview(request: Request) -> dict[str, Any]:
    """`status --json` as the default `--fail-after 60` gives it: for /api/status and the status page."""
    return overview(request.store, request.config, fail_after=timedelta(minutes=60)).as_dict()


def _cursor(kind: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, *key]).encode()).decode().rstrip("=")


def _after(request: Request, kind: str, types: tuple[tuple[type, ...], ...]) -> list[Any] | None:
    """The sort key a `cursor` carries, checked against this list's `kind` and key types; None for page one."""
    cursor = request.query.get("cursor", [None])[-1]
    if cursor is None:
        return None
    try:
        decoded = json.loads(base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: "[[[[..." nested past Python's limit
        decoded = None
    fits = (isinstance(decoded, list) and len(decoded) == len(types) + 1 and decoded[0] == kind
            and all(type(v) in t for v, t in zip(decoded[1:], types, strict=True)))
    if not fits:
        shown = cursor if len(cursor) <= 60 else cursor[:60] + "…"
        raise InputError(f"cursor '{shown}' is not one this server gave: start again without cursor")
    return list(decoded[1:])


def _cut(rows: list[Any], kind: str, *, limit: int | None, key: SortKey) -> tuple[list[Any], str | None]:
    """`rows` (fetched with limit + 1) cut to `limit`, and the next page's cursor when one was left over."""
    if limit is None or len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, _cursor(kind, key(rows[-1]))


def _page(request: Request, kind: str, rows: list[Any], *, limit: int | None, key: SortKey) -> Any:
    """`rows` cut to `limit`; when more follow, with the next page's headers."""
    rows, cursor = _cut(rows, kind, limit=limit, key=key)
    if cursor is None:
        return rows
    query = [(name, value) for name, values in request.query.items() if name != "cursor" for value in values]
    link = f"{quote(request.match.string)}?{urlencode([*query, ('cursor', cursor)])}"
    return Reply(body=json_body(rows), content_type="application/json; charset=utf-8",
                 headers=[("Link", f'<{link}>; rel="next"'), ("X-Next-Cursor", cursor)])


def _more(limit: int | None) -> int | None:
    return None if limit is None else limit + 1


def _entities(entity_type: str) -> Any:
    def answer(request: Request) -> Any:
        after = _after(request, entity_type, ((str,),))
        limit = limit_of(request)
        rows = views.entities(request.store, entity_type, limit=_more(limit), after=None if after is None else after[0])
        return _page(request, entity_type, rows, limit=limit, key=lambda row: [row["id"]])
    return answer


def _letters_key(row: Any) -> list[Any]:
    return [row["date_utc"], row["id"]]


def _fetch_letters(request: Request, entity_type: str, limit: int | None) -> list[Any]:
    """The entity's letters behind ?cursor=, newest first, one more than `limit` (to know whether more follow)."""
    after = _after(request, "letters", ((str, type(None)), (int,)))
    of: dict[str, Any] = {entity_type: request.match["id"]}
    return views.letters(request.store, **of, limit=_more(limit), after=None if after is None else (after[0], after[1]))


def letters_page(request: Request, entity_type: str, *, limit: int) -> tuple[list[Any], str | None]:
    """A page of a card's letters and the cursor of the next, for the card page (the API's own paging)."""
    return _cut(_fetch_letters(request, entity_type, limit), "letters", limit=limit, key=_letters_key)


def _letters_of(entity_type: str) -> Any:
    def answer(request: Request) -> Any:
        limit = limit_of(request)
        return _page(request, "letters", _fetch_letters(request, entity_type, limit), limit=limit, key=_letters_key)
    return answer


def _search(request: Request) -> Any:
    words = " ".join(request.query.get("q", [])).strip()
    if not words:
        raise InputError("search needs words: /api/search?q=WORDS")
    q = request.query
    after = _after(request, "search", ((float, int), (str, type(None)), (int,)))
    limit = limit_of(request) or 20
    rows = views.search(request.store, words, customer=q.get("customer", [None])[-1],
                        lead=q.get("lead", [None])[-1], limit=limit + 1,
                        after=None if after is None else (float(after[0]), after[1], after[2]))
    return _page(request, "search", rows, limit=limit, key=lambda row: [row["rank"], row["date_utc"], row["id"]])


def _download(name: str) -> tuple[str, str]:
    """Content-Disposition for a file to save, never to show: the name in UTF-8 (RFC 6266 filename*) with an
    ASCII one for old clients; safe_filename has taken out quotes, control characters (CR, LF) and paths."""
    name = safe_filename(name)
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = "".join(c if c.isprintable() and c not in '"\\;' else "_" for c in ascii_name).strip() or "download"
    return "Content-Disposition", f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _raw(request: Request) -> Reply:
    original = request.store.original(int(request.match["id"]))
    return Reply(content_type="message/rfc822", body=original["raw"], headers=[_download(eml_name(original))])


def _attachment(request: Request) -> Reply:
    """The n-th attachment `show` lists (1-based), decoded from the original by export's own MIME walk."""
    letter_id, n = int(request.match["id"]), int(request.match["n"])
    listed = request.store.letter(letter_id)["attachments"]
    original = request.store.original(letter_id)
    if original["body_skipped"]:
        raise NotFound(f"letter {letter_id} was archived without its body (larger than scan.max_letter_size_mb):"
                       " its attachments were not kept")
    if not 1 <= n <= len(listed):
        count = len(listed)
        has = {0: "no attachments", 1: "1 attachment; n is 1"}.get(count, f"{count} attachments; n is 1 to {count}")
        raise NotFound(f"letter {letter_id} has {has}")
    contents = attachment_contents(original["raw"])
    if len(contents) != len(listed):  # the walk never differs from the one at archiving: if it did, no guess
        raise NotFound(f"letter {letter_id}'s attachments could not be read back from its original:"
                       " 'hanna-sync export --attachments' shows what it finds")
    attachment, data = contents[n - 1]
    kind = attachment.content_type if attachment.content_type in DOWNLOAD_TYPES else "application/octet-stream"
    return Reply(content_type=kind, body=data, headers=[_download(listed[n - 1]["filename"] or f"attachment-{n}")])


ROUTES = [
    Route(r"/api/customers", _entities("customer")),
    Route(r"/api/leads", _entities("lead")),
    Route(r"/api/customers/(?P<id>[^/]+)/letters", _letters_of("customer")),
    Route(r"/api/leads/(?P<id>[^/]+)/letters", _letters_of("lead")),
    Route(r"/api/letters/(?P<id>[0-9]{1,18})", lambda r: views.letter(r.store, int(r.match["id"]))),
    Route(r"/api/letters/(?P<id>[0-9]{1,18})/raw", _raw),
    Route(r"/api/letters/(?P<id>[0-9]{1,18})/attachments/(?P<n>[0-9]{1,9})", _attachment),
    Route(r"/api/threads/(?P<id>[0-9]{1,18})", lambda r: views.thread(r.store, int(r.match["id"]))),
    Route(r"/api/search", _search),
    Route(r"/api/status", status_overview, admin=True),
]
