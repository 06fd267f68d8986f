"""hanna-sync's scan passes against mbsync's download of the same mailbox, on a local Dovecot.

    sudo bash bench/run.sh [--letters N] [--mailboxes N] [--seed N] [--workdir DIR] [--profile DIR]

(run.sh installs Dovecot, mbsync and GNU time when missing, then runs this file with the venv's
Python.) One run, on a throwaway Dovecot on 127.0.0.1 (`hanna_sync.sandbox`):

1. One staff mailbox of --letters generated letters (bench/mailgen.py) in four folders. mbsync
   downloads it whole, then runs again with nothing changed. hanna-sync, as the real CLI with its
   own config, database and secrets in a temp dir and the generated CRM directory imported, runs
   its first pass, a pass with nothing changed, and, after 1% new letters arrive, one more pass
   (mbsync too, for reference). These cheap passes are repeated (three rounds of 1% new letters)
   and the median counts.
2. --mailboxes small mailboxes (Dovecot users, 25 letters each): hanna-sync's first pass over all
   of them, then the measured pass with nothing changed.

Both tools talk implicit TLS (IMAPS) to the same server and keep their stores (mbsync's Maildir,
hanna-sync's database) under --workdir, by default tmpfs (/dev/shm): on a VM disk, creating mbsync's
20,000 files alone can take 4-16 s of system time from run to run, which would measure the disk, not
the mail work. Every command runs under `/usr/bin/time -v` for its peak RSS and CPU time; wall time
is measured around it. The table goes to stdout and everything, with the machine, to
bench/results/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mailgen
from imapclient import imap_utf7

from hanna_sync import __version__
from hanna_sync.admin import mailboxes
from hanna_sync.config import load_config
from hanna_sync.credentials import open_secret_store
from hanna_sync.db.store import Store
from hanna_sync.demo.sandbox import Dovecot

ROOT = Path(__file__).resolve().parent.parent
# The hanna-sync under test is the one installed beside the Python running the bench, so another checkout is
# measured by running this file with that checkout's venv (its `hanna_sync` is then the one imported, too).
HANNA = Path(sys.prefix) / "bin" / "hanna-sync"
PY_SPY = Path(sys.prefix) / "bin" / "py-spy"
RESULTS = ROOT / "bench" / "results"
TIME = "/usr/bin/time"
MiB = 1024 * 1024
SMALL_MAILBOX_LETTERS = 25
SETTLE_S = 1.1
REPEATS = 3  # the cheap passes (no-change, +1%) run this often and the median counts: one sample is noise
CONCURRENCY = 4  # scan.concurrency written to the config (the default)

# The contract's targets (ratios within one run).
FIRST_PASS_SPEEDUP = 5.0  # first pass at least this many times faster than mbsync's full download
NO_CHANGE_RATIO = 1.0  # no-change pass at most this share of mbsync's no-change run
INCREMENTAL_RATIO = 2.0  # per new letter, the +1% pass may cost at most this many first-pass letters
RSS_MIB = 100.0
MANY_NO_CHANGE_S = 30.0


@dataclass
class Run:
    """One timed command: what it had to handle, and what it cost."""

    name: str
    tool: str
    letters: int  # letters the pass had to handle (the whole mailbox, or only the new ones)
    bytes: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    profiled: bool = False
    walls: list[float] = field(default_factory=list)  # every repeat's wall time, when repeated
    output: Any = field(default=None, repr=False)
    exit_code: int = 0
    stderr: str = field(default="", repr=False)  # the tail of a failed run's stderr

    @property
    def letters_per_s(self) -> float:
        return self.letters / self.wall_s

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MiB / self.wall_s


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# As installed: pip writes every module's bytecode, so a pass does not compile hanna-sync's sources. A
# shell with PYTHONDONTWRITEBYTECODE (some containers set it) would make each run compile them again.
INSTALLED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(name: str, tool: str, argv: list[str], letters: int, nbytes: int, json_output: bool = False,
          profile: Path | None = None, *, prefix: tuple[str, ...] = (), check: bool = True,
          stalled: Callable[[], bool] | None = None) -> Run:
    """Run argv under GNU time; fail loudly if it fails (a benchmark of a failing pass means nothing).

    With `profile`, py-spy samples every thread (the scan runs in a thread pool), waits included,
    into a flame graph named after the run. `prefix` goes before GNU time (`ip netns exec NS`), so only
    the command itself is measured. `check=False` returns a failed run (`exit_code`) instead of stopping:
    where a failure is itself the finding (mbsync past its connection limit). Once `stalled()` (asked every
    second) says so, the command is ended (exit -9): mbsync waits forever for connections Dovecot never serves.
    """
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        svg = profile / (re.sub(r"[^a-z0-9+]+", "-", name.lower().replace("%", "pct")).strip("-") + ".svg")
        argv = [str(PY_SPY), "record", "--idle", "--threads", "--rate", "200", "--output", str(svg), "--", *argv]
    # mbsync sits out the second in which its Maildir last changed (against racing deliveries), and
    # Dovecot treats folders changed within the last second as dirty. A scheduled pass is never that
    # close to a change, so every run starts after a pause.
    time.sleep(SETTLE_S)
    with tempfile.NamedTemporaryFile("r", prefix="bench-time-") as stats:
        started = time.monotonic()
        # Its own process group, so a command that hangs is ended whole (GNU time, mbsync, a namespace's exec).
        proc = subprocess.Popen([*prefix, TIME, "-v", "-o", stats.name, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=INSTALLED_ENV, start_new_session=True)
        while True:
            try:
                out, err = proc.communicate(timeout=None if stalled is None else 1.0)
                break
            except subprocess.TimeoutExpired:
                if stalled is not None and stalled():
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, err = proc.communicate()
                    err = f"ended: {stalled}\n{err}"
                    break
        wall = time.monotonic() - started
        usage = dict(line.strip().rsplit(": ", 1) for line in stats if ": " in line)
    if proc.returncode and check:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    stdout = "\n".join(line for line in out.splitlines() if not line.startswith("py-spy> "))
    return Run(
        name, tool, letters, nbytes, wall,
        cpu_s=float(usage.get("User time (seconds)", 0)) + float(usage.get("System time (seconds)", 0)),
        peak_rss_mib=int(usage.get("Maximum resident set size (kbytes)", 0)) / 1024,
        profiled=profile is not None,
        output=json.loads(stdout) if json_output and stdout.startswith("{") else None,
        exit_code=proc.returncode,
        stderr=err[-2000:] if proc.returncode else "",
    )


def median(runs: list[Run]) -> Run:
    """The run with the median wall time, remembering all of them."""
    middle = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
    middle.walls = [round(r.wall_s, 3) for r in runs]
    return middle


def deliver(dovecot: Dovecot, login: str, letters: list[mailgen.Letter]) -> tuple[int, int]:
    """Put letters into the user's Maildir; returns (letters, bytes as IMAP reports them)."""
    for letter in letters:
        dovecot.deliver(login, letter.folder, letter.raw, letter.flags, internaldate=letter.date)
    # Let Dovecot index the folders now, so neither tool's first run pays for noticing the new files.
    dovecot.doveadm("mailbox", "status", "-u", login, "messages", "*")
    return len(letters), sum(len(letter.raw) for letter in letters)


