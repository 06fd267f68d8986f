"""`hanna-sync serve`'s pages over HTTP, against the REAL server process and an archive a real pass filled
from the sandbox Dovecot: logging in (the cookie), what each page shows, the security headers, and hostile
letters (tests/hostile_html.py, the parser corpus) coming out of /letters/{id}/body sanitised."""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass
from email.message import Message
from html import unescape
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from hanna_sync.web.pages import BODY_CSP, PAGE_CSP
from tests.helpers import Env, deliver_sample
from tests.hostile_html import CASES, EVIL, html_attachment_letter, xss_letter
from tests.web_server import Server, cli_json, cli_run, new_token

CORPUS = Path(__file__).parent / "corpus"
COOKIE_FLAGS = "HttpOnly; SameSite=Lax; Path=/; Secure"
PAGES = ["/", "/customers/C-1001", "/leads/L-2001", "/letters/1", "/letters/1/body", "/search?q=lentos", "/status"]


@dataclass
class Answer:
    status: int
    headers: Message
    text: str

    @property
    def type(self) -> str:
        return self.headers["Content-Type"].split(";")[0]


def call(server, path, *, method="GET", token=None, cookie=None, form=None, headers=None) -> Answer:
    """One request, redirects not followed (the tests look at them)."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if cookie:
        sent["Cookie"] = f"hanna_sync_token={cookie}"
    body = None
    if form is not None:
        body = urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    connection = http.client.HTTPConnection(urlsplit(server.base).hostname, urlsplit(server.base).port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=sent)
        reply = connection.getresponse()
        return Answer(reply.status, reply.headers, reply.read().decode())
    finally:
        connection.close()


def login(server, token, next_path="/") -> Answer:
    return call(server, "/login", method="POST", form={"token": token, "next": next_path})


def letter_ids(env, subject) -> list[int]:
    return [r["id"] for r in env.store.letters() if r["subject"] == subject]


@pytest.fixture
def hostile(tmp_path, imap_user):
    """The sample mailbox plus the XSS letters, an HTML attachment and the parser corpus's HTML letters, all
    from a customer's contact (so a pass archives and links them)."""
    env = Env(tmp_path)
    deliver_sample(imap_user)
    raws = [xss_letter(case, n) for n, case in enumerate(CASES)] + [html_attachment_letter()]
    for path in sorted(CORPUS.glob("html_*.eml")):
        raws.append(path.read_bytes().replace(b"From: Corpus <corpus@example.lt>", b"From: ruta@azuolas.lt", 1))
    for raw in raws:
        imap_user.dovecot.deliver(imap_user.login, "INBOX", raw, "")
    env.add(imap_user)
    assert env.run().ok
    return env


@pytest.fixture
def site(hostile):
    server = Server(hostile)
    server.env = hostile
    server.token = new_token(hostile, "crm")
    server.admin = new_token(hostile, "anna", "--admin")
    yield server
    server.stop()


def test_login_sets_the_token_cookie_and_goes_on_to_next(site):
    form = call(site, "/login?next=/leads/L-2001")
    assert form.status == 200 and form.type == "text/html"
    for piece in ('<form method="post" action="/login"', '<input type="password" name="token" id="token"',
                  '<input type="hidden" name="next" value="/leads/L-2001">', '<button type="submit" id="login">'):
        assert piece in form.text
    answer = login(site, site.token, "/customers/C-1001?x=1")
    assert (answer.status, answer.headers["Location"]) == (303, "/customers/C-1001?x=1")
    assert answer.headers["Set-Cookie"] == f"hanna_sync_token={site.token}; {COOKIE_FLAGS}"
    # The cookie works for the pages and for the API alike.
    assert call(site, "/customers/C-1001", cookie=site.token).status == 200
    api = call(site, "/api/customers", cookie=site.token)
    assert api.status == 200 and json.loads(api.text) == cli_json(site_env(site), "customers")
    assert login(site, site.token).headers["Location"] == "/"
    out = call(site, "/logout", method="POST", cookie=site.token)
    assert (out.status, out.headers["Location"]) == (303, "/login")
    assert out.headers["Set-Cookie"] == f"hanna_sync_token=; Max-Age=0; {COOKIE_FLAGS}"
    assert call(site, "/logout").status == 405


