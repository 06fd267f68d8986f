"""`hanna-sync serve`: the REAL server process (waitress) over an archive a real pass filled from the sandbox
Dovecot, called over HTTP on 127.0.0.1: tokens, every endpoint in the CLI's --json shapes, the errors."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.db.store import Store
from hanna_sync.web.command import _loopback
from tests.helpers import Env, deliver_sample


@pytest.fixture
def archived(tmp_path, imap_user):
    env = Env(tmp_path)
    deliver_sample(imap_user)
    env.add(imap_user)
    assert env.run().ok
    return env


def cli_run(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def cli_json(env, *args):
    result = cli_run(env, *args, "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def new_token(env, name, *more):
    result = cli_run(env, "token", "create", name, *more)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


class Server:
    def __init__(self, env):
        self.log = env.tmp / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hanna_sync", "--config", str(env.config_file()), "serve", "--port", "0"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/api/", self.log.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{found[1]}"

    def get(self, path, token=None):
        """(status, content type, body bytes)."""
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    def json(self, path, token, status=200):
        code, kind, body = self.get(path, token)
        assert (code, kind.split(";")[0]) == (status, "application/json"), body
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


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
    assert server.json("/api/customers?limit=0", t, 400) == {"error": "limit '0' is not a whole number of 1 or more"}
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
