"""`hanna-sync demo`, the README's first command: the whole job on sample data, and a late customer's backfill."""

from __future__ import annotations

from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.demo import sample


def test_the_demo_archives_the_sample_mailbox_then_backfills_a_customer_added_later(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "Imported customers: 3 added" in result.output and "Imported leads: 1 added" in result.output
    assert "The next pass fetched 1 older letter(s) for it, and nothing else" in result.output

    config = str(tmp_path / "demo" / "config.toml")
    listing = CliRunner().invoke(cli, ["--config", config, "letters", "--customer", sample.LATE_CUSTOMER.id, "--json"])
    assert listing.exit_code == 0, listing.output
    assert '"subject": "Akcija!"' in listing.output and '"rule": "customer_domain"' in listing.output
    searched = CliRunner().invoke(cli, ["--config", config, "search", "lentų", "--json"])
    assert searched.exit_code == 0 and "Užsakymas Nr. 17" in searched.output


def test_every_try_line_the_demo_prints_works_as_shown_from_anywhere(tmp_path):
    """scripts/demo.sh leaves hanna-sync in .venv/bin, not on PATH: the Try lines name it by its absolute
    path and the demo's config, so each works pasted into a shell elsewhere, with a PATH without it."""
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    demo = subprocess.run([sys.executable, "-m", "hanna_sync", "demo", "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.split(" Try:\n", 1)[1].splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("  ")]
    assert len(commands) >= 8
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HANNA_SYNC_CONFIG"}
    env["PATH"] = "/usr/bin:/bin"  # no venv on it
    for argv in commands:
        assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK), argv
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env)
        assert result.returncode == 0, (argv, result.stderr)
    assert b"\r\n\r\n" in (elsewhere / "letter.eml").read_bytes() or b"\n\n" in (elsewhere / "letter.eml").read_bytes()

    # The archive's mailbox keeps a CA file that outlives the demo's Dovecot: `test 1` finds the CA and
    # fails only where it should, at connecting to the server that is gone (exit 10), naming no option.
    hs = commands[0][:3]
    tested = subprocess.run([*hs, "test", "1"], capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env)
    assert tested.returncode == 10, tested.stdout + tested.stderr
    assert "--ca-file" not in tested.stdout + tested.stderr and "does not exist" not in tested.stderr


def test_a_saved_mailboxs_missing_ca_file_is_not_blamed_on_an_option_never_given(tmp_path):
    from hanna_sync.admin import mailboxes
    from hanna_sync.db.store import Store
    from hanna_sync.errors import InputError

    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    store = Store(tmp_path / "hs.db")
    box = mailboxes.new_mailbox("staff", "jonas@imone.lt", "custom", {"imap_host": "127.0.0.1", "ca_file": str(ca)})
    store.add_mailbox(box)
    saved = store.mailboxes()[0]
    ca.unlink()
    result = CliRunner().invoke(cli, ["--config", str(_config(tmp_path)), "test", str(saved.id)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"Error: mailbox {saved.id}'s CA file {ca} (set with --ca-file) no longer exists:"
                                     f" give another with 'hanna-sync edit-mailbox {saved.id} --ca-file CA.pem'")
    try:  # while a --ca-file given now is named as such
        mailboxes.changed_mailbox(saved, {"ca_file": str(tmp_path / "other.pem")})
    except InputError as exc:
        assert str(exc) == f"--ca-file {tmp_path / 'other.pem'} does not exist"
    else:
        raise AssertionError("a missing --ca-file was accepted")


def _config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f'database = "{tmp_path / "hs.db"}"\n')
    return path