# -- mbsync -----------------------------------------------------------------------------------------


class Mbsync:
    """mbsync pulling every folder of each account into a fresh Maildir (FSync off, like the sandbox).

    One channel per account, all run by one `mbsync -a` (which opens every account's connection at once).
    `address`: where mbsync finds the server, when not Dovecot's own port (a proxy, a namespace).
    """

    def __init__(self, dovecot: Dovecot, accounts: list[tuple[str, str]], workdir: Path, *,
                 folders: tuple[str, ...] = mailgen.FOLDERS, address: tuple[str, int] | None = None) -> None:
        self.maildir = workdir / "maildir"
        self.maildir.mkdir()
        host, port = address or (dovecot.host, dovecot.imaps_port)
        # mbsync checks the host name against DNS names only, and the sandbox certificate names
        # 127.0.0.1 as an IP address: so the server certificate itself is pinned (still verified).
        patterns = " ".join(imap_utf7.encode(f).decode("ascii") for f in folders)
        sections = ["FSync no\n"]
        for number, (login, password) in enumerate(accounts):
            near = self.maildir / str(number) if len(accounts) > 1 else self.maildir
            near.mkdir(exist_ok=True)
            sections.append(f"""\
IMAPAccount a{number}
Host {host}
Port {port}
User {login}
Pass {password}
SSLType IMAPS
CertificateFile {dovecot.cert_file}
SystemCertificates no

IMAPStore far{number}
Account a{number}

MaildirStore near{number}
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel c{number}
Far :far{number}:
Near :near{number}:
Patterns {patterns}
Sync Pull
Create Near
SyncState *
""")
        self.config = workdir / "mbsyncrc"
        self.config.write_text("\n".join(sections))

    def run(self, name: str, letters: int, nbytes: int, *, prefix: tuple[str, ...] = (), check: bool = True,
            stalled: Callable[[], bool] | None = None) -> Run:
        return timed(name, "mbsync", ["mbsync", "-q", "-c", str(self.config), "-a"], letters, nbytes,
                     prefix=prefix, check=check, stalled=stalled)

    def count(self) -> int:
        return sum(1 for sub in ("cur", "new") for folder in self.maildir.glob(f"**/{sub}") for _ in folder.iterdir())


