"""A CRM's export endpoint over HTTPS on 127.0.0.1, with a certificate from a CA made for the test.

Answers each path with what the test put there (a status, a body, a Content-Type, a delay) and keeps every
request's path and headers, so a test sees what hanna-sync sent (the Authorization header) and how often.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hanna_sync.demo.sandbox import CertificateAuthority
from tests.fakes_microsoft import HttpsFake, Reply


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/csv; charset=utf-8"
    delay: float = 0.0  # seconds before answering: past the client's timeout, a silent server


class FakeCrm(HttpsFake):
    def __init__(self, ca: CertificateAuthority) -> None:
        super().__init__(ca)
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]  # a client gone: quiet
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def put(self, path: str, body: bytes | str, content_type: str = "text/csv; charset=utf-8", *,
            status: int = 200, delay: float = 0.0) -> str:
        self.pages[path] = Page(status, body.encode() if isinstance(body, str) else body, content_type, delay)
        return self.url(path)

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        self.requests.append((path, dict(headers.items())))
        page = self.pages.get(path)
        if page is None:
            return Reply(404, b"not found", {"Content-Type": "text/plain"})
        if page.delay:
            time.sleep(page.delay)
        return Reply(page.status, page.body, {"Content-Type": page.content_type})
