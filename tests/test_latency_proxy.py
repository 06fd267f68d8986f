"""The latency proxy the benchmark and the round-trip tests put between hanna-sync and a server: it forwards
both ways intact and counts a client's round trips as a client waits for them."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from hanna_sync.demo.latency import LatencyProxy


class _Lines(socketserver.StreamRequestHandler):
    """A greeting, then one answer line per command line (as an IMAP server does)."""

    def handle(self) -> None:
        self.wfile.write(b"* HELLO\r\n")
        for line in self.rfile:
            self.wfile.write(b"OK " + line)
            if line.startswith(b"BYE"):
                return


@pytest.fixture
def server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Lines)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _session(port: int, commands: list[bytes], *, pipelined: bool, wait_for_bye: bool) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        f = sock.makefile("rb")
        answers = [f.readline()]
        if pipelined:
            sock.sendall(b"".join(commands))
            answers += [f.readline() for _ in commands]
        else:
            for command in commands:
                sock.sendall(command)
                answers.append(f.readline())
        sock.sendall(b"BYE\r\n")
        if wait_for_bye:
            answers.append(f.readline())
        return answers


@pytest.mark.parametrize("rtt_ms", [0, 20])
def test_each_wait_for_the_server_is_one_round_trip_and_pipelining_is_one_for_all(server, rtt_ms):
    commands = [b"A\r\n", b"B\r\n", b"C\r\n"]
    with LatencyProxy("127.0.0.1", server, rtt_ms=rtt_ms) as proxy:
        one_by_one = _session(proxy.port, commands, pipelined=False, wait_for_bye=True)
        pipelined = _session(proxy.port, commands, pipelined=True, wait_for_bye=False)
        proxy.settle()
        proxy_stats = list(proxy.connections)
    assert one_by_one[0] == b"* HELLO\r\n" and one_by_one[1:] == [b"OK " + c for c in [*commands, b"BYE\r\n"]]
    assert pipelined[1:] == [b"OK " + c for c in commands]
    # handshake, greeting -> A, A -> B, B -> C, C -> BYE, BYE's answer -> close
    assert proxy_stats[0].round_trips == 6
    # handshake, greeting -> A+B+C, answers -> BYE; the close comes before BYE's answer
    assert proxy_stats[1].round_trips == 3
    assert proxy_stats[1].bytes_up == len(b"".join(commands)) + len(b"BYE\r\n")
    assert proxy_stats[1].bytes_down >= len(b"* HELLO\r\n") + sum(len(b"OK " + c) for c in commands)


def test_a_server_that_refuses_closes_the_client_and_is_counted(server):
    with LatencyProxy("127.0.0.1", 1) as proxy:  # nothing listens on port 1
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""
        assert len(proxy.connections) == 1

