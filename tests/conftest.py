"""Shared fixtures: one real Dovecot per test session, and a fresh IMAP account per test."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

import pytest

from hanna_sync.demo.sandbox import DOVECOT_BIN, Dovecot, SandboxUser

_user_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A sandbox Dovecot shared by the whole session (starting one per test would cost time).

    Skipped where Dovecot is not installed, but CI installs it, so there a missing binary fails.
    """
    if not os.path.exists(DOVECOT_BIN):
        reason = f"{DOVECOT_BIN} not found (apt-get install dovecot-imapd)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with Dovecot() as dc:
        yield dc


@pytest.fixture
def imap_user(dovecot: Dovecot) -> SandboxUser:
    """A new account (u1@example.test, u2@...) with a random password, so tests never share mail.

    Restarts the session Dovecot if an earlier test stopped it and failed before starting it again.
    """
    if not dovecot.running:
        dovecot.start()
    return dovecot.add_user(f"u{next(_user_numbers)}@example.test", secrets.token_urlsafe(12))
