"""Fault injection for the reliability tests: an IMAP proxy that fails on cue, and archive comparisons.

`ImapProxy` sits between hanna-sync and the sandbox Dovecot on 127.0.0.1. It ends TLS on both sides
(the client sees a certificate from the sandbox CA, so certificate checking stays on), reads the
server's responses one by one (literals included, so a letter that contains "A1 OK" is not mistaken
for a response) and, at the Nth response of a kind, does what the test asked: SIGKILL the client,
drop the connection half-way through the response, answer BYE instead, cut a literal short, stall
for ever, or call a function (stop Dovecot, delete the folder). It does not pass COMPRESS=DEFLATE on in
the capabilities, so that it can read what follows. Nothing of this is in the product.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hanna_sync.db.store import Store
from hanna_sync.uidset import UidSet
from tests.helpers import serve_each_connection

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


@dataclass
class Fault:
    """What to do, and at which server response (the `at`-th of `kind`, counted over all connections)."""

    action: str  # kill | drop | bye | stall | truncate | call
    at: int
    kind: str = "tagged"  # tagged: a command's completion; fetch: an untagged FETCH carrying a literal
    call: Callable[[], object] | None = None
    delay: float | None = None  # kill only: None = before the client gets the response, else this long after
    fired: bool = False


class _Reader:
    """Whole IMAP responses from a socket: a line, and for each `{n}` at its end n more bytes and a line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\n")) < 0:
            self._fill()
        line = bytes(self.buf[: end + 1])
        del self.buf[: end + 1]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def response(self) -> tuple[bytes, int | None]:
        """(the response's bytes, offset where its first literal starts or None)."""
        parts: list[bytes] = []
        literal_at = None
        while True:
            line = self._line()
            parts.append(line)
            match = _LITERAL.search(line)
            if not match:
                return b"".join(parts), literal_at
            if literal_at is None:
                literal_at = sum(map(len, parts))
            parts.append(self._exactly(int(match.group(1))))


