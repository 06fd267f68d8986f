"""Directory sources (issue #16, items 2 and 3): a CRM export read from an https:// URL (a real local HTTPS
server with a CA made per test), from a real command's output, a file or stdin; and the directory refreshed
by itself at the start of a pass, by `sync-directory`, and shown by `status`."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.credentials import open_secret_store
from hanna_sync.demo import sample
from hanna_sync.demo.sandbox import CertificateAuthority
from hanna_sync.errors import InputError
from hanna_sync.remote.crm_source import SourceError, display_name, fetch, secret_ref
from hanna_sync.scan.directory_refresh import load_record
from tests.crm_server import FakeCrm
from tests.helpers import Env, deliver_sample

CUSTOMERS_CSV = "id,name,email,domain\nC-1,UAB Ąžuolas,info@azuolas.lt,azuolas.lt\nC-2,UAB Beržas,,berzas.lt\n"
TOKEN = "s3cr3t-t0ken-Zq9"


@pytest.fixture
def crm(tmp_path, monkeypatch):
    ca = CertificateAuthority(tmp_path / "crm-ca", name="fake CRM CA")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_file))  # requests trusts the test's CA, as an admin's would
    server = FakeCrm(ca)
    yield server
    server.close()


@pytest.fixture
def secrets(tmp_path):
    return open_secret_store("file", tmp_path / "secrets.enc", tmp_path / "secrets.key", 5)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- https:// --------------------------------------------------------------------------------------------

def test_an_https_source_sends_the_stored_token_as_a_bearer_and_gives_the_csv(crm, secrets):
    url = crm.put("/export/customers.csv", CUSTOMERS_CSV)
    secrets.set(secret_ref("customer"), TOKEN)
    got = fetch(url, "customer", secrets=secrets, timeout=5)
    assert got.data.decode() == CUSTOMERS_CSV and got.fmt == "csv"
    assert got.name == url
    assert crm.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"


def test_user_and_password_in_the_store_mean_basic_auth(crm, secrets):
    url = crm.put("/leads", b'[{"id": "L-1", "email": "a@b.lt"}]', "application/json")
    secrets.set(secret_ref("lead"), "crm-reader:pa:ss")
    got = fetch(url, "lead", secrets=secrets, timeout=5)
    assert got.fmt == "json"
    assert crm.requests[-1][1]["Authorization"] == "Basic " + base64.b64encode(b"crm-reader:pa:ss").decode()


def test_no_token_stored_sends_no_authorization(crm, secrets):
    url = crm.put("/c.csv", CUSTOMERS_CSV)
    fetch(url, "customer", secrets=secrets, timeout=5)
    assert "Authorization" not in crm.requests[-1][1]


@pytest.mark.parametrize("status, body, content_type, expected", [
    (401, b"", "text/plain", "HTTP 401, the server wants credentials: store it with 'hanna-sync directory-token"),
    (403, b"forbidden", "text/plain", "HTTP 403"),
    (500, b'{"error": "database is down"}', "application/json", 'HTTP 500 ({"error": "database is down"})'),
    (404, b"", "text/plain", "HTTP 404"),
    (200, b"<!DOCTYPE html><html><body>Please sign in</body></html>", "text/html; charset=utf-8",
     "the server sent an HTML page, not the CSV or JSON export"),
    (200, b"<html><body>Session expired</body></html>", "text/csv", "the server sent an HTML page"),
    (200, b"%PDF-1.4", "application/pdf", "the server sent application/pdf, not CSV or JSON"),
])
def test_an_answer_that_is_not_the_export_is_one_line_naming_the_url(crm, secrets, status, body, content_type,
                                                                     expected):
    url = crm.put("/export/customers.csv", body, content_type, status=status)
    with pytest.raises(SourceError) as exc:
        fetch(url, "customer", secrets=secrets, timeout=5)
    assert expected in one_line(exc) and url in str(exc.value)


def test_a_stored_token_refused_says_to_replace_it(crm, secrets):
    url = crm.put("/c.csv", b"", "text/plain", status=401)
    secrets.set(secret_ref("customer"), TOKEN)
    with pytest.raises(SourceError) as exc:
        fetch(url, "customer", secrets=secrets, timeout=5)
    assert "replace it with 'hanna-sync directory-token customers'" in one_line(exc)
    assert TOKEN not in str(exc.value)


def test_the_declared_format_wins_and_must_agree_with_format(crm, secrets):
    url = crm.put("/export", b'[{"id": "C-1"}]', "application/json; charset=utf-8")
    assert fetch(url, "customer", secrets=secrets, timeout=5).fmt == "json"
    with pytest.raises(SourceError, match="sent JSON .*not the CSV given with --format"):
        fetch(url, "customer", secrets=secrets, timeout=5, fmt="csv")
    vague = crm.put("/export/leads.csv", CUSTOMERS_CSV, "application/octet-stream")
    assert fetch(vague, "lead", secrets=secrets, timeout=5).fmt == "csv"  # the URL's extension tells
    unknown = crm.put("/export/leads", CUSTOMERS_CSV, "text/plain")
    with pytest.raises(SourceError, match="give --format csv or --format json"):
        fetch(unknown, "lead", secrets=secrets, timeout=5)
    assert fetch(unknown, "lead", secrets=secrets, timeout=5, fmt="csv").fmt == "csv"


def test_a_silent_server_times_out(crm, secrets):
    url = crm.put("/slow.csv", CUSTOMERS_CSV, delay=3)
    with pytest.raises(SourceError) as exc:
        fetch(url, "customer", secrets=secrets, timeout=0.5)
    assert "no answer within 0.5 s (network.timeout)" in one_line(exc)


def test_an_untrusted_certificate_is_refused(crm, secrets, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    url = crm.put("/c.csv", CUSTOMERS_CSV)
    with pytest.raises(SourceError) as exc:
        fetch(url, "customer", secrets=secrets, timeout=5)
    assert "certificate is not trusted" in one_line(exc)


def test_http_and_passwords_in_the_url_are_refused_before_any_request(crm, secrets):
    with pytest.raises(InputError, match="only https:// URLs are read"):
        fetch(crm.url("/c.csv").replace("https", "http"), "customer", secrets=secrets, timeout=5)
    with pytest.raises(InputError, match="directory-token customers"):
        fetch(crm.url("/c.csv").replace("https://", "https://u:hunter2@"), "customer", secrets=secrets, timeout=5)
    assert crm.requests == []


def test_the_name_in_messages_has_no_query_or_password():
    assert display_name("https://crm.example.lt/x.csv?key=abc#top") == "https://crm.example.lt/x.csv"
    assert display_name("https://u:p@crm.example.lt:8443/x.csv") == "https://crm.example.lt:8443/x.csv"
    assert display_name("cmd:psql -c 'select 1'") == "cmd:psql -c 'select 1'"
    assert display_name("-") == "standard input"


# -- cmd: ------------------------------------------------------------------------------------------------

def test_a_command_s_output_is_the_export(tmp_path):
    export = tmp_path / "customers.csv"
    export.write_text(CUSTOMERS_CSV)
    got = fetch(f"cmd:cat {export}", "customer", secrets=None, timeout=5)
    assert got.data.decode() == CUSTOMERS_CSV and got.fmt == "csv" and got.name == f"cmd:cat {export}"
    script = "import json; print(json.dumps([{'id': 'L-1', 'email': 'l@x.lt'}]))"
    got = fetch(f'cmd:{sys.executable} -c "{script}"', "lead", secrets=None, timeout=5)
    assert got.fmt == "json" and b'"L-1"' in got.data


def test_a_command_is_not_run_by_a_shell(tmp_path):
    marker = tmp_path / "touched"
    got = fetch(f"cmd:echo id; touch {marker}", "customer", secrets=None, timeout=5)
    assert not marker.exists() and got.data.decode().startswith("id; touch")


@pytest.mark.parametrize("command, expected", [
    ("cmd:sh -c 'echo \"psql: connection refused\" >&2; echo second >&2; exit 3'",
     "exited with 3: psql: connection refused"),
    ("cmd:no-such-export-tool --csv", "command 'no-such-export-tool' not found"),
    ("cmd:sleep 5", "still running after 0.5 s (network.timeout): stopped"),
    ("cmd:sh -c 'kill -9 $$'", "was killed by signal 9"),
    ("cmd:printf '<!doctype html><html>oops'", "printed an HTML page"),
])
def test_a_failing_command_is_one_line_naming_it(command, expected):
    with pytest.raises(SourceError) as exc:
        fetch(command, "customer", secrets=None, timeout=0.5)
    assert expected in one_line(exc) and command in str(exc.value)


def test_a_command_that_cannot_be_split_or_is_empty_is_bad_input():
    with pytest.raises(InputError, match="cannot split"):
        fetch("cmd:psql -c 'select", "customer", secrets=None, timeout=5)
    with pytest.raises(InputError, match="no command"):
        fetch("cmd:  ", "customer", secrets=None, timeout=5)


# -- import SOURCE, directory-token, sync-directory (the CLI) ---------------------------------------------

def entities_csv(entities) -> str:
    rows = ["id,name,email,domain,contacts"]
    for e in entities:
        contacts = "; ".join(f"{c.name} <{c.email}>" if c.name else c.email for c in e.contacts)
        rows.append(",".join(f'"{v}"' for v in (e.id, e.name or "", e.email or "", e.domain or "", contacts)))
    return "\n".join(rows) + "\n"


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def configured(env: Env, **directory: str | float) -> Path:
    """The env's config file with a [directory] section; env.config gets the same sources."""
    path = env.config_file()
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in directory.items())
    path.write_text(path.read_text() + "[network]\ntimeout = 2\n[directory]\n" + lines)
    env.config = replace(env.config, directory=replace(env.config.directory, **directory),
                         network=replace(env.config.network, timeout=2))
    return path


