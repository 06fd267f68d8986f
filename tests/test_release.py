"""What a release must agree on: one version in the package, `--version` and CHANGELOG.md; the LICENSE
that pyproject.toml names; the man page equal to what the commands' help makes of it; shell completion
through click's own mechanism."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hanna_sync import __version__

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "hanna-sync"  # the installed console script of this venv


def test_the_package_the_command_and_the_changelog_say_the_same_version():
    assert version("hanna-sync") == __version__  # pyproject.toml reads it (dynamic), so pip show agrees
    shown = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=True).stdout
    assert shown == f"hanna-sync, version {__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject  # written once only
    top = re.search(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert top and top.group(1) == __version__


def test_the_license_is_the_mit_one_pyproject_names():
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the hanna-sync authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})


def test_the_committed_man_page_is_what_the_commands_help_makes_now():
    """man/hanna-sync.1 is generated, never edited: change a --help, then
    `.venv/bin/hanna-sync setup-guide man > man/hanna-sync.1`."""
    printed = run_script("setup-guide", "man").stdout
    assert (ROOT / "man" / "hanna-sync.1").read_text() == printed


def test_the_man_page_has_every_command_serve_too_and_every_exit_code_of_the_readme():
    from hanna_sync.cli import cli

    page = run_script("setup-guide", "man").stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in page
    commands = set(cli.commands) | {"serve"}  # serve is web/'s, joined by hanna_sync.__main__
    assert {line[4:].replace("\\-", "-") for line in page.splitlines() if line.startswith(".SS ")} >= commands
    assert ".SS token create\n" in page  # a group's commands too
    readme = (ROOT / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| (\d+) \|", readme, re.M)
    assert len(codes) > 10
    listed = re.findall(r"^\.TP\n\.B (\d+)$", page.split(".SH EXIT STATUS")[1].split(".SH FILES")[0], re.M)
    assert listed == codes
    assert "\n.B \\-\\-admin\n" in page  # hyphens escaped: copied from a terminal, an option still works
    # No help text is read as a request: every line starting with . or ' is one the generator writes.
    requests = {line.split(" ")[0] for line in page.splitlines() if line.startswith((".", "'"))}
    assert requests <= {'.\\"', ".TH", ".SH", ".SS", ".PP", ".TP", ".B", ".I", ".nf", ".fi"}


def test_the_man_page_formats_without_a_warning():
    if not shutil.which("groff"):
        reason = "groff is not installed (apt-get install groff-base)"
        if os.environ.get("CI"):  # CI installs it (scripts/setup.sh test): there a missing groff fails
            pytest.fail(reason)
        pytest.skip(reason)
    formatted = subprocess.run(["groff", "-k", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man" / "hanna-sync.1")],
                               capture_output=True, text=True)
    assert (formatted.returncode, formatted.stderr) == (0, "")
    text = subprocess.run(["groff", "-k", "-man", "-Tutf8", "-P-c", str(ROOT / "man" / "hanna-sync.1")],
                          capture_output=True, text=True, check=True).stdout
    assert "hanna-sync add-mailbox --kind google-scan" in text.replace("\u2010", "-")
    assert "Išsiųsti" in text  # UTF-8 kept (preconv), not mangled


def test_shell_completion_scripts_come_from_click():
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "#compdef hanna-sync"),
                          ("fish", "complete --no-files --command hanna-sync")):
        script = run_script(env={"_HANNA_SYNC_COMPLETE": f"{shell}_source"}).stdout
        assert marker in script and "_HANNA_SYNC_COMPLETE" in script, shell


def test_bash_completes_a_command_and_an_option():
    def complete(words: str) -> list[str]:
        out = run_script(env={"_HANNA_SYNC_COMPLETE": "bash_complete", "COMP_WORDS": words,
                              "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}).stdout
        return out.splitlines()

    assert complete("hanna-sync add-m") == ["plain,add-mailbox"]
    assert "plain,setup-guide" in complete("hanna-sync se")
    assert "plain,serve" in complete("hanna-sync se")  # web/'s command too
    assert "plain,man" in complete("hanna-sync setup-guide ")


def test_each_migration_records_the_version_that_applied_it_and_doctor_shows_them(tmp_path):
    """A database from before versions were recorded (sqlite-utils' own record, m013 not yet applied) keeps
    its rows NULL; the migration this hanna-sync applies names it; doctor tells them apart."""
    import json

    import sqlite_utils

    from hanna_sync.db.schema import migrations
    from hanna_sync.db.store import Store

    (tmp_path / "state").mkdir(mode=0o700)
    database = tmp_path / "state" / "hs.db"
    old = sqlite_utils.Migrations("hanna_sync")
    for migration in migrations._migrations:
        old(name=migration.name)(migration.fn)
    old.apply(sqlite_utils.Database(database), stop_before="m013_gmail_api_message_ids")
    database.chmod(0o600)
    store = Store(database)  # this hanna-sync applies m013
    applied = store.applied_migrations()
    store.close()
    assert [m.version for m in applied] == [None] * 12 + [__version__]
    assert applied[-1].name == "m013_gmail_api_message_ids"

    config = tmp_path / "config.toml"
    config.write_text(f'database = "{database}"\n')
    report = json.loads(run_script("--config", str(config), "doctor", "--json").stdout)
    check = next(c for c in report["checks"] if c["name"] == "migrations")
    assert check["ok"] and check["detail"].startswith("13 applied, the last m013_gmail_api_message_ids on ")
    assert check["detail"].endswith(f" by hanna-sync {__version__}; by version: unrecorded (12), {__version__} (1)")

    fresh = tmp_path / "state" / "fresh.db"
    store = Store(fresh)
    assert {m.version for m in store.applied_migrations()} == {__version__}  # from the first migration on
    store.close()
