"""A busy server is never a wrong password, and a pass gives a busy server fewer connections (issue #20).

The server here is the sandbox Dovecot behind `BusyGate`, which lets `capacity` connections at once through
and answers the others as overloaded servers do: Dovecot's `* BYE Connection queue full` greeting, a LOGIN
answered `NO [UNAVAILABLE]`/`NO [LIMIT]`, or a connection closed while the client logs in. The latency proxy
sits in front, so the sessions last long enough (round trips of 40 ms) to overlap as in the field. A
connection dropped at the login is busy only when its host was busy or logged another mailbox in that pass;
an account at its own limit (Gmail's 15 sessions) is busy without slowing its host's other mailboxes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import secrets as pysecrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from hanna_sync import scan as scan_module
from hanna_sync.cli import cli
from hanna_sync.demo.latency import LatencyProxy
from hanna_sync.demo.sandbox import DOVECOT_BIN, Dovecot
from hanna_sync.errors import AuthError, ConnectError, ExitCode, ReauthRequired
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap, overload
from hanna_sync.scan.host_limits import HostLimit, HostLimits, run_limited
from hanna_sync.scan.results import MailboxResult
from tests.helpers import Env, deliver_sample, serve_each_connection, server_flags

# -- the classifier ------------------------------------------------------------------------------------

BUSY_TEXTS = [
    "* BYE Connection queue full",  # Dovecot's login process, full
    "b'* BYE Disconnected: Connection queue full'",
    "[UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
    "NO [UNAVAILABLE] Temporary authentication failure. [host:2024-01-01 00:00:00]",  # Dovecot, auth backend down
    "[LIMIT] Too many simultaneous connections",
    "[ALERT] Too many simultaneous connections. (Failure)",  # Gmail, 15 per account
    "Maximum connection limit reached for ::ffff:192.0.2.1",  # Courier
    "Too many connections from your IP",
]
NOT_BUSY_TEXTS = [
    "[AUTHENTICATIONFAILED] Authentication failed.",  # Dovecot: the password is wrong
    "Invalid credentials (Failure)",  # Gmail
    "[ALERT] Application-specific password required",
    "User is authenticated but not connected.",  # Office 365 app-only without the mailbox: a permission
    "LOGIN failed.",  # Exchange
    "authentication failed",
]


@pytest.mark.parametrize("text", BUSY_TEXTS)
def test_overload_answers_are_busy(text):
    assert overload.is_overload(text)
    with pytest.raises(overload.ServerBusy, match="is busy"):
        overload.busy_login("imap.example.com", "anna@example.com", text)


@pytest.mark.parametrize("text", NOT_BUSY_TEXTS)
def test_refusals_stay_refusals(text):
    assert not overload.is_overload(text) and not overload.is_lost(text)
    overload.busy_login("imap.example.com", "anna@example.com", text)  # raises nothing: the login's AuthError follows
    assert overload.load_of(AuthError(f"imap.example.com refused the login for anna ({text}); check the password")) is None


@pytest.mark.parametrize("text", ["socket error: EOF", "command: LOGIN => socket error: EOF",
                                  "socket error: [Errno 104] Connection reset by peer"])
def test_a_login_cut_off_is_a_lost_connection_not_yet_busy(text):
    """A ban, a TLS mismatch or a server that drops wrong passwords looks the same: the pass decides."""
    assert overload.is_lost(text)
    with pytest.raises(overload.ConnectionLost) as raised:
        overload.busy_login("imap.example.com", "anna@example.com", text)
    assert not isinstance(raised.value, overload.ServerBusy) and "is busy" not in str(raised.value)
    assert "'hanna-sync test'" in str(raised.value) and raised.value.busy_text.startswith("imap.example.com is busy")


def test_load_of_reads_connect_errors():
    assert overload.load_of(overload.lost_during_login("h", ConnectionResetError(104, "reset"))) == overload.LOST
    assert overload.load_of(ConnectError("127.0.0.1:993: b'* BYE Connection queue full'")) == overload.HOST_BUSY
    assert overload.load_of(overload.ServerBusy("h is busy: ([UNAVAILABLE] Temporary failure)")) == overload.HOST_BUSY
    assert overload.load_of(ConnectError("127.0.0.1:993: socket error: EOF")) == overload.LOST  # before the greeting
    assert overload.load_of(ConnectError("TLS with 127.0.0.1:993 failed: UNEXPECTED_EOF_WHILE_READING")) \
        == overload.LOST  # Dovecot's full login process, or a server that is not TLS at all
    assert overload.load_of(ConnectError("127.0.0.1:993 refused the connection: wrong port or firewall")) is None
    assert overload.load_of(ConnectError("127.0.0.1:143 does not speak implicit TLS: use --imap-security"
                                         " starttls (usually port 143), or the ssl port 993")) is None
    assert overload.load_of(ValueError("Connection queue full")) is None  # only connection and login failures


@pytest.mark.parametrize("text, load", [
    ("[UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
     overload.ACCOUNT_BUSY),  # Dovecot: this user from this address
    ("[ALERT] Too many simultaneous connections. (Failure)", overload.ACCOUNT_BUSY),  # Gmail: 15 per account
    ("[LIMIT] Too many simultaneous connections", overload.ACCOUNT_BUSY),
    ("* BYE Connection queue full", overload.HOST_BUSY),
    ("NO [UNAVAILABLE] Temporary authentication failure.", overload.HOST_BUSY),
    ("[LIMIT] Too many connections", overload.HOST_BUSY),
    ("Maximum connection limit reached for ::ffff:192.0.2.1", overload.HOST_BUSY),  # Courier, per address
])
def test_an_account_at_its_limit_is_told_from_a_busy_host(text, load):
    with pytest.raises(overload.ServerBusy) as raised:
        overload.busy_login("imap.gmail.com", "anna@example.com", text)
    assert overload.load_of(raised.value) == load


# -- the limiter's arithmetic --------------------------------------------------------------------------

def test_a_busy_answer_halves_the_limit_once_per_overload_and_each_success_adds_one():
    host = HostLimit(ceiling=8, limit=8, lowest=8)
    first_wave = [host.start() for _ in range(8)]
    host.finish(first_wave[0], load="busy")
    assert (host.limit, host.epoch) == (4, 1)
    for epoch in first_wave[1:4]:  # the same overload, answered on connections opened before the decrease
        host.finish(epoch, load="busy")
    assert host.limit == 4 and host.busy == 4
    for epoch in first_wave[4:]:  # successes of the old wave do not raise it
        host.finish(epoch, load="served")
    assert host.limit == 4 and host.running == 0
    for _ in range(3):
        host.finish(host.start(), load="busy")  # each a new overload: 4 -> 2 -> 1 -> 1
    assert host.limit == 1 and host.lowest == 1
    for _ in range(20):
        host.finish(host.start(), load="served")
    assert host.limit == 8 and host.lowest == 1  # +1 per success, never above the ceiling


def test_an_account_at_its_limit_leaves_its_hosts_limit_alone():
    host = HostLimit(ceiling=8, limit=8, lowest=8)
    for _ in range(5):
        host.finish(host.start(), load="account")
    assert (host.limit, host.lowest, host.epoch, host.busy, host.running) == (8, 8, 0, 0, 0)


def test_hosts_are_limited_apart_and_take_turns():
    limits = HostLimits(2)
    seen: dict[str, int] = {}
    peak: dict[str, int] = {}
    order: list[str] = []
    lock = threading.Lock()

    def work(job: tuple[str, int]) -> str:
        with lock:
            seen[job[0]] = seen.get(job[0], 0) + 1
            peak[job[0]] = max(peak.get(job[0], 0), seen[job[0]])
            order.append(job[0])
        time.sleep(0.02)
        with lock:
            seen[job[0]] -= 1
        return job[0]

    jobs = [("a", i) for i in range(6)] + [("b", i) for i in range(6)] + [("c", i) for i in range(2)]
    done = run_limited(jobs, work, limits=limits, host=lambda j: j[0], load=lambda r: "served", workers=5)
    assert sorted(done) == sorted(j[0] for j in jobs)
    assert peak["a"] == peak["b"] == 2 and peak["c"] <= 2  # never more than a host's limit, though 5 threads were free
    assert set(order[:3]) == {"a", "b", "c"}  # a big host does not take every thread first


def test_two_hosts_take_turns_all_pass_long_when_the_workers_are_the_limit():
    """4 threads, 60 mailboxes on each of 2 hosts that would take 32: each freed thread goes to the host
    whose turn it is, not back to the first host until its queue is empty. Counted in the order the jobs
    start (a thread may start a moment before one handed its job earlier: at most `workers` apart)."""
    order: list[str] = []
    lock = threading.Lock()

    def work(job: tuple[str, int]) -> None:
        with lock:
            order.append(job[0])
        time.sleep(0.001 * (job[1] % 3))  # jobs end in another order than they started

    jobs = [("a", i) for i in range(60)] + [("b", i) for i in range(60)]
    run_limited(jobs, work, limits=HostLimits(32), host=lambda j: j[0], load=lambda r: "served", workers=4)
    assert len(order) == 120
    lead = [order[:n].count("a") - order[:n].count("b") for n in range(1, 121)]
    assert max(map(abs, lead)) <= 4, "".join(order)  # on a first-host-first dispatch: 56


def test_a_busy_host_gets_fewer_threads_and_the_others_do_not():
    limits = HostLimits(4)
    answers = itertools.count()

    def work(job: str) -> bool:
        time.sleep(0.01)
        return job == "busy" and next(answers) < 2  # the busy host says so twice

    run_limited(["busy"] * 8 + ["calm"] * 8, work, limits=limits, host=lambda j: j,
                load=lambda r: "busy" if r else "served", workers=8)
    assert limits["busy"].busy == 2 and limits["busy"].lowest < 4
    assert limits["calm"].busy == 0 and limits["calm"].limit == 4


# -- a busy server in front of the sandbox Dovecot -----------------------------------------------------

class BusyGate:
    """Lets `capacity` connections at once through to Dovecot's IMAPS port (TCP, TLS end to end) and refuses
    the others, in turn: a `* BYE Connection queue full` greeting, LOGIN answered `NO [UNAVAILABLE]`, LOGIN
    answered `NO [LIMIT]`, the connection closed on LOGIN; or (`refusals` set by a test) as Gmail refuses a
    16th session of one account ("account"). Counts what a test asserts."""

    REFUSALS = ("bye", "unavailable", "limit", "eof")
    ANSWERS = {"unavailable": "[UNAVAILABLE] Temporary failure", "limit": "[LIMIT] Too many connections",
               "account": "[ALERT] Too many simultaneous connections. (Failure)"}

    def __init__(self, dovecot, capacity: int) -> None:
        self.dovecot, self.capacity = dovecot, capacity
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(dovecot.cert_file, dovecot.key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.admitted = 0  # open connections let through
        self.refused = 0
        self.refusals = itertools.cycle(self.REFUSALS)
        serve_each_connection(self.listener, self._serve)

    def __enter__(self) -> BusyGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            admit = self.admitted < self.capacity
            if admit:
                self.admitted += 1
            else:
                self.refused += 1
                how = next(self.refusals)
        try:
            if admit:
                self._forward(conn)
            else:
                self._refuse(conn, how)
        finally:
            with self.lock:
                self.admitted -= admit

    def _forward(self, conn: socket.socket) -> None:
        with conn, socket.create_connection((self.dovecot.host, self.dovecot.imaps_port)) as upstream:
            def pump(src: socket.socket, dst: socket.socket) -> None:
                try:
                    while data := src.recv(65536):
                        dst.sendall(data)
                except OSError:
                    pass
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

            other = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
            other.start()
            pump(conn, upstream)
            other.join(10)

    def _refuse(self, conn: socket.socket, how: str) -> None:
        try:
            conn.settimeout(10)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                if how == "bye":
                    tls.sendall(b"* BYE Connection queue full\r\n")
                    return
                tls.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n")
                for line in tls.makefile("rb"):
                    tag, _, rest = line.decode().partition(" ")
                    command = rest.split(" ", 1)[0].strip().upper()
                    if command == "CAPABILITY":
                        tls.sendall(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
                    elif command in ("LOGIN", "AUTHENTICATE") and how == "eof":
                        return
                    elif command in ("LOGIN", "AUTHENTICATE"):
                        tls.sendall(f"{tag} NO {self.ANSWERS[how]}\r\n".encode())
                    else:
                        tls.sendall(f"* BYE Logging out\r\n{tag} OK bye\r\n".encode())
                        return
        except OSError:
            pass


@pytest.mark.parametrize("how, raised_as", [("unavailable", overload.ServerBusy), ("limit", overload.ServerBusy),
                                            ("account", overload.ServerBusy), ("eof", overload.ConnectionLost)])
def test_a_login_refused_for_want_of_room_raises_server_busy_not_auth_error(dovecot, how, raised_as):
    """What every caller of imap.login gets (a pass, add-mailbox's check): a ConnectError saying busy, or for
    a connection dropped at the login one saying so (busy only when the pass sees its host busy)."""
    user = dovecot.add_user(f"busy-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(10))
    mailbox = Mailbox(user="staff", email=user.login, provider="custom", imap_host=dovecot.host, imap_security="ssl",
                      ca_file=str(dovecot.ca_file))
    with BusyGate(dovecot, capacity=0) as gate:
        gate.refusals = itertools.cycle([how])
        mailbox.imap_port = gate.port
        with pytest.raises(raised_as, match=f"{dovecot.host} is busy" if raised_as is overload.ServerBusy
                           else f"connection to {dovecot.host} closed during the login"), \
                imap.session(mailbox, user.password, 10):
            pass
        gate.refusals = itertools.cycle(["bye"])  # in the greeting: connect's ConnectError, read by is_busy
        with pytest.raises(ConnectError, match="Connection queue full") as raised, \
                imap.session(mailbox, user.password, 10):
            pass
        assert overload.load_of(raised.value) == overload.HOST_BUSY and not isinstance(raised.value, AuthError)


@pytest.fixture
def quick_retries(monkeypatch):
    """The pass's pauses before trying busy mailboxes again, shortened: the tests count, they do not wait."""
    monkeypatch.setattr(scan_module, "BUSY_RETRY_PAUSES", (0.05, 0.05))


def _users(dovecot, count: int) -> list:
    out = []
    for _ in range(count):
        user = dovecot.add_user(f"busy-{pysecrets.token_hex(4)}@example.test", pysecrets.token_urlsafe(10))
        deliver_sample(user)
        server_flags(user)  # Dovecot gives the dropped files their UIDs now, not in three sessions at once
        out.append(user)
    return out


@pytest.fixture
def gated(dovecot, tmp_path) -> Iterator:
    """12 mailboxes (4 accounts, 3 mailboxes each) behind the gate and the latency proxy; per host at most 8."""
    if not dovecot.running:
        dovecot.start()
    env = Env(tmp_path, concurrency=12, max_connections_per_host=8)
    with BusyGate(dovecot, capacity=3) as gate, LatencyProxy("127.0.0.1", gate.port, rtt_ms=40) as lag:
        boxes = [env.add(user, email=f"box{n}-{user.login}", verify=False, imap_port=lag.port)
                 for user in _users(dovecot, 4) for n in range(3)]
        yield env, gate, lag, boxes
        lag.settle()  # every connection ended before the proxy stops


def hanna(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def test_a_busy_server_is_scanned_at_fewer_connections_and_never_looks_like_a_wrong_password(
    gated, quick_retries, caplog,
):
    env, gate, _, boxes = gated
    with caplog.at_level(logging.INFO, logger="hanna_sync.scan"):
        first = env.run()
    assert gate.refused >= 3  # the first wave of 8 met a server with room for 3
    kinds = {r.failure_kind for r in first.mailboxes}
    assert kinds <= {None, "busy"}, [r.errors for r in first.mailboxes]
    for box in boxes:
        stored = env.store.mailbox(box.id)
        assert stored.failure_kind in (None, "busy") and stored.retry_after is None  # no auth back-off
    # The host's limit went down. Counted by the limiter, not timed at the gate: the first wave of 8 opens at
    # once (the sessions last 4 round trips of 40 ms), so 5 of it meet a full server whatever the machine's
    # load, and the first of their host-wide answers ([UNAVAILABLE], [LIMIT], Connection queue full) halves 8.
    said = re.search(r"was busy \d+ time\(s\) this pass: .* \(at the lowest (\d+);", caplog.text)
    assert said and int(said.group(1)) <= 4, caplog.text[-3000:]
    assert "trying them again" in caplog.text
    # Every mailbox scanned within two passes, each letter once.
    second = first if first.ok else env.run()
    assert second.ok, [r.errors for r in second.mailboxes]
    assert all(env.store.mailbox(b.id).last_success_at for b in boxes)
    per_mailbox = env.store.db.execute("SELECT mailbox_id, COUNT(*) FROM letter_locations GROUP BY mailbox_id")
    assert sorted(per_mailbox) == [(b.id, 8) for b in boxes]  # the sample's 8 letters that concern customers
    assert {m["state"] for m in json.loads(hanna(env, "status", "--json").stdout)["mailboxes"]} == {"ok"}


def test_a_server_busy_all_pass_long_shows_server_busy_and_is_scanned_next_pass(gated, quick_retries):
    env, gate, lag, boxes = gated
    lag.delay = 0.0  # one mailbox at a time by the end: no need to wait 40 ms for each answer
    gate.capacity = 0  # every connection refused, the retries too
    first = env.run()
    assert not first.ok and {r.failure_kind for r in first.mailboxes} == {"busy"}
    assert gate.refused == 3 * len(boxes)  # tried, then again twice after the others, never more
    assert "mailboxes 0 ok, 0 failed, 12 server busy, 0 backing off" in first.summary_line()
    report = json.loads(hanna(env, "status", "--json").stdout)
    assert {m["state"] for m in report["mailboxes"]} == {"server busy"}
    assert {m["failure_kind"] for m in report["mailboxes"]} == {"busy"}
    assert {m["retry_after"] for m in report["mailboxes"]} == {None}
    # Tried three times, recorded once: one busy pass is one failure in a row, not three.
    assert {env.store.mailbox(b.id).consecutive_failures for b in boxes} == {1}
    shown = hanna(env, "status")
    assert "server busy" in shown.output and "tried again next pass" in shown.output
    ran = hanna(env, "run", "--json")
    assert ran.exit_code == 1 and {m["failure_kind"] for m in json.loads(ran.stdout)["mailboxes"]} == {"busy"}
    gate.capacity = 3
    assert env.run().ok  # not on back-off: the next pass tries every one
    assert {m["state"] for m in json.loads(hanna(env, "status", "--json").stdout)["mailboxes"]} == {"ok"}


def test_a_server_that_drops_every_login_is_a_connect_failure_not_a_busy_one(gated, quick_retries, caplog):
    """No mailbox of the host logged in, none was told it is busy: a login dropped is the transport's failure
    (a ban of this address, TLS settings, a server that drops wrong passwords), tried once a pass with the
    usual hint, never "server busy ... tried again next pass", the host's limit untouched."""
    env, gate, lag, boxes = gated
    lag.delay = 0.0
    gate.capacity, gate.refusals = 0, itertools.cycle(["eof"])
    with caplog.at_level(logging.INFO, logger="hanna_sync.scan"):
        first = env.run()
    assert {r.failure_kind for r in first.mailboxes} == {"connect"}, [r.errors for r in first.mailboxes]
    assert gate.refused == len(boxes)  # once each: no retries, no pauses
    assert "was busy" not in caplog.text and "trying them again" not in caplog.text
    assert "0 server busy" in first.summary_line()
    for health in json.loads(hanna(env, "status", "--json").stdout)["mailboxes"]:
        assert health["state"] == "failing" and "closed during the login" in health["detail"]
        assert "'hanna-sync test'" in health["detail"] and "is busy" not in health["detail"]


def test_logins_dropped_while_other_mailboxes_of_the_host_log_in_are_busy(gated, quick_retries):
    """The same drops while the host logs other mailboxes in (2 at once here): its load, so busy, tried again."""
    env, gate, _, boxes = gated
    gate.capacity, gate.refusals = 2, itertools.cycle(["eof"])
    first = env.run()
    assert gate.refused >= 6  # the first wave of 8 met a server with room for 2
    assert {r.failure_kind for r in first.mailboxes} <= {None, "busy"}, [r.errors for r in first.mailboxes]
    assert first.ok or env.run().ok  # every mailbox scanned within two passes
    assert all(env.store.mailbox(b.id).last_success_at for b in boxes)


def test_an_account_at_its_limit_is_busy_and_its_host_keeps_its_limit(gated, quick_retries, caplog):
    """Gmail's "Too many simultaneous connections" is one account's 15 sessions: that mailbox is tried again
    later, and the other mailboxes of imap.gmail.com keep their host's limit."""
    env, gate, lag, boxes = gated
    lag.delay = 0.0
    gate.capacity, gate.refusals = 0, itertools.cycle(["account"])
    with caplog.at_level(logging.INFO, logger="hanna_sync.scan"):
        first = env.run()
    assert {r.failure_kind for r in first.mailboxes} == {"busy"}
    assert gate.refused == 3 * len(boxes)  # tried again later in the pass
    assert "trying them again" in caplog.text and "was busy" not in caplog.text  # the host's limit never went down


def test_a_busy_server_keeps_a_refused_logins_back_off_streak(gated, quick_retries):
    """A mailbox refused 3 times meets a busy server once its back-off is over: the password is still
    unproven, so its streak stays and the next refusal backs off 2^3 times as long, not from the start."""
    env, gate, lag, boxes = gated
    lag.delay = 0.0
    gate.capacity, gate.refusals = 0, itertools.cycle(["bye"])
    refused = boxes[0]
    with env.store.transaction():
        for _ in range(3):
            env.store.record_outcome(refused.id, "h refused the login", "auth", "2000-01-01T00:00:00+00:00")
    assert {r.failure_kind for r in env.run().mailboxes} == {"busy"}  # its back-off was over: tried
    stored = env.store.mailbox(refused.id)
    assert (stored.failure_kind, stored.consecutive_failures, stored.last_error) == ("auth", 3, "h refused the login")
    again = scan_module._retry_after(stored, MailboxResult(refused.id, refused.email, failure_kind="auth"), env.config)
    assert again is not None
    minutes = (datetime.fromisoformat(again) - datetime.now(timezone.utc)).total_seconds() / 60
    assert minutes > 7 * env.config.scan.auth_backoff_minutes  # 8x: the streak of 3 goes on
    assert env.store.mailbox(boxes[1].id).consecutive_failures == 1  # the others: one busy pass


@pytest.mark.parametrize("kind, error, expected", [
    ("imap", overload.ServerBusy("h is busy"), "busy"),
    ("imap", AuthError("h refused the login for a (Authentication failed.); check the password"), "auth"),
    ("imap", ConnectError("127.0.0.1:993: b'* BYE Connection queue full'"), "busy"),  # connect()'s greeting
    ("o365-client", AuthError("outlook.office365.com refused the token for a (User is authenticated but not"
                              " connected.); the app-only token was accepted but ..."), "auth"),
    ("google-client", AuthError("imap.gmail.com refused the token for a ([ALERT] Too many simultaneous"
                                " connections. (Failure))"), "busy"),
    ("o365-scan", ConnectError("graph.microsoft.com: Connection queue full"), "connect"),  # Graph retries on its own
    ("imap", ReauthRequired("signed out"), "auth"),  # scan_mailbox tells reauth first; it is never busy
    # Dropped before the login: "connect" with its transport hint unless the pass sees the host busy (Attempt)
    ("imap", overload.lost_during_login("h", ConnectionResetError(104, "Connection reset by peer")), "connect"),
    ("imap", ConnectError("TLS with h:993 failed: UNEXPECTED_EOF_WHILE_READING"), "connect"),
    ("imap", ConnectError("h:993: socket error: EOF"), "connect"),
])
def test_the_failure_kind_of_a_connect_or_login_error(kind, error, expected):
    mailbox = Mailbox(user="staff", email="a@imone.lt", provider="custom", kind=kind, imap_host="h")
    assert scan_module._failure_kind(mailbox, error) == expected


# -- Dovecot's own login limit -------------------------------------------------------------------------

class CrowdedDovecot(Dovecot):
    """A sandbox Dovecot whose login process takes 4 clients at once (one process, client_limit 4): beyond
    that it drops the oldest waiting one with `* BYE Connection queue full`, or the connection ends first."""

    def _config(self) -> str:
        return super()._config().replace(
            "service imap-login {\n",
            "service imap-login {\n  service_count = 0\n  process_limit = 1\n  process_min_avail = 1\n"
            "  client_limit = 4\n", 1)


@pytest.fixture(scope="module")
def crowded() -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT_BIN):
        pytest.skip(f"{DOVECOT_BIN} not found")
    with CrowdedDovecot() as dc:
        yield dc


def test_dovecots_own_connection_queue_full_is_busy_and_the_pass_slows_down_for_it(
    crowded, tmp_path, quick_retries, caplog,
):
    env = Env(tmp_path, concurrency=12, max_connections_per_host=12)
    boxes = [env.add(user, email=f"box{n}-{user.login}", verify=False)
             for user in _users(crowded, 4) for n in range(3)]
    with caplog.at_level(logging.INFO, logger="hanna_sync.scan"):
        first = env.run()
    assert {r.failure_kind for r in first.mailboxes} <= {None, "busy"}, [r.errors for r in first.mailboxes]
    assert all(env.store.mailbox(b.id).retry_after is None for b in boxes)
    said = re.search(r"was busy (\d+) time\(s\) this pass: at most \d+ of its mailboxes at once from then on"
                     r" \(at the lowest (\d+);", caplog.text)
    assert said and int(said.group(2)) < 12, caplog.text[-3000:]  # the host's limit went down
    assert "Connection queue full" in crowded.log_text() or "socket error: EOF" in caplog.text
    assert first.ok or env.run().ok  # every mailbox scanned within two passes
    per_mailbox = env.store.db.execute("SELECT mailbox_id, COUNT(*) FROM letter_locations GROUP BY mailbox_id")
    assert sorted(per_mailbox) == [(b.id, 8) for b in boxes]


def test_hanna_sync_test_says_busy_not_a_password_problem(dovecot, tmp_path):
    """`hanna-sync test` on a server answering LOGIN with NO [UNAVAILABLE]: the auth stage says busy, exit 14
    (the server refused the session), never 16 (fix the password)."""
    if not dovecot.running:
        dovecot.start()
    env = Env(tmp_path)
    user = _users(dovecot, 1)[0]
    with BusyGate(dovecot, capacity=0) as gate:
        gate.refusals = itertools.cycle(["unavailable"])
        box = env.add(user, verify=False, imap_port=gate.port)
        result = hanna(env, "test", str(box.id), "--no-smtp")
    assert result.exit_code == ExitCode.SERVER, result.output
    assert f"{dovecot.host} is busy: it did not log {user.login} in" in result.output
    assert "not a password problem" in result.output and "check the password" not in result.output
