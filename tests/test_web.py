"""`hanna-sync serve`: the REAL server process (waitress) over an archive a real pass filled from the sandbox
Dovecot, called over HTTP on 127.0.0.1: tokens, every endpoint in the CLI's --json shapes, the errors."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

import pytest

from hanna_sync.db.store import Store
from hanna_sync.web.command import _loopback
from tests.helpers import Env, deliver_sample
from tests.web_server import Server, cli_json, cli_run, new_token


@pytest.fixture
def archived(tmp_path, imap_user):
    env = Env(tmp_path)
    deliver_sample(imap_user)
    env.add(imap_user)
    assert env.run().ok
    return env


@pytest.fixture
def server(archived):
    token = new_token(archived, "crm")
    s = Server(archived)
    s.token = token
    yield s
    s.stop()


def _steady(status):
    """status without its minute counts, which tick between two calls."""
    for box in status["mailboxes"] + status["directory_sources"]:
        for key in [k for k in box if k.endswith("minutes_ago")]:
            box.pop(key)
    return status


def test_every_endpoint_answers_what_the_cli_prints_with_json(archived, server):
    t = server.token
    (letter_id, *_) = [r["id"] for r in archived.store.letters(customer="C-1001")]
    pairs = [
        ("/api/customers", ["customers"]),
        ("/api/leads", ["leads"]),
        ("/api/customers/C-1001/letters", ["letters", "--customer", "C-1001"]),
        ("/api/customers/C-1001/letters?limit=1", ["letters", "--customer", "C-1001", "--limit", "1"]),
        ("/api/leads/L-2001/letters", ["letters", "--lead", "L-2001"]),
        (f"/api/letters/{letter_id}", ["show", str(letter_id)]),
        (f"/api/threads/{letter_id}", ["thread", str(letter_id)]),
        ("/api/search?q=s%C4%85skaita", ["search", "sąskaita"]),
        ("/api/search?q=lentos&customer=C-1001&limit=1", ["search", "lentos", "--customer", "C-1001", "--limit", "1"]),
    ]
    for path, args in pairs:
        answer = server.json(path, t)
        assert answer == cli_json(archived, *args), path
        assert answer, path  # the sample archive has something for each: no vacuous equality
    assert len(server.json("/api/customers/C-1001/letters?limit=1", t)) == 1
    assert len(server.json("/api/customers?limit=1", t)) == 1

    admin = new_token(archived, "anna", "--admin")
    assert _steady(server.json("/api/status", admin)) == _steady(cli_json(archived, "status"))
    # The token's use is recorded (by name), the token itself nowhere: not in the list, not in the log.
    listed = cli_json(archived, "token", "list")
    assert [(r["name"], r["admin"]) for r in listed] == [("anna", True), ("crm", False)]
    assert all(r["last_used_at"] for r in listed)
    assert t not in json.dumps(listed) and t not in server.log.read_text() and admin not in server.log.read_text()


def test_raw_is_byte_identical_to_export(archived, server, tmp_path):
    for letter_id in [r["id"] for r in archived.store.letters()]:
        code, kind, body = server.get(f"/api/letters/{letter_id}/raw", server.token)
        assert (code, kind) == (200, "message/rfc822")
        exported = tmp_path / f"{letter_id}.eml"
        assert cli_run(archived, "export", str(letter_id), "-o", str(exported)).exit_code == 0
        assert body == exported.read_bytes()


def test_errors_are_json_with_the_cli_wording(archived, server):
    t = server.token
    assert server.json("/api/customers", None, 401)["error"].startswith("a valid token is needed")
    assert server.json("/api/customers", "not-a-token", 401)["error"].startswith("a valid token is needed")
    assert server.json("/api/status", t, 403) == {"error": "token 'crm' is not an admin token"}
    for path, args in (("/api/letters/99999", ["show", "99999"]), ("/api/threads/99999", ["thread", "99999"]),
                       ("/api/customers/C-9/letters", ["letters", "--customer", "C-9"]),
                       ("/api/leads/L-9/letters", ["letters", "--lead", "L-9"]),
                       ("/api/letters/99999/raw", ["show", "99999"])):
        cli_error = cli_run(archived, *args)
        assert cli_error.exit_code == 3, path
        assert server.json(path, t, 404) == {"error": cli_error.stderr.strip().removeprefix("Error: ")}, path
    assert server.json("/api/customers?limit=0", t, 400) == {"error": "limit '0' is not a whole number from 1 to 999999999"}
    # Nothing a client sends is a 500: not a digit str.isdigit() takes, not a number too big for SQLite or int().
    for path in ("/api/customers?limit=%C2%B2", "/api/search?q=lentos&limit=99999999999999999999"):
        assert server.json(path, t, 400)["error"].startswith("limit '"), path
    for path in ("/api/letters/99999999999999999999", "/api/letters/" + "9" * 5000, "/api/letters/1/attachments/" + "9" * 30):
        assert server.json(path, t, 404)["error"].startswith("no such page"), path
    assert server.json("/api/search", t, 400) == {"error": "search needs words: /api/search?q=WORDS"}
    assert server.json("/api/nothing", t, 404)["error"] == "no such page: /api/nothing"


def test_a_revoked_token_stops_working_at_once(archived, server):
    assert server.json("/api/customers", server.token)
    result = cli_run(archived, "token", "revoke", "crm")
    assert result.exit_code == 0 and "revoked" in result.output
    server.json("/api/customers", server.token, 401)
    assert cli_run(archived, "token", "revoke", "crm").exit_code == 3


def test_failed_authentications_are_limited_per_address(archived, server):
    for _ in range(10):
        server.json("/api/customers", "wrong", 401)
    assert server.json("/api/customers", "wrong", 429)["error"].startswith("too many failed")
    assert server.json("/api/customers", server.token, 429)  # the address waits, whatever it sends now


@pytest.mark.parametrize("trusted", [False, True])
def test_behind_a_trusted_proxy_each_client_is_limited_on_its_own(archived, trusted):
    """With --trusted-proxy the proxy's X-Forwarded-For names the client; without it the header is ignored
    (anyone could send one to dodge the limit)."""
    token = new_token(archived, "crm")
    server = Server(archived, *(["--trusted-proxy", "127.0.0.1"] if trusted else []))
    try:
        def status(sent, client):
            return server.fetch("/api/customers", sent, x_forwarded_for=f"203.0.113.9, {client}")[0]

        assert [status("wrong", "198.51.100.1") for _ in range(10)] == [401] * 10
        assert status(token, "198.51.100.1") == 429
        assert status(token, "198.51.100.2") == (200 if trusted else 429)
    finally:
        server.stop()


def test_token_commands(archived):
    token = new_token(archived, "crm")
    assert len(token) >= 43 and token not in archived.store.db.execute("SELECT * FROM web_tokens").fetchall()[0]
    again = cli_run(archived, "token", "create", "crm")
    assert again.exit_code == 2 and again.stderr.startswith("Error: a token named 'crm' exists already")
    listed = cli_run(archived, "token", "list")
    assert "crm" in listed.output and token not in listed.output
    assert cli_run(archived, "token", "revoke", "nobody").stderr == (
        "Error: no token named 'nobody'; 'hanna-sync token list' shows them\n")


def test_the_server_reads_read_only(archived):
    store = Store(archived.config.database, read_only=True)
    try:
        assert store.letters()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # query_only
            store.create_token("x")
    finally:
        store.close()


def test_only_loopback_counts_as_local():
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("192.0.2.1") and not _loopback("example.com")


# -- downloads: an original under export's name, attachments as files that are never shown ---------------------

def disposition_names(value):
    """(filename, filename*) of a Content-Disposition: attachment header, filename* decoded."""
    found = re.fullmatch(r"""attachment; filename="([^"\\\\\r\n]*)"; filename\*=UTF-8''([A-Za-z0-9%!#$&+.^_`|~-]+)""", value)
    assert found, value
    return found[1], urllib.parse.unquote(found[2])