@pytest.mark.parametrize("next_path", ["//evil.example/", "/\\evil.example/", "https://evil.example/", "evil.example",
                                       "javascript:alert(1)", "/ok\r\nSet-Cookie: x=1", "/ok\tx", "/ą", ""])
def test_next_is_only_ever_a_local_path(site, next_path):
    answer = login(site, site.token, next_path)
    assert (answer.status, answer.headers["Location"]) == (303, "/")
    assert "hidden\" name=\"next\" value=\"/\"" in call(site, "/login?" + urlencode({"next": next_path})).text


def test_a_wrong_login_is_refused_counted_and_never_logged(site):
    wrong = site.token[:-2] + "xx"
    answer = login(site, wrong, "/leads/L-2001")
    assert answer.status == 401 and answer.type == "text/html" and "Set-Cookie" not in answer.headers
    assert re.search(r'<p class="error">[^<\n]+</p>', answer.text)
    assert '<input type="hidden" name="next" value="/leads/L-2001">' in answer.text
    assert login(site, "", "/").status == 401
    for _ in range(8):
        assert login(site, wrong).status == 401
    blocked = login(site, site.token)  # ten failures: the address waits, even with the right token
    assert blocked.status == 429 and blocked.type == "text/html" and "try again in a minute" in blocked.text
    assert call(site, "/api/customers", token=site.token).status == 429
    log = site.log.read_text()
    assert wrong not in log and site.token not in log and "refused a login" in log


