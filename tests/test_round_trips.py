"""Round trips and bytes of a pass, counted through the latency proxy (hanna_sync/demo/latency.py): what a
mailbox costs at network distance, asserted as counts, never as times."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

from hanna_sync.demo import sample
from hanna_sync.demo.latency import LatencyProxy
from hanna_sync.remote import imap, imap_wire
from hanna_sync.scan import context
from tests.helpers import Env, deliver_sample

FOLDERS = {1: ("INBOX",), 2: ("INBOX", "Išsiųsti"), 5: ("INBOX", "Išsiųsti", "Archyvas", "Klientai", "Tiekėjai")}


@pytest.fixture
def proxy(dovecot) -> Iterator[LatencyProxy]:
    if not dovecot.running:
        dovecot.start()
    # 20 ms apart: at 0 ms the LOGOUT's answer may reach the client before its close reaches the proxy,
    # which would count the close as one more round trip.
    with LatencyProxy(dovecot.host, dovecot.imaps_port, rtt_ms=20) as p:
        yield p


def _pass(env: Env, proxy: LatencyProxy):
    proxy.reset()
    result = env.run()
    proxy.settle()
    assert result.ok, result.mailboxes[0].errors
    return result


@pytest.mark.parametrize("folders", [1, 2, 5])
def test_an_unchanged_mailbox_costs_four_round_trips_whatever_its_folders(tmp_path, imap_user, proxy, folders):
    """TCP, the TLS handshake, the login with every folder's STATUS in one write, LOGOUT without its answer."""
    env = Env(tmp_path)
    env.add(imap_user, folders=FOLDERS[folders], imap_port=proxy.port, verify=False)
    deliver_sample(imap_user)
    first = _pass(env, proxy)
    assert first.mailboxes[0].archived > 0
    before = env.snapshot()

    result = _pass(env, proxy)
    assert [c.round_trips for c in proxy.connections] == [4]
    assert result.mailboxes[0].new == 0 and result.mailboxes[0].folders_checked == folders
    assert env.snapshot() == before


def test_a_new_letter_in_one_of_two_folders_costs_four_round_trips_more(tmp_path, imap_user, proxy):
    """Its folder's fresh STATUS, EXAMINE and COMPRESS in one write, then SEARCH, the header fields, the
    body, and LOGOUT as before: 8 in all (12 before)."""
    env = Env(tmp_path)
    env.add(imap_user, folders=FOLDERS[2], imap_port=proxy.port, verify=False)
    deliver_sample(imap_user)
    _pass(env, proxy)
    imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
        "Rūta <ruta@azuolas.lt>", sample.STAFF, "Nauja", "Kaina?", message_id="<nauja@azuolas.lt>"))
    assert _pass(env, proxy).mailboxes[0].archived == 1
    assert [c.round_trips for c in proxy.connections] == [8]


def test_the_session_speaks_tls_1_3_with_a_server_that_offers_it(tmp_path, imap_user):
    mailbox = Env(tmp_path).add(imap_user, verify=False)
    with imap.session(mailbox, imap_user.password, 10) as client:
        assert client.socket().version() == "TLSv1.3"


class _Rewriter(socketserver.StreamRequestHandler):
    """Plain TCP to Dovecot's IMAP port, the greeting line rewritten by the server's `rewrite`; the
    client's command names counted in `commands`."""

    server: _RewritingServer

    def handle(self) -> None:
        upstream = socket.create_connection(self.server.target)
        reader = upstream.makefile("rb")
        self.wfile.write(self.server.rewrite(reader.readline()))
        self.wfile.flush()

        def down() -> None:
            with contextlib.suppress(OSError, ValueError):  # the client went first (its file closed)
                while data := reader.read1(65536):
                    self.wfile.write(data)
                    self.wfile.flush()

        threading.Thread(target=down, daemon=True).start()
        while chunk := self.rfile.read1(65536):  # as it comes: once compressed, there are no lines to wait for
            for line in chunk.splitlines():
                words = line.split(b" ")
                self.server.commands.append(words[1].upper() if len(words) > 1 else b"")
            upstream.sendall(chunk)
        upstream.close()


class _RewritingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, target: tuple[str, int], rewrite: Callable[[bytes], bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Rewriter)
        self.target, self.rewrite, self.commands = target, rewrite, []


@pytest.fixture
def rewriting(dovecot) -> Iterator[Callable[[Callable[[bytes], bytes]], _RewritingServer]]:
    servers = []

    def start(rewrite: Callable[[bytes], bytes]) -> _RewritingServer:
        server = _RewritingServer((dovecot.host, dovecot.imap_port), rewrite)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _plain(env: Env, user, port: int, password: str | None = None):
    mailbox = env.add(user, imap_port=port, imap_security="none", allow_plaintext=True, verify=False)
    if password is not None:
        env.secrets.set(mailbox.secret_ref, password)
    return mailbox