def cli_run(env: Env, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--config", str(env.config_file() if not (env.tmp / "config.toml").exists()
                                                   else env.tmp / "config.toml"), *args], input=input)


def stored_ids(env: Env, entity_type: str = "customer") -> list[str]:
    return sorted(e.id for e in env.store.entities(entity_type))


def database_bytes(env: Env) -> bytes:
    return b"".join(p.read_bytes() for p in env.tmp.iterdir() if p.name.startswith("hs.db"))


def database_rows(env: Env) -> list[str]:
    """Every row of the database, as SQL: what "nothing written" compares (the file's bytes move on a checkpoint)."""
    with sqlite3.connect(env.config.database) as db:
        return list(db.iterdump())


def test_import_from_an_https_url_with_a_stored_token_never_shows_the_token(env, crm, caplog):
    configured(env)
    url = crm.put("/export/customers.csv", entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))
    stored = cli_run(env, "directory-token", "customers", "--stdin", input=TOKEN + "\n")
    assert stored.exit_code == 0, stored.output
    caplog.set_level(logging.DEBUG)
    result = cli_run(env, "-v", "import", "customers", url, "--snapshot", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1 and "C-1004" in stored_ids(env)
    assert crm.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in result.output and TOKEN not in caplog.text
    assert TOKEN.encode() not in database_bytes(env)
    assert TOKEN.encode() not in (env.tmp / "secrets.enc").read_bytes()  # encrypted at rest


@pytest.mark.parametrize("status, body, content_type, delay, expected", [
    (401, b"", "text/plain", 0, "HTTP 401"),
    (500, b"Internal Server Error", "text/plain", 0, "HTTP 500 (Internal Server Error)"),
    (200, b"<!doctype html><title>Login</title>", "text/html", 0, "an HTML page"),
    (200, b"\x89PNG", "image/png", 0, "sent image/png, not CSV or JSON"),
    (200, CUSTOMERS_CSV.encode(), "text/csv", 4, "no answer within 2 s"),
])
def test_import_from_a_url_that_fails_is_one_error_line_and_writes_nothing(env, crm, status, body, content_type,
                                                                          delay, expected):
    configured(env)
    before = database_rows(env)
    url = crm.put("/export/customers.csv", body, content_type, status=status, delay=delay)
    result = cli_run(env, "-q", "import", "customers", url, "--snapshot")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {url}: ") and expected in errors[0]
    assert database_rows(env) == before


def test_import_over_http_is_bad_input(env, crm):
    configured(env)
    result = cli_run(env, "import", "customers", crm.url("/c.csv").replace("https", "http"))
    assert result.exit_code == 2 and "only https:// URLs are read" in result.stderr and crm.requests == []


def test_import_from_a_command(env, tmp_path):
    configured(env)
    export = tmp_path / "export.csv"
    export.write_text(entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))
    result = cli_run(env, "import", "customers", f"cmd:cat {export}", "--snapshot")
    assert result.exit_code == 0, result.output
    assert "1 added" in result.stdout and "C-1004" in stored_ids(env)
    script = "import json; print(json.dumps([{'id': 'L-9', 'email': 'l9@naujas9.lt'}]))"
    result = cli_run(env, "import", "leads", f'cmd:{sys.executable} -c "{script}"')
    assert result.exit_code == 0, result.output
    assert "L-9" in stored_ids(env, "lead")
    failing = cli_run(env, "import", "customers", "cmd:sh -c 'echo \"no such table\" >&2; exit 3'", "--snapshot")
    assert failing.exit_code == 1
    assert failing.stderr.strip() == "Error: cmd:sh -c 'echo \"no such table\" >&2; exit 3': exited with 3: no such table"
    assert "C-1004" in stored_ids(env)


