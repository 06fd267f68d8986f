"""Round trips and bytes of a pass, counted through the latency proxy (hanna_sync/demo/latency.py): what a
mailbox costs at network distance, asserted as counts, never as times."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

from hanna_sync.demo.latency import LatencyProxy
from hanna_sync.remote import imap
from tests.helpers import Env, deliver_sample

FOLDERS = {1: ("INBOX",), 2: ("INBOX", "Išsiųsti"), 5: ("INBOX", "Išsiųsti", "Archyvas", "Klientai", "Tiekėjai")}


@pytest.fixture
def proxy(dovecot) -> Iterator[LatencyProxy]:
    if not dovecot.running:
        dovecot.start()
    with LatencyProxy(dovecot.host, dovecot.imaps_port) as p:
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
            with contextlib.suppress(OSError):  # the client went first
                while data := reader.read1(65536):
                    self.wfile.write(data)
                    self.wfile.flush()

        threading.Thread(target=down, daemon=True).start()
        while line := self.rfile.readline():
            words = line.split(b" ")
            self.server.commands.append(words[1].upper().strip() if len(words) > 1 else b"")
            upstream.sendall(line)
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