# -- hanna-sync ---------------------------------------------------------------------------------------


class Hanna:
    """hanna-sync with its own config, database and secrets in a temp dir, the directory imported."""

    def __init__(self, world: mailgen.World, workdir: Path, profile: Path | None, *,
                 scan: str = f"concurrency = {CONCURRENCY}\n") -> None:
        """`scan`: the config's [scan] lines."""
        self.profile = profile
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(
            'database = "hanna-sync.db"\n'
            f'own_domains = ["{mailgen.OWN_DOMAIN}"]\n'
            f"[scan]\n{scan}"
        )
        world.write_directory(workdir / "customers.csv", workdir / "leads.csv")
        for kind in ("customers", "leads"):
            self.cli("import", kind, str(workdir / f"{kind}.csv"), "--json")

    def cli(self, *args: str) -> None:
        argv = [str(HANNA), "--config", str(self.config_path), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"hanna-sync {' '.join(args)} failed: {proc.stderr.strip()}")

    def add_mailboxes(self, dovecot: Dovecot, users: list[tuple[str, str]], folders: tuple[str, ...], *,
                      address: tuple[str, int] | None = None) -> None:
        """Through the core API, as `add-mailbox` does; only the first is verified against the server.

        `address`: where the mailboxes find the server, when not Dovecot's own port (a proxy, a namespace)."""
        host, port = address or (dovecot.host, dovecot.imaps_port)
        config = load_config(self.config_path)
        store = Store(config.database)
        secret_store = open_secret_store("file", config.secrets_file, config.secrets_key_file, config.secrets.timeout)
        try:
            for number, (login, password) in enumerate(users):
                box = mailboxes.new_mailbox(login.partition("@")[0], login, "custom", {
                    "imap_host": host, "imap_port": port, "imap_security": "ssl",
                    "ca_file": str(dovecot.ca_file), "folders": list(folders), "main": True,
                })
                mailboxes.add(store, secret_store, box, password, verify_first=number == 0,
                              timeout=config.network.timeout)
        finally:
            store.close()

    def run(self, name: str, letters: int, nbytes: int, *, prefix: tuple[str, ...] = (), check: bool = True) -> Run:
        """One pass; `check=False` returns a pass with failed mailboxes (see `failures`) instead of stopping."""
        argv = [str(HANNA), "--config", str(self.config_path), "run", "--json"]
        result = timed(name, "hanna-sync", argv, letters, nbytes, json_output=True, profile=self.profile,
                       prefix=prefix, check=False)
        if result.output is None:
            raise SystemExit(f"{name} failed (exit {result.exit_code}): {result.stderr}")
        if check and not result.output["ok"]:
            errors = [e for m in result.output["mailboxes"] for e in m["errors"]]
            raise SystemExit(f"{name}: the pass reported errors: {errors[:5]}")
        return result