def test_a_greeting_without_capabilities_gets_them_asked(tmp_path, imap_user, rewriting):
    server = rewriting(lambda line: b"* OK Dovecot ready.\r\n")
    env = Env(tmp_path)
    _plain(env, imap_user, server.server_address[1])
    deliver_sample(imap_user)
    result = env.run()
    assert result.ok and result.mailboxes[0].archived > 0
    assert server.commands[:2] == [b"CAPABILITY", b"LOGIN"]


def test_a_greeting_with_capabilities_is_believed(tmp_path, imap_user, rewriting):
    server = rewriting(lambda line: line)
    env = Env(tmp_path)
    _plain(env, imap_user, server.server_address[1])
    assert env.run().ok
    assert server.commands[:3] == [b"LOGIN", b"STATUS", b"STATUS"] and b"CAPABILITY" not in server.commands


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_a_login_beyond_ascii_is_authenticate_plain_in_one_command_with_sasl_ir(
        tmp_path, dovecot, rewriting, sasl_ir):
    user = dovecot.add_user(f"ruta-{sasl_ir}@example.test", "slaptažodis-ąčę")  # Dovecot: ASCII login names
    server = rewriting(lambda line: line if sasl_ir else line.replace(b" SASL-IR", b""))
    env = Env(tmp_path)
    _plain(env, user, server.server_address[1])
    deliver_sample(user)
    result = env.run()
    assert result.ok and result.mailboxes[0].archived > 0
    assert server.commands[:2] == [b"AUTHENTICATE", b"STATUS" if sasl_ir else b""]  # b"": the credentials line


def test_a_refused_login_through_the_pipelined_path_is_an_auth_failure_and_nothing_is_written(
        tmp_path, imap_user, proxy):
    env = Env(tmp_path)
    mailbox = env.add(imap_user, imap_port=proxy.port, verify=False)
    env.secrets.set(mailbox.secret_ref, "wrong")
    result = env.run()
    assert not result.ok and result.mailboxes[0].failure_kind == "auth"
    assert "refused the login" in result.mailboxes[0].errors[0]
    assert env.snapshot()[4] == []


def _mailbox_of(dovecot, name: str, letters: int):
    """`letters` letters in INBOX, every other one from a customer."""
    user = dovecot.add_user(f"{name}@example.test", "slaptas-1")
    for i in range(letters):
        if i % 2:
            raw = sample.letter("Rūta <ruta@azuolas.lt>", sample.STAFF, f"Laiškas {i}", f"Tekstas {i} " * 50,
                                message_id=f"<m{i}@azuolas.lt>")
        else:
            raw = sample.letter("x@spam.example", sample.STAFF, f"Spam {i}", "x", message_id=f"<s{i}@spam.example>")
        dovecot.deliver(user.login, "INBOX", raw)
    return user


def test_a_first_pass_is_not_two_round_trips_per_batch(tmp_path, dovecot, proxy):
    """Header fields of the next batches and the bodies of matched ones are in flight while a batch is
    committed: round trips grow by at most one per batch (two before: its headers, then its bodies), and
    the archive is the one a single batch makes."""
    trips = {}
    for batches in (10, 20):
        user = _mailbox_of(dovecot, f"first-{batches}", batches * 10)
        env = Env(tmp_path / str(batches), batch_size=10)
        env.add(user, folders=("INBOX",), email=sample.STAFF, imap_port=proxy.port, verify=False)
        result = _pass(env, proxy)
        assert result.mailboxes[0].archived == batches * 5 and result.mailboxes[0].new == batches * 10
        trips[batches] = proxy.round_trips

        whole = Env(tmp_path / f"{batches}-whole", batch_size=1000)
        whole.add(user, folders=("INBOX",), email=sample.STAFF, verify=False)
        assert whole.run().ok
        assert whole.snapshot()[:4] == env.snapshot()[:4]
    assert trips[20] < 2 * 20
    assert trips[20] - trips[10] <= 10, trips


def test_a_reply_in_the_next_batch_inherits_the_links_of_a_letter_not_committed_yet(tmp_path, imap_user, proxy):
    dc = imap_user.dovecot
    spam = [sample.letter("x@spam.example", sample.STAFF, f"Spam {i}", "x", message_id=f"<s{i}@spam.example>")
            for i in range(2)]
    parent = sample.letter("Rūta <ruta@azuolas.lt>", sample.STAFF, "Kaina", "Kiek?", message_id="<q@azuolas.lt>")
    reply = sample.letter("kolega@nezinomas.example", sample.STAFF, "Re: Kaina", "Tiek.",
                          message_id="<r@nezinomas.example>", in_reply_to="<q@azuolas.lt>")
    for raw in (spam[0], parent, reply, spam[1]):  # batches of two: the reply is matched before the parent's commit
        dc.deliver(imap_user.login, "INBOX", raw)
    env = Env(tmp_path, batch_size=2)
    env.add(imap_user, folders=("INBOX",), email=sample.STAFF, imap_port=proxy.port, verify=False)
    assert _pass(env, proxy).mailboxes[0].archived == 2
    rules = env.store.db.execute("SELECT l.identity, k.rule FROM links k JOIN letters l ON l.id = k.letter_id"
                                 " ORDER BY l.identity").fetchall()
    assert [tuple(r) for r in rules] == [("mid:q@azuolas.lt", "customer_contact"), ("mid:r@nezinomas.example", "thread")]


