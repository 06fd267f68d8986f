"""`hanna-sync status`: what an admin (or a monitoring check) needs to know about each mailbox.

The peers' worst failure is "status: healthy" while mail silently stopped arriving, so every state
here is derived from evidence: when the last pass succeeded, how long the current failure streak
has lasted, how far each folder's UID high-water mark is behind what the server last reported, and
whether the gap check found letters that were never looked at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.models import FolderState, Mailbox
from hanna_sync.remote.crm_source import display_name
from hanna_sync.scan.directory_refresh import configured_sources, is_current, load_record

STATES = ("ok", "new", "backfilling", "failing", "server busy", "auth failed", "needs re-authorisation", "stale",
          "paused")


@dataclass
class FolderHealth:
    folder: str
    last_uid: int
    server_uidnext: int | None
    behind: int  # UIDs between the high-water mark and what the server last reported
    skipped: int
    gap_found: int
    gap_checked_at: str | None


@dataclass
class MailboxHealth:
    id: int
    user: str
    email: str
    state: str  # one of STATES
    detail: str
    alert: bool  # failing (or stale) for longer than the threshold: what makes `status` exit 1
    last_success_at: str | None
    last_success_minutes_ago: float | None
    last_error: str | None
    failing_since: str | None
    retry_after: str | None
    archived_today: int
    archived_total: int
    skipped_total: int
    folders_behind: int
    backfill_percent: float | None
    wanted: int = 0  # skipped letters a directory change made worth fetching: the next pass reads them
    failure_kind: str | None = None  # the last pass's kind of failure: "auth", "reauth", "busy", "connect", ...
    folders: list[FolderHealth] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _minutes_since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    return round((now - datetime.fromisoformat(stamp)).total_seconds() / 60, 1)


def _folder_health(state: FolderState) -> FolderHealth:
    if state.graph_folder_id is not None:
        # Graph has no UIDs: "last UID" is the letters looked at in the current delta round, and the
        # folder's item count stands for UIDNEXT until the round is complete.
        looked_at = state.messages or 0
        server = None if _scanned(state) else (state.server_messages or 0) + 1
        behind = 0 if server is None else max(0, server - 1 - looked_at)
        return FolderHealth(state.folder, looked_at, server, behind, state.skipped, 0, None)
    behind = max(0, (state.server_uidnext or 1) - 1 - state.last_uid)
    return FolderHealth(state.folder, state.last_uid, state.server_uidnext, behind, state.skipped,
                        state.gap_found, state.gap_checked_at)


def _scanned(state: FolderState) -> bool:
    """Scanned to the end once: IMAP up to UIDNEXT, Graph a delta round complete (its deltaLink kept)."""
    if state.graph_folder_id is not None:
        return state.delta_link is not None and state.next_link is None
    return state.uidnext is not None


def mailbox_health(store: Store, mailbox: Mailbox, fail_after: timedelta, now: datetime | None = None) -> MailboxHealth:
    """One mailbox's state, judged against `fail_after` (how long a failure may last before it alerts)."""
    assert mailbox.id is not None
    now = now or datetime.now(timezone.utc)
    states = {s.folder: s for s in store.folder_states(mailbox.id)}
    folders = [_folder_health(states[f]) if f in states else FolderHealth(f, 0, None, 0, 0, 0, None)
               for f in mailbox.folders]
    unscanned = [f for f in mailbox.folders if f not in states or not _scanned(states[f])]
    behind = [f for f in folders if f.behind > 0 or f.folder in unscanned]
    total_uids = sum(max((f.server_uidnext or 1) - 1, f.last_uid) for f in folders)
    done_uids = sum(min(f.last_uid, (f.server_uidnext or 1) - 1) for f in folders)
    percent = round(100 * done_uids / total_uids, 1) if behind and total_uids else None
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="seconds")
    counts = store.mailbox_counts(mailbox.id, midnight)
    failing_minutes = _minutes_since(mailbox.failing_since, now)
    success_minutes = _minutes_since(mailbox.last_success_at, now)
    threshold = fail_after.total_seconds() / 60

    if not mailbox.scan_active:
        state, detail, alert = "paused", "scan is not active (edit-mailbox --scan-active)", False
    elif mailbox.failure_kind == "reauth":
        state = "needs re-authorisation"
        detail = f"{mailbox.last_error}"
        if mailbox.retry_after:
            detail += f"; not tried again before {mailbox.retry_after}"
        alert = failing_minutes is not None and failing_minutes >= threshold
    elif mailbox.failure_kind == "auth":
        state = "auth failed"
        backing_off = f"; backing off until {mailbox.retry_after}" if mailbox.retry_after else ""
        if mailbox.kind == "imap":
            detail = (f"login refused {mailbox.consecutive_failures} time(s){backing_off};"
                      f" fix with 'hanna-sync set-password {mailbox.id}'")
        else:  # Office 365: the error names its own fix (a permission, a policy, the app)
            detail = f"refused {mailbox.consecutive_failures} time(s): {mailbox.last_error}{backing_off}"
        alert = failing_minutes is not None and failing_minutes >= threshold
    elif mailbox.failure_kind == "busy":  # temporary: no back-off, the next pass tries again
        state = "server busy"
        detail = (f"{mailbox.last_error}; busy {mailbox.consecutive_failures} pass(es) in a row, tried again next pass"
                  if mailbox.consecutive_failures > 1 else f"{mailbox.last_error}; tried again next pass")
        alert = failing_minutes is not None and failing_minutes >= threshold
    elif mailbox.last_error:
        state, detail = "failing", mailbox.last_error
        alert = failing_minutes is not None and failing_minutes >= threshold
    elif mailbox.last_success_at is None:
        state, detail, alert = "new", "not scanned yet", False
    elif success_minutes is not None and success_minutes >= threshold:
        state, alert = "stale", True
        detail = f"no pass for {success_minutes:.0f} minutes: is the timer running? (systemctl list-timers hanna-sync)"
    elif behind:
        state, alert = "backfilling", False
        done = percent if percent is not None else 0
        detail = f"{done:g}% done; {len(behind)} folder(s) behind, continuing each pass"
    else:
        state, detail, alert = "ok", "up to date", False
    if state in ("ok", "backfilling") and any(f.gap_found for f in folders):
        detail += f"; the last gap check found {sum(f.gap_found for f in folders)} letter(s) never looked at (now read)"
    wanted = store.wanted_count(mailbox.id, mailbox.folders)
    if wanted and state != "paused":
        detail += f"; {wanted} older letter(s) the directory now concerns are fetched by the next pass"

    return MailboxHealth(
        id=mailbox.id, user=mailbox.user, email=mailbox.email, state=state, detail=detail, alert=alert,
        last_success_at=mailbox.last_success_at, last_success_minutes_ago=success_minutes,
        last_error=mailbox.last_error, failing_since=mailbox.failing_since, retry_after=mailbox.retry_after,
        archived_today=counts["since"], archived_total=counts["total"],
        skipped_total=sum(f.skipped for f in folders), folders_behind=len(behind), backfill_percent=percent,
        wanted=wanted, failure_kind=mailbox.failure_kind, folders=folders,
    )