def test_directory_token_stores_replaces_and_clears(env):
    configured(env, customers="https://crm.example.lt/c.csv")
    assert cli_run(env, "directory-token", "customers", "--stdin", input="u:p\n").exit_code == 0
    assert env.secrets.get(secret_ref("customer")) == "u:p"
    empty = cli_run(env, "directory-token", "customers", "--stdin", input="\n")
    assert empty.exit_code == 2 and "empty" in empty.stderr and env.secrets.get(secret_ref("customer")) == "u:p"
    assert cli_run(env, "directory-token", "customers", "--clear").exit_code == 0
    assert env.secrets.get(secret_ref("customer")) is None
    note = cli_run(env, "directory-token", "leads", "--stdin", input="t\n")
    assert note.exit_code == 0 and env.secrets.get(secret_ref("lead")) == "t"
    assert "[directory] leads is not an https:// URL" not in note.stderr  # none configured: nothing to say
    assert cli_run(env, "directory-token", "partners", "--stdin", input="t\n").exit_code == 2


def test_sync_directory_needs_a_source(env):
    configured(env)
    result = cli_run(env, "sync-directory")
    assert result.exit_code == 2 and "no CRM source configured" in result.stderr


def test_sync_directory_dry_run_then_now_then_a_truncated_export_is_refused_unless_forced(env, tmp_path):
    export = tmp_path / "customers.csv"
    export.write_text(entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))
    configured(env, customers=f"cmd:cat {export}")
    dry = cli_run(env, "sync-directory", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["sources"][0]["added"] == 1 and "C-1004" not in stored_ids(env)
    assert load_record(env.store, "customer") is None  # a dry run records nothing
    now = cli_run(env, "sync-directory")
    assert now.exit_code == 0, now.output
    assert now.stdout.startswith(f"Customers from cmd:cat {export}: 1 added, 0 updated, 0 removed")
    assert stored_ids(env) == ["C-1001", "C-1002", "C-1003", "C-1004"]
    export.write_text(entities_csv(sample.CUSTOMERS[:1]))  # a truncated export: 3 of 4 would go
    refused = cli_run(env, "sync-directory")
    assert refused.exit_code == 1
    assert "refused" in refused.stderr and "would remove 3 of 4 customers" in refused.stderr
    assert stored_ids(env) == ["C-1001", "C-1002", "C-1003", "C-1004"]
    record = load_record(env.store, "customer")
    assert record.refused and record.failing_since and record.added == 1
    forced = cli_run(env, "sync-directory", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert sorted(json.loads(forced.stdout)["sources"][0]["removed"]) == ["C-1002", "C-1003", "C-1004"]
    assert stored_ids(env) == ["C-1001"] and load_record(env.store, "customer").last_error is None


# -- run refreshes by itself; status shows it (the real sandbox Dovecot) -------------------------------------

def test_run_refreshes_a_source_never_read_before_scanning_and_not_again_until_it_is_stale(env, crm, imap_user):
    url = crm.put("/export/customers.csv", entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))
    configured(env, customers=url, refresh_minutes=60)
    env.add(imap_user)
    deliver_sample(imap_user)
    result = env.run()
    assert result.ok and len(crm.requests) == 1
    # the refreshed directory is what the pass linked against: the shop's letter, a customer only the CRM knew
    assert [r["subject"] for r in env.store.letters(customer=sample.LATE_CUSTOMER.id)] == ["Akcija!"]
    record = load_record(env.store, "customer")
    assert record.added == 1 and record.last_error is None and record.source == url
    env.run()
    assert len(crm.requests) == 1  # refreshed 0 minutes ago: not due
    record.last_success_at = "2020-01-01T00:00:00+00:00"
    with env.store.transaction():
        env.store.set_state_value("directory_source:customers", json.dumps(record.as_dict()))
    env.run()
    assert len(crm.requests) == 2  # older than refresh_minutes: read again
    configured(env, customers=url + "?v=2", refresh_minutes=60)  # another SOURCE in the config: read at once
    env.run()
    assert len(crm.requests) == 3


def test_a_failing_or_refused_source_warns_and_the_pass_still_scans(env, imap_user, tmp_path, caplog):
    export = tmp_path / "customers.csv"
    export.write_text(entities_csv(sample.CUSTOMERS[:1]))  # would remove 2 of 3 customers: refused
    config = configured(env, customers=f"cmd:cat {export}", leads="cmd:sh -c 'echo \"crm is down\" >&2; exit 3'")
    env.add(imap_user)
    deliver_sample(imap_user)
    caplog.set_level(logging.INFO)
    result = env.run()
    assert result.ok and sum(m.archived for m in result.mailboxes) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the customers source refused" in w and "would remove 2 of 3 customers" in w for w in warnings)
    assert any("the leads source failed: cmd:sh" in w and "exited with 3: crm is down" in w for w in warnings)
    assert stored_ids(env) == ["C-1001", "C-1002", "C-1003"]  # the directory it had
    status = CliRunner().invoke(cli, ["--config", str(config), "status", "--json"])
    assert status.exit_code == 0, status.output
    sources = {s["entity_type"]: s for s in json.loads(status.stdout)["directory_sources"]}
    assert sources["customer"]["state"] == "refused" and not sources["customer"]["alert"]
    assert sources["lead"]["state"] == "failing" and "crm is down" in sources["lead"]["last_error"]
    table = CliRunner().invoke(cli, ["--config", str(config), "status"])
    assert "CRM directory sources" in table.stdout and "failing" in table.stdout
    assert "Warning: the leads source failing since" in table.stderr
    quiet = CliRunner().invoke(cli, ["--config", str(config), "-q", "status"])  # a monitoring check: silent
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")  # until --fail-after, as for a mailbox
    record = load_record(env.store, "lead")
    record.failing_since = "2020-01-01T00:00:00+00:00"  # failing for longer than --fail-after: an alert
    with env.store.transaction():
        env.store.set_state_value("directory_source:leads", json.dumps(record.as_dict()))
    alert = CliRunner().invoke(cli, ["--config", str(config), "status", "--fail-after", "60"])
    assert alert.exit_code == 1
    assert "Error: the leads source failing since 2020-01-01T00:00:00+00:00: cmd:sh" in alert.stderr
    export.write_text(entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))  # the export whole again
    env.run()
    assert "C-1004" in stored_ids(env) and load_record(env.store, "customer").last_error is None
    assert [r["subject"] for r in env.store.letters(customer=sample.LATE_CUSTOMER.id)] == ["Akcija!"]


