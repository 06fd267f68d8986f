"""The CLI through click's CliRunner: options, output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke hanna-sync with a config of its own in tmp_path; returns the click Result."""
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n')

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)

    return invoke


def test_every_command_has_help_with_a_summary(run):
    result = run("--help")
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1]
    assert "..." not in commands, "a command's one-line help is cut off: give it a SHORT_HELP entry"
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help"
        assert run(name, "--help").exit_code == 0


def test_add_list_and_remove_without_verification(run, tmp_path):
    result = run("add-mailbox", "--user", "jonas", "--email", "Jonas@Gmail.com", "--no-verify",
                 "--password-stdin", "--json", input="s3cret-pass\n")
    assert result.exit_code == 0, result.output
    added = json.loads(result.stdout)
    assert added["email"] == "jonas@gmail.com"
    assert (added["provider"], added["imap_host"], added["imap_port"], added["imap_security"]) == (
        "gmail", "imap.gmail.com", 993, "ssl")
    assert (added["smtp_host"], added["smtp_port"]) == ("smtp.gmail.com", 465)
    assert added["folders"] == ["INBOX", "[Gmail]/Sent Mail"]

    listed = json.loads(run("list-mailboxes", "--json").stdout)
    assert [m["id"] for m in listed] == [added["id"]]
    assert "secret_ref" not in listed[0]
    # The password is nowhere in the database or in the output.
    assert b"s3cret-pass" not in (tmp_path / "hs.db").read_bytes()
    assert "s3cret-pass" not in result.output

    assert run("list-mailboxes").exit_code == 0
    result = run("remove-mailbox", str(added["id"]))
    assert result.exit_code == 2 and "--yes" in result.output
    assert run("remove-mailbox", str(added["id"]), "--yes").exit_code == 0
    assert json.loads(run("list-mailboxes", "--json").stdout) == []


def test_outlook_preset_and_starttls_port_default(run):
    result = run("add-mailbox", "--user", "a", "--email", "a@hotmail.com", "--no-verify", "--password-stdin",
                 "--json", input="pw\n")
    box = json.loads(result.stdout)
    assert (box["provider"], box["smtp_host"], box["smtp_port"], box["smtp_security"]) == (
        "outlook", "smtp.office365.com", 587, "starttls")
    assert box["folders"] == ["INBOX", "Sent Items"]


def test_edit_mailbox_changes_only_what_is_given(run):
    run("add-mailbox", "--user", "a", "--email", "a@firma.lt", "--imap-host", "mail.firma.lt", "--no-verify",
        "--password-stdin", input="pw\n")
    result = run("edit-mailbox", "1", "--imap-security", "starttls", "--folder", "INBOX", "--folder", "Išsiųsti",
                 "--no-sync-leads", "--no-verify", "--json")
    assert result.exit_code == 0, result.output
    box = json.loads(result.stdout)
    assert (box["imap_host"], box["imap_port"], box["imap_security"]) == ("mail.firma.lt", 143, "starttls")
    assert box["folders"] == ["INBOX", "Išsiųsti"]
    assert box["sync_leads"] is False and box["sync_customers"] is True
    assert box["smtp_host"] == "mail.firma.lt"


def test_main_moves_between_a_users_mailboxes(run):
    run("add-mailbox", "--user", "a", "--email", "a@gmail.com", "--main", "--no-verify", "--password-stdin", input="p\n")
    result = run("add-mailbox", "--user", "a", "--email", "a2@gmail.com", "--main", "--no-verify",
                 "--password-stdin", input="p\n")
    assert "Mailbox 1 is no longer a's main mailbox." in result.output
    assert [m["main"] for m in json.loads(run("list-mailboxes", "--json").stdout)] == [False, True]


@pytest.mark.parametrize("args, input, message", [
    (["add-mailbox", "--user", "a", "--no-verify"], None, "Error: --email is required"),
    (["add-mailbox", "--user", "a", "--email", "nonsense", "--no-verify"], None, "'nonsense' is not an email address"),
    (["add-mailbox", "--user", "a", "--email", "a@firma.lt", "--no-verify"], None, "needs the server name: give --imap-host"),
    (["add-mailbox", "--user", "a", "--email", "a@x.lt", "--provider", "serveriai", "--no-verify"], None,
     "Interneto vizija (serveriai.lt) preset needs the server name"),
    (["add-mailbox", "--user", "a", "--email", "a@gmail.com", "--no-verify"], None,
     "no password given: pipe it with --password-stdin"),
    (["add-mailbox", "--user", "a", "--email", "a@gmail.com", "--no-verify", "--password-stdin"], "\n",
     "the password is empty"),
    (["add-mailbox", "--user", "a", "--email", "a@gmail.com", "--imap-charset", "klingon", "--no-verify"], None,
     "--imap-charset 'klingon' is not a known character set"),
    (["add-mailbox", "--user", "a", "--email", "a@gmail.com", "--ca-file", "/nonexistent.pem", "--no-verify"], None,
     "--ca-file /nonexistent.pem does not exist"),
    (["edit-mailbox", "42", "--no-verify"], None, "no mailbox 42; 'hanna-sync list-mailboxes' shows the ids"),
    (["import", "customers", "missing.csv"], None, "missing.csv does not exist"),
    (["import", "customers", "-"], "id\n", "give --format csv or --format json"),
])
def test_bad_input_is_one_line_and_no_state(run, args, input, message):
    result = run(*args, input=input)
    assert result.exit_code in (1, 2, 3)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert json.loads(run("list-mailboxes", "--json").stdout) == []