def test_raw_is_offered_as_a_download_under_the_name_export_gives_it(archived, server, tmp_path):
    out = tmp_path / "export"
    assert cli_run(archived, "export", "--customer", "C-1001", "-o", str(out)).exit_code == 0
    files = {int(f.name.split("-")[0]): f.name for f in out.iterdir()}
    assert len(files) >= 3 and any(not name.isascii() for name in files.values())  # Lithuanian subjects
    for letter_id, name in files.items():
        code, headers, body = server.fetch(f"/api/letters/{letter_id}/raw", server.token)
        assert code == 200 and body == (out / name).read_bytes()
        ascii_name, full_name = disposition_names(headers["Content-Disposition"])
        assert full_name == name and ascii_name.isascii() and ascii_name.endswith(".eml")
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_an_attachment_downloads_as_export_writes_it_with_a_lithuanian_name(archived, server, tmp_path):
    (letter_id,) = [r["id"] for r in archived.store.letters() if r["subject"] == "Sąskaita faktūra 2025-03"]
    assert "Attachment: sąskaita.pdf application/octet-stream" in cli_run(archived, "show", str(letter_id)).output
    files = tmp_path / "files"
    assert cli_run(archived, "export", str(letter_id), "-o", str(tmp_path / "x.eml"),
                   "--attachments", str(files)).exit_code == 0
    code, headers, body = server.fetch(f"/api/letters/{letter_id}/attachments/1", server.token)
    assert code == 200 and body == (files / str(letter_id) / "sąskaita.pdf").read_bytes() == b"%PDF-1.4 sample"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == "attachment; filename=\"saskaita.pdf\"; filename*=UTF-8''s%C4%85skaita.pdf"

    t = server.token
    assert server.json(f"/api/letters/{letter_id}/attachments/2", t, 404) == {
        "error": f"letter {letter_id} has 1 attachment; n is 1"}
    assert server.json(f"/api/letters/{letter_id}/attachments/0", t, 404)["error"].endswith("n is 1")
    (plain,) = [r["id"] for r in archived.store.letters() if r["subject"] == "Krovinys išvyko"]
    assert server.json(f"/api/letters/{plain}/attachments/1", t, 404) == {"error": f"letter {plain} has no attachments"}
    assert server.json("/api/letters/99999/attachments/1", t, 404) == {
        "error": "no letter 99999; 'hanna-sync letters' lists them"}
    assert server.json(f"/api/letters/{letter_id}/attachments/x", t, 404)["error"].startswith("no such page")


