"""Bad input at every command: wrong types, missing or unreadable files, unknown ids, a CSV in another
encoding, a broken config. Each is one `Error:` line on stderr with its documented exit code, never a
traceback, and nothing written: the database and the secrets are byte for byte what they were.

Besides the table, every command (including ones added later) gets the generic probes: an unknown
option, a non-number where an id goes, and an id that does not exist.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.mail.message import parse_letter


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A config, a database with the sample directory, one mailbox and one letter, and bad input files."""
    home = tmp_path_factory.mktemp("cli-input")
    (home / "config.toml").write_text(f'database = "{home / "state" / "hs.db"}"\n')
    store = Store(home / "state" / "hs.db")
    for entity in sample.CUSTOMERS:
        store.save_entity("customer", entity, replace_contacts=True)
    raw = sample.letter("ruta@azuolas.lt", sample.STAFF, "Užsakymas", "Tekstas", message_id="<cli@azuolas.lt>")
    store.archive_letter("mid:cli@azuolas.lt", parse_letter(raw), raw, len(raw))
    store.close()
    result = invoke(home, "add-mailbox", "--user", "jonas", "--email", "jonas@gmail.com", "--no-verify",
                    "--password-stdin", input="app-password\n")
    assert result.exit_code == 0, result.output
    files = {
        "cp1257.csv": "id,name,email\nC-7,Ąžuolų g. 5,info@azuolas.lt\n".encode("cp1257"),
        "utf16.csv": "id,name,email\nC-7,Ąžuolas,info@azuolas.lt\n".encode("utf-16"),
        "broken.json": b'[{"id": "C-7",',
        "object.json": b'{"id": "C-7"}',
        "empty.csv": b"",
        "stray-quote.csv": b'id,name,email\nC-Q1,"Acme,acme@x.lt\nC-Q2,Beta,beta@y.lt\n',
        "email-address.csv": b"id,name,Email address\nC-7,Azuolas,info@azuolas.lt\n",
        "long-field.csv": b"id,name,email\nC-8,Acme,a@acme.lt\nC-9," + b"x" * 200_000 + b",b@beta.lt\n",
        "customers.txt": b"id,name\nC-7,x\n",
        "bad.toml": b"database = [unclosed\n",
        "wrong-type.toml": b"database = 5\n",
        "unknown-key.toml": b"[scan]\nconcurency = 2\n",
        "not-utf8.toml": b"database = \"\xff\xfe\"\n",
        "a-file": b"not a directory",
    }
    for name, data in files.items():
        (home / name).write_bytes(data)
    (home / "db-under-a-file.toml").write_text(f'database = "{home / "a-file" / "hs.db"}"\n')
    (home / "a-directory").mkdir()
    return home


def invoke(home: Path, *args: str, input: str | bytes | None = None, config: str = "config.toml"):
    return CliRunner().invoke(cli, ["--config", str(home / config), *args], input=input)


def state_of(home: Path) -> tuple[str, bytes]:
    """What must not change: every row of the database, and the encrypted secrets."""
    conn = sqlite3.connect(home / "state" / "hs.db")
    dump = "\n".join(conn.iterdump())
    conn.close()
    return dump, (home / "state" / "secrets.enc").read_bytes()


def assert_one_line_error(result, code: int, says: str) -> None:
    assert result.exit_code == code, (code, result.exit_code, result.output)
    assert "Traceback" not in result.output and "unexpected" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert says in errors[0], errors[0]
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)