def test_a_login_form_from_another_site_is_refused(site):
    answer = call(site, "/login", method="POST", form={"token": site.token, "next": "/"},
                  headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status == 403 and "Set-Cookie" not in answer.headers
    # A browser without Sec-Fetch-Site: its Origin must be the Host it posted to.
    host = urlsplit(site.base).netloc
    for origin, status in (("https://evil.example", 403), (f"http://{host}", 303)):
        answer = call(site, "/login", method="POST", form={"token": site.token, "next": "/"},
                      headers={"Origin": origin})
        assert answer.status == status, origin
    assert call(site, "/login", method="POST", headers={"Content-Type": "text/plain"}).status == 415
    big = call(site, "/login", method="POST", form={"token": "x" * 5000, "next": "/"})
    assert big.status == 413


def test_without_a_valid_token_a_page_answers_with_the_login_form(site):
    for path in PAGES:
        answer = call(site, path)
        assert (answer.status, answer.type) == (401, "text/html"), path
        assert f'<input type="hidden" name="next" value="{path.replace("&", "&amp;")}">' in answer.text, path
        assert 'id="token"' in answer.text and "Set-Cookie" not in answer.headers
    for path in ("/api/customers", "/api/customers/C-1001/letters", "/api/letters/1", "/api/search?q=x"):
        api = call(site, path)
        assert (api.status, api.type) == (401, "application/json"), path
    assert 'value="/customers/%C4%85?q=%C5%A1"' in call(site, "/customers/%C4%85?q=%C5%A1").text
    assert call(site, "/static/hanna.css").status == 200  # public: the login form uses it
    # Asking without any token is no guess: it does not count towards the limit (a wrong one does).
    assert call(site, "/customers/C-1001", token=site.token).status == 200


def test_bearer_tokens_open_pages_and_a_revoked_cookie_stops_at_once(site):
    assert call(site, "/customers/C-1001", token=site.token).status == 200
    assert call(site, "/customers/C-1001", cookie=site.token).status == 200
    assert cli_run(site_env(site), "token", "revoke", "crm").exit_code == 0
    stale = call(site, "/customers/C-1001", cookie=site.token)
    assert stale.status == 401 and '<p class="error">' in stale.text
    assert stale.headers["Set-Cookie"] == f"hanna_sync_token=; Max-Age=0; {COOKIE_FLAGS}"  # the browser forgets it
    assert call(site, "/api/customers", cookie=site.token).status == 401
    assert login(site, site.token).status == 401


def test_every_page_carries_the_security_headers(site, hostile):
    letter_id = letter_ids(hostile, "Freight schedule")[0]
    for path in [p.replace("/letters/1", f"/letters/{letter_id}") for p in PAGES] + ["/login", "/nothing"]:
        answer = call(site, path, token=site.admin)
        assert answer.headers["Referrer-Policy"] == "no-referrer", path
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8", path
        if path.endswith("/body"):
            assert answer.headers["Content-Security-Policy"] == BODY_CSP
            assert BODY_CSP.startswith("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:")
            assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
            continue
        assert answer.headers["Content-Security-Policy"] == PAGE_CSP == (
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self';"
            " frame-ancestors 'none'; base-uri 'none'"), path
        assert answer.headers["X-Frame-Options"] == "DENY", path
        assert '<meta charset="utf-8">' in answer.text and 'name="viewport"' in answer.text, path
        assert "<script" not in answer.text, path  # no JavaScript at all
    css = call(site, "/static/hanna.css")
    assert css.type == "text/css" and "@media (max-width" in css.text and ".scroll { overflow-x: auto; }" in css.text


def test_home_lists_customers_and_leads_with_a_search_form(site):
    page = call(site, "/", token=site.token).text
    assert '<form method="get" action="/search"' in page and 'name="q" id="q"' in page
    for href, name in (("/customers/C-1001", "UAB Ąžuolas"), ("/customers/C-1003", "Šviesa, MB"),
                       ("/leads/L-2001", "Naujas Klientas")):
        assert f'<a href="{href}">{name}</a>' in page
    assert 'href="/status"' not in page  # not an admin token
    assert 'href="/status"' in call(site, "/", token=site.admin).text


def test_a_card_shows_contacts_and_letters_newest_first_with_their_rule(site, hostile):
    page = call(site, "/customers/C-1001", token=site.token).text
    assert "<h1>UAB Ąžuolas</h1>" in page
    contacts = _element(page, "ul", "contacts")
    assert "Rūta Petraitienė" in contacts and "ruta@azuolas.lt" in contacts and "mindaugas.k@gmail.com" in contacts
    rows = re.findall(r'<tr class="letter">.*?href="/letters/(\d+)">(.*?)</a>.*?<td class="rule">(.*?)</td>', page, re.S)
    expected = cli_json(hostile, "letters", "--customer", "C-1001")
    assert [int(r[0]) for r in rows] == [r["id"] for r in expected]  # the CLI's order: newest first
    for (_, subject, rule), row in zip(rows, expected, strict=True):
        assert unescape(subject) == (row["subject"] or "(no subject)")
        assert rule == ", ".join(k["rule"] for k in row["links"] if k["entity_id"] == "C-1001")
    assert "&lt;b&gt;HTML&lt;/b&gt;" in page  # a subject is text, not markup
    assert f"<h2>Letters ({len(expected)})</h2>" in page and 'id="older"' not in page and len(expected) > 3
    # Paged: "Older letters" walks the whole list, in order, each letter once, the total always the whole.
    walked, path = [], "/customers/C-1001?limit=2"
    while path:
        page = call(site, path, token=site.token).text
        assert f"<h2>Letters ({len(expected)})</h2>" in page
        walked += [int(i) for i in re.findall(r'<tr class="letter">.*?href="/letters/(\d+)"', page, re.S)]
        older = re.search(r'<a id="older" href="([^"]+)">', page)
        path = unescape(older[1]) if older else None
    assert walked == [r["id"] for r in expected]
    lead = call(site, "/leads/L-2001", token=site.token).text
    assert "<h1>Naujas Klientas</h1>" in lead and "Domina jūsų paslaugos" in lead
    for path in ("/customers/C-9", "/leads/L-9", "/customers/%C5%BE", "/letters/99999", "/letters/99999/body"):
        missing = call(site, path, token=site.token)
        assert (missing.status, missing.type) == (404, "text/html"), path
        assert '<p class="error">' in missing.text
    missing = unescape(call(site, "/customers/%C5%BD-9", token=site.token).text)
    assert '<p class="error">no customer \'Ž-9\'; \'hanna-sync customers\' lists them</p>' in missing  # the CLI's words


def test_a_letter_page_shows_headers_body_frame_attachments_thread_locations_and_links(site, hostile):
    (invoice,) = letter_ids(hostile, "Sąskaita faktūra 2025-03")
    page = call(site, f"/letters/{invoice}", token=site.token).text
    assert "<h1>Sąskaita faktūra 2025-03</h1>" in page
    headers = _element(page, "dl", "headers")
    assert "Info &lt;info@azuolas.lt&gt;" in headers and "jonas@imone.lt" in headers and "2025-03-04 08:30 UTC" in headers
    assert f'<iframe id="body" sandbox src="/letters/{invoice}/body"' in page
    assert f'<a class="attachment" href="/api/letters/{invoice}/attachments/1">sąskaita.pdf</a>' in page
    assert f'<a id="original" href="/api/letters/{invoice}/raw">' in page
    assert '<a href="/customers/C-1001">customer C-1001</a>' in _element(page, "ul", "links")
    assert f"{hostile.store.mailboxes()[0].email} · INBOX" in _element(page, "ul", "locations")

    (order,) = letter_ids(hostile, "Užsakymas Nr. 17: ąžuolinės lentos")
    (reply,) = letter_ids(hostile, "Re: Užsakymas Nr. 17: ąžuolinės lentos")
    thread = _element(call(site, f"/letters/{order}", token=site.token).text, "ol", "thread")
    assert f'<a href="/letters/{reply}">Re: Užsakymas Nr. 17: ąžuolinės lentos</a>' in thread
    assert "Išsiųsti" in _element(call(site, f"/letters/{reply}", token=site.token).text, "ul", "locations")
    body = call(site, f"/letters/{order}/body", token=site.token)
    assert "<pre>Laba diena,\n\nprašome pateikti pasiūlymą 40 m³ lentų." in body.text  # the text body


def test_an_html_body_is_shown_sanitised_and_an_html_attachment_only_as_a_download(site, hostile):
    (schedule,) = letter_ids(hostile, "Freight schedule")
    assert "<p>Schedule <b>attached</b>.</p>" in call(site, f"/letters/{schedule}/body", token=site.token).text
    (report,) = letter_ids(hostile, "Ataskaita <b>HTML</b>")
    page = call(site, f"/letters/{report}", token=site.token).text
    assert "<h1>Ataskaita &lt;b&gt;HTML&lt;/b&gt;</h1>" in page
    assert f'<a class="attachment" href="/api/letters/{report}/attachments/1">ataskaita.html</a>' in page
    body = call(site, f"/letters/{report}/body", token=site.token).text
    assert "Ataskaita prisegta." in body and "attached-page" not in body and "__pwned" not in body


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_html_comes_out_of_the_server_harmless(site, hostile, case):
    (letter_id,) = letter_ids(hostile, f"XSS {case.name}")
    body = call(site, f"/letters/{letter_id}/body", token=site.token)
    assert body.status == 200 and body.headers["Content-Security-Policy"] == BODY_CSP
    inner = body.text.split("<body>", 1)[1]
    for forbidden in case.forbidden:
        assert forbidden.lower() not in inner.lower(), forbidden
    assert case.kept in inner
    assert EVIL not in call(site, f"/letters/{letter_id}", token=site.token).text


def test_the_corpus_html_letters_come_out_of_the_server_quickly(site, hostile):
    for path in sorted(CORPUS.glob("html_*.eml")):
        (letter_id,) = letter_ids(hostile, path.stem.replace("_", "-"))
        started = time.monotonic()
        body = call(site, f"/letters/{letter_id}/body", token=site.token)
        assert body.status == 200 and time.monotonic() - started < 10, path.name
        assert "<script" not in body.text.lower() and "<style>" not in body.text.split("<body>", 1)[1], path.name


def test_search_finds_what_the_cli_finds(site, hostile):
    page = call(site, "/search?q=" + "s%C4%85skaita", token=site.token).text
    results = _element(page, "ol", "results")
    found = [int(i) for i in re.findall(r'<a href="/letters/(\d+)">', results)]
    assert found == [r["id"] for r in cli_json(hostile, "search", "sąskaita")] and found
    assert "<mark>" in results
    assert 'value="sąskaita"' in page  # the form keeps the words
    only = call(site, "/search?q=lentos&customer=C-1001&limit=1", token=site.token).text
    assert len(re.findall(r"<li>", _element(only, "ol", "results"))) == 1
    broken = call(site, "/search?q=%22open", token=site.token)
    assert broken.status == 400 and "the search has an unclosed quote" in unescape(broken.text)
    empty = call(site, "/search?q=", token=site.token)
    assert empty.status == 200 and 'id="results"' not in empty.text
    assert call(site, "/search?q=x&customer=C-9", token=site.token).status == 404
    assert call(site, "/search?q=x&limit=0", token=site.token).status == 400
    xss = call(site, "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", token=site.token).text
    assert "<script>" not in xss and "&lt;script&gt;" in xss


def test_the_status_page_is_for_admins(site, hostile):
    page = call(site, "/status", token=site.admin).text
    status = cli_json(hostile, "status")
    mailboxes = _element(page, "table", "mailboxes")
    for box in status["mailboxes"]:
        assert box["email"] in mailboxes and f'<td class="state">{box["state"]}</td>' in mailboxes
        assert f"{box['archived_today']} / {box['archived_total']}" in mailboxes
    folders = _element(page, "table", "folders")
    assert "Išsiųsti" in folders and "INBOX" in folders
    assert status["last_pass"]["outcome"] in _element(page, "p", "last-pass")
    assert 'id="directory"' in page
    refused = call(site, "/status", token=site.token)
    assert (refused.status, refused.type) == (403, "text/html")
    assert "token &#39;crm&#39; is not an admin token" in refused.text


def site_env(site):
    return site.env


def _element(page, tag, element_id):
    """The inner HTML of the element with this id (not nested in one of its own kind)."""
    found = re.search(rf'<{tag} id="{element_id}"[^>]*>(.*?)</{tag}>', page, re.S)
    assert found, element_id
    return found[1]


def test_an_id_with_non_ascii_letters_is_found_by_its_utf8_url(site):
    """WSGI hands paths over as latin-1 text; the links the pages make are UTF-8: both must meet."""
    from hanna_sync.demo.sample import CUSTOMERS
    from hanna_sync.models import Entity

    azuolas = next(c for c in CUSTOMERS if c.id == "C-1001")  # the same people: the same letters
    site.env.store.save_entity("customer", Entity("C-Ą7", "Ąžuolo filialas", azuolas.email, None,
                                                  contacts=azuolas.contacts), replace_contacts=True)
    assert cli_run(site.env, "relink").exit_code == 0
    home = call(site, "/", token=site.token)
    assert 'href="/customers/C-%C4%847"' in home.text
    card = call(site, "/customers/C-%C4%847", token=site.token)
    assert card.status == 200 and "Ąžuolo filialas" in card.text and 'class="letter"' in card.text
    letters = json.loads(call(site, "/api/customers/C-%C4%847/letters", token=site.token).text)
    assert letters == cli_json(site.env, "letters", "--customer", "C-Ą7") and len(letters) >= 2
    first = call(site, "/api/customers/C-%C4%847/letters?limit=1", token=site.token)
    link = re.fullmatch(r'<(.+)>; rel="next"', first.headers["Link"])[1]
    assert link.startswith("/api/customers/C-%C4%847/letters?limit=1&cursor=")
    assert json.loads(call(site, link, token=site.token).text) == letters[1:2]


def test_an_attachment_is_named_on_the_page_as_it_downloads():
    """A right-to-left override would show "\u202egpj.html" as "lmth.jpg": the page shows the safe name."""
    from hanna_sync.web.pages import ENV

    template = ENV.from_string("{{ name|filename }}")
    assert template.render(name="\u202egpj.html") == "gpj.html"
    assert template.render(name="s\u0105skaita.pdf") == "sąskaita.pdf" and template.render(name=None) == "attachment"