HOSTILE_ATTACHMENTS = b"""\
From: Sviesa <sviesa@inbox.lt>\r
To: jonas@imone.lt\r
Subject: Priedai\r
Date: Tue, 01 Apr 2025 10:00:00 +0000\r
Message-ID: <attachments@inbox.lt>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary="b"\r
\r
--b\r
Content-Type: text/plain; charset=utf-8\r
\r
Priedai.\r
--b\r
Content-Type: text/html; name="page.html"\r
Content-Disposition: attachment; filename="page.html"\r
\r
<script>window.__pwned = 1</script>\r
--b\r
Content-Type: image/svg+xml\r
Content-Disposition: attachment; filename*=UTF-8''a%22b%0D%0ASet-Cookie%3A%20x%3Dy%3B%20%C4%85.svg\r
\r
<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned = 1"/>\r
--b\r
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r
Content-Disposition: attachment; filename="sutartis.docx"\r
Content-Transfer-Encoding: base64\r
\r
UEsDBBQAAAAIAA==\r
--b--\r
"""


def test_hostile_attachments_are_downloads_never_html_or_svg(archived, server, imap_user):
    imap_user.dovecot.deliver(imap_user.login, "INBOX", HOSTILE_ATTACHMENTS)
    assert archived.run().ok
    (letter_id,) = [r["id"] for r in archived.store.letters(customer="C-1003") if r["subject"] == "Priedai"]
    listed = server.json(f"/api/letters/{letter_id}", server.token)["attachments"]
    assert [a["content_type"] for a in listed] == [
        "text/html", "image/svg+xml", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
    answers = [server.fetch(f"/api/letters/{letter_id}/attachments/{n}", server.token) for n in (1, 2, 3)]
    assert [code for code, _, _ in answers] == [200, 200, 200]
    assert [h["Content-Type"] for _, h, _ in answers] == [
        "application/octet-stream", "application/octet-stream",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
    assert answers[0][2] == b"<script>window.__pwned = 1</script>"
    assert answers[2][2] == b"PK\x03\x04\x14\x00\x00\x00\x08\x00"
    assert [disposition_names(h["Content-Disposition"])[1] for _, h, _ in answers] == [
        "page.html", "a_b Set-Cookie_ x=y; ą.svg", "sutartis.docx"]
    svg_headers = answers[1][1]
    assert "Set-Cookie" not in svg_headers and svg_headers["Content-Disposition"].startswith(
        'attachment; filename="a_b Set-Cookie_ x=y_ a.svg"; ')
    assert all(h["X-Content-Type-Options"] == "nosniff" for _, h, _ in answers)


def test_a_letter_archived_without_its_body_has_no_attachment_to_give(tmp_path, imap_user):
    from hanna_sync.demo.sample import letter

    env = Env(tmp_path, max_letter_size_mb=0.05)
    imap_user.dovecot.deliver(imap_user.login, "INBOX", letter(
        "sviesa@inbox.lt", "jonas@imone.lt", "Brėžiniai", "Prisegti brėžiniai.", message_id="<big@inbox.lt>",
        attachment=("brėžinys.pdf", os.urandom(80_000))))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    (row,) = env.store.letters(customer="C-1003")
    assert row["body_skipped"]
    token = new_token(env, "crm")
    server = Server(env)
    try:
        assert server.json(f"/api/letters/{row['id']}/attachments/1", token, 404) == {
            "error": f"letter {row['id']} was archived without its body (larger than scan.max_letter_size_mb):"
                     " its attachments were not kept"}
    finally:
        server.stop()


# -- paging: ?limit=N&cursor=C, the next page in Link and X-Next-Cursor --------------------------------------------

def walk(server, path):
    """Every page of a list, following Link: rel="next" until a page names none."""
    pages = []
    while path:
        code, headers, body = server.fetch(path, server.token)
        assert code == 200, body
        pages.append(json.loads(body))
        link, cursor = headers["Link"], headers["X-Next-Cursor"]
        assert (link is None) == (cursor is None), headers
        path = None
        if link:
            found = re.fullmatch(r'<(/api/[^>]*)>; rel="next"', link)
            assert found, link
            path = found[1]
            assert urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["cursor"] == [cursor]
    return pages


def test_pages_put_together_are_the_whole_list(archived, server, imap_user):
    from hanna_sync.demo.sample import letter
    from hanna_sync.models import Entity

    # A second lead, and a second letter for the first one: every list has more than one page.
    archived.store.save_entity("lead", Entity("L-2002", "Draugas", "draugas@gmail.com", None, []), True)
    imap_user.dovecot.deliver(imap_user.login, "INBOX", letter(
        "vadovas@naujas.lt", "jonas@imone.lt", "Susitikimas", "Ketvirtadienį?", message_id="<again@naujas.lt>"))
    assert archived.run().ok
    for path, whole in (("/api/customers?limit=1", "/api/customers"), ("/api/leads?limit=1", "/api/leads"),
                        ("/api/customers/C-1001/letters?limit=1", "/api/customers/C-1001/letters"),
                        ("/api/leads/L-2001/letters?limit=1", "/api/leads/L-2001/letters"),
                        ("/api/search?q=l%C4%97*&limit=1", "/api/search?q=l%C4%97*&limit=100"),
                        ("/api/search?limit=1&q=lentos&customer=C-1001", "/api/search?q=lentos&customer=C-1001")):
        everything = server.json(whole, server.token)
        pages = walk(server, path)
        assert len(everything) >= 2, whole
        assert [row for page in pages for row in page] == everything, path
        assert [len(page) for page in pages] == [1] * len(everything), path
    # A limit that holds everything announces no next page; no limit is everything, as before.
    code, headers, _ = server.fetch("/api/customers?limit=3", server.token)
    assert code == 200 and headers["Link"] is None and headers["X-Next-Cursor"] is None
    assert len(server.json("/api/customers", server.token)) == 3


def sviesa(subject, date=None, body="Sutarties priedas Nr. 5."):
    """A letter from customer C-1003; date None: no Date header at all (date_utc NULL, sorted last)."""
    from hanna_sync.demo.sample import letter

    raw = letter("Šviesa <sviesa@inbox.lt>", "jonas@imone.lt", subject, body,
                 message_id=f"<{abs(hash(subject))}@inbox.lt>", date=date)
    return raw if date else re.sub(rb"Date: [^\r]*\r\n", b"", raw, count=1)


def test_a_letter_archived_between_two_pages_is_neither_lost_nor_repeated(archived, server, imap_user):
    """The cursor is the last row's (date, id): the next page starts behind that row, whatever was
    archived meanwhile, across letters of the same date (ordered by id) and letters with no date."""
    from datetime import datetime, timedelta, timezone

    day = datetime(2025, 4, 1, 10, 0, tzinfo=timezone.utc)
    deliver = imap_user.dovecot.deliver
    for subject, date in (("A", day), ("B", day), ("C", day), ("D", day - timedelta(days=1)), ("E", None)):
        deliver(imap_user.login, "INBOX", sviesa(subject, date))
    assert archived.run().ok
    before = [r["subject"] for r in server.json("/api/customers/C-1003/letters", server.token)]
    assert before == ["C", "B", "A", "D", "Sutartis", "E"]  # same date: the higher id first; no date: last

    code, headers, body = server.fetch("/api/customers/C-1003/letters?limit=2", server.token)
    assert [r["subject"] for r in json.loads(body)] == ["C", "B"]
    # Archived now: before the cursor (a tie with B of a higher id, a newer one) and after it (older, undated).
    for subject, date in (("F", day), ("G", day + timedelta(days=900)), ("H", day - timedelta(days=2)), ("I", None)):
        deliver(imap_user.login, "INBOX", sviesa(subject, date))
    assert archived.run().ok
    rest = walk(server, re.fullmatch(r"<([^>]*)>.*", headers["Link"])[1])
    assert [[r["subject"] for r in page] for page in rest] == [["A", "D"], ["H", "Sutartis"], ["I", "E"]]
    now = [r["subject"] for r in server.json("/api/customers/C-1003/letters", server.token)]
    assert now == ["G", "F", "C", "B", "A", "D", "H", "Sutartis", "I", "E"]

    # Search pages follow (rank, date, id): these letters tie on rank, so date and id order them.
    hits = server.json("/api/search?q=priedas&limit=100", server.token)
    assert len({hit["rank"] for hit in hits}) == 1 and len(hits) == 9
    assert [row for page in walk(server, "/api/search?q=priedas&limit=2") for row in page] == hits
    assert [hit["id"] for hit in hits] == [r["id"] for r in archived.store.letters(customer="C-1003")
                                           if r["subject"] != "Sutartis"]


def test_a_cursor_the_server_did_not_give_is_refused(archived, server):
    t = server.token
    customers_cursor = server.fetch("/api/customers?limit=1", t)[1]["X-Next-Cursor"]
    letters_cursor = server.fetch("/api/customers/C-1001/letters?limit=1", t)[1]["X-Next-Cursor"]
    assert customers_cursor and letters_cursor
    assert server.json(f"/api/customers?cursor={customers_cursor}", t)[0]["id"] == "C-1002"
    for path, cursor in (("/api/customers", "bm90IGpzb24"), ("/api/customers", "!!"), ("/api/customers", ""),
                         ("/api/customers", letters_cursor), ("/api/leads", customers_cursor),
                         ("/api/customers/C-1001/letters", customers_cursor),
                         ("/api/search?q=lentos&", letters_cursor), ("/api/customers", "x" * 100),
                         ("/api/customers", base64.urlsafe_b64encode(b"[" * 100_000).decode())):
        joined = "&" if "?" in path and not path.endswith("&") else ("" if path.endswith("&") else "?")
        shown = cursor if len(cursor) <= 60 else cursor[:60] + "…"
        assert server.json(f"{path}{joined}cursor={cursor}", t, 400) == {
            "error": f"cursor '{shown}' is not one this server gave: start again without cursor"}, (path, cursor)


# -- ETag and If-None-Match -------------------------------------------------------------------------------------

def test_every_answer_has_a_strong_etag_and_an_unchanged_one_is_304(archived, server, imap_user):
    t = server.token
    (letter_id,) = [r["id"] for r in archived.store.letters() if r["subject"] == "Sąskaita faktūra 2025-03"]
    for path in ("/api/customers", "/api/customers/C-1003/letters", f"/api/letters/{letter_id}",
                 f"/api/letters/{letter_id}/raw", f"/api/letters/{letter_id}/attachments/1", "/api/search?q=lentos"):
        code, headers, body = server.fetch(path, t)
        etag = headers["ETag"]
        assert code == 200 and re.fullmatch(r'"[0-9a-f]{32}"', etag), path
        assert headers["Cache-Control"] == "private, no-cache", path
        assert server.fetch(path, t)[1]["ETag"] == etag  # the same answer, the same tag
        for wanted in (etag, "*", f'"other", W/{etag}', f'"a",{etag} '):
            code, again, nothing = server.fetch(path, t, if_none_match=wanted)
            assert (code, nothing, again["ETag"]) == (304, b"", etag), (path, wanted)
            assert again["Content-Length"] is None and again["Cache-Control"] == "private, no-cache"
        assert server.fetch(path, t, if_none_match='"other"')[2] == body
    # A change is a new tag: a client holding the old one gets the new answer.
    code, headers, body = server.fetch("/api/customers/C-1003/letters", t)
    imap_user.dovecot.deliver(imap_user.login, "INBOX", sviesa("Naujas"))
    assert archived.run().ok
    code, changed, new_body = server.fetch("/api/customers/C-1003/letters", t, if_none_match=headers["ETag"])
    assert code == 200 and changed["ETag"] != headers["ETag"] and len(json.loads(new_body)) == 2
    # Errors carry no tag, are never kept, and If-None-Match does not turn them into 304.
    for path, token, status in (("/api/letters/99999", t, 404), ("/api/customers", None, 401),
                                ("/api/customers?limit=0", t, 400)):
        code, headers, _ = server.fetch(path, token, if_none_match="*")
        assert (code, headers["ETag"], headers["Cache-Control"]) == (status, None, "no-store"), path


def test_head_answers_have_no_body_so_a_kept_alive_connection_stays_in_step(archived, server):
    """waitress sends whatever the application returns: a HEAD body would be read as the next answer."""
    (letter_id, *_) = [r["id"] for r in archived.store.letters()]
    connection = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(server.base).port, timeout=10)
    auth = {"Authorization": f"Bearer {server.token}"}
    try:
        for path in (f"/api/letters/{letter_id}/raw", "/login", "/"):
            connection.request("HEAD", path, headers=auth)
            head = connection.getresponse()
            assert head.status == 200 and int(head.headers["Content-Length"]) > 0 and head.read() == b""
            connection.request("GET", "/api/customers", headers=auth)  # the same connection: in step
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read()) == cli_json(archived, "customers"), path
    finally:
        connection.close()


