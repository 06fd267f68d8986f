"""What a route is, what it is handed and what it may answer: the words api.py and app.py share."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store


@dataclass(frozen=True)
class Request:
    """One authenticated request, as a handler sees it."""

    store: Store
    config: Config
    match: re.Match[str]
    query: dict[str, list[str]]
    owner: dict[str, Any]  # the token's name and admin flag


@dataclass
class Reply:
    """An answer other than JSON (a handler returning anything else is answered as JSON)."""

    body: bytes
    content_type: str
    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_body(data: Any) -> bytes:
    """The one JSON serialiser of the server's answers (a page of a list is answered through a Reply)."""
    return json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()


Handler = Callable[[Request], Any]


@dataclass(frozen=True)
class Route:
    path: str  # a regular expression the whole path must match
    handler: Handler
    admin: bool = False  # admin tokens only

    def match(self, path: str) -> re.Match[str] | None:
        return re.fullmatch(self.path, path)