# (arguments, stdin, exit code, part of the error line); {home} is the fixture's directory.
TABLE = [
    # mailboxes
    (["add-mailbox", "--email", "not-an-email", "--no-verify", "--password-stdin"], "pw\n", 2, "is not an email address"),
    (["add-mailbox", "--email", "a@gmail.com", "--imap-port", "0"], None, 2, "0 is not in the range"),
    (["add-mailbox", "--email", "a@gmail.com", "--imap-port", "abc"], None, 2, "'abc' is not a valid integer"),
    (["add-mailbox", "--email", "a@gmail.com", "--imap-security", "tls"], None, 2, "'tls' is not one of"),
    (["add-mailbox", "--email", "a@firma.lt", "--provider", "custom", "--no-verify"], None, 2, "give --imap-host"),
    (["add-mailbox", "--email", "a@gmail.com", "--ca-file", "{home}/missing.pem", "--no-verify", "--password-stdin"],
     "pw\n", 2, "does not exist"),
    (["add-mailbox", "--email", "a@gmail.com", "--imap-charset", "klingon", "--no-verify", "--password-stdin"],
     "pw\n", 2, "is not a known character set"),
    (["add-mailbox", "--email", "a@gmail.com", "--no-verify"], None, 2, "no password given"),
    (["add-mailbox", "--email", "a@gmail.com", "--no-verify", "--password-stdin"], "\n", 2, "the password is empty"),
    (["add-mailbox", "--email", "a@gmail.com", "--imap-security", "none", "--no-verify", "--password-stdin"], "pw\n",
     2, "--allow-plaintext"),
    (["add-mailbox", "--user", "jonas", "--email", "jonas@gmail.com", "--no-verify", "--password-stdin"], "pw\n", 2,
     "already has mailbox 1"),
    (["add-mailbox", "--user", "ona", "--email", "ona@gmail.com", "--username", "JONAS@gmail.com", "--no-verify",
      "--password-stdin"], "pw\n", 2, "mailbox 1 (jonas@gmail.com of jonas) is already login jonas@gmail.com on"
     " imap.gmail.com:993: a second one would scan every letter twice"),
    (["add-mailbox", "--email", "a@firma.lt", "--imap-host", "mail.firma.lt", "--smtp-host", "", "--no-verify",
      "--password-stdin"], "pw\n", 2, "--smtp-host '' is not a server name: for a mailbox that is only read (no SMTP"
     " server), give --no-smtp"),
    (["add-mailbox", "--email", "a@firma.lt", "--imap-host", "mail.firma.lt", "--smtp-host", "None", "--no-verify",
      "--password-stdin"], "pw\n", 2, "--smtp-host 'None' is not a server name"),
    (["add-mailbox", "--email", "a@firma.lt", "--imap-host", "mail.firma.lt", "--no-smtp", "--smtp-port", "465",
      "--no-verify", "--password-stdin"], "pw\n", 2, "--no-smtp and --smtp-port contradict each other"),
    (["edit-mailbox", "1", "--smtp-host", "none", "--no-verify"], None, 2, "give --no-smtp"),
    (["edit-mailbox", "1", "--imap-port", "99999"], None, 2, "99999 is not in the range"),
    (["edit-mailbox", "1", "--password-stdin"], "pw\n", 2, "use 'hanna-sync set-password ID'"),
    (["edit-mailbox", "1", "--imap-security", "none", "--no-verify"], None, 2, "--allow-plaintext"),
    (["set-password", "1"], None, 2, "no password given"),
    (["remove-mailbox", "1"], None, 2, "give --yes"),
    # the directory
    (["import", "customers", "{home}/missing.csv"], None, 2, "does not exist"),
    (["import", "customers", "{home}/a-directory", "--format", "csv"], None, 2, "cannot read"),
    (["import", "customers", "{home}/customers.txt"], None, 2, "cannot tell the file's format"),
    (["import", "customers", "{home}/cp1257.csv"], None, 2, "cp1257.csv is not UTF-8 (line 2)"),
    (["import", "customers", "{home}/utf16.csv"], None, 2, "utf16.csv is not UTF-8 (line 1)"),
    (["import", "customers", "-", "--format", "csv"], "id,name\nC-7,\xc1\xfeuolas\n".encode("latin-1"), 2,
     "standard input is not UTF-8 (line 2)"),
    (["import", "customers", "-"], "id\nC-7\n", 2, "give --format csv or --format json"),
    (["import", "leads", "{home}/broken.json"], None, 2, "is not valid JSON"),
    (["import", "leads", "{home}/object.json"], None, 2, "must hold a JSON list of objects"),
    (["import", "customers", "{home}/empty.csv"], None, 2, "is empty"),
    (["import", "customers", "{home}/stray-quote.csv"], None, 2,
     "stray-quote.csv, line 2: the quote opened in column 'name' never closes"),
    (["import", "customers", "{home}/email-address.csv"], None, 2,
     "column 'Email address' is not one hanna-sync reads (did you mean 'email'?)"),
    (["import", "customers", "{home}/long-field.csv"], None, 2,
     "long-field.csv, line 3, column 'name': a field longer than 131,072 characters, the limit"),
    (["import", "customers", "{home}/cp1257.csv", "--format", "xml"], None, 2, "'xml' is not one of"),
    # scanning and reading
    (["run", "--mailbox", "abc"], None, 2, "'abc' is not a valid integer"),
    (["status", "--fail-after", "0"], None, 2, "0 is not in the range x>=1"),
    (["letters", "--since", "yesterday"], None, 2, "is not a date: use YYYY-MM-DD"),
    (["letters", "--limit", "0"], None, 2, "0 is not in the range x>=1"),
    (["letters", "--customer", "C-NOPE"], None, 3, "no customer 'C-NOPE'"),
    (["letters", "--mailbox", "99"], None, 3, "no mailbox 99"),
    (["test", "99"], None, 3, "no mailbox 99"),
    (["status", "--user", "nobody"], None, 3, "no user 'nobody'"),
    (["export", "1", "-o", "{home}/missing/letter.eml"], None, 2, "cannot write {home}/missing/letter.eml"),
    (["export", "1", "-o", "{home}/a-directory"], None, 2, "is a directory"),
    (["backup"], None, 2, "Missing argument 'FILE'"),
    (["backup", "{home}/a-directory"], None, 2, "is a directory: name the backup file"),
    (["backup", "{home}/missing/x.db"], None, 2, "does not exist: create it first"),
    (["test"], None, 2, "--email is required"),
    (["test", "1", "--send-to", "nobody"], None, 2, "is not an email address"),
    (["test", "1", "--timeout", "-1"], None, 2, "-1.0 is not in the range x>0"),
    # the config and the database it names
    (["--config", "{home}/missing.toml", "letters"], None, 2, "does not exist"),
    (["--config", "{home}/a-directory", "letters"], None, 2, "is a directory, not a file"),
    (["--config", "{home}/bad.toml", "letters"], None, 2, "bad.toml"),
    (["--config", "{home}/wrong-type.toml", "letters"], None, 2, "'database'"),
    (["--config", "{home}/unknown-key.toml", "letters"], None, 2, "did you mean 'scan.concurrency'?"),
    (["--config", "{home}/not-utf8.toml", "letters"], None, 2, "not-utf8.toml"),
    (["--config", "{home}/db-under-a-file.toml", "letters"], None, 74, "cannot open database"),
]


