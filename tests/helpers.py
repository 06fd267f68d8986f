"""Shared test helpers: a hanna-sync environment in tmp_path, and sample mail on the sandbox Dovecot."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from imapclient import IMAPClient

from hanna_sync.admin import mailboxes
from hanna_sync.config import Config, ScanConfig, SecretsConfig
from hanna_sync.credentials import open_secret_store
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.scan import run_pass


class Env:
    """A database, a secrets store and a config in tmp_path, and helpers to add sandbox mailboxes."""

    def __init__(self, tmp_path: Path, **scan: int) -> None:
        self.tmp = tmp_path
        self.config = Config(
            database=tmp_path / "hs.db",
            own_domains=sample.OWN_DOMAINS,
            secrets=SecretsConfig(file=tmp_path / "secrets.enc", key_file=tmp_path / "secrets.key"),
            scan=replace(ScanConfig(), **scan),
        )
        self.store = Store(self.config.database)
        self.secrets = open_secret_store("file", self.config.secrets_file, self.config.secrets_key_file, 5)
        for entity in sample.CUSTOMERS:
            self.store.save_entity("customer", entity, replace_contacts=True)
        for entity in sample.LEADS:
            self.store.save_entity("lead", entity, replace_contacts=True)

    def add(self, user, folders=("INBOX", "Išsiųsti"), email=None, verify=True, **settings):
        """A mailbox on the user's sandbox account. Tests give one account several mailboxes (other emails, the
        same login) where they need several: the duplicate rule is add-mailbox's, tested on its own."""
        dc = user.dovecot
        box = mailboxes.new_mailbox("staff", email or user.login, "custom", {
            "username": user.login, "imap_host": dc.host, "imap_port": dc.imaps_port, "imap_security": "ssl",
            "ca_file": str(dc.ca_file), "folders": list(folders), **settings,
        })
        for folder in folders:
            dc.create_folder(user.login, folder)
        return mailboxes.add(self.store, self.secrets, box, user.password, verify_first=verify, timeout=10,
                             allow_duplicate=True).mailbox

    def run(self, **kw):
        return run_pass(self.store, self.secrets, self.config, **kw)

    def config_file(self) -> Path:
        """The same settings as a TOML file, for the CLI and subprocesses."""
        path = self.tmp / "config.toml"
        path.write_text(
            f'database = "{self.config.database}"\nown_domains = {list(self.config.own_domains)!r}\n'.replace("'", '"')
            + f'[secrets]\nfile = "{self.config.secrets_file}"\nkey_file = "{self.config.secrets_key_file}"\n'
            + f"[scan]\nbatch_size = {self.config.scan.batch_size}\n"
        )
        return path

    def snapshot(self):
        """Everything a pass writes about letters, comparable across runs (ids differ, so keyed by identity)."""
        q = self.store.db.execute
        letters = sorted(q("SELECT identity, subject, size, length(body_text) FROM letters").fetchall())
        sources = sorted(q("SELECT l.identity, s.raw FROM letters l JOIN letter_sources s ON s.letter_id = l.id"))
        locations = sorted(q(
            "SELECT l.identity, p.mailbox_id, p.folder, p.uid, p.gone_at IS NULL FROM letter_locations p"
            " JOIN letters l ON l.id = p.letter_id").fetchall())
        links = sorted(q(
            "SELECT l.identity, k.entity_type, k.entity_id, k.rule, k.address FROM links k"
            " JOIN letters l ON l.id = k.letter_id").fetchall())
        states = sorted(q("SELECT mailbox_id, folder, last_uid, uidnext, messages FROM folder_states").fetchall())
        return letters, sources, locations, links, states


def deliver_sample(user) -> list[bytes]:
    raws = []
    for folder, raw, flags in sample.mailbox_letters():
        user.dovecot.deliver(user.login, folder, raw, flags)
        raws.append(raw)
    return raws


def server_flags(user, folders=("INBOX", "Išsiųsti")) -> dict:
    dc = user.dovecot
    with IMAPClient(dc.host, dc.imaps_port, ssl_context=ssl.create_default_context(cafile=str(dc.ca_file))) as c:
        c.login(user.login, user.password)
        out = {}
        for folder in folders:
            c.select_folder(folder, readonly=True)
            for uid, data in c.fetch(c.search(), ["FLAGS"]).items():
                out[(folder, uid)] = sorted(f for f in data[b"FLAGS"] if f != b"\\Recent")
        return out


def server_bodies(user, folder) -> list[bytes]:
    dc = user.dovecot
    with IMAPClient(dc.host, dc.imaps_port, ssl_context=ssl.create_default_context(cafile=str(dc.ca_file))) as c:
        c.login(user.login, user.password)
        c.select_folder(folder, readonly=True)
        return [d[b"BODY[]"] for d in c.fetch(c.search(), ["BODY.PEEK[]"]).values()]


def serve_each_connection(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """The test servers' accept loop, in a thread: each connection handled in a thread of its own, until the
    listener is closed (accept then fails, and the loop ends)."""
    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
