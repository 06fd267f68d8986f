"""Crashes and network faults, injected between hanna-sync and a real Dovecot (tests/faults.py).

Every test ends the same way: a pass without the fault completes, and the archive (letters, original
bytes, locations, links, folder state) equals that of a clean, uninterrupted run: nothing lost,
nothing twice. `HANNA_SEED=N` replays a randomised run; the seed is in every failure message.
"""

from __future__ import annotations

import os
import random
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hanna_sync.config import Config, NetworkConfig, SecretsConfig
from hanna_sync.credentials import open_secret_store
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.scan import run_pass
from tests.faults import (
    Archive,
    Fault,
    ImapProxy,
    archive,
    check_consistent,
    write_config,
)
from tests.helpers import Env

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("HANNA_SEED", random.randrange(2**32)))
KILL_POINTS = 30  # the default suite; `pytest -m slow` runs KILL_POINTS_SLOW with two mailboxes at once
KILL_POINTS_SLOW = 150


def populate(dovecot, a, b) -> None:
    """Two mailboxes: letters with and without Message-ID, some in both, mail that concerns nobody, a Sent folder."""
    for i in range(36):
        raw = sample.letter("Rūta <ruta@azuolas.lt>", [a.login, b.login], f"Užsakymas {i}", f"Tekstas {i}. " * 60,
                            message_id=None if i % 6 == 0 else f"<crash-{i}@azuolas.lt>")
        dovecot.deliver(a.login, "INBOX", raw)
        if i % 4 == 0:
            dovecot.deliver(b.login, "INBOX", raw)  # the same letter: stored once, two locations
        if i % 3 == 0:
            dovecot.deliver(a.login, "INBOX", sample.letter(
                "x@spam.example", a.login, f"Akcija {i}", "x", message_id=f"<spam-{i}@spam.example>"))
    for i in range(6):
        dovecot.deliver(a.login, "Išsiųsti", sample.letter(
            a.login, "info@azuolas.lt", f"Re: Užsakymas {i}", "Ačiū.", message_id=f"<sent-{i}@imone.lt>"))
    for i in range(8):
        dovecot.deliver(b.login, "INBOX", sample.letter(
            "Vadovas <vadovas@naujas.lt>", b.login, f"Pasiūlymas {i}", "Domina.", message_id=f"<lead-{i}@naujas.lt>"))


@dataclass
class Clone:
    """A copy of the prepared database and secrets: each kill point starts from the same place."""

    config: Config
    config_file: Path

    def store(self) -> Store:
        return Store(self.config.database)

    def run(self, store: Store):
        secrets = open_secret_store("file", self.config.secrets_file, self.config.secrets_key_file, 5)
        return run_pass(store, secrets, self.config)

    def hanna(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(self.config_file), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)


@dataclass
class World:
    proxy: ImapProxy
    template: Path
    config: Config
    reference: Archive  # a clean, uninterrupted pass

    def clone(self, name: str, concurrency: int = 1, timeout: float = 10) -> Clone:
        directory = self.template.parent / name
        shutil.copytree(self.template, directory)
        config = replace(
            self.config, database=directory / "hs.db",
            secrets=SecretsConfig(file=directory / "secrets.enc", key_file=directory / "secrets.key"),
            scan=replace(self.config.scan, concurrency=concurrency), network=NetworkConfig(timeout=timeout))
        return Clone(config, write_config(directory, config))