def test_bodies_in_flight_stay_within_their_bound(tmp_path, dovecot, proxy, monkeypatch):
    """Letters bigger than the bound: never more than one batch's bodies asked for ahead of a commit."""
    monkeypatch.setattr(context, "BODIES_BUDGET", 1)
    most = []
    write = imap_wire.Wire._write

    def counting(self, uids, what, item):
        pending = write(self, uids, what, item)
        most.append(sum(p.item == b"BODY[]" for p in self.in_flight))
        return pending

    monkeypatch.setattr(imap_wire.Wire, "_write", counting)
    user = _mailbox_of(dovecot, "bounded", 60)
    env = Env(tmp_path, batch_size=10)
    env.add(user, folders=("INBOX",), email=sample.STAFF, imap_port=proxy.port, verify=False)
    assert _pass(env, proxy).mailboxes[0].archived == 30
    assert max(most) == 1


def test_compression_shrinks_what_a_first_pass_downloads_and_changes_nothing_else(
        tmp_path, dovecot, proxy, monkeypatch):
    """COMPRESS=DEFLATE (RFC 4978) where the server offers it (the sandbox Dovecot does: imap_zlib)."""
    user = _mailbox_of(dovecot, "compressed", 60)
    downloaded, archives = {}, {}
    for compressed in (True, False):
        if not compressed:
            monkeypatch.setattr(imap_wire, "COMPRESSION", b"X-NOT-OFFERED")
        env = Env(tmp_path / str(compressed), batch_size=10)
        env.add(user, folders=("INBOX",), email=sample.STAFF, imap_port=proxy.port, verify=False)
        assert _pass(env, proxy).mailboxes[0].archived == 30
        downloaded[compressed], archives[compressed] = proxy.bytes_down, env.snapshot()[:4]
        assert _pass(env, proxy).mailboxes[0].new == 0  # and the next pass finds it unchanged
    assert downloaded[True] < downloaded[False] / 2, downloaded
    assert archives[True] == archives[False]


class _RefusesCompress(socketserver.StreamRequestHandler):
    """Plain TCP to Dovecot, which offers COMPRESS=DEFLATE; this proxy answers that command BAD itself, as a
    proxy or server that lists it and cannot do it would."""

    server: _RewritingServer

    def handle(self) -> None:
        upstream = socket.create_connection(self.server.target)
        lock = threading.Lock()

        def down() -> None:
            with contextlib.suppress(OSError, ValueError):
                while data := upstream.recv(65536):
                    with lock:
                        self.wfile.write(data)
                        self.wfile.flush()

        threading.Thread(target=down, daemon=True).start()
        with contextlib.suppress(OSError):
            while chunk := self.rfile.read1(65536):
                kept = []
                for line in chunk.split(b"\r\n"):
                    if b" COMPRESS DEFLATE" in line.upper():
                        self.server.commands.append(b"COMPRESS")
                        with lock:
                            self.wfile.write(line.split(b" ")[0] + b" BAD Error in IMAP command: unknown\r\n")
                            self.wfile.flush()
                    else:
                        kept.append(line)
                upstream.sendall(b"\r\n".join(kept))
        upstream.close()


def test_a_server_that_lists_compress_and_refuses_it_is_read_uncompressed(tmp_path, imap_user, dovecot):
    server = _RewritingServer((dovecot.host, dovecot.imap_port), lambda line: line)
    server.RequestHandlerClass = _RefusesCompress
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = Env(tmp_path)
        _plain(env, imap_user, server.server_address[1])
        deliver_sample(imap_user)
        first = env.run().mailboxes[0]
        assert first.ok and first.archived > 0, first.errors
        assert server.commands == [b"COMPRESS"]  # asked once, refused, and the letters came uncompressed
        again = env.run().mailboxes[0]
        assert again.ok and again.archived == 0
    finally:
        server.shutdown()
        server.server_close()


def test_the_examines_numbers_win_over_a_status_written_beside_it():
    status = {b"UIDVALIDITY": 7, b"UIDNEXT": 40, b"MESSAGES": 39}
    assert imap_wire.examined_status(status, {b"UIDVALIDITY": 7, b"UIDNEXT": 41, b"EXISTS": 40}) is status
    assert imap_wire.examined_status(status, None) is status
    recreated = {b"UIDVALIDITY": 9, b"UIDNEXT": 3, b"EXISTS": 2, b"HIGHESTMODSEQ": 5}
    assert imap_wire.examined_status(status, recreated) == {b"UIDVALIDITY": 9, b"UIDNEXT": 3, b"MESSAGES": 2,
                                                            b"HIGHESTMODSEQ": 5}
