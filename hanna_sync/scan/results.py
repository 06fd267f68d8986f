"""What a pass reports: per mailbox, for the summary table, --json and the run record; and the whole pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hanna_sync.db.database_warning import DatabaseWarning


@dataclass
class WouldArchive:
    """A letter `run --dry-run` would archive. One record for every source; its --json shape names the
    place as the source does (an IMAP UID, or Graph's immutable id beside a null UID)."""

    folder: str
    uid: int | None
    graph_id: str | None
    subject: str | None
    links: list[str]  # "customer C-1 (address)"

    def as_dict(self) -> dict[str, Any]:
        where: dict[str, Any] = {"uid": self.uid} if self.graph_id is None else {"uid": None, "graph_id": self.graph_id}
        return {"folder": self.folder, **where, "subject": self.subject, "links": self.links}


@dataclass
class MailboxResult:
    """What one mailbox's part of a pass did: the row of the summary table and of --json."""

    mailbox_id: int
    email: str
    folders_checked: int = 0
    new: int = 0  # letters the pass looked at for the first time
    archived: int = 0  # letters stored for the first time
    linked: int = 0  # letters that got a link they did not have (archived now, or earlier from elsewhere)
    skipped: int = 0  # letters concerning no customer or lead: counted, not stored
    remapped: int = 0  # letters found again under a new UIDVALIDITY
    gaps: int = 0  # letters the gap check found never looked at (and then read)
    backfilled: int = 0  # letters skipped earlier, archived now that the directory concerns them
    errors: list[str] = field(default_factory=list)
    failure_kind: str | None = None  # see models.Mailbox.failure_kind; "busy": the server had no room, tried later
    budget_exhausted: bool = False  # stopped early; the next pass goes on from here
    backing_off_until: str | None = None  # not tried: its login was refused recently
    seconds: float = 0.0
    would_archive: list[WouldArchive] = field(default_factory=list)  # --dry-run only

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, kind: str, message: str) -> None:
        self.failure_kind = self.failure_kind or kind
        self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.mailbox_id, "email": self.email, "ok": self.ok, "folders_checked": self.folders_checked,
            "new": self.new, "archived": self.archived, "linked": self.linked, "skipped": self.skipped,
            "remapped": self.remapped, "gaps": self.gaps, "backfilled": self.backfilled, "errors": self.errors,
            "failure_kind": self.failure_kind, "budget_exhausted": self.budget_exhausted,
            "backing_off_until": self.backing_off_until, "seconds": round(self.seconds, 3),
        }
        if self.would_archive:
            data["would_archive"] = [w.as_dict() for w in self.would_archive]
        return data


@dataclass
class PassResult:
    mailboxes: list[MailboxResult]
    dry_run: bool = False
    seconds: float = 0.0
    purged_by_retention: int = 0  # letters older than retention.years deleted at the end of the pass
    database_warning: DatabaseWarning | None = None  # no mailbox configured at all: a pass that did nothing

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.mailboxes) and self.database_warning is None

    @property
    def budget_exhausted(self) -> bool:
        return any(m.budget_exhausted for m in self.mailboxes)

    def summary_line(self) -> str:
        """One line per pass that a monitoring system can grep."""
        def total(name: str) -> int:
            return sum(getattr(m, name) for m in self.mailboxes)

        busy = sum(1 for m in self.mailboxes if m.failure_kind == "busy" and not m.ok)
        failed = sum(1 for m in self.mailboxes if not m.ok and not m.backing_off_until) - busy
        backing_off = sum(1 for m in self.mailboxes if m.backing_off_until)
        ok = len(self.mailboxes) - failed - busy - backing_off
        return (
            f"pass {'ok' if self.ok else 'failed'}: mailboxes {ok} ok, {failed} failed, {busy} server busy,"
            f" {backing_off} backing off;"
            f" letters {total('new')} new, {total('archived')} archived, {total('linked')} linked,"
            f" {total('skipped')} skipped, {total('gaps')} gaps, {total('backfilled')} backfilled;"
            + (f" {self.purged_by_retention} deleted by retention;" if self.purged_by_retention else "")
            + (f" no mailboxes configured in {self.database_warning.database};" if self.database_warning else "") +
            f" {'time budget spent, continuing next pass' if self.budget_exhausted else 'complete'};"
            f" {self.seconds:.1f} s"
        )