@pytest.mark.parametrize("args, stdin, code, says", TABLE, ids=[" ".join(row[0])[:60] for row in TABLE])
def test_bad_input_is_one_line_with_its_exit_code_and_writes_nothing(home, args, stdin, code, says):
    before = state_of(home)
    args = [a.replace("{home}", str(home)) for a in args]
    result = CliRunner().invoke(cli, args, input=stdin) if args[0] == "--config" else invoke(home, *args, input=stdin)
    assert_one_line_error(result, code, says.replace("{home}", str(home)))
    assert state_of(home) == before
    assert not [p for p in home.rglob(".*.tmp")], "a temp file was left behind"


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


COMMANDS = list(leaf_commands(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_refuses_unknown_options_bad_ids_and_unknown_ids_in_one_line(home, path, command):
    before = state_of(home)
    assert_one_line_error(invoke(home, *path, "--no-such-option"), 2, "No such option")
    takes_id = any(isinstance(p, click.Argument) and isinstance(p.type, click.types.IntParamType)
                   for p in command.params)
    if takes_id:
        assert_one_line_error(invoke(home, *path, "abc"), 2, "'abc' is not a valid integer")
        confirm = ["--yes"] if any(p.name == "yes" for p in command.params) else []
        assert_one_line_error(invoke(home, *path, "424242", *confirm), 3, "no ")
    assert state_of(home) == before


# An option naming a record that must exist, and what an unknown one is called in the error.
ID_OPTIONS = {"mailbox_id": ("424242", "no mailbox 424242"), "mailbox_ids": ("424242", "no mailbox 424242"),
              "customer": ("C-NOPE", "no customer 'C-NOPE'"), "lead": ("L-NOPE", "no lead 'L-NOPE'"),
              "user": ("nobody", "no user 'nobody'")}
ID_OPTION_CASES = [(path, p.opts[0], *ID_OPTIONS[p.name]) for path, command in COMMANDS for p in command.params
                   if isinstance(p, click.Option) and p.name in ID_OPTIONS
                   and path != ("add-mailbox",)]  # there --user names the owner, made if new


@pytest.mark.parametrize("path, option, value, says", ID_OPTION_CASES,
                         ids=[f"{' '.join(c[0])} {c[1]}" for c in ID_OPTION_CASES])
def test_an_unknown_id_in_an_option_is_not_found_never_an_empty_result(home, path, option, value, says):
    """`letters --mailbox 99` printing "No letters." would read as "nothing there"; every command says
    instead that the id does not exist, with the one not-found exit code."""
    before = state_of(home)
    extra = {"purge": ["--yes"], "export": ["-o", str(home / "export-out")], "test": [], "search": ["word"],
             "link": ["1"], "unlink": ["1"]}
    if path == ("purge",):  # a customer gone from the CRM may still have letters to purge
        says = f"no archived letters are linked to {option[2:]} {value}"
    result = invoke(home, *path, *extra.get(path[-1], []), option, value)
    assert_one_line_error(result, 3, says)
    assert state_of(home) == before


def test_json_outputs_are_json_even_with_hostile_data(home):
    for args in (["list-mailboxes", "--json"], ["customers", "--json"], ["letters", "--json"], ["show", "1", "--json"],
                 ["status", "--json"], ["doctor", "--json"]):
        result = invoke(home, *args)
        assert result.exit_code in (0, 1), (args, result.output)
        json.loads(result.stdout)