def test_a_dry_run_pass_refreshes_nothing(env, crm, imap_user):
    url = crm.put("/export/customers.csv", entities_csv([*sample.CUSTOMERS, sample.LATE_CUSTOMER]))
    configured(env, customers=url)
    env.add(imap_user)
    env.run(dry_run=True)
    assert crm.requests == [] and load_record(env.store, "customer") is None


# -- review of #16: a bad source never stops the other, a pass or status; cmd: runs capped, beside the config ---

BAD_URLS = ["https://crm.example:99999/x.csv", "https://[::1/x.csv", "https://crm.example:abc/x.csv"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_wrong_as_written_is_bad_input_naming_it_before_any_request(crm, secrets, url):
    with pytest.raises(InputError) as exc:
        fetch(url, "customer", secrets=secrets, timeout=5)
    assert one_line(exc).startswith(f"{url}: not a URL as written") and crm.requests == []
    assert display_name(url) == url  # a message can always name it


def deep_json(tmp_path: Path) -> Path:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000)
    return path


def test_json_nested_too_deep_is_bad_input_naming_the_source(env, tmp_path):
    deep = deep_json(tmp_path)
    result = cli_run(env, "import", "customers", f"cmd:cat {deep}")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: cmd:cat {deep} is not a CRM export: JSON nested too deep to read"