def health(store: Store, fail_after: timedelta, user: str | None = None) -> list[MailboxHealth]:
    now = datetime.now(timezone.utc)
    return [mailbox_health(store, m, fail_after, now) for m in store.mailboxes(user)]


SOURCE_STATES = ("ok", "new", "failing", "refused")


@dataclass
class SourceHealth:
    """One configured CRM source's refreshes (`[directory] customers|leads`): the last success and its counts,
    the last error and since when it fails."""

    entity_type: str  # "customer" or "lead"
    source: str  # as messages name it (a URL without its query)
    state: str  # one of SOURCE_STATES: "new" never refreshed yet, "refused" the snapshot guard said no
    alert: bool  # failing (or refused) for --fail-after or longer
    last_attempt_at: str | None
    last_success_at: str | None
    last_success_minutes_ago: float | None
    added: int
    updated: int
    removed: int
    converted: int
    last_error: str | None
    failing_since: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_health(store: Store, config: Config, fail_after: timedelta, now: datetime | None = None
                  ) -> list[SourceHealth]:
    """Each configured source's health; a source whose SOURCE changed since its record is "new" again."""
    now = now or datetime.now(timezone.utc)
    out = []
    for entity_type, source in configured_sources(config):
        record = load_record(store, entity_type)
        name = display_name(source)
        if record is None or not is_current(record, source):
            out.append(SourceHealth(entity_type, name, "new", False, None, None, None, 0, 0, 0, 0, None, None))
            continue
        failing = _minutes_since(record.failing_since, now)
        state = "ok" if record.last_error is None else "refused" if record.refused else "failing"
        out.append(SourceHealth(
            entity_type, name, state, failing is not None and failing >= fail_after.total_seconds() / 60,
            record.last_attempt_at, record.last_success_at, _minutes_since(record.last_success_at, now),
            record.added, record.updated, record.removed, record.converted, record.last_error, record.failing_since))
    return out


@dataclass
class Overview:
    """Everything `status` reports: its --json (and GET /api/status) is `as_dict()`."""

    rows: list[MailboxHealth]
    sources: list[Any]
    last: Any
    warning: Any
    alert: bool

    def as_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "alert": self.alert,
            "database_warning": self.warning.as_dict() if self.warning else None,
            "last_pass": None if last is None else {
                "started_at": last["started_at"], "finished_at": last["finished_at"], "outcome": last["outcome"],
                "budget_exhausted": bool(last["budget_exhausted"]),
            },
            "mailboxes": [r.as_dict() for r in self.rows],
            "directory_sources": [s.as_dict() for s in self.sources],
        }


def overview(store: Store, config: Config, *, fail_after: timedelta, user: str | None = None) -> Overview:
    """The mailboxes' and CRM sources' health, the last pass, and a warning when this is the wrong database."""
    from hanna_sync.db.database_warning import database_warning, recorded_database_warning

    rows = health(store, fail_after, user)
    sources = source_health(store, config, fail_after)
    # No mailbox at all: this shell's view of other databases, and the one the last pass (the timer) had.
    warning = database_warning(store, config.database)
    recorded = recorded_database_warning(store)
    if warning is not None and recorded is not None:
        warning.other_databases += [d for d in recorded.other_databases if d not in warning.other_databases]
    alert = any(r.alert for r in rows) or any(s.alert for s in sources) or warning is not None
    return Overview(rows, sources, store.last_run(), warning, alert)