def test_usage_errors_exit_2_and_failures_exit_1(run):
    assert run("add-mailbox", "--user", "a", "--no-verify").exit_code == 2
    assert run("edit-mailbox", "42", "--no-verify").exit_code == 3  # not found
    assert run("edit-mailbox", "not-a-number").exit_code == 2


def test_bad_config_is_exit_2(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[scan]\nconcurency = 3\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "customers"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {config}: unknown key 'scan.concurency' (did you mean 'scan.concurrency'?);"
        " 'hanna-sync setup-guide config' shows every key"
    )
    # ... a command that exists wherever hanna-sync is installed (a pip install ships no config.example.toml).
    shown = CliRunner().invoke(cli, ["setup-guide", "config"])
    assert shown.exit_code == 0 and "\nconcurrency = 32\n" in shown.output


def test_same_email_twice_for_one_user_is_refused(run):
    args = ["add-mailbox", "--user", "a", "--email", "a@gmail.com", "--no-verify", "--password-stdin"]
    assert run(*args, input="p\n").exit_code == 0
    result = run(*args, input="p\n")
    assert result.exit_code == 2
    assert "user a already has mailbox 1 for a@gmail.com" in result.output


def test_import_and_list_customers_and_leads(run, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,name,email,domain,contacts\nC1,Acme,info@acme.lt,acme.lt,jonas@acme.lt\nC2,Bad,bad,,\n")
    result = run("import", "customers", str(path))
    assert result.exit_code == 1
    assert "Customers: 1 added, 0 updated, 0 unchanged, 1 rejected." in result.output
    assert "line 3: 'bad' is not an email address" in result.output

    result = run("import", "customers", str(path), "--json")
    summary = json.loads(result.stdout)
    assert summary["unchanged"] == 1 and summary["rejected"] == [{"line": 3, "error": "'bad' is not an email address"}]

    customers = json.loads(run("customers", "--json").stdout)
    assert customers == [{"id": "C1", "name": "Acme", "email": "info@acme.lt", "domain": "acme.lt",
                          "contacts": [{"email": "jonas@acme.lt", "name": None}]}]

    result = run("import", "leads", "-", "--format", "json", input='[{"id": "L1", "email": "l@lead.lt"}]')
    assert result.exit_code == 0, result.output
    leads = json.loads(run("leads", "--json").stdout)
    assert leads == [{"id": "L1", "name": None, "email": "l@lead.lt", "contacts": []}]


def test_tables_stay_readable_at_80_columns(run, tmp_path, monkeypatch):
    """Headers break only between words, and a long error moves under the table instead of being
    folded into a narrow cell over dozens of lines."""
    from hanna_sync.db.store import Store

    monkeypatch.setenv("COLUMNS", "80")
    for n in (1, 2):
        result = run("add-mailbox", "--user", "jonas", "--email", f"jonas.petraitis{n}@imone-su-ilgu-vardu.lt",
                     "--imap-host", "imap.imone-su-ilgu-vardu.lt", "--provider", "custom", "--no-verify",
                     "--password-stdin", input="pw\n")
        assert result.exit_code == 0, result.output
    error = ("imap.imone-su-ilgu-vardu.lt refused the login: [AUTHENTICATIONFAILED] Authentication failed. "
             "Check the password; Gmail and Yahoo need an app password when two-step verification is on "
             "(see 'hanna-sync setup-guide gmail'), and some servers want the full address as the login name. ") * 2
    store = Store(tmp_path / "hs.db")
    store.record_outcome(1, error.strip(), kind="network")
    store.close()

    for args, headers in [
        (["status"], ["ID", "Email", "State", "Last", "success", "Archived", "today/total", "Skipped", "Behind"]),
        (["status", "--folders"], ["Mailbox", "Folder", "Last UID", "Server", "UIDNEXT", "Behind", "Gap", "check"]),
        (["list-mailboxes"], ["ID", "User", "Email", "IMAP", "Folders", "Flags"]),
    ]:
        result = run(*args)
        lines = result.output.splitlines()
        assert all(len(line.rstrip()) <= 80 for line in lines), result.output
        top = max(i for i, line in enumerate(lines) if line.startswith("┏"))  # the last table's header
        header = lines[top + 1:max(i for i, line in enumerate(lines) if line.startswith("┡"))]
        for word in headers:
            assert any(word in line for line in header), (word, result.output)
        assert not [line for line in lines if "│" in line and "AUTHENTICATION" in line], result.output
    status = run("status").output
    assert "Detail 1: " in status
    # The whole error is there, word for word, only wrapped between words.
    assert " ".join(status.split("Detail 1: ", 1)[1].split()).startswith(" ".join(error.split())[:200])
    listed = run("list-mailboxes").output
    assert "Last error 1: " in listed and "Last error 2" not in listed


def test_help_lists_only_options_that_work_there(run):
    """`test` saves nothing, so the flags that decide how a saved mailbox is scanned are not its options;
    `edit-mailbox` has no --provider, so its help does not send the reader to one."""
    test_help = run("test", "--help").output
    for gone in ("--no-verify", "--main", "--scan-active", "--sync-customers", "--sync-leads"):
        assert gone not in test_help, gone
        result = run("test", "1", gone)
        assert result.exit_code == 2 and "No such option" in result.output, (gone, result.output)
    for kept in ("--imap-host", "--folder", "--password-stdin", "--allow-plaintext", "--ca-file"):
        assert kept in test_help, kept
    edit_help = run("edit-mailbox", "--help").output
    assert "--provider" not in edit_help and "--imap-host" in edit_help
    assert "--main" in edit_help and "--no-verify" in edit_help


def test_config_help_names_every_place_a_config_is_looked_for(run, monkeypatch, tmp_path):
    from hanna_sync.config import config_search_path

    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "conf"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    text = "".join(run("--help").output.split())  # wrapped anywhere, even after a hyphen
    assert "$HANNA_SYNC_CONFIG" in text and "$CONFIGURATION_DIRECTORY/config.toml" in text
    assert "${XDG_CONFIG_HOME:-~/.config}/hanna-sync/config.toml" in text
    named = [str(p).replace(str(tmp_path / "conf"), "$CONFIGURATION_DIRECTORY").replace(
        str(Path.home() / ".config"), "${XDG_CONFIG_HOME:-~/.config}") for p in config_search_path()]
    assert len(named) == 3
    positions = [text.index(path) for path in named]
    assert positions == sorted(positions), "the help lists them in the order they are tried"


def test_a_table_too_wide_for_its_rules_drops_them_rather_than_being_cropped(monkeypatch, capsys):
    """`run`'s nine columns do not fit 80 columns with their rules: rich would crop the right edge
    (the last column half gone); the compact form keeps every column whole."""
    from hanna_sync.cli.render import table

    monkeypatch.setenv("COLUMNS", "80")
    headers = ["ID", "Email", "Folders", "New", "Archived", "Linked", "Skipped", "Errors", "Seconds"]
    table(None, headers, [[1, "jonas.petraitis@imone-su-ilgu-vardu.lt", 2, 11, 8, 8, 3, 0, "12.5"]])
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    assert "Seconds" in "".join(lines) and "12.5" in "".join(lines) and "┃" not in "".join(lines)
    table(None, ["ID", "Email"], [[1, "jonas@imone.lt"]])  # what fits keeps its rules
    assert "┃ ID ┃ Email" in capsys.readouterr().out


def test_short_words_in_cells_are_never_cut_in_two_at_80_columns(monkeypatch, capsys):
    """A rule name or a date folded mid-word ("customer_contac" / "t") reads as two words; they stay
    whole while the table fits, and only longer words (an email address) fold."""
    from hanna_sync.cli.render import table

    monkeypatch.setenv("COLUMNS", "80")
    table(None, ["ID", "Date (UTC)", "From", "Subject", "Linked by"],
          [[4, "2025-03-06 08:30", "mindaugas.k@gmail.com", "Re: kaina", "customer C-1001: customer_contact"],
           [1, "2025-03-03 08:30", "ruta@azuolas.lt", "Užsakymas Nr. 17: ąžuolinės lentos",
            "customer C-1001: customer_domain"]])
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    words = " ".join(lines).split()
    for whole in ("customer_contact", "customer_domain", "2025-03-06", "ruta@azuolas.lt", "ąžuolinės"):
        assert whole in words, (whole, lines)
