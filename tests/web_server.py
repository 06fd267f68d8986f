"""The web tests' server process and CLI calls: `hanna-sync serve` run for real, over a test's archive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from click.testing import CliRunner

from hanna_sync.cli import cli


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
    """`hanna-sync serve --port 0` (plus `options`) as its own process, over `env`'s config."""

    def __init__(self, env, *options):
        self.log = env.tmp / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hanna_sync", "--config", str(env.config_file()), "serve", "--port", "0",
                 *options],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while not (found := re.search(r"Serving the archive on http://127\.0\.0\.1:(\d+)/", self.log.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{found[1]}"

    def fetch(self, path, token=None, **headers):
        """(status, headers, body bytes); keyword headers are sent (if_none_match= as If-None-Match)."""
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + path, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def get(self, path, token=None):
        """(status, content type, body bytes)."""
        code, headers, body = self.fetch(path, token)
        return code, headers["Content-Type"], body

    def json(self, path, token, status=200):
        code, kind, body = self.get(path, token)
        assert (code, kind.split(";")[0]) == (status, "application/json"), body
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