def backfill_pass(hanna: Hanna, name: str) -> Run:
    """The pass after the first: it fetches the replies the first pass skipped because they came before the
    letter they answer (another folder scanned first), now linked by their thread. Timed on its own, so
    that the no-change passes after it are no-change passes."""
    step("hanna-sync: the pass after the first (thread backfill)")
    run = hanna.run(name, 0, 0)
    run.letters = totals(run)["backfilled"]
    step(f"  {run.letters:,} letters backfilled")
    return run


def totals(run: Run) -> dict[str, int]:
    """new / archived / linked / skipped over all mailboxes of a hanna-sync pass."""
    keys = ("new", "archived", "linked", "skipped", "backfilled")
    return {k: sum(m[k] for m in run.output["mailboxes"]) for k in keys}


# -- the two scenarios ----------------------------------------------------------------------------------


def one_mailbox(
    dovecot: Dovecot, world: mailgen.World, count: int, tmp: Path, profile: Path | None
) -> dict[str, Any]:
    user = dovecot.add_user(mailgen.STAFF_EMAIL, secrets.token_urlsafe(12))
    step(f"generating and delivering {count:,} letters")
    started = time.monotonic()
    letters = list(world.mailbox(count))
    n, nbytes = deliver(dovecot, user.login, letters)
    expected_linked = sum(letter.linked for letter in letters)
    del letters
    step(f"  {n:,} letters, {nbytes / MiB:,.1f} MiB, {expected_linked:,} involving the directory,"
         f" in {time.monotonic() - started:.1f} s")

    (tmp / "mbsync").mkdir()
    mbsync = Mbsync(dovecot, [(user.login, user.password)], tmp / "mbsync")
    step("mbsync: full download")
    runs = [mbsync.run("mbsync full download", n, nbytes)]
    if mbsync.count() != n:
        raise SystemExit(f"mbsync downloaded {mbsync.count()} letters, not {n}")
    step(f"mbsync: no-change run, {REPEATS} times")
    runs.append(median([mbsync.run("mbsync no-change", n, 0) for _ in range(REPEATS)]))

    (tmp / "hanna").mkdir()
    hanna = Hanna(world, tmp / "hanna", profile)
    hanna.add_mailboxes(dovecot, [(user.login, user.password)], mailgen.FOLDERS)
    step("hanna-sync: first pass")
    runs.append(hanna.run("hanna-sync first pass", n, nbytes))
    first = totals(runs[-1])
    if first["new"] != n:
        raise SystemExit(f"the first pass looked at {first['new']} letters, not {n}")
    step(f"  {first}")
    runs.append(backfill_pass(hanna, "hanna-sync backfill pass"))
    step(f"hanna-sync: no-change pass, {REPEATS} times")
    runs.append(median([hanna.run("hanna-sync no-change", n, 0) for _ in range(REPEATS)]))

    added = max(1, count // 100)
    mbsync_runs, hanna_runs = [], []
    for round_ in range(REPEATS):
        step(f"delivering {added:,} new letters (1%), then mbsync and hanna-sync ({round_ + 1}/{REPEATS})")
        new_n, new_bytes = deliver(dovecot, user.login, list(world.mailbox(added, start=count + round_ * added)))
        mbsync_runs.append(mbsync.run("mbsync after +1%", new_n, new_bytes))
        hanna_runs.append(hanna.run("hanna-sync after +1%", new_n, new_bytes))
        if totals(hanna_runs[-1])["new"] != new_n:
            raise SystemExit(f"the pass after +1% looked at {totals(hanna_runs[-1])['new']} letters, not {new_n}")
    runs += [median(mbsync_runs), median(hanna_runs)]
    return {
        "letters": n, "bytes": nbytes, "expected_linked": expected_linked, "new_letters": added,
        "first_pass": first, "incremental_passes": [totals(r) for r in hanna_runs], "runs": runs,
    }


def many_mailboxes(
    dovecot: Dovecot, world: mailgen.World, count: int, tmp: Path, profile: Path | None
) -> dict[str, Any]:
    step(f"{count:,} mailboxes of {SMALL_MAILBOX_LETTERS} letters: creating users and delivering")
    started = time.monotonic()
    users, n, nbytes = [], 0, 0
    for number in range(count):
        user = dovecot.add_user(f"staff{number:04d}@{mailgen.OWN_DOMAIN}", secrets.token_urlsafe(12))
        staff = mailgen.Person(f"Darbuotojas {number}", user.login)
        letters = list(world.mailbox(SMALL_MAILBOX_LETTERS, stream=f"u{number}", staff=staff, small=True))
        for letter in letters:
            dovecot.deliver(user.login, letter.folder, letter.raw, letter.flags, internaldate=letter.date)
        users.append((user.login, user.password))
        n, nbytes = n + len(letters), nbytes + sum(len(letter.raw) for letter in letters)
    (tmp / "many").mkdir()
    hanna = Hanna(world, tmp / "many", profile)
    hanna.add_mailboxes(dovecot, users, mailgen.SMALL_FOLDERS)
    step(f"  {n:,} letters, {nbytes / MiB:,.1f} MiB, in {time.monotonic() - started:.1f} s")
    step(f"hanna-sync: first pass over {count:,} mailboxes")
    runs = [hanna.run(f"{count} mailboxes: first pass", n, nbytes)]
    runs.append(backfill_pass(hanna, f"{count} mailboxes: backfill"))
    step(f"hanna-sync: no-change pass over {count:,} mailboxes")
    runs.append(hanna.run(f"{count} mailboxes: no-change", n, 0))
    return {"mailboxes": count, "letters": n, "bytes": nbytes, "concurrency": CONCURRENCY,
            "first_pass": totals(runs[0]), "runs": runs}


# -- report -------------------------------------------------------------------------------------------


def targets(one: dict[str, Any], many: dict[str, Any] | None) -> list[dict[str, Any]]:
    run = {r.name: r for r in one["runs"]}
    first, still, inc = run["hanna-sync first pass"], run["hanna-sync no-change"], run["hanna-sync after +1%"]
    per_letter_first = (first.wall_s - still.wall_s) / one["letters"]
    per_letter_inc = (inc.wall_s - still.wall_s) / one["new_letters"]
    rss = max(r.peak_rss_mib for r in one["runs"] + (many["runs"] if many else []) if r.tool == "hanna-sync")
    out = [
        ("first pass vs mbsync full download (x faster)", run["mbsync full download"].wall_s / first.wall_s,
         ">=", FIRST_PASS_SPEEDUP),
        ("no-change pass / mbsync no-change (time ratio)", still.wall_s / run["mbsync no-change"].wall_s,
         "<=", NO_CHANGE_RATIO),
        ("+1% pass: cost per new letter / first pass's (beyond no-change)", per_letter_inc / per_letter_first,
         "<=", INCREMENTAL_RATIO),
        ("peak RSS of any hanna-sync pass (MiB)", rss, "<=", RSS_MIB),
    ]
    if many:
        out.append((f"{many['mailboxes']} mailboxes no-change pass (s)", many["runs"][-1].wall_s, "<",
                    MANY_NO_CHANGE_S))
    met = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__}
    return [{"what": what, "value": round(value, 3), "target": f"{op} {goal:g}", "met": met[op](float(value), goal)}
            for what, value, op, goal in out]