@pytest.fixture
def world(tmp_path, dovecot):
    """Two mailboxes behind the proxy, a template database to clone, and the clean run's archive."""
    if not dovecot.running:
        dovecot.start()
    users = [dovecot.add_user(f"{n}-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(10))
             for n in ("crash-a", "crash-b")]
    populate(dovecot, *users)
    with ImapProxy(dovecot) as proxy:
        env = Env(tmp_path / "template", batch_size=5)
        for user in users:
            box = env.add(user, folders=("INBOX", "Išsiųsti") if user is users[0] else ("INBOX",))
            env.store.update_mailbox(replace(box, imap_port=proxy.port))
        env.store.close()
        world = World(proxy, tmp_path / "template", replace(env.config, scan=replace(env.config.scan, concurrency=1)),
                      Archive())
        clean = world.clone("clean")
        store = clean.store()
        assert clean.run(store).ok
        world.reference = archive(store)
        store.close()
        assert len(world.reference.letters) == 36 + 6 + 8
        yield world


def run_with_kills(world: World, points: int, concurrency: int, rng: random.Random) -> dict[str, int]:
    """SIGKILL `hanna-sync run` at `points` random protocol round trips; after each, a pass completes."""
    clean = world.clone("clean-subprocess", concurrency)
    world.proxy.reset()
    proc = clean.hanna("run")
    assert proc.wait(120) == 0, proc.stderr.read()
    round_trips = world.proxy.tagged
    store = clean.store()
    assert archive(store) == world.reference
    store.close()

    figures = {"round_trips": round_trips, "killed": 0, "killed_mid_batch": 0, "finished_first": 0}
    for n in range(points):
        at = rng.randint(1, round_trips)
        delay = None if n % 2 == 0 else rng.uniform(0, 0.03)  # half at the response, half while processing it
        where = f"seed {SEED}, kill point {n}: response {at} of {round_trips}, delay {delay}"
        clone = world.clone(f"kill-{n}", concurrency)
        world.proxy.reset(Fault("kill", at=at, delay=delay))
        proc = clone.hanna("run")
        world.proxy.victim = proc.pid
        code = proc.wait(120)
        assert code in (-signal.SIGKILL, 0), f"{where}: exit {code}: {proc.stderr.read()!r}"
        figures["killed"] += code == -signal.SIGKILL
        figures["finished_first"] += code == 0
        store = clone.store()
        check_consistent(store, world.reference)
        stored = len(archive(store).letters)
        figures["killed_mid_batch"] += 0 < stored < len(world.reference.letters)
        world.proxy.reset()
        result = clone.run(store)
        assert result.ok, f"{where}: {[m.errors for m in result.mailboxes]}"
        assert archive(store) == world.reference, where
        assert all(m.last_error is None for m in store.mailboxes()), where
        store.close()
        shutil.rmtree(clone.config.database.parent)
    return figures


def test_sigkill_at_random_protocol_points_then_a_pass_equals_a_clean_run(world):
    figures = run_with_kills(world, KILL_POINTS, 1, random.Random(SEED))
    print(f"seed {SEED}: {figures}")  # the README's figures: pytest -s -k sigkill
    assert figures["killed"] >= KILL_POINTS * 0.8, (SEED, figures)
    assert figures["killed_mid_batch"] >= KILL_POINTS * 0.3, (SEED, figures)  # ~65% expected


@pytest.mark.slow
def test_sigkill_at_many_points_with_parallel_mailboxes(world):
    figures = run_with_kills(world, KILL_POINTS_SLOW, 2, random.Random(SEED))
    print(f"seed {SEED}: {figures}")
    assert figures["killed"] >= KILL_POINTS_SLOW * 0.8, (SEED, figures)


@pytest.mark.parametrize("action", ["drop", "bye", "truncate", "stall"])
def test_a_connection_broken_mid_fetch_fails_that_mailbox_keeps_what_was_committed_and_the_next_pass_completes(
        world, action):
    clone = world.clone(action, timeout=1)
    store = clone.store()
    world.proxy.reset(Fault(action, at=32, kind="fetch"))  # after the first mailbox's first commit (pipelined: several FETCHes come before it)
    started = time.monotonic()
    result = clone.run(store)
    a, b = result.mailboxes
    assert not a.ok and b.ok, (a.errors, b.errors)
    (error,) = a.errors
    assert "\n" not in error and error.startswith("connection to 127.0.0.1:") and "next pass" in error, error
    assert "FETCH (" not in error  # never what the server was sending: it may quote a letter
    assert store.mailbox(a.mailbox_id).last_error == error
    assert 0 < a.archived < 36 + 6
    check_consistent(store, world.reference)
    if action == "stall":
        assert time.monotonic() - started < 8, "a stalled server held the pass beyond network.timeout"

    world.proxy.reset()
    assert clone.run(store).ok
    assert archive(store) == world.reference
    assert store.mailbox(a.mailbox_id).last_error is None


def test_dovecot_stopped_mid_pass_then_restarted(world, dovecot):
    clone = world.clone("restart")
    store = clone.store()
    world.proxy.reset(Fault("call", at=32, kind="fetch", call=dovecot.stop))
    try:
        result = clone.run(store)
    finally:
        dovecot.start()  # from this thread: Dovecot is tied to the thread that starts it
    assert not result.ok and all(not m.ok for m in result.mailboxes), [m.errors for m in result.mailboxes]
    check_consistent(store, world.reference)
    assert 0 < len(archive(store).letters) < len(world.reference.letters)

    world.proxy.reset()
    assert clone.run(store).ok
    assert archive(store) == world.reference


def test_a_dry_run_after_a_kill_writes_nothing_and_the_next_pass_completes(world):
    """A dry run takes no lock and writes nothing, also over an archive a killed pass left half-way."""
    clone = world.clone("dry")
    world.proxy.reset(Fault("kill", at=20))
    proc = clone.hanna("run")
    world.proxy.victim = proc.pid
    assert proc.wait(120) == -signal.SIGKILL
    store = clone.store()
    before = archive(store)
    world.proxy.reset()
    assert clone.hanna("run", "--dry-run").wait(120) == 0
    assert archive(store) == before
    assert clone.run(store).ok and archive(store) == world.reference
