"""Keeping the CRM directory in step with the CRM by itself: the configured sources refreshed as snapshots.

`[directory] customers = SOURCE` and `leads = SOURCE` name where the CRM's whole lists are (a path, an
https:// URL, cmd:COMMAND: see remote/crm_source.py). At the start of a pass, each source whose last
successful refresh is older than `refresh_minutes` (or that was never refreshed, or whose SOURCE changed in
the config) is read and applied as a snapshot: entities gone from it are removed, and the archive relinked
before any mailbox is scanned, so the pass links against the refreshed directory. `sync-directory` does it
now for every source.

A refresh that fails (the network, the server, the command, bad rows) or is refused (a snapshot that would
remove more than `max_removed_percent`: a truncated export) never fails the pass: it is a warning in the
journal and in `status`, the directory stays as it was, and the next pass tries again.

Each source's record is one row of archive_state, `directory_source:customers` (JSON): the SOURCE as named in
messages, the last attempt, the last success, its counts, the last error and since when it fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import HannaError
from hanna_sync.linking.directory import SnapshotRefused, import_entities
from hanna_sync.remote.crm_source import ENTITY_SOURCES, display_name, fetch

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore
    from hanna_sync.linking.directory import ImportResult

log = logging.getLogger(__name__)

STATE_PREFIX = "directory_source:"  # archive_state: one JSON record per entity type's source


@dataclass
class SourceRecord:
    """What the database remembers of one configured source's refreshes."""

    entity_type: str
    source: str  # as messages name it (a URL without its query)
    source_key: str = ""  # a digest of the whole SOURCE: a change in a URL's query is a change too
    last_attempt_at: str | None = None
    last_success_at: str | None = None
    added: int = 0  # the last successful refresh's counts
    updated: int = 0
    removed: int = 0
    converted: int = 0  # leads removed whose letters moved to a customer
    last_error: str | None = None  # None when the last attempt succeeded
    failing_since: str | None = None  # the first of the failed attempts since the last success
    refused: bool = False  # the last error is the snapshot guard's (a truncated export?)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RefreshOutcome:
    """One source's refresh: what it changed, or why it did not."""

    entity_type: str
    source: str
    ok: bool
    dry_run: bool = False
    refused: bool = False  # the snapshot guard said no (SnapshotRefused); not written
    error: str | None = None
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)
    removed_links: int = 0
    kept_by_hand: int = 0  # decisions by hand naming removed entities, kept for when they return

    @property
    def changed(self) -> bool:
        return self.ok and not self.dry_run and bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        if not self.ok:  # the error names the source itself
            how = "refused" if self.refused else "failed"
            return f"the {ENTITY_SOURCES[self.entity_type]} source {how}: {self.error}"
        name = f"{ENTITY_SOURCES[self.entity_type]} from {self.source}"
        converted = f" ({len(self.converted)} converted to a customer)" if self.converted else ""
        orphaned = f"; {len(self.orphaned)} letter(s) now concern nobody (kept)" if self.orphaned else ""
        would = "would be " if self.dry_run else ""
        # Unattended, a snapshot may take links off letters of customers that stay (an address moved to
        # another customer): said, with the count, since nobody reviews it before it is written.
        unlinked = (f"; {self.removed_links} link(s) {would}taken off archived letters"
                    f" ('hanna-sync import ... --snapshot --dry-run' lists such changes)") if self.removed_links else ""
        kept = (f"; {self.kept_by_hand} link(s) made or taken off by hand kept for when the removed ones return"
                if self.kept_by_hand else "")
        return (f"{name}: {self.added} {would}added, {self.updated} {would}updated, {len(self.removed)} {would}removed"
                f"{converted}, {self.unchanged} unchanged{orphaned}{unlinked}{kept}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["converted"] = [{"lead": lead, "customer": customer} for lead, customer in self.converted]
        return data


def configured_sources(config: Config) -> list[tuple[str, str]]:
    """(entity type, SOURCE) of every source the config names, customers first."""
    sources = [("customer", config.directory.customers), ("lead", config.directory.leads)]
    return [(entity_type, source) for entity_type, source in sources if source]


def load_record(store: Store, entity_type: str) -> SourceRecord | None:
    value = store.state_value(STATE_PREFIX + ENTITY_SOURCES[entity_type])
    if not value:
        return None
    try:
        data = json.loads(value)
        return SourceRecord(**{k: v for k, v in data.items() if k in SourceRecord.__dataclass_fields__})
    except (ValueError, TypeError):
        return None  # a record this version cannot read: refreshed as if never


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def is_current(record: SourceRecord | None, source: str) -> bool:
    """Whether the record is of this SOURCE (not of one the config named before)."""
    return record is not None and record.source_key == source_key(source)


def is_due(record: SourceRecord | None, source: str, config: Config, now: datetime) -> bool:
    """Never refreshed, the SOURCE changed, the last success older than refresh_minutes, or the last attempt
    failed (the next pass tries again)."""
    if record is None or not is_current(record, source) or record.last_success_at is None:
        return True
    if record.last_error is not None:
        return True
    age = now - datetime.fromisoformat(record.last_success_at)
    return age >= timedelta(minutes=config.directory.refresh_minutes)


def refresh_directory(
    store: Store, config: Config, secrets: SecretStore | None, *, only_due: bool, dry_run: bool = False,
    force: bool = False,
) -> list[RefreshOutcome]:
    """Refresh the configured sources (those due, or all), each as a snapshot; a failure is the outcome's,
    recorded and logged as a warning, never raised (the database's own errors aside). The caller relinks
    when an outcome `changed`."""
    now = datetime.now(timezone.utc)
    outcomes = []
    for entity_type, source in configured_sources(config):
        record = load_record(store, entity_type)
        if only_due and not is_due(record, source, config, now):
            continue
        outcome = refresh_source(store, config, secrets, entity_type=entity_type, source=source, dry_run=dry_run,
                                 force=force)
        if not dry_run:
            _record(store, record if is_current(record, source) else None, outcome, now, key=source_key(source))
        if outcome.ok and dry_run:
            log.info("directory dry run (nothing written): %s", outcome.summary())
        elif outcome.ok:
            log.info("directory refreshed: %s", outcome.summary())
        else:
            log.warning("directory not refreshed: %s; the directory stays as it was (the next pass tries again)",
                        outcome.summary())
        outcomes.append(outcome)
    return outcomes


def refresh_source(
    store: Store, config: Config, secrets: SecretStore | None, *, entity_type: str, source: str,
    dry_run: bool = False, force: bool = False,
) -> RefreshOutcome:
    """Read one source and apply it as a snapshot (nothing written on a dry run, a refusal or an error).
    Whatever goes wrong with the source, even an error this code did not foresee, is the outcome's: one
    source never stops the other, nor the pass. A command runs in the config file's folder."""
    name = display_name(source)
    cwd = config.source.parent if config.source is not None else None
    try:
        got = fetch(source, entity_type, secrets=secrets, timeout=config.network.timeout, cwd=cwd)
        result = import_entities(store, entity_type, None, got.fmt, stdin_data=got.data, config=config,
                                 allow_conflicts=True, snapshot=True, dry_run=dry_run, force=force,
                                 source_name=got.name)
    except SnapshotRefused as exc:
        return RefreshOutcome(entity_type, name, ok=False, dry_run=dry_run, refused=True, error=str(exc))
    except HannaError as exc:
        return RefreshOutcome(entity_type, name, ok=False, dry_run=dry_run, error=str(exc))
    except sqlite3.Error:
        raise  # the database's own: the pass's (exit 74), not the source's
    except Exception as exc:  # noqa: BLE001 - a source's failure, never the pass's
        log.debug("the %s source failed unexpectedly", ENTITY_SOURCES[entity_type], exc_info=True)
        return RefreshOutcome(entity_type, name, ok=False, dry_run=dry_run,
                              error=f"{name}: unexpected {type(exc).__name__}: {exc}")
    return _outcome(entity_type, name, result, dry_run)


def _outcome(entity_type: str, name: str, result: ImportResult, dry_run: bool) -> RefreshOutcome:
    outcome = RefreshOutcome(entity_type, name, ok=not result.rejected, dry_run=dry_run, added=result.added,
                             updated=result.updated, unchanged=result.unchanged, removed=list(result.removed),
                             converted=list(result.converted), orphaned=list(result.orphaned),
                             removed_links=len(result.removed_links), kept_by_hand=result.kept_by_hand)
    if result.rejected:
        first = result.rejected[0]
        more = f" (and {len(result.rejected) - 1} more)" if len(result.rejected) > 1 else ""
        outcome.error = f"{name}, line {first.line}: {first.message}{more}"
    return outcome


def _record(store: Store, record: SourceRecord | None, outcome: RefreshOutcome, now: datetime, *, key: str) -> None:
    stamp = now.isoformat(timespec="seconds")
    if record is None:
        record = SourceRecord(outcome.entity_type, outcome.source, key)
    record.last_attempt_at = stamp
    if outcome.ok:
        record.last_success_at, record.last_error, record.failing_since, record.refused = stamp, None, None, False
        record.added, record.updated = outcome.added, outcome.updated
        record.removed, record.converted = len(outcome.removed), len(outcome.converted)
    else:
        record.last_error, record.refused = outcome.error, outcome.refused
        record.failing_since = record.failing_since or stamp
    with store.transaction():
        store.set_state_value(STATE_PREFIX + ENTITY_SOURCES[outcome.entity_type], json.dumps(record.as_dict()))