def default_workdir() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    def version(*command: str) -> list[str]:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    versions = {"dovecot": version("dovecot", "--version")[0], "mbsync": version("mbsync", "--version")[-1]}
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kib / 1024**2, 1), "os": os_name,
            "kernel": platform.release(), "python": platform.python_version(), "hanna_sync": __version__, **versions}


def print_table(results: dict[str, Any]) -> None:
    m, one, many = results["machine"], results["one_mailbox"], results["many_mailboxes"]
    print(f"\nhanna-sync {m['hanna_sync']} vs mbsync {m['mbsync']}, Dovecot {m['dovecot']}, IMAPS on 127.0.0.1;"
          f" {m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB, {results['date'][:10]}; stores in {results['workdir']}")
    many_text = f"; {many['mailboxes']:,} mailboxes of {SMALL_MAILBOX_LETTERS} letters" if many else ""
    print(f"One mailbox: {one['letters']:,} letters, {one['bytes'] / MiB:,.1f} MiB in {len(mailgen.FOLDERS)} folders"
          f" (seed {results['seed']}){many_text}")
    header = (f"{'pass':<30} {'letters':>8} {'MiB':>8} {'wall s':>8} {'letters/s':>10} {'MiB/s':>8} {'RSS MiB':>8}"
              f" {'CPU s':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in one["runs"] + (many["runs"] if many else []):
        print(f"{r.name:<30} {r.letters:>8,} {r.bytes / MiB:>8,.1f} {r.wall_s:>8.2f} {r.letters_per_s:>10,.0f}"
              f" {r.mib_per_s:>8,.1f} {r.peak_rss_mib:>8.1f} {r.cpu_s:>7.2f}")
    print("\n" + f"{'target':<66} {'value':>9}  {'goal':<7}")
    for t in results["targets"]:
        print(f"{t['what']:<66} {t['value']:>9.2f}  {t['target']:<7}  {'met' if t['met'] else 'MISSED'}")
    if any(r.profiled for r in one["runs"]):
        print("\nhanna-sync ran under py-spy (--profile): its times are inflated; do not compare them.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, default=20_000, help="letters in the big mailbox (default 20000)")
    parser.add_argument("--mailboxes", type=int, default=1_000, help="small mailboxes, 0 to skip (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated mail and directory (default 1)")
    parser.add_argument("--workdir", type=Path, metavar="DIR", default=default_workdir(),
                        help="where both tools keep their stores (default: /dev/shm if present, else the temp dir)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run hanna-sync under py-spy, one flame graph (.svg) per pass in DIR; needs"
                             " .venv/bin/pip install py-spy. Profiled times are inflated: not for the table")
    args = parser.parse_args()
    for tool in ("mbsync", TIME):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run bench/run.sh, which installs it")
    if args.profile and not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} not found: .venv/bin/pip install py-spy")
    if args.workdir and not args.workdir.is_dir():
        raise SystemExit(f"--workdir {args.workdir} is not a directory: create it first (it should be on tmpfs)")

    results: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "seed": args.seed, "transport": "IMAPS (implicit TLS) on 127.0.0.1",
                               "workdir": str(args.workdir or tempfile.gettempdir()), "machine": machine()}
    world = mailgen.World(args.seed)
    with Dovecot() as dovecot, tempfile.TemporaryDirectory(prefix="hanna-bench-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        results["one_mailbox"] = one_mailbox(dovecot, world, args.letters, tmp, args.profile)
        results["many_mailboxes"] = (
            many_mailboxes(dovecot, world, args.mailboxes, tmp, args.profile) if args.mailboxes else None
        )
    results["targets"] = targets(results["one_mailbox"], results["many_mailboxes"])
    print_table(results)

    for part in ("one_mailbox", "many_mailboxes"):
        if results[part]:
            results[part]["runs"] = [
                {**{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(r).items() if k != "output"},
                 "letters_per_s": round(r.letters_per_s, 1), "mib_per_s": round(r.mib_per_s, 2)}
                for r in results[part]["runs"]
            ]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{results['date'].replace(':', '').replace('+0000', 'Z')}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nResults: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
