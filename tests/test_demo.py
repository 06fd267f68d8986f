"""`hanna-sync demo`, the README's first command: the whole job on sample data, and a late customer's backfill."""

from __future__ import annotations

from click.testing import CliRunner

from hanna_sync import sample
from hanna_sync.cli import cli


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
