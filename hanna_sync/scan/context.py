"""What every part of a pass reads: one PassContext instead of the same parameters handed down each call,
and the CRM directory the pass matches against, built only when a folder has new letters."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.errors import SecretsError
from hanna_sync.linking.backfill import SkipIndex, load_skip_index
from hanna_sync.linking.directory import build_directory
from hanna_sync.linking.match import Directory
from hanna_sync.linking.relink import linking_settings, verify_index

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (label, done, total)
MiB = 1024 * 1024
# Raw letters asked for and not committed, the whole pass. With the ~50 MiB a pass needs anyway and the
# parsed copies, a first pass of 16 mailboxes of 450 KB letters peaks at ~95 MiB (measured, issue #20).
BODIES_BUDGET = 24 * MiB
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _freed_letters_go_back() -> None:
    """glibc raises its mmap threshold to the largest block freed (up to 32 MiB): after the first letters
    every later one comes from its heaps (one per thread), which keep memory once freed, so the budget
    would bound what is used, not what stays resident (measured: ~185 MiB instead of ~95). Fixed at its
    initial 128 KiB, a letter is a mapping of its own, returned when freed."""
    with suppress(OSError, AttributeError):  # not glibc (macOS has no mallopt): an allocator without that habit
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)


class BodyBudget:
    """The bytes of letters the pass may have asked for and not yet committed, across all its mailboxes:
    peak memory stays bounded whatever scan.concurrency. Taken by RFC822.SIZE before a FETCH is written,
    given back when its batch is committed or dropped. One taker alone may exceed it (a letter larger
    than the budget), so a taker holding nothing never waits forever; a taker holding some never waits
    at all (`wait=False`: it commits what it holds first), so no two takers wait on each other."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.held, self.high_water = limit or BODIES_BUDGET, 0, 0
        self._changed = threading.Condition()
        _freed_letters_go_back()

    def take(self, size: int, *, wait: bool) -> bool:
        """Take `size` bytes; False when they do not fit now and `wait` is False."""
        with self._changed:
            while size and self.held and self.held + size > self.limit:
                if not wait:
                    return False
                self._changed.wait()
            self.held += size
            self.high_water = max(self.high_water, self.held)
            return True

    def give_back(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()


class LazyDirectory:
    """The directory, built when the first folder with new letters needs it: a pass over unchanged
    mailboxes never pays for reading the CRM tables and loading the Public Suffix List. With it, the
    skip index that records the letters it did not match (see backfill.py)."""

    def __init__(self, store: Store, config: Config, secrets: SecretStore | None = None) -> None:
        self.store, self.config, self.secrets = store, config, secrets
        self._directory: Directory | None = None
        self._index: SkipIndex | None = None
        self._index_failed = False
        self._remembered = False  # the directory the skipped letters are checked against is on record
        self._lock = threading.Lock()

    def skip_index(self) -> SkipIndex | None:
        """None when the secrets store cannot give its key: skipped letters then go unrecorded (said once).

        The store's transaction is never taken while holding this object's lock: a scanner thread inside
        a transaction may be waiting for that lock (remember_directory), which would deadlock."""
        directory = self.get()
        with self._lock:
            if self._index is not None or self._index_failed or self.secrets is None:
                return self._index
            try:
                index = load_skip_index(self.secrets, directory)
            except SecretsError as exc:
                self._index_failed = True
                log.warning("skipped letters are not recorded this pass (%s): a customer added later will"
                            " not find them", exc)
                return None
        with self.store.transaction():
            verify_index(self.store, index)  # twice when two threads get here first: it is idempotent
        with self._lock:
            self._index = self._index or index
            return self._index

    def remember_directory(self, index: SkipIndex) -> None:
        """Call in the transaction that records skipped letters: the first ones ever recorded are
        remembered with the directory they were checked against, so a later change is seen as one."""
        if not self._remembered and self.store.state_value("backfill_keys_saved") is None:
            assert self._directory is not None  # built before any letter was matched
            self.store.replace_backfill_keys(index.directory_keys(self._directory, linking_settings(self.config)))
        self._remembered = True

    def get(self) -> Directory:
        with self._lock:
            if self._directory is None:
                with self.store.transaction():
                    self._directory = build_directory(self.store, self.config)
                for domain, owners in sorted(self._directory.ambiguous_domains().items()):
                    log.warning("domain %s is claimed by customers %s: it links to neither", domain,
                                ", ".join(sorted(owners)))
            return self._directory


@dataclass(frozen=True)
class PassContext:
    """The pass as every mailbox's scan sees it. All database access goes through the store's
    transactions, which serialise the scanner threads; a dry run writes nothing at all."""

    store: Store
    secrets: SecretStore
    config: Config
    directory: LazyDirectory
    dry_run: bool = False
    progress: Progress | None = None
    deadline: float = float("inf")  # time.monotonic() after which no new batch starts
    bodies: BodyBudget = field(default_factory=BodyBudget)  # one per pass

    @staticmethod
    def clock() -> float:
        """The clock of the time budget (tests step it: hanna_sync.scan.context.time)."""
        return time.monotonic()

    def out_of_time(self) -> bool:
        return self.clock() > self.deadline