def test_without_a_token_every_path_is_401_and_a_405_says_what_is_allowed(archived, server):
    assert server.json("/api/nothing", None, 401)["error"].startswith("a valid token is needed")
    assert server.fetch("/nothing")[0] == 401
    request = urllib.request.Request(server.base + "/api/customers", method="DELETE",
                                     headers={"Authorization": f"Bearer {server.token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert (refused.value.code, refused.value.headers["Allow"]) == (405, "GET, HEAD")


def test_a_database_moved_away_is_an_error_and_a_replaced_one_is_read(archived, server):
    """The server never creates a database in place of one that went (an empty file beside the old
    write-ahead log would lose it), and reads the new file after a restore: a token revoked there stops."""
    t = server.token
    db = archived.config.database
    letters = cli_json(archived, "letters")
    assert server.json("/api/customers", t)
    archived.store.close()
    away = db.with_name("away.db")
    db.rename(away)
    try:
        assert server.json("/api/customers", t, 503)["error"] == f"cannot open database {db}: it is missing (moved or deleted?)"
        assert server.fetch("/", t)[0] == 503
        assert not db.exists()
    finally:
        away.rename(db)
    assert server.json("/api/customers", t) and cli_json(archived, "letters") == letters

    # A restore: another file at the path, in which the token was revoked and another made.
    copy = db.with_name("restored.db")
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    restored = Store(copy)
    restored.revoke_token("crm")
    other = restored.create_token("other")
    restored.close()
    for _ in range(12):  # the threads that serve these have the old file open
        assert server.json("/api/customers", t)
    os.replace(copy, db)
    for _ in range(8):  # and none reads it any more (8: under the failed-authentication limit)
        server.json("/api/customers", t, 401)
    assert server.json("/api/customers", other) == cli_json(archived, "customers")


def test_each_serving_thread_reads_through_its_own_connection(archived):
    """So a slow page (a big letter sanitised) holds up no other request; each kept for the server's life."""
    import threading

    from hanna_sync.web.app import WebApp

    app = WebApp(archived.config)
    seen = []
    for _ in range(2):
        thread = threading.Thread(target=lambda: seen.append((app.reader(), app.reader())))
        thread.start()
        thread.join()
    (first, again), (second, _) = seen
    assert first is again and first is not second and first.db.conn is not second.db.conn
    assert first.letters() == second.letters() != []


def test_a_trusted_proxy_is_an_ip_address():
    """A typo there would make the limit ignore X-Forwarded-For without a word: refused, exit 2."""
    from click.testing import CliRunner

    from hanna_sync.web.command import serve

    result = CliRunner().invoke(serve, ["--trusted-proxy", "127.0.0.l"])
    assert result.exit_code == 2 and "'127.0.0.l' is not an IP address" in result.output
