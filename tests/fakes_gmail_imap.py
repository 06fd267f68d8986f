"""A local fake of Gmail's IMAP server (imap.gmail.com:993): TLS on 127.0.0.1 in front of the sandbox Dovecot.

The mail is Dovecot's; the fake adds what makes Gmail's IMAP Gmail's, as far as hanna-sync uses it:

* capability `X-GM-EXT-1` (in the greeting, the login's OK and CAPABILITY), off with `gm_ext=False`, which
  makes the fake a plain relay that only records the commands;
* `X-GM-MSGID` and `X-GM-THRID` in UID FETCH: the items are taken out of the command Dovecot gets and put
  into each FETCH response. The ids are derived from the letter itself, so one letter delivered into
  INBOX, a label folder and `[Gmail]/All Mail` has one X-GM-MSGID wherever it is (Gmail: one message,
  many labels). The thread id is that of the thread's first letter: the first of its References (or
  In-Reply-To), or `threads[message_id]` where a test says a letter joins a thread without either
  (Gmail also threads by subject);
* the special-use flags Gmail gives: `\\All` on `[Gmail]/All Mail`, `\\Sent` on `[Gmail]/Sent Mail`.

Unlike Gmail it does not offer COMPRESS=DEFLATE: it has to read every command and response.

The ids come from a side connection to Dovecot (EXAMINE and BODY.PEEK[HEADER] only, so it changes no
flag either). Everything else passes byte for byte; every client command line is kept in `commands`
(with the folder it was sent in), the LOGIN password masked.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy

from imapclient import IMAPClient, imap_utf7

from hanna_sync.demo.sandbox import CertificateAuthority, Dovecot
from tests.helpers import serve_each_connection

SPECIAL_USE = {b'"[Gmail]/All Mail"': b"\\All", b'"[Gmail]/Sent Mail"': b"\\Sent"}
_GM_ITEMS = re.compile(rb" ?X-GM-(MSGID|THRID|LABELS)\b", re.IGNORECASE)
_FETCH_COMMAND = re.compile(rb"^(\S+) UID FETCH ", re.IGNORECASE)
_SELECT = re.compile(rb"^\S+ (?:SELECT|EXAMINE) (.+?)(?: \(.*\))?$", re.IGNORECASE)
_LOGIN = re.compile(rb"^(\S+ LOGIN (?:\"[^\"]*\"|\S+) ).*", re.IGNORECASE)
_ATOM_OR_QUOTED = rb'("(?:[^"\\]|\\.)*"|\S+)'
_LOGIN_ARGS = re.compile(rb"^\S+ LOGIN " + _ATOM_OR_QUOTED + rb" " + _ATOM_OR_QUOTED + rb"$", re.IGNORECASE)
_FETCH_RESPONSE = re.compile(rb"^\* \d+ FETCH \(")
_CAPABILITY = re.compile(rb"(CAPABILITY [^\]\r\n]*)")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


def gm_id(text: str) -> int:
    """A 63-bit id as Gmail gives them (decimal, below 2**63), the same for the same text."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass
class Command:
    folder: str | None  # selected when the command was sent
    line: bytes  # as sent, without CRLF


