"""`hanna-sync demo`: the whole job end to end on built-in sample data, touching nothing of the host's.

A throwaway Dovecot on 127.0.0.1 gets a staff mailbox full of sample mail; a fresh database and
secrets store in a new directory get the sample customers and leads (through the real CSV import) and
the mailbox (through the real add-mailbox path, verified against the server); then one real pass runs.
Then a customer is added, as a CRM import would add one today: the import relinks and the next pass
fetches that customer's older letter, skipped by the first pass. The database stays afterwards, so
`letters`, `show`, `search`, `thread` and `export` can be tried on it.
"""

from __future__ import annotations

import csv
import secrets as pysecrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hanna_sync.admin import mailboxes
from hanna_sync.config import load_config
from hanna_sync.credentials import open_secret_store
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.linking.directory import ImportResult, import_entities
from hanna_sync.linking.relink import RelinkResult, relink_or_defer
from hanna_sync.models import Entity
from hanna_sync.scan import PassResult, run_pass


@dataclass
class DemoResult:
    workdir: Path
    config_path: Path
    imported: dict[str, ImportResult]
    scan: PassResult
    store: Store
    relinked: RelinkResult | None = None  # after the late customer's import
    backfill: PassResult | None = None  # the pass that fetched its older letters


def _write_csv(path: Path, entities: list[Entity], with_domain: bool) -> None:
    columns = ["id", "name", "email"] + (["domain"] if with_domain else []) + ["contacts"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for e in entities:
            contacts = "; ".join(f"{c.name} <{c.email}>" if c.name else c.email for c in e.contacts)
            writer.writerow([e.id, e.name, e.email] + ([e.domain or ""] if with_domain else []) + [contacts])


def run_demo(workdir: Path | None = None) -> DemoResult:
    from hanna_sync.demo.sandbox import (
        Dovecot,  # needs Dovecot installed; only the demo and tests use it
    )

    workdir = workdir or Path(tempfile.mkdtemp(prefix="hanna-sync-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.toml"
    config_path.write_text(
        "# Written by `hanna-sync demo`.\n"
        'database = "hanna-sync.db"\n'
        f"own_domains = {list(sample.OWN_DOMAINS)!r}\n".replace("'", '"')
    )
    config = load_config(config_path)
    store = Store(config.database)
    secret_store = open_secret_store("file", config.secrets_file, config.secrets_key_file, config.secrets.timeout)

    _write_csv(workdir / "customers.csv", sample.CUSTOMERS, with_domain=True)
    _write_csv(workdir / "leads.csv", sample.LEADS, with_domain=False)
    imported = {
        "customers": import_entities(store, "customer", workdir / "customers.csv", config=config),
        "leads": import_entities(store, "lead", workdir / "leads.csv", config=config),
    }

    with Dovecot() as dovecot:
        user = dovecot.add_user(sample.STAFF, pysecrets.token_urlsafe(12))
        for folder, raw, flags in sample.mailbox_letters():
            dovecot.deliver(user.login, folder, raw, flags)
        # The CA beside the database: the sandbox's own directory goes with it, and a mailbox naming a
        # file that is gone would fail `test 1` on the archive the demo leaves behind.
        ca_file = workdir / "demo-ca.pem"
        shutil.copyfile(dovecot.ca_file, ca_file)
        box = mailboxes.new_mailbox("jonas", sample.STAFF, "custom", {
            "imap_host": dovecot.host, "imap_port": dovecot.imaps_port, "imap_security": "ssl",
            "ca_file": str(ca_file), "folders": ["INBOX", "Išsiųsti"], "main": True,
        })
        mailboxes.add(store, secret_store, box, user.password, verify_first=True, timeout=config.network.timeout)
        result = run_pass(store, secret_store, config)
        # A customer the CRM adds today: the import relinks, and the next pass fetches its older letter.
        _write_csv(workdir / "late-customer.csv", [sample.LATE_CUSTOMER], with_domain=True)
        imported["late customer"] = import_entities(store, "customer", workdir / "late-customer.csv", config=config)
        relinked = relink_or_defer(store, config, secret_store)
        backfill = run_pass(store, secret_store, config)
        # The sandbox server goes away with the demo; keep the mailbox from failing in later passes.
        assert box.id is not None
        store.update_mailbox(mailboxes.changed_mailbox(store.mailbox(box.id), {"scan_active": False}))
    return DemoResult(workdir, config_path, imported, result, store, relinked, backfill)
