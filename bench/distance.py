"""hanna-sync and mbsync with the server at network distance: through a latency proxy, and behind a slow link.

    sudo bash bench/run.sh distance [--rtt 0,50,150] [--big-rtt 0,50] [--concurrency default,32]
        [--mailboxes N] [--letters N] [--scenarios many,big,bandwidth] [--mbsync-rtt MS,...] [--no-mbsync]
        [--rate 100mbit] [--stall S] [--cap S] [--seed N] [--workdir DIR] [--results DIR]

On loopback a round trip costs nothing; every real server is 10-150 ms away. One run, on a throwaway
Dovecot (`hanna_sync.demo.sandbox`), IMAPS with the sandbox CA:

- many: --mailboxes Dovecot users of 25 letters in 2 folders. At each --rtt and each scan.concurrency
  (--concurrency; "default" leaves the key out of the config, so the checkout's own default counts),
  hanna-sync with a fresh database runs its first pass, the pass after it (thread backfill: run with the
  proxy's delay at 0, it only prepares the next pass and is not a figure) and the no-change pass. mbsync
  (one channel per account, `mbsync -a`) first downloads all accounts at 0 ms; it opens every account's
  connection at once, and past Dovecot's login process limit it waits forever for the rest, so where that
  fails the bench bisects the number of accounts for the largest that works in this run, says so, and
  runs mbsync over that many at each --mbsync-rtt (download, then a run with nothing changed).
- big: one mailbox of --letters letters in 4 folders: at each --big-rtt mbsync's full download and
  hanna-sync's first pass, then hanna-sync's no-change pass (the round trips of a 4-folder mailbox).
- bandwidth: the big mailbox behind a --rate link: a network namespace with a veth pair shaped by tc's
  token bucket filter (`tbf rate RATE burst 32kbit latency 400ms`, each direction); Dovecot listens on the
  host's end, the client runs inside with `ip netns exec`. mbsync's full download against hanna-sync's
  first pass; the bytes are the veth's counters (IP and TLS framing included).

The latency proxy (hanna_sync.demo.latency) runs in this process: it delays each direction by half the
RTT and a new connection by a whole one, and counts per connection the client's round trips (1 for the
TCP handshake, 1 each time the client acts after hearing from the server) and the bytes each way. At 0 ms
it only counts. Every command runs under `/usr/bin/time -v` (peak RSS, CPU); wall time around it. The table
goes to stdout; everything, with the machine and the checkout, to bench/results/<UTC time>-distance.json.

Another checkout is measured by running this file with that checkout's Python, e.g.
`/srv/old/.venv/bin/python bench/distance.py ...` (its hanna-sync and its `hanna_sync` are used).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mailgen
from shaped_link import HOST_ADDRESS, FarDovecot, Link

import hanna_sync
from bench import (
    HANNA,
    RESULTS,
    SMALL_MAILBOX_LETTERS,
    TIME,
    Hanna,
    Mbsync,
    MiB,
    Run,
    default_workdir,
    deliver,
    machine,
    step,
)
from hanna_sync.config import ScanConfig
from hanna_sync.demo.latency import LatencyProxy
from hanna_sync.demo.sandbox import Dovecot

# The targets (#20), at the default concurrency.
ROUND_TRIPS_PER_MAILBOX = 4
NO_CHANGE_1000_S = 15.0  # 1,000 mailboxes at 50 ms
NO_CHANGE_10000_S = 60.0  # 10,000 mailboxes at 50 ms
FIRST_PASS_1000_S = 30.0  # 1,000 small mailboxes at 50 ms
BIG_DISTANCE_RATIO = 1.5  # the big first pass at 50 ms within this many times its 0 ms time
BANDWIDTH_SPEEDUP = 10.0  # the big first pass this many times faster than mbsync's full download on the link
RSS_MIB = 100.0
TARGET_RTT = 50


@dataclass
class Row:
    """One timed pass, with what the proxy (or the link) saw of it."""

    scenario: str
    name: str
    tool: str
    rtt_ms: int | None  # None: not through the proxy (the shaped link)
    concurrency: str
    mailboxes: int
    letters: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    connections: int
    round_trips: int
    bytes_down: int
    bytes_up: int
    failed: int = 0  # mailboxes (hanna-sync) or a non-zero exit (mbsync) the pass failed on
    failure: str = ""

    @property
    def round_trips_per_mailbox(self) -> float:
        return self.round_trips / self.mailboxes if self.mailboxes else 0.0


@dataclass
class Where:
    """What a pass ran against."""

    scenario: str
    rtt_ms: int | None
    concurrency: str
    mailboxes: int
    link: LatencyProxy | Link


def measure(run: Run, where: Where) -> Row:
    link = where.link
    link.settle()
    failed, failure = 0, ""
    if run.tool == "hanna-sync":
        bad = [m for m in run.output["mailboxes"] if m["errors"]]
        failed, failure = len(bad), (f"{bad[0]['failure_kind']}: {bad[0]['errors'][0]}" if bad else "")
    elif run.exit_code:
        failed, failure = 1, f"exit {run.exit_code}: " + " | ".join(run.stderr.strip().splitlines()[:3])
    return Row(where.scenario, run.name, run.tool, where.rtt_ms, where.concurrency, where.mailboxes, run.letters,
               round(run.wall_s, 3), round(run.cpu_s, 3), round(run.peak_rss_mib, 1), len(link.connections),
               link.round_trips, link.bytes_down, link.bytes_up, failed, failure[:300])


class Stall:
    """Whether nothing has crossed the proxy or the link for `seconds` (a command waiting forever), or the
    command has run `at_most` seconds (one still trickling along long after a working run would have ended)."""

    def __init__(self, link: LatencyProxy | Link, seconds: float, *, at_most: float | None = None) -> None:
        self.link, self.seconds, self.at_most = link, seconds, at_most
        self.moved, self.since = -1, time.monotonic()
        self.started = self.since
        self.reason = ""

    def __call__(self) -> bool:
        moved, now = self.link.bytes_down + self.link.bytes_up, time.monotonic()
        if moved != self.moved:
            self.moved, self.since = moved, now
        if now - self.since > self.seconds:
            self.reason = f"stalled: no byte moved for {self.seconds:g} s"
        elif self.at_most is not None and now - self.started > self.at_most:
            self.reason = f"still running after {self.at_most:g} s"
        return bool(self.reason)

    def __str__(self) -> str:
        return self.reason


# -- scenarios ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    dovecot: Dovecot
    world: mailgen.World
    tmp: Path
    concurrencies: list[str]
    stall_s: float
    cap_s: float  # how long an mbsync run at 0 ms may take before it counts as failed
    small_users: list[tuple[str, str]]
    small_bytes: list[int]  # each small mailbox's
    big_user: tuple[str, str] | None
    big_letters: int
    big_bytes: int

    def size(self, users: list[tuple[str, str]]) -> tuple[int, int]:
        """Letters and bytes of these mailboxes: the big one, or the first len(users) small ones."""
        if users == [self.big_user]:
            return self.big_letters, self.big_bytes
        return SMALL_MAILBOX_LETTERS * len(users), sum(self.small_bytes[: len(users)])


def scan_lines(concurrency: str) -> str:
    """The config's [scan]: no time budget in the way of a slow pass; the concurrency unless "default", and as
    every mailbox is on one server, the same per-host limit where the checkout has one (#20 added it)."""
    lines = "time_budget_minutes = 1440\n"
    if concurrency == "default":
        return lines
    per_host = "max_connections_per_host" in {f.name for f in fields(ScanConfig)}
    return lines + "".join(f"{key} = {int(concurrency)}\n" for key in
                           ("concurrency", "max_connections_per_host")[: 2 if per_host else 1])


def label(concurrency: str) -> str:
    return f"default ({ScanConfig.concurrency})" if concurrency == "default" else concurrency


def fresh(setup: Setup, name: str) -> Path:
    path = setup.tmp / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def hanna_passes(setup: Setup, proxy: LatencyProxy, *, scenario: str, rtt: int, concurrency: str,
                 users: list[tuple[str, str]]) -> list[Row]:
    """hanna-sync's first pass, the (untimed, 0 ms) pass after it, and the no-change pass, through the proxy."""
    many = scenario == "many"
    folders = mailgen.SMALL_FOLDERS if many else mailgen.FOLDERS
    letters, nbytes = setup.size(users)
    hanna = Hanna(setup.world, fresh(setup, f"{scenario}-hanna"), None, scan=scan_lines(concurrency))
    hanna.add_mailboxes(setup.dovecot, users, folders, address=("127.0.0.1", proxy.port))
    where = Where(scenario, rtt, label(concurrency), len(users), proxy)
    step(f"hanna-sync at {rtt} ms, concurrency {label(concurrency)}: first pass over {len(users):,} mailbox(es)")
    proxy.settle()
    proxy.reset()
    first = measure(hanna.run("hanna-sync first pass", letters, nbytes, check=False), where)
    step(f"  {first.wall_s:.2f} s, {first.failed} failed")
    delay, proxy.delay = proxy.delay, 0.0
    hanna.run("hanna-sync backfill pass", 0, 0, check=False)
    proxy.delay = delay
    proxy.settle()
    proxy.reset()
    still = measure(hanna.run("hanna-sync no-change", letters, 0, check=False), where)
    step(f"  no-change: {still.wall_s:.2f} s, {still.round_trips_per_mailbox:.1f} round trips per mailbox")
    return [first, still]


def mbsync_passes(setup: Setup, proxy: LatencyProxy, *, scenario: str, rtt: int, users: list[tuple[str, str]],
                  at_most: float | None = None) -> list[Row]:
    """mbsync's full download and its no-change run; a failed download ends it (the rows say so)."""
    many = scenario == "many"
    folders = mailgen.SMALL_FOLDERS if many else mailgen.FOLDERS
    letters, nbytes = setup.size(users)
    mbsync = Mbsync(setup.dovecot, users, fresh(setup, f"{scenario}-mbsync"), folders=folders,
                    address=("127.0.0.1", proxy.port))
    where = Where(scenario, rtt, "all at once" if many else "-", len(users), proxy)
    step(f"mbsync at {rtt} ms: full download of {len(users):,} account(s)")
    proxy.settle()
    proxy.reset()
    rows = [measure(mbsync.run("mbsync full download", letters, nbytes, check=False,
                               stalled=Stall(proxy, setup.stall_s, at_most=at_most)), where)]
    if rows[0].failed:
        step(f"  failed: {rows[0].failure}")
        return rows
    proxy.reset()
    rows.append(measure(mbsync.run("mbsync no-change", letters, 0, check=False, stalled=Stall(proxy, setup.stall_s)),
                        where))
    return rows


def mbsync_limit(setup: Setup, proxy: LatencyProxy, failed: int) -> dict[str, int]:
    """The most accounts one `mbsync -a` downloads without a failure, in this run: bisected below `failed`,
    to 5% of the range (near the limit it depends on timing: these are this run's figures)."""
    works, fails = 0, failed
    while fails - works > max(1, failed // 20):
        middle = (works + fails) // 2
        mbsync = Mbsync(setup.dovecot, setup.small_users[:middle], fresh(setup, "limit-mbsync"),
                        folders=mailgen.SMALL_FOLDERS, address=("127.0.0.1", proxy.port))
        run = mbsync.run(f"mbsync, {middle} accounts", middle, 0, check=False, stalled=Stall(proxy, setup.stall_s,
                                                                                     at_most=setup.cap_s))
        step(f"  mbsync over {middle} accounts: {'fails' if run.exit_code else 'works'} ({run.wall_s:.1f} s)")
        works, fails = (works, middle) if run.exit_code else (middle, fails)
    return {"largest_that_worked": works, "smallest_that_failed": fails}


def many(setup: Setup, rtts: list[int], *, mbsync_rtts: list[int]) -> tuple[list[Row], dict[str, Any] | None]:
    """hanna-sync at each RTT and concurrency. mbsync first over all accounts at 0 ms; where that fails its limit
    is bisected (at 0 ms: a failure at distance takes minutes) and it runs over as many accounts as worked at
    each of `mbsync_rtts` (its rows say how many)."""
    rows: list[Row] = []
    limit: dict[str, Any] | None = None
    accounts = setup.small_users
    if mbsync_rtts:
        with LatencyProxy("127.0.0.1", setup.dovecot.imaps_port) as proxy:
            tried = mbsync_passes(setup, proxy, scenario="many", rtt=0, users=accounts, at_most=setup.cap_s)
            rows += tried
            if tried[0].failed:
                step(f"mbsync failed over {len(accounts):,} accounts: bisecting its limit")
                limit = {"accounts": len(accounts), "failure": tried[0].failure,
                         **mbsync_limit(setup, proxy, len(accounts))}
                accounts = setup.small_users[: limit["largest_that_worked"]]
    for rtt in rtts:
        with LatencyProxy("127.0.0.1", setup.dovecot.imaps_port, rtt_ms=rtt) as proxy:
            for concurrency in setup.concurrencies:
                rows += hanna_passes(setup, proxy, scenario="many", rtt=rtt, concurrency=concurrency,
                                     users=setup.small_users)
            if rtt in mbsync_rtts and accounts and (rtt or limit):  # at 0 ms: unless the try above worked
                rows += mbsync_passes(setup, proxy, scenario="many", rtt=rtt, users=accounts)
    return rows, limit


def big(setup: Setup, rtts: list[int], *, with_mbsync: bool) -> list[Row]:
    assert setup.big_user is not None
    rows: list[Row] = []
    for rtt in rtts:
        with LatencyProxy("127.0.0.1", setup.dovecot.imaps_port, rtt_ms=rtt) as proxy:
            if with_mbsync:
                rows += mbsync_passes(setup, proxy, scenario="big", rtt=rtt, users=[setup.big_user])[:1]
            rows += hanna_passes(setup, proxy, scenario="big", rtt=rtt, concurrency="default",
                                 users=[setup.big_user])
    return rows


def bandwidth(setup: Setup, link: Link) -> list[Row]:
    """The big mailbox's full download by mbsync and hanna-sync's first pass, from inside the namespace."""
    assert setup.big_user is not None
    address = (HOST_ADDRESS, setup.dovecot.imaps_port)
    mbsync = Mbsync(setup.dovecot, [setup.big_user], fresh(setup, "link-mbsync"), address=address)
    step(f"behind {link.rate}: mbsync full download")
    link.reset()
    full = mbsync.run("mbsync full download", setup.big_letters, setup.big_bytes, prefix=link.prefix, check=False,
                      stalled=Stall(link, setup.stall_s))
    rows = [measure(full, Where("bandwidth", None, "-", 1, link))]
    where = Where("bandwidth", None, label("default"), 1, link)
    hanna = Hanna(setup.world, fresh(setup, "link-hanna"), None, scan=scan_lines("default"))
    hanna.add_mailboxes(setup.dovecot, [setup.big_user], mailgen.FOLDERS, address=address)
    step(f"behind {link.rate}: hanna-sync first pass")
    link.reset()
    rows.append(measure(hanna.run("hanna-sync first pass", setup.big_letters, setup.big_bytes, prefix=link.prefix,
                                  check=False), where))
    return rows


# -- report -------------------------------------------------------------------------------------------


def targets(rows: list[Row], rate_bits: float | None) -> list[dict[str, Any]]:
    """The issue's targets from the rows there are (a target without its rows is left out)."""
    default = label("default")

    def find(scenario: str, name: str, rtt: int | None) -> Row | None:
        return next((r for r in rows if (r.scenario, r.name, r.rtt_ms) == (scenario, name, rtt) and not r.failed
                     and r.concurrency in (default, "-")), None)

    out: list[tuple[str, float, str, float]] = []
    still = find("many", "hanna-sync no-change", TARGET_RTT)
    first = find("many", "hanna-sync first pass", TARGET_RTT)
    for scenario in ("many", "big"):  # the same at any RTT: from the first no-change row through the proxy
        row = next((r for r in rows if r.scenario == scenario and r.name == "hanna-sync no-change"
                    and r.rtt_ms is not None and r.concurrency == default and not r.failed), None)
        if row:
            folders = len(mailgen.SMALL_FOLDERS if scenario == "many" else mailgen.FOLDERS)
            out.append((f"round trips per unchanged mailbox ({folders} folders)", row.round_trips_per_mailbox, "<=",
                        ROUND_TRIPS_PER_MAILBOX))
    if still:
        n = still.mailboxes
        scaled = "measured" if n == 1000 else f"{n:,} measured, x {1000 / n:.3g}"
        out.append((f"no-change pass, 1,000 mailboxes at 50 ms, s ({scaled})", still.wall_s * 1000 / n, "<=",
                    NO_CHANGE_1000_S))
        out.append((f"no-change pass, 10,000 mailboxes at 50 ms, s (extrapolated from {n:,})",
                    still.wall_s * 10000 / n, "<=", NO_CHANGE_10000_S))
    if first:
        n = first.mailboxes
        scaled = "measured" if n == 1000 else f"{n:,} measured, x {1000 / n:.3g}"
        out.append((f"first pass, 1,000 small mailboxes at 50 ms, s ({scaled})", first.wall_s * 1000 / n, "<=",
                    FIRST_PASS_1000_S))
    near, far = find("big", "hanna-sync first pass", 0), find("big", "hanna-sync first pass", TARGET_RTT)
    if near and far:
        out.append(("big first pass at 50 ms / at 0 ms", far.wall_s / near.wall_s, "<=", BIG_DISTANCE_RATIO))
    near, far = find("big", "mbsync full download", 0), find("big", "mbsync full download", TARGET_RTT)
    if near and far:
        out.append(("for comparison: mbsync's big full download at 50 ms / at 0 ms", far.wall_s / near.wall_s, "", 0))
    mb, hs = find("bandwidth", "mbsync full download", None), find("bandwidth", "hanna-sync first pass", None)
    if mb and hs:
        out.append(("behind the link: mbsync full download / hanna-sync first pass (x faster)",
                    mb.wall_s / hs.wall_s, ">=", BANDWIDTH_SPEEDUP))
        if rate_bits:
            out.append(("behind the link: hanna-sync first pass / its bytes' time at the link's rate",
                        hs.wall_s / (hs.bytes_down * 8 / rate_bits), "", 0))
    rss = [r.peak_rss_mib for r in rows if r.tool == "hanna-sync" and r.concurrency == default]
    if rss:
        out.append(("peak RSS of any hanna-sync pass at the default concurrency, MiB", max(rss), "<=", RSS_MIB))
    met = {">=": float.__ge__, "<=": float.__le__}
    return [{"what": what, "value": round(value, 3), "target": f"{op} {goal:g}" if op else "",
             "met": met[op](float(value), goal) if op else None} for what, value, op, goal in out]


def print_table(results: dict[str, Any], rows: list[Row]) -> None:
    m = results["machine"]
    print(f"\nhanna-sync {m['hanna_sync']} ({results['checkout']['commit']}) vs mbsync {m['mbsync']},"
          f" Dovecot {m['dovecot']}, IMAPS; {m['cpus']} x {m['cpu']}, {results['date'][:10]}")
    print(f"many: {results['mailboxes']:,} mailboxes of {SMALL_MAILBOX_LETTERS} letters;"
          f" big: {results['letters']:,} letters; link: {results['rate']} (tbf in a network namespace)")
    header = (f"{'scenario':<9} {'pass':<22} {'RTT':>4} {'concurrency':<12} {'boxes':>6} {'wall s':>8} {'CPU s':>7}"
              f" {'RSS MiB':>7} {'conns':>6} {'RT/box':>7} {'MiB down':>9}  failed")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        rtt = "link" if r.rtt_ms is None else str(r.rtt_ms)
        rt = "-" if r.rtt_ms is None else f"{r.round_trips_per_mailbox:.1f}"
        conns = "-" if r.rtt_ms is None else f"{r.connections:,}"
        print(f"{r.scenario:<9} {r.name:<22} {rtt:>4} {r.concurrency:<12} {r.mailboxes:>6,} {r.wall_s:>8.2f}"
              f" {r.cpu_s:>7.2f} {r.peak_rss_mib:>7.1f} {conns:>6} {rt:>7} {r.bytes_down / MiB:>9.1f}"
              f"  {r.failed or ''} {r.failure[:60]}")
    if results.get("mbsync_limit"):
        lim = results["mbsync_limit"]
        print(f"\nmbsync failed over {lim['accounts']:,} accounts at 0 ms ({lim['failure'][:100]});"
              f" in this run it worked up to {lim['largest_that_worked']:,} and failed from"
              f" {lim['smallest_that_failed']:,}")
    if results.get("bandwidth_skipped"):
        print(f"\nbandwidth scenario skipped: {results['bandwidth_skipped']}")
    print("\n" + f"{'target (default concurrency)':<84} {'value':>8}  {'goal':<7}")
    for t in results["targets"]:
        verdict = "" if t["met"] is None else "met" if t["met"] else "MISSED"
        print(f"{t['what']:<84} {t['value']:>8.2f}  {t['target']:<7}  {verdict}")


# -- setup ------------------------------------------------------------------------------------------


@contextmanager
def server(link: Link | None) -> Iterator[Dovecot]:
    """The sandbox Dovecot; with a link, also on the veth's host address (the link must be up first)."""
    dovecot: Dovecot = FarDovecot() if link else Dovecot()
    try:
        if link:
            dovecot.cert_file, dovecot.key_file = dovecot.make_cert(["localhost", "127.0.0.1", HOST_ADDRESS])
        dovecot.start()
        yield dovecot
    finally:
        dovecot.close()


def populate(dovecot: Dovecot, world: mailgen.World, *, mailboxes: int, letters: int) -> dict[str, Any]:
    made: dict[str, Any] = {"small_users": [], "small_bytes": [], "big_user": None, "big_letters": 0,
                            "big_bytes": 0}
    if letters:
        step(f"delivering {letters:,} letters to the big mailbox")
        user = dovecot.add_user(mailgen.STAFF_EMAIL, secrets.token_urlsafe(12))
        made["big_letters"], made["big_bytes"] = deliver(dovecot, user.login, list(world.mailbox(letters)))
        made["big_user"] = (user.login, user.password)
    if mailboxes:
        step(f"{mailboxes:,} mailboxes of {SMALL_MAILBOX_LETTERS} letters: creating users and delivering")
        for number in range(mailboxes):
            user = dovecot.add_user(f"staff{number:05d}@{mailgen.OWN_DOMAIN}", secrets.token_urlsafe(12))
            staff = mailgen.Person(f"Darbuotojas {number}", user.login)
            small = list(world.mailbox(SMALL_MAILBOX_LETTERS, stream=f"u{number}", staff=staff, small=True))
            for letter in small:
                dovecot.deliver(user.login, letter.folder, letter.raw, letter.flags, internaldate=letter.date)
            made["small_users"].append((user.login, user.password))
            made["small_bytes"].append(sum(len(letter.raw) for letter in small))
    step("  delivered")
    return made


def checkout() -> dict[str, str]:
    """Which hanna-sync is measured: the one installed beside this Python."""
    source = Path(hanna_sync.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"path": str(source), "commit": commit or "unknown", "hanna_sync": str(HANNA)}


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: sudo bash bench/run.sh distance --mailboxes 300 --rtt 0,50,150")
    parser.add_argument("--rtt", type=numbers, default=[0, 50, 150], metavar="MS,...",
                        help="round-trip times of the many-mailbox scenario (default 0,50,150)")
    parser.add_argument("--big-rtt", type=numbers, default=[0, 50], metavar="MS,...",
                        help="round-trip times of the big mailbox's first pass (default 0,50)")
    parser.add_argument("--concurrency", default="default,32", metavar="C,...",
                        help="scan.concurrency values for the many mailboxes (and scan.max_connections_per_host"
                             ' where the checkout has it); "default" leaves them out (default: default,32)')
    parser.add_argument("--mailboxes", type=int, default=1_000, help="small mailboxes (default 1000)")
    parser.add_argument("--letters", type=int, default=20_000, help="letters of the big mailbox (default 20000)")
    parser.add_argument("--scenarios", default="many,big,bandwidth", metavar="S,...",
                        help="any of many, big, bandwidth (default all three)")
    parser.add_argument("--no-mbsync", action="store_true", help="hanna-sync only, no mbsync rows")
    parser.add_argument("--mbsync-rtt", type=numbers, metavar="MS,...",
                        help="round-trip times of mbsync's many-account runs (default: --rtt's; mbsync takes"
                             " minutes per 100 accounts at 50 ms)")
    parser.add_argument("--stall", type=float, default=15.0, metavar="S",
                        help="end an mbsync run when no byte has moved for S seconds: past Dovecot's login process"
                             " limit it waits forever (default 15)")
    parser.add_argument("--cap", type=float, default=120.0, metavar="S",
                        help="where mbsync's limit is sought (all accounts, then bisected, at 0 ms) a run still going"
                             " after S seconds counts as failed: one that works takes seconds (default 120)")
    parser.add_argument("--rate", default="100mbit", help="the bandwidth scenario's link rate, tc's syntax"
                        " (default 100mbit)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated mail and directory (default 1)")
    parser.add_argument("--workdir", type=Path, metavar="DIR", default=default_workdir(),
                        help="where both tools keep their stores (default: /dev/shm if present, else the temp dir)")
    parser.add_argument("--results", type=Path, metavar="DIR", default=RESULTS,
                        help="where the JSON goes (default bench/results)")
    args = parser.parse_args()
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    concurrencies = [c.strip() for c in args.concurrency.split(",") if c.strip()]
    if unknown := scenarios - {"many", "big", "bandwidth"}:
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))} (many, big, bandwidth)")
    if any(c != "default" and not (c.isdigit() and int(c) > 0) for c in concurrencies):
        parser.error('--concurrency: whole numbers >= 1 or "default", e.g. default,32')
    if not args.letters:
        scenarios -= {"big", "bandwidth"}
    if not args.mailboxes:
        scenarios.discard("many")
    for tool in ("mbsync", TIME, "ip", "tc"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run bench/run.sh, which installs it")
    if not HANNA.exists():
        raise SystemExit(f"{HANNA} not found: run this file with the Python of a checkout's venv")

    results: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": args.seed,
                               "machine": machine(), "checkout": checkout(), "mailboxes": args.mailboxes,
                               "letters": args.letters, "rate": args.rate, "scenarios": sorted(scenarios),
                               "concurrency": concurrencies, "rtt_ms": args.rtt, "big_rtt_ms": args.big_rtt,
                               "workdir": str(args.workdir or tempfile.gettempdir())}
    link = Link(args.rate) if "bandwidth" in scenarios else None
    if link:
        try:
            link.up()
        except OSError as e:
            results["bandwidth_skipped"] = f"no network namespace here ({e})"
            link = None
    rows: list[Row] = []
    world = mailgen.World(args.seed)
    try:
        with server(link) as dovecot, tempfile.TemporaryDirectory(prefix="hanna-far-", dir=args.workdir) as tmp:
            made = populate(dovecot, world, mailboxes=args.mailboxes if "many" in scenarios else 0,
                            letters=args.letters if scenarios & {"big", "bandwidth"} else 0)
            setup = Setup(dovecot, world, Path(tmp), concurrencies, args.stall, args.cap, **made)
            if "many" in scenarios:
                mbsync_rtts = [] if args.no_mbsync else args.rtt if args.mbsync_rtt is None else args.mbsync_rtt
                many_rows, results["mbsync_limit"] = many(setup, args.rtt, mbsync_rtts=mbsync_rtts)
                rows += many_rows
            if "big" in scenarios:
                rows += big(setup, args.big_rtt, with_mbsync=not args.no_mbsync)
            if link:
                rows += bandwidth(setup, link)
    finally:
        if link:
            link.down()
    rate_bits = tc_rate(args.rate)
    results["targets"] = targets(rows, rate_bits)
    results["rows"] = [{**asdict(r), "round_trips_per_mailbox": round(r.round_trips_per_mailbox, 2)} for r in rows]
    print_table(results, rows)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{results['date'].replace(':', '').replace('+0000', 'Z')}-distance.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nResults: {path}")
    sys.stdout.flush()


def tc_rate(rate: str) -> float | None:
    """tc's rate in bits per second ("100mbit"), or None for a spelling this does not know."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for unit, factor in units.items():
        if rate.lower().endswith(unit) and rate[: -len(unit)].replace(".", "", 1).isdigit():
            return float(rate[: -len(unit)]) * factor
    return None


if __name__ == "__main__":
    main()
