"""A snapshot import and its relink over a big archive: seconds, not minutes.

    .venv/bin/python bench/relink.py [--customers 5000] [--letters 50000] [--seed 1] [--profile FILE]

Generates --customers customers (an email, a domain, two contacts each) and an archive of --letters
letters inserted straight into a fresh database with the Store API (no Dovecot: the relink reads only
the stored participants and thread ids), a third of them replies in threads, 5% from nobody in the
directory. Then a snapshot changes ~5% of the customers (new contact, new name) and removes ~2%, and
runs as `hanna-sync import customers FILE --snapshot` does: import_entities(snapshot=True), then the
relink. Prints each step's wall time; --profile writes cProfile stats of the import and relink.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.linking.directory import import_entities
from hanna_sync.linking.relink import relink


def directory_csv(path: Path, customers: list[tuple[str, str, str, str, str]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "name", "email", "domain", "contacts"])
        writer.writerows(customers)


def build_archive(store: Store, *, customers: int, letters: int, rng: random.Random) -> None:
    """Letters as a pass stores them (only what relink reads is meaningful), in one transaction."""
    rows = []
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for n in range(letters):
        c = rng.randrange(customers)
        sender = f"x{n}@nobody{n}.example" if rng.random() < 0.05 else rng.choice(
            [f"info@c{c}.lt", f"a{c}@c{c}.lt", f"jonas@c{c}.lt", "petras@gmail.com"])
        answers = f"<m{rng.randrange(n)}@bench>" if n and rng.random() < 0.33 else None
        rows.append({
            "identity": f"bench-{n}", "message_id": f"<m{n}@bench>",
            "date_utc": (start + timedelta(minutes=10 * n)).isoformat(),
            "from_addr": sender, "to_addrs": '["staff@imone.lt"]', "cc_addrs": "[]", "subject": f"Letter {n}",
            "body_text": "", "attachments": "[]", "in_reply_to": answers,
            "references": json.dumps([answers] if answers else []), "size": 1000, "body_skipped": 0,
            "archived_at": "2025-01-01T00:00:00", "participants": json.dumps([sender, "staff@imone.lt"]),
            "automatic": 0, "conversation_id": None,
        })
    with store.transaction():
        store.db.table("letters").insert_all(rows, batch_size=2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--letters", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(database=Path(tmp) / "bench.db", own_domains=("imone.lt",))
        store = Store(config.database)
        first = [(f"C{c}", f"Customer {c}", f"info@c{c}.lt", f"c{c}.lt", f"a{c}@c{c}.lt; b{c}@c{c}.lt")
                 for c in range(args.customers)]
        directory_csv(Path(tmp) / "first.csv", first)
        started = time.monotonic()
        import_entities(store, "customer", Path(tmp) / "first.csv", config=config)
        build_archive(store, customers=args.customers, letters=args.letters, rng=rng)
        linked = relink(store, config, None)
        print(f"setup: {args.customers:,} customers, {args.letters:,} letters, {linked.links_added:,} links"
              f" ({time.monotonic() - started:.1f} s)")
        changed = set(rng.sample(range(args.customers), args.customers // 20))
        removed = set(rng.sample(sorted(set(range(args.customers)) - changed), args.customers // 50))
        second = [(i, f"Renamed {i}" if int(i[1:]) in changed else name, email, domain,
                   f"{contacts}; jonas@c{int(i[1:])}.lt" if int(i[1:]) in changed else contacts)
                  for i, name, email, domain, contacts in first if int(i[1:]) not in removed]
        directory_csv(Path(tmp) / "second.csv", second)
        profile = cProfile.Profile() if args.profile else None
        if profile:
            profile.enable()
        started = time.monotonic()
        result = import_entities(store, "customer", Path(tmp) / "second.csv", config=config, snapshot=True,
                                 allow_conflicts=True)
        imported = time.monotonic()
        relinked = relink(store, config, None)
        done = time.monotonic()
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        print(f"snapshot: {result.updated:,} updated, {len(result.removed):,} removed ({len(result.removed_links):,}"
              f" links, {len(result.orphaned):,} letters left to nobody), {result.unchanged:,} unchanged; the relink:"
              f" {relinked.links_added:,} links added, {relinked.links_changed:,} changed, {relinked.links_removed:,}"
              " removed")
        print(f"import {imported - started:.2f} s + relink {done - imported:.2f} s = {done - started:.2f} s")


if __name__ == "__main__":
    main()
