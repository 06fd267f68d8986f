"""The JSON API's routes: each answers with what the CLI's --json prints (admin/views builds both)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hanna_sync.admin import views
from hanna_sync.admin.status import overview
from hanna_sync.errors import InputError
from hanna_sync.web.routing import Reply, Request, Route


def limit_of(request: Request, default: int | None) -> int | None:
    value = request.query.get("limit", [None])[-1]
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"limit '{value}' is not a whole number of 1 or more")
    return int(value)


def _entities(entity_type: str) -> Any:
    return lambda r: views.entities(r.store, entity_type, limit=limit_of(r, None))


def _letters_of(entity_type: str) -> Any:
    return lambda r: views.letters(r.store, **{entity_type: r.match["id"]}, limit=limit_of(r, None))


def _search(request: Request) -> Any:
    words = " ".join(request.query.get("q", [])).strip()
    if not words:
        raise InputError("search needs words: /api/search?q=WORDS")
    q = request.query
    return views.search(request.store, words, customer=q.get("customer", [None])[-1],
                        lead=q.get("lead", [None])[-1], limit=limit_of(request, 20) or 20)


def _raw(request: Request) -> Reply:
    return Reply(content_type="message/rfc822", body=request.store.original(int(request.match["id"]))["raw"])


def _status(request: Request) -> Any:
    return overview(request.store, request.config, fail_after=timedelta(minutes=60)).as_dict()


ROUTES = [
    Route(r"/api/customers", _entities("customer")),
    Route(r"/api/leads", _entities("lead")),
    Route(r"/api/customers/(?P<id>[^/]+)/letters", _letters_of("customer")),
    Route(r"/api/leads/(?P<id>[^/]+)/letters", _letters_of("lead")),
    Route(r"/api/letters/(?P<id>[0-9]+)", lambda r: views.letter(r.store, int(r.match["id"]))),
    Route(r"/api/letters/(?P<id>[0-9]+)/raw", _raw),
    Route(r"/api/threads/(?P<id>[0-9]+)", lambda r: views.thread(r.store, int(r.match["id"]))),
    Route(r"/api/search", _search),
    Route(r"/api/status", _status, admin=True),
]
