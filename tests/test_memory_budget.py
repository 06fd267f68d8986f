"""One byte budget for the letters a pass has asked for and not committed, across all its mailboxes
(scan/context.py BodyBudget): its high-water mark, the bytes one FETCH asks for, and that a letter larger
than the whole budget still gets through, with mailboxes running side by side on the sandbox Dovecot."""

from __future__ import annotations

import pytest

from hanna_sync.demo import sample
from hanna_sync.remote import imap_wire
from hanna_sync.scan import context
from tests.helpers import Env

MAILBOXES = 4
LETTERS = 12  # per mailbox, every other one from a customer: 6 downloaded


def _big_letters(dovecot, name: str, size: int):
    user = dovecot.add_user(f"{name}@example.test", "slaptas-1")
    for i in range(LETTERS):
        if i % 2:
            raw = sample.letter("Rūta <ruta@azuolas.lt>", sample.STAFF, f"Brėžiniai {i}", f"{name} {i} " + "x" * size,
                                message_id=f"<{name}.{i}@azuolas.lt>")
        else:
            raw = sample.letter("x@spam.example", sample.STAFF, f"Spam {i}", "x", message_id=f"<{name}.{i}@spam.example>")
        dovecot.deliver(user.login, "INBOX", raw)
    return user


@pytest.fixture
def watched(monkeypatch):
    """The pass's budget (the one BodyBudget its PassContext made) and the UIDs of every body FETCH."""
    budgets: list[context.BodyBudget] = []
    fetches: list[int] = []
    take, bodies = context.BodyBudget.take, imap_wire.Wire.bodies

    def taking(self, size, *, wait):
        if self not in budgets:
            budgets.append(self)
        return take(self, size, wait=wait)

    def asking(self, uids, item):
        fetches.append(len(uids))
        return bodies(self, uids, item)

    monkeypatch.setattr(context.BodyBudget, "take", taking)
    monkeypatch.setattr(imap_wire.Wire, "bodies", asking)
    return budgets, fetches


def _first_pass(tmp_path, dovecot, *, name: str, size: int) -> Env:
    env = Env(tmp_path, batch_size=200, concurrency=MAILBOXES)
    for n in range(MAILBOXES):
        env.add(_big_letters(dovecot, f"{name}{n}", size), folders=("INBOX",), verify=False)
    result = env.run()
    assert result.ok
    assert [m.archived for m in result.mailboxes] == [LETTERS // 2] * MAILBOXES
    return env


def test_bodies_of_parallel_mailboxes_stay_within_one_budget_and_fetches_are_split_by_bytes(
        tmp_path, dovecot, watched, monkeypatch):
    budgets, fetches = watched
    letter = 200_000
    monkeypatch.setattr(context, "BODIES_BUDGET", 2 * 1024 * 1024)  # 24 letters wanted, ~10 fit at once
    _first_pass(tmp_path, dovecot, name="budget", size=letter)
    [budget] = budgets
    assert budget.limit == 2 * 1024 * 1024
    assert letter * 2 < budget.high_water <= budget.limit + letter * 1.1  # used, never past it (+ one letter)
    assert budget.held == 0  # all given back
    # One batch of 12 letters, 6 of them wanted: a FETCH asks for at most a quarter of the budget (2 letters).
    assert fetches and max(fetches) == 2


def test_a_letter_larger_than_the_whole_budget_gets_through_alone(tmp_path, dovecot, watched, monkeypatch):
    budgets, fetches = watched
    letter = 300_000
    monkeypatch.setattr(context, "BODIES_BUDGET", 100_000)
    _first_pass(tmp_path, dovecot, name="alone", size=letter)
    [budget] = budgets
    assert letter < budget.high_water <= letter * 1.1  # never two at once: each one alone
    assert budget.held == 0
    assert set(fetches) == {1}


def test_a_broken_connection_gives_its_bytes_back(tmp_path, dovecot, watched, monkeypatch):
    """A mailbox whose connection breaks while its bodies are in flight: the pass reports it, and the
    bytes its batches held return to the budget (the next mailboxes are not starved)."""
    budgets, _ = watched
    fetched = imap_wire.Wire.fetched
    broken = []

    def breaking(self, pending):
        if not broken:
            broken.append(pending)
            raise imap_wire.imaplib.IMAP4.abort("socket error: EOF")
        return fetched(self, pending)

    monkeypatch.setattr(imap_wire.Wire, "fetched", breaking)
    env = Env(tmp_path, batch_size=200, concurrency=1)
    for n in range(2):
        env.add(_big_letters(dovecot, f"broken{n}", 50_000), folders=("INBOX",), verify=False)
    result = env.run()
    assert not result.ok and broken
    assert sorted(m.archived for m in result.mailboxes) == [0, LETTERS // 2]
    [budget] = budgets
    assert budget.high_water > 0 and budget.held == 0