def test_a_pass_with_broken_sources_still_scans_and_status_shows_them(env, imap_user, tmp_path, caplog):
    env.config = replace(env.config, directory=replace(env.config.directory, customers=BAD_URLS[0],
                                                       leads=f"cmd:cat {deep_json(tmp_path)}"))
    env.add(imap_user)
    deliver_sample(imap_user)
    caplog.set_level(logging.INFO)
    result = env.run()
    assert result.ok and sum(m.archived for m in result.mailboxes) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"the customers source failed: {BAD_URLS[0]}: not a URL as written" in w for w in warnings)
    assert any("the leads source failed: cmd:cat" in w and "nested too deep" in w for w in warnings)
    from datetime import timedelta

    from hanna_sync.admin.status import source_health

    for url in BAD_URLS:  # status's source health names each, whatever the config holds
        config = replace(env.config, directory=replace(env.config.directory, customers=url))
        health = source_health(env.store, config, timedelta(minutes=60))
        assert health[0].source == url and health[1].state == "failing"


def test_sync_directory_tries_the_leads_after_customers_that_fail(env, tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("id,name,email,domain\nL-1,Lead,l@lead.lt,\n")
    configured(env, customers=f"cmd:cat {deep_json(tmp_path)}", leads=str(leads))
    result = cli_run(env, "sync-directory", "--force")
    assert result.exit_code == 1 and "nested too deep" in result.stderr
    assert stored_ids(env, "lead") == ["L-1"]


def test_an_error_nobody_foresaw_fails_the_source_not_the_pass(env, tmp_path, monkeypatch, caplog):
    from hanna_sync.scan import directory_refresh

    def broken(*args, **kw):
        raise KeyError("surprise")

    monkeypatch.setattr(directory_refresh, "import_entities", broken)
    export = tmp_path / "c.csv"
    export.write_text(CUSTOMERS_CSV)
    configured(env, customers=str(export))
    outcomes = directory_refresh.refresh_directory(env.store, env.config, None, only_due=False)
    assert not outcomes[0].ok and outcomes[0].error == f"{export}: unexpected KeyError: 'surprise'"
    assert load_record(env.store, "customer").last_error == outcomes[0].error


def test_a_configured_command_runs_in_the_config_s_folder(env, tmp_path, monkeypatch):
    script = env.tmp / "export.sh"
    script.write_text("#!/bin/sh\nprintf 'id,name,email,domain\\nC-9,Nine,,nine.lt\\n'\n")
    script.chmod(0o755)
    config = configured(env, customers="cmd:./export.sh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the timer's working directory is not the config's
    result = CliRunner().invoke(cli, ["--config", str(config), "sync-directory", "--force"])
    assert result.exit_code == 0, result.output
    assert stored_ids(env) == ["C-9"]


def test_a_command_s_output_is_capped_while_it_runs(monkeypatch):
    from hanna_sync.remote import crm_source

    monkeypatch.setattr(crm_source, "MAX_BYTES", 1024 * 1024)
    with pytest.raises(SourceError) as exc:
        fetch("cmd:yes", "customer", secrets=None, timeout=20)
    assert one_line(exc) == "cmd:yes: more than 1 MiB of output: not a CRM export: stopped"


def gone(pid: int) -> bool:
    """Dead (or killed, not yet reaped by whoever adopted it) within 5 s: SIGKILL takes a moment on a busy host."""
    for _ in range(100):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_timeout_kills_the_command_s_children_too(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(SourceError, match="still running after 0.5 s"):
        fetch(f"cmd:sh -c 'sleep 30 & echo $! > {pidfile}; wait'", "customer", secrets=None, timeout=0.5)
    assert gone(int(pidfile.read_text()))
    held = tmp_path / "held"  # a child that keeps the output open after the command itself has exited
    with pytest.raises(SourceError, match="still running after 0.5 s"):
        fetch(f"cmd:sh -c 'sleep 30 & echo $! > {held}; echo id'", "customer", secrets=None, timeout=0.5)
    assert gone(int(held.read_text()))


def test_directory_token_clear_says_when_there_was_nothing(env):
    configured(env, customers="https://crm.example.lt/c.csv")
    result = cli_run(env, "directory-token", "leads", "--clear")
    assert result.exit_code == 0 and result.stdout == "No token of the leads source is stored: nothing removed.\n"


def test_a_dry_run_refresh_logs_that_it_wrote_nothing(env, tmp_path, caplog):
    from hanna_sync.scan.directory_refresh import refresh_directory

    export = tmp_path / "c.csv"
    export.write_text(CUSTOMERS_CSV)
    configured(env, customers=str(export))
    caplog.set_level(logging.INFO)
    refresh_directory(env.store, env.config, None, only_due=False, dry_run=True, force=True)
    assert [r.getMessage() for r in caplog.records if "directory" in r.getMessage()] == [
        f"directory dry run (nothing written): customers from {export}: 2 would be added, 0 would be updated,"
        " 3 would be removed, 0 unchanged"]


def test_a_refresh_says_what_it_took_off_and_what_it_kept_for_returning_entities():
    """Unattended, nobody reads a dry run first: the journal line carries the counts."""
    from hanna_sync.scan.directory_refresh import RefreshOutcome

    outcome = RefreshOutcome("customer", "cmd:export", ok=True, removed=["C-1"], removed_links=3, kept_by_hand=2)
    line = outcome.summary()
    assert "1 removed" in line and "3 link(s) taken off archived letters" in line
    assert "2 link(s) made or taken off by hand kept for when the removed ones return" in line
    assert outcome.as_dict()["kept_by_hand"] == 2