@dataclass
class FakeGmailImap:
    """imap.gmail.com:993 with app passwords: Dovecot's accounts and passwords, Gmail's extensions."""

    ca: CertificateAuthority
    dovecot: Dovecot
    gm_ext: bool = True
    threads: dict[str, str] = field(default_factory=dict)  # Message-ID -> the Message-ID of its thread's first letter
    commands: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        cert, key = self.ca.issue(["127.0.0.1", "localhost"])
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        serve_each_connection(self.sock, self._session)

    def close(self) -> None:
        self.sock.close()

    def body_fetches(self) -> list[tuple[str | None, int]]:
        """(folder, UID) of every whole letter the client asked for (BODY.PEEK[] or BODY[])."""
        out = []
        for command in self.commands:
            found = re.match(rb"^\S+ UID FETCH (\S+) .*\bBODY(?:\.PEEK)?\[\]", command.line, re.IGNORECASE)
            if found:
                for part in found.group(1).split(b","):
                    low, _, high = part.partition(b":")
                    out.extend((command.folder, uid) for uid in range(int(low), int(high or low) + 1))
        return out

    def ids(self, login: str, password: str, folder: str) -> dict[int, tuple[int, int]]:
        """UID -> (X-GM-MSGID, X-GM-THRID) of the folder's letters, read from Dovecot read-only."""
        dc = self.dovecot
        with IMAPClient(dc.host, dc.imaps_port, ssl_context=ssl.create_default_context(cafile=str(dc.ca_file))) as c:
            c.login(login, password)
            c.select_folder(folder, readonly=True)
            uids = c.search()
            fetched = c.fetch(uids, ["BODY.PEEK[HEADER]"]) if uids else {}
        out = {}
        for uid, data in fetched.items():
            header = data[b"BODY[HEADER]"]
            parsed = message_from_bytes(header, policy=policy.compat32)
            own = (parsed.get("Message-ID") or "").strip()
            chain = (parsed.get("References") or parsed.get("In-Reply-To") or "").split()
            root = self.threads.get(own) or (chain[0] if chain else own)
            key = own or "sha256:" + hashlib.sha256(header).hexdigest()
            out[uid] = (gm_id(key), gm_id(root or key))
        return out

    def _session(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        dc = self.dovecot
        backend = ssl.create_default_context(cafile=str(dc.ca_file)).wrap_socket(
            socket.create_connection((dc.host, dc.imaps_port), timeout=10), server_hostname=dc.host)
        try:
            _Relay(self, tls, backend).run()
        except OSError:
            pass
        finally:
            backend.close()
            tls.close()


class _Relay:
    """One session: client and Dovecot both ways in one thread (a TLS socket read in one thread while
    another writes it can stall), line by line, literals passed through as they are."""

    def __init__(self, fake: FakeGmailImap, tls: ssl.SSLSocket, backend: ssl.SSLSocket) -> None:
        self.fake, self.tls, self.backend = fake, tls, backend
        self.login: tuple[str, str] | None = None  # the side connection's: what the client logged in with
        self.folder: str | None = None
        self.gm_tags: dict[bytes, dict[int, tuple[int, int]]] = {}  # FETCH tags that asked for X-GM items
        self.from_client = _Lines()
        self.from_server = _Lines()

    def run(self) -> None:
        while True:
            ready = [sock for sock in (self.tls, self.backend) if sock.pending()]
            if not ready:
                ready = select.select([self.tls, self.backend], [], [], 60)[0]
                if not ready:
                    return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is self.backend:
                    self.tls.sendall(b"".join(self._server(line, literal) for line, literal in self.from_server.feed(data)))
                else:
                    self.backend.sendall(b"".join(self._client(line, literal) for line, literal in self.from_client.feed(data)))

    def _client(self, line: bytes, literal: bool) -> bytes:
        if literal:
            return line
        bare = line.rstrip(b"\r\n")
        fake = self.fake
        fake.commands.append(Command(self.folder, _LOGIN.sub(rb"\1***", bare)))
        if found := _LOGIN_ARGS.match(bare):
            self.login = _unquoted(found.group(1)), _unquoted(found.group(2))
        if found := _SELECT.match(bare):
            name = found.group(1)
            self.folder = imap_utf7.decode(_unquoted(name).encode())
        if fake.gm_ext and (found := _FETCH_COMMAND.match(bare)) and _GM_ITEMS.search(bare):
            assert self.login is not None and self.folder is not None
            self.gm_tags[found.group(1)] = fake.ids(*self.login, self.folder)
            return _GM_ITEMS.sub(b"", bare).replace(b"( ", b"(") + b"\r\n"
        return line

    def _server(self, line: bytes, literal: bool) -> bytes:
        if literal:
            return line
        if b"CAPABILITY " in line:  # not COMPRESS=DEFLATE (Gmail has it): the fake reads every line
            line = line.replace(b" COMPRESS=DEFLATE", b"")
        if self.fake.gm_ext and b"CAPABILITY " in line:
            line = _CAPABILITY.sub(lambda m: m.group(1) + b" X-GM-EXT-1", line, count=1)
        if line.startswith(b"* LIST ") and self.fake.gm_ext:
            for name, flag in SPECIAL_USE.items():
                if line.rstrip(b"\r\n").endswith(b" " + name):
                    line = line.replace(b"* LIST (", b"* LIST (" + flag + b" ", 1).replace(b" )", b")")
        if self.gm_tags and _FETCH_RESPONSE.match(line):
            ids = next(iter(self.gm_tags.values()))
            uid = re.search(rb"\bUID (\d+)", line)
            if uid and int(uid.group(1)) in ids:
                msgid, thrid = ids[int(uid.group(1))]
                line = line.replace(b" FETCH (", f" FETCH (X-GM-THRID {thrid} X-GM-MSGID {msgid} ".encode(), 1)
        tag = line.split(b" ", 1)[0]
        self.gm_tags.pop(tag, None)
        return line


def _unquoted(word: bytes) -> str:
    if word.startswith(b'"'):
        word = re.sub(rb"\\(.)", rb"\1", word[1:-1])
    return word.decode()


class _Lines:
    """Cuts a byte stream into IMAP lines and the literals that follow them ({n} at a line's end)."""

    def __init__(self) -> None:
        self.waiting = b""
        self.literal = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self.waiting += data
        out: list[tuple[bytes, bool]] = []
        while self.waiting:
            if self.literal:
                chunk, self.waiting = self.waiting[: self.literal], self.waiting[self.literal :]
                self.literal -= len(chunk)
                out.append((chunk, True))
                continue
            line, newline, rest = self.waiting.partition(b"\r\n")
            if not newline:
                break
            self.waiting = rest
            out.append((line + newline, False))
            if found := _LITERAL.search(line + newline):
                self.literal = int(found.group(1))
        return out
