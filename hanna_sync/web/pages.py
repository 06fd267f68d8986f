"""The HTML pages: server-rendered, no JavaScript, over the same data as the CLI's --json (admin/views).

Templates are Jinja2 with autoescape on: every letter field is text written by strangers, so nothing
reaches a page unescaped except a letter's HTML body, and that only after the sanitiser, in its own
document (/letters/{id}/body) shown in a sandboxed frame under a CSP that forbids scripts and any
fetch but data: images. Every page carries a CSP that allows only this server's CSS and frame.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from hanna_sync.admin import views
from hanna_sync.errors import NotFound
from hanna_sync.mail.filenames import safe_filename
from hanna_sync.mail.message import html_body
from hanna_sync.models import Mailbox
from hanna_sync.web import sanitise
from hanna_sync.web.api import letters_page, limit_of, status_overview
from hanna_sync.web.routing import Reply, Request, Route

PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self';"
            " frame-ancestors 'none'; base-uri 'none'")
BODY_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
HTML = "text/html; charset=utf-8"
CARD_LETTERS = 100  # letters a card shows at once, newest first; "Older letters" pages on
STYLESHEET = resources.files("hanna_sync.web").joinpath("static/hanna.css").read_bytes()


def _when(stamp: str | None) -> str:
    """An ISO timestamp as people read it: "2025-03-03 08:30 UTC"."""
    if not stamp:
        return ""
    day, _, time = stamp.partition("T")
    return f"{day} {time[:5]} UTC" if time else day


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


ENV = jinja2.Environment(loader=jinja2.PackageLoader("hanna_sync.web", "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(
    segment=lambda s: quote(str(s), safe=""),  # an id as one path segment
    when=_when,
    size=_size,
    filename=safe_filename,  # shown as it downloads: no right-to-left override turning "gpj.html" into "lmth.jpg"
    marked=lambda snippet: snippet.split("**"),  # search's **word** marks: odd pieces are the matches
)


def security_headers(*, frameable: bool = False) -> list[tuple[str, str]]:
    if frameable:  # the letter body: only our own letter page may frame it
        return [("Content-Security-Policy", BODY_CSP),
                ("X-Frame-Options", "SAMEORIGIN"), ("Referrer-Policy", "no-referrer")]
    return [("Content-Security-Policy", PAGE_CSP), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer")]


def render(template: str, *, http_status: str = "200 OK", headers: list[tuple[str, str]] | None = None,
           **context: Any) -> Reply:
    context.setdefault("owner", None)
    body = ENV.get_template(template).render(**context).encode()
    return Reply(body=body, content_type=HTML, status=http_status, headers=[*security_headers(), *(headers or [])])


def login_page(*, next_path: str, error: str | None = None, status: str = "200 OK",
               headers: list[tuple[str, str]] | None = None) -> Reply:
    return render("login.html", next=next_path, error=error, http_status=status, headers=headers)


def error_page(status: str, message: str, owner: dict[str, Any] | None = None) -> Reply:
    return render("error.html", http_status=status, status=status, message=message, owner=owner)


def stylesheet() -> Reply:
    return Reply(body=STYLESHEET, content_type="text/css; charset=utf-8")


def _home(request: Request) -> Reply:
    return render("home.html", owner=request.owner, customers=views.entities(request.store, "customer"),
                  leads=views.entities(request.store, "lead"))


def _card(entity_type: str) -> Any:
    def card(request: Request) -> Reply:
        entity_id = request.match["id"]
        entity = request.store.existing_entity(entity_type, entity_id)
        limit = limit_of(request) or CARD_LETTERS
        rows, cursor = letters_page(request, entity_type, limit=limit)
        letters = [{**row, "rule": ", ".join(k["rule"] for k in row["links"]
                                             if (k["entity_type"], k["entity_id"]) == (entity_type, entity_id))}
                   for row in rows]
        older = None if cursor is None else f"/{entity_type}s/{quote(entity_id, safe='')}?" + urlencode(
            {**({"limit": limit} if limit != CARD_LETTERS else {}), "cursor": cursor})
        return render("card.html", owner=request.owner, entity=asdict(entity), kind=entity_type,
                      kind_title=entity_type.capitalize(), letters=letters, older=older,
                      total=request.store.entity_link_count(entity_type, entity_id),
                      first_page="cursor" not in request.query)
    return card


def _letter(request: Request) -> Reply:
    letter_id = int(request.match["id"])
    letter = views.letter(request.store, letter_id)
    sender = letter["from_addr"] or ""
    if letter["from_name"]:
        sender = f"{letter['from_name']} <{sender}>" if sender else letter["from_name"]
    locations = [{**loc, "email": m.email if (m := _mailbox(request, loc["mailbox_id"])) else
                  f"mailbox {loc['mailbox_id']} (removed)"} for loc in letter["locations"]]
    return render("letter.html", owner=request.owner, letter=letter, sender=sender, locations=locations,
                  thread=views.thread(request.store, letter_id))


def _body(request: Request) -> Reply:
    """The letter's body alone, for the sandboxed frame: its HTML sanitised, else its text."""
    letter_id = int(request.match["id"])
    letter = views.letter(request.store, letter_id)
    charset = next((m.imap_charset for m in (_mailbox(request, loc["mailbox_id"]) for loc in letter["locations"])
                    if m is not None and m.imap_charset), None)
    html = None if letter["body_skipped"] else html_body(request.store.original(letter_id)["raw"], charset)
    empty = "Not archived: the letter was over the size limit." if letter["body_skipped"] else "(no text)"
    body = ENV.get_template("body.html").render(html=None if html is None else sanitise.clean(html),
                                                text=letter["body_text"], empty=empty).encode()
    return Reply(body=body, content_type=HTML, headers=security_headers(frameable=True))


def _mailbox(request: Request, mailbox_id: int) -> Mailbox | None:
    """None for a mailbox removed since (its letters stay)."""
    try:
        return request.store.mailbox(mailbox_id)
    except NotFound:
        return None


def _search(request: Request) -> Reply:
    q = request.query
    words = " ".join(q.get("q", [])).strip()
    customer, lead = q.get("customer", [None])[-1] or None, q.get("lead", [None])[-1] or None
    limit = limit_of(request) or 20
    hits = views.search(request.store, words, customer=customer, lead=lead, limit=limit) if words else []
    return render("search.html", owner=request.owner, q=words, hits=hits, limit=limit, customer=customer, lead=lead)


def _status(request: Request) -> Reply:
    status = status_overview(request)
    return render("status.html", owner=request.owner, status=status)


ROUTES = [
    Route(r"/", _home),
    Route(r"/customers/(?P<id>[^/]+)", _card("customer")),
    Route(r"/leads/(?P<id>[^/]+)", _card("lead")),
    Route(r"/letters/(?P<id>[0-9]{1,18})", _letter),
    Route(r"/letters/(?P<id>[0-9]{1,18})/body", _body),
    Route(r"/search", _search),
    Route(r"/status", _status, admin=True),
]