class ImapProxy:
    """A fault-injecting IMAP proxy in front of the sandbox Dovecot's implicit-TLS port.

    `client_tls=False` makes the side hanna-sync talks to plaintext (for the security-none tests);
    `cert` serves another certificate (for the certificate-checking tests).
    """

    def __init__(self, dovecot, client_tls: bool = True, cert: tuple[Path, Path] | None = None) -> None:
        self.dovecot = dovecot
        self.server_context: ssl.SSLContext | None = None
        if client_tls:
            self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_context.load_cert_chain(*(cert or (dovecot.cert_file, dovecot.key_file)))
        self.upstream_context = ssl.create_default_context(cafile=str(dovecot.ca_file))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.fault: Fault | None = None
        self.victim: int | None = None  # pid to SIGKILL on a kill fault
        self.tagged = 0  # tagged responses seen since the last reset
        self.fetches = 0  # FETCH responses with a literal seen since the last reset
        self.client_bytes = bytearray()  # everything clients sent, in clear
        self.commands: list[str] = []  # what clients asked, e.g. "STATUS", "UID SEARCH", "UID FETCH"
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        serve_each_connection(self.listener, self._serve)

    def reset(self, fault: Fault | None = None, victim: int | None = None) -> None:
        with self.lock:
            self.fault, self.victim = fault, victim
            self.tagged = self.fetches = 0
            self.client_bytes.clear()
            self.commands.clear()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for sock in list(self._sockets):
            _shutdown(sock)  # each connection's thread closes its own sockets (see _serve)

    def __enter__(self) -> ImapProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        self._sockets.append(conn)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one response per write: no Nagle delays
        client: socket.socket = conn
        opened: list[socket.socket] = [conn]
        try:
            # Upstream first: with Dovecot down, the client's connection ends at once, as a refusal would.
            raw = socket.create_connection((self.dovecot.host, self.dovecot.imaps_port), timeout=10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets.append(raw)
            opened.append(raw)
            upstream = self.upstream_context.wrap_socket(raw, server_hostname=self.dovecot.host)
            upstream.settimeout(None)
            self._sockets.append(upstream)
            opened.append(upstream)
            if self.server_context is not None:
                conn.settimeout(10)
                client = self.server_context.wrap_socket(conn, server_side=True)
                client.settimeout(None)
                self._sockets.append(client)
        except OSError:  # Dovecot is down, or the client refused the certificate
            for sock in opened:  # no other thread has them yet
                _close(sock)
            return
        other = threading.Thread(target=self._client_to_server, args=(client, upstream), daemon=True)
        other.start()
        self._server_to_client(upstream, client)
        # Both directions are over: only now are the sockets closed. Closing one while the other thread is
        # inside send() on it frees its descriptor number, the next accept() may get that number, and the
        # send lands in the next connection's TLS handshake (seen as SSLV3_ALERT_UNEXPECTED_MESSAGE).
        _shutdown(client)
        _shutdown(upstream)
        other.join(10)
        client.close()
        upstream.close()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                with self.lock:
                    self.client_bytes += data
                    pending += data
                    *lines, pending = pending.split(b"\r\n")
                    for line in lines:
                        words = line.split(b" ")
                        if len(words) > 1:
                            name = words[1].upper()
                            if name == b"UID" and len(words) > 2:
                                name += b" " + words[2].upper()
                            self.commands.append(name.decode("ascii", "replace"))
                upstream.sendall(data)
        except OSError:
            pass
        _shutdown(client)  # wakes the other direction; the sockets are closed once both are done
        _shutdown(upstream)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        reader = _Reader(upstream)
        try:
            while True:
                try:
                    response, literal_at = reader.response()
                except EOFError:
                    client.sendall(bytes(reader.buf))
                    break
                if literal_at is None and b"CAPABILITY " in response:  # it reads every response: no compression
                    response = response.replace(b" COMPRESS=DEFLATE", b"")
                fault = self._due(response, literal_at)
                if fault is None:
                    client.sendall(response)
                    continue
                if self._inject(fault, response, literal_at, client):
                    continue
                break
        except OSError:
            pass

    def _due(self, response: bytes, literal_at: int | None) -> Fault | None:
        """Count the response; the fault, if this is the one it waits for."""
        untagged = response.startswith((b"* ", b"+ "))
        fetch = response.startswith(b"* ") and b" FETCH (" in response[:40] and literal_at is not None
        with self.lock:
            self.tagged += not untagged
            self.fetches += fetch
            fault = self.fault
            if fault is None or fault.fired:
                return None
            count = self.tagged if fault.kind == "tagged" else self.fetches
            if (fault.kind == "tagged" and untagged) or (fault.kind == "fetch" and not fetch) or count != fault.at:
                return None
            fault.fired = True
            return fault

    def _inject(self, fault: Fault, response: bytes, literal_at: int | None, client: socket.socket) -> bool:
        """Do the fault; True when forwarding goes on afterwards."""
        if fault.action == "kill":
            if fault.delay is None:
                self._kill()
                return False
            client.sendall(response)
            threading.Timer(fault.delay, self._kill).start()
            return True
        if fault.action == "call":
            assert fault.call is not None
            fault.call()
            client.sendall(response)
            return True
        if fault.action == "drop":
            client.sendall(response[: len(response) // 2])
        elif fault.action == "truncate":
            cut = (literal_at or 0) + (len(response) - (literal_at or 0)) // 3
            client.sendall(response[:cut])
        elif fault.action == "bye":
            client.sendall(b"* BYE Server shutting down.\r\n")
        elif fault.action == "stall":
            self._closed.wait()  # hold the connection open and say nothing, until the test ends
        else:
            raise ValueError(fault.action)
        return False

    def _kill(self) -> None:
        if self.victim is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.victim, signal.SIGKILL)


def _shutdown(sock: socket.socket) -> None:
    """End both directions without freeing the descriptor (another thread may still be using it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    with contextlib.suppress(OSError):
        sock.close()


# -- comparing archives ----------------------------------------------------------------------------

@dataclass
class Archive:
    """Everything a pass writes, comparable between two databases (keyed by identity, not row ids)."""

    letters: list[tuple] = field(default_factory=list)
    locations: list[tuple] = field(default_factory=list)
    links: list[tuple] = field(default_factory=list)
    states: list[tuple] = field(default_factory=list)


def archive(store: Store) -> Archive:
    q = store.db.execute
    return Archive(
        letters=sorted(q(
            "SELECT l.identity, l.message_id, l.subject, l.body_text, l.attachments, l.size, l.body_skipped,"
            " s.raw FROM letters l LEFT JOIN letter_sources s ON s.letter_id = l.id").fetchall()),
        locations=sorted(q(
            "SELECT l.identity, p.mailbox_id, p.folder, p.uidvalidity, p.uid, p.gone_at IS NULL"
            " FROM letter_locations p JOIN letters l ON l.id = p.letter_id").fetchall()),
        links=sorted(q(
            "SELECT l.identity, k.entity_type, k.entity_id, k.rule, k.address FROM links k"
            " JOIN letters l ON l.id = k.letter_id").fetchall()),
        states=sorted(q(
            "SELECT mailbox_id, folder, uidvalidity, last_uid, uidnext, messages, seen_uids, skipped"
            " FROM folder_states").fetchall()),
    )


def check_consistent(store: Store, reference: Archive | None = None) -> None:
    """What must hold after any crash: every batch all there or not at all, and no state ahead of the data.

    With the archive of a complete clean run as `reference`: every UID a folder's state says was looked
    at, and that the clean run archived, is archived here too (the state never ran ahead of the letters).
    """
    q = store.db.execute
    assert q("SELECT count(*) FROM letters l WHERE NOT EXISTS"
             " (SELECT 1 FROM letter_sources s WHERE s.letter_id = l.id)").fetchone()[0] == 0, "letter without source"
    assert q("SELECT count(*) FROM letters l WHERE NOT EXISTS"
             " (SELECT 1 FROM letter_locations p WHERE p.letter_id = l.id)").fetchone()[0] == 0, "letter without place"
    assert q("SELECT count(*) FROM letters l WHERE NOT EXISTS"
             " (SELECT 1 FROM links k WHERE k.letter_id = l.id)").fetchone()[0] == 0, "letter without link"
    seen = {(m, f): (v, UidSet.parse(s)) for m, f, v, s in q(
        "SELECT mailbox_id, folder, uidvalidity, seen_uids FROM folder_states").fetchall()}
    for mailbox_id, folder, uidvalidity, uid in q(
            "SELECT mailbox_id, folder, uidvalidity, uid FROM letter_locations WHERE gone_at IS NULL").fetchall():
        state = seen.get((mailbox_id, folder))
        assert state and state[0] == uidvalidity and uid in state[1], f"location {folder} {uid} not in the state"
    if reference is not None:
        here = {loc[1:5] for loc in archive(store).locations}
        for _identity, mailbox_id, folder, uidvalidity, uid, live in reference.locations:
            state = seen.get((mailbox_id, folder))
            if live and state and state[0] == uidvalidity and uid in state[1]:
                assert (mailbox_id, folder, uidvalidity, uid) in here, f"{folder} UID {uid} looked at, not archived"


def write_config(directory: Path, config) -> Path:
    """A config file for a subprocess: the given config's database, secrets, batch size, concurrency, timeout."""
    path = directory / "config.toml"
    path.write_text(
        f'database = "{config.database}"\nown_domains = {list(config.own_domains)!r}\n'.replace("'", '"')
        + f'[secrets]\nfile = "{config.secrets_file}"\nkey_file = "{config.secrets_key_file}"\n'
        + f"[scan]\nbatch_size = {config.scan.batch_size}\nconcurrency = {config.scan.concurrency}\n"
        + f"[network]\ntimeout = {config.network.timeout}\n"
    )
    return path
