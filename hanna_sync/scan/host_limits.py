"""How many mailboxes of one server a pass scans at once, and the scheduling that keeps to it.

Why: a pass waits on round trips, so it scans many mailboxes at once (scan.concurrency); but they mostly live
on one server, and a server has a limit of its own (Dovecot's login processes answered `Connection queue full`
at 128 at once). So each server host gets at most scan.max_connections_per_host connections, halved (not below
1) when it answers "busy" for the whole server and raised by one for each mailbox it then serves (AIMD, as TCP
does), for the rest of the pass; an account at its own limit leaves the host's alone. No provider publishes
a per-host limit: Gmail's 15 simultaneous IMAP connections are per account and Office 365 throttles per
mailbox, and a pass opens one connection per mailbox, so every host starts at the configured limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from hanna_sync.config import Config
from hanna_sync.models import Mailbox

Job = TypeVar("Job")
Load = Literal["busy", "account", "served"]  # what a job's outcome says of its host's load
Outcome = TypeVar("Outcome")


def host_of(mailbox: Mailbox, config: Config) -> str:
    """The server a mailbox's pass talks to: its IMAP host, or the API host of a Graph or Gmail API mailbox."""
    if mailbox.kind == "o365-scan":
        return urlsplit(config.o365.graph_url).hostname or config.o365.graph_url
    if mailbox.kind == "google-scan":
        return urlsplit(config.google.gmail_url).hostname or config.google.gmail_url
    return (mailbox.imap_host or "").lower()


@dataclass
class HostLimit:
    """One host's connections in this pass. `epoch` counts the decreases: a busy answer on a connection opened
    before the last decrease is the same overload, already answered, so it does not halve the limit again."""

    ceiling: int  # scan.max_connections_per_host
    limit: int
    lowest: int
    running: int = 0
    epoch: int = 0
    busy: int = 0  # busy answers for the whole host this pass
    logged_in: bool = False  # a connection logged in this pass: set by the worker as it happens

    def start(self) -> int:
        self.running += 1
        return self.epoch

    def finish(self, epoch: int, *, load: Load) -> None:
        """A connection opened in `epoch` ended: halve on a busy host, one more (up to the ceiling) for a mailbox
        served or failed for its own reasons, no change for an account at its limit."""
        self.running -= 1
        if load == "account":
            return
        if load == "busy":
            self.busy += 1
            if epoch == self.epoch:
                self.limit = max(1, self.limit // 2)
                self.lowest = min(self.lowest, self.limit)
                self.epoch += 1
        elif epoch == self.epoch and self.limit < self.ceiling:
            self.limit += 1


class HostLimits:
    """Every host's HostLimit, created at the ceiling when first seen; one per pass, kept across its retries."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.hosts: dict[str, HostLimit] = {}

    def __getitem__(self, host: str) -> HostLimit:
        if host not in self.hosts:
            self.hosts[host] = HostLimit(self.ceiling, self.ceiling, self.ceiling)
        return self.hosts[host]

    def may_start(self, host: str) -> bool:
        entry = self[host]
        return entry.running < entry.limit


def run_limited(
    jobs: list[Job], work: Callable[[Job], Outcome], *, limits: HostLimits, host: Callable[[Job], str],
    load: Callable[[Outcome], Load], workers: int,
) -> list[Outcome]:
    """`work` on every job in up to `workers` threads, at most a host's limit of them on one host at once.

    Hosts take turns, one job each, the turn passing on from where the last start left it: one big server
    does not hold every freed thread while the others wait. A job waits in its host's queue, never in a
    thread. The first exception (a database error) stops the dispatch and is raised once the jobs running
    have ended.
    """
    queues: dict[str, deque[Job]] = {}
    for job in jobs:
        queues.setdefault(host(job), deque()).append(job)
    turn = deque(queues)  # the host whose turn it is first
    outcomes: list[Outcome] = []
    running: dict[Future[Outcome], tuple[str, int]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        while turn or running:
            passed = 0  # hosts in a row that could not start one now (at their limit)
            while turn and passed < len(turn) and len(running) < workers:
                name = turn[0]
                if not limits.may_start(name):
                    turn.rotate(-1)
                    passed += 1
                    continue
                running[pool.submit(work, queues[name].popleft())] = (name, limits[name].start())
                passed = 0
                if queues[name]:
                    turn.rotate(-1)
                else:
                    del queues[name]
                    turn.popleft()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name, epoch = running.pop(future)
                outcome = future.result()  # an exception ends the pass here: the pool waits for the others
                limits[name].finish(epoch, load=load(outcome))
                outcomes.append(outcome)
    return outcomes
