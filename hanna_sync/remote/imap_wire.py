"""How hanna-sync talks IMAP on the wire: as few round trips and bytes as the protocol allows.

At 50-150 ms from the server a waited-for answer costs more than anything hanna-sync computes, so:
the capabilities the greeting or the login's OK carry ([CAPABILITY ...], RFC 3501 7.1) are used instead
of asking again; commands that do not depend on each other's answers are written in one go and their
answers read after (RFC 3501 5.5): the login and every STATUS of a mailbox, a folder's STATUS and
EXAMINE, the FETCHes of several batches (`Wire`); LOGOUT is written without waiting for its answer; and
COMPRESS=DEFLATE (RFC 4978) is used where offered. imaplib still reads and parses every response: the
commands carry its tags.
"""

from __future__ import annotations

import imaplib
import io
import logging
import re
import socket
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient, imap4, tls
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response, parse_response

log = logging.getLogger(__name__)

STATUS_ITEMS = (b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY")
COMPRESSION = b"COMPRESS=DEFLATE"


class _Inflating(io.RawIOBase):
    """The server's side of a COMPRESS=DEFLATE connection, inflated: a raw stream under imaplib's reader.
    Inflates no more than the reader asks for at a time, so a small message cannot blow up memory."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.inflater = sock, zlib.decompressobj(-15)  # raw DEFLATE (RFC 1951), no zlib header

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            compressed = self.inflater.unconsumed_tail or self.sock.recv(65536)
            if not compressed:
                return 0
            data = self.inflater.decompress(compressed, len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)


class _Frugal:
    """imaplib, without asking CAPABILITY when the greeting lists them, and compressing once told to.

    The greeting's capabilities are believed at connect time only: after STARTTLS they are asked again
    over TLS (RFC 3501 6.2.1), since a man in the middle could have put them into the plaintext part.
    """

    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]

    def _get_capabilities(self) -> None:
        greeted = self.untagged_responses.pop("CAPABILITY", None)
        if greeted and not hasattr(self, "capabilities"):
            self.capabilities = tuple(greeted[-1].decode("ascii", "replace").upper().split())
            return
        super()._get_capabilities()  # type: ignore[misc]

    _deflater: Any = None  # set once COMPRESS=DEFLATE is on
    _partial = b""  # the start of a line not sent yet

    def send(self, data: bytes) -> None:
        """Whole lines only: imapclient writes a command in pieces (SEARCH's criteria, then its CRLF), and each
        piece would be a packet (and a compressed block) of its own. The server waits for the line's end
        anyway, and a client never waits for the server in the middle of a line."""
        if not data.endswith(b"\r\n"):
            self._partial += data
            return
        data, self._partial = self._partial + data, b""
        if self._deflater is not None:
            data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)  # type: ignore[misc]

    def compressing(self) -> None:
        """From now on both ways compressed (RFC 4978: the server's after its OK, ours after the command)."""
        self._deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.file = io.BufferedReader(_Inflating(self.sock), 1 << 16)  # type: ignore[attr-defined]


class _Tls(_Frugal, tls.IMAP4_TLS):
    pass


class _Plain(_Frugal, imap4.IMAP4WithTimeout):
    pass


def examined_status(status: dict[bytes, int], selected: dict[bytes, Any] | None) -> dict[bytes, int]:
    """A folder's numbers as its EXAMINE found them where they disagree with the STATUS written beside it: a
    UIDVALIDITY changed between the two (the folder recreated meanwhile) makes the EXAMINE's UIDs the ones
    the FETCHes will see, so the pass must go by those, not by the STATUS's."""
    if not selected or b"UIDVALIDITY" not in selected or int(selected[b"UIDVALIDITY"]) == int(status[b"UIDVALIDITY"]):
        return status
    log.warning("UIDVALIDITY changed between STATUS and EXAMINE (%s -> %s): the EXAMINE's numbers are used",
                status[b"UIDVALIDITY"], selected[b"UIDVALIDITY"])
    examined = {b"UIDVALIDITY": int(selected[b"UIDVALIDITY"]),
                b"UIDNEXT": int(selected.get(b"UIDNEXT", status[b"UIDNEXT"])),
                b"MESSAGES": int(selected.get(b"EXISTS", status[b"MESSAGES"]))}
    if b"HIGHESTMODSEQ" in selected:
        examined[b"HIGHESTMODSEQ"] = int(selected[b"HIGHESTMODSEQ"])
    return examined


def _accepted(imap: imaplib.IMAP4, tag: bytes) -> bool:
    """Whether the server took COMPRESS DEFLATE: a NO, or a BAD from a server (or proxy) that lists it and does
    not do it, only means the letters come uncompressed; a lost connection is still an error."""
    try:
        return bool(imap._command_complete("COMPRESS", tag)[0] == "OK")
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        return False


class Client(IMAPClient):
    """IMAPClient on `_Frugal`'s imaplib, with the pipelined commands a pass uses."""

    status_request: StatusRequest | None = None  # STATUS written with the login, answers not read yet
    compress_refused = False  # the server listed COMPRESS=DEFLATE and refused it: not asked again

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _Tls(self.host, self.port, self.ssl_context, timeout)
        return _Plain(self.host, self.port, timeout)

    def status_and_examine(self, folder: str, items: tuple[bytes, ...]) -> tuple[dict[bytes, int], dict[bytes, Any]]:
        """STATUS and EXAMINE (read-only: no flag can change) of a folder in one write, and COMPRESS DEFLATE
        after them where the server offers it and it is not on yet: letters come next. Returns what
        folder_status and select_folder return, and raises what they raise."""
        imap = self._imap
        compress = (COMPRESSION in self.capabilities() and getattr(imap, "_deflater", False) is None
                    and not self.compress_refused)
        imap.untagged_responses = {}  # as imaplib's select: the EXAMINE's answers alone are read
        with one_write(imap):
            request = StatusRequest.written(self, [folder], items)
            examine = write_command(imap, b"EXAMINE", _folder_argument(self, folder))
            compressing = write_command(imap, b"COMPRESS", b"DEFLATE") if compress else None
        status = request.answers(self)[folder]
        typ, data = imap._command_complete("EXAMINE", examine)
        if compressing is not None:
            if _accepted(imap, compressing):
                imap.compressing()
            else:
                self.compress_refused = True  # asked once a session
        if isinstance(status, str):
            raise IMAPClientError(status)
        self._checkok("examine", typ, data)
        imap.state, imap.is_readonly = "SELECTED", True
        return status, self._process_select_response(imap.untagged_responses)

    def folder_statuses(self, folders: list[str], items: tuple[bytes, ...]) -> dict[str, dict[bytes, int] | str]:
        """Every folder's STATUS in one round trip (a method, so TokenRenewingClient repeats it after a renewal)."""
        with one_write(self._imap):
            request = StatusRequest.written(self, folders, items)
        return request.answers(self)


@contextmanager
def one_write(imap: imaplib.IMAP4) -> Iterator[None]:
    """Everything imaplib sends inside the block goes out in one write at its end: one TLS record, one
    segment, no Nagle delay between commands. Nothing goes out when the block fails."""
    parts: list[bytes] = []
    imap.send = parts.append  # type: ignore[method-assign,assignment]  # the instance's, shadowing the class's
    try:
        yield
    finally:
        del imap.send
    if parts:
        imap.send(b"".join(parts))


def write_command(imap: imaplib.IMAP4, *words: bytes) -> bytes:
    """Send one command without waiting (imaplib's own `_command` refuses STATUS before the login's answer);
    its answer is read with `imap._command_complete(name, tag)`."""
    tag = imap._new_tag()  # registered: the reader files the tagged answer
    imap.send(b" ".join((tag, *words)) + b"\r\n")
    return tag


@dataclass
class StatusRequest:
    """STATUS commands of several folders, written in one go; their answers read after, in order."""

    folders: list[str]
    tags: list[bytes]

    @classmethod
    def written(cls, client: IMAPClient, folders: list[str], items: tuple[bytes, ...]) -> StatusRequest:
        """Written now: inside `one_write`, so that they go out together (with the login, when in its write)."""
        what = b"(" + b" ".join(items) + b")"
        return cls(folders, [write_command(client._imap, b"STATUS", _folder_argument(client, f), what)
                             for f in folders])

    def answers(self, client: IMAPClient) -> dict[str, dict[bytes, int] | str]:
        """Folder -> its STATUS items, or the server's refusal as text (a folder renamed or deleted).

        Each answer is known by the folder it names: a server may answer pipelined commands out of order.
        """
        imap = client._imap
        out: dict[str, dict[bytes, int] | str] = {}
        named: dict[bytes, dict[bytes, int]] = {}
        own: dict[str, list[dict[bytes, int]]] = {}  # what came with each folder's own completion
        for folder, tag in zip(self.folders, self.tags, strict=True):
            try:
                typ, data = imap._command_complete("STATUS", tag)
                client._checkok("status", typ, data)
            except IMAPClientError as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                out[folder] = str(exc)
            finally:
                lines = imap.untagged_responses.pop("STATUS", [])
            parsed = parse_response(lines) if lines else []
            own[folder] = [dict(_pairs(items)) for items in parsed[1::2]]
            named.update(zip(map(_name_bytes, parsed[0::2]), own[folder], strict=False))
        for folder in self.folders:
            if folder in out:
                continue
            name = _folder_argument(client, folder)[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            answer = named.get(name) or (named.get(b"INBOX") if name.upper() == b"INBOX" else None)
            out[folder] = answer or (own[folder][-1] if own[folder] else "status failed: no STATUS answer")
        return out


def _name_bytes(name: Any) -> bytes:
    return name if isinstance(name, bytes) else str(name).encode("utf-8")


def status_items(capabilities: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """What a pass asks STATUS for: HIGHESTMODSEQ too where the server says it has CONDSTORE."""
    return STATUS_ITEMS + (b"HIGHESTMODSEQ",) if b"CONDSTORE" in capabilities else STATUS_ITEMS


def write_status(client: IMAPClient, folders: list[str]) -> None:
    """The folders' STATUS written now (inside the login's write), as `client.status_request`."""
    client.status_request = StatusRequest.written(client, folders, status_items(client.capabilities()))


def _folder_argument(client: IMAPClient, folder: str) -> bytes:
    argument = client._normalise_folder(folder)
    return argument if isinstance(argument, bytes) else argument.encode("ascii")


def _pairs(items: tuple[Any, ...]) -> Iterator[tuple[bytes, int]]:
    for i in range(0, len(items) - 1, 2):
        yield items[i].upper() if isinstance(items[i], bytes) else str(items[i]).upper().encode(), items[i + 1]


def logout_and_close(client: IMAPClient) -> None:
    """LOGOUT written, the connection closed without waiting for the server's BYE: nothing is left to learn
    from it, and waiting would cost a round trip per mailbox."""
    imap = client._imap
    if imap.state != "LOGOUT":
        imap.state = "LOGOUT"
        with suppress(OSError):
            write_command(imap, b"LOGOUT")
    client.shutdown()


# -- FETCH commands in flight: the next batches' header fields and bodies while one batch is committed --

_FETCH_START = re.compile(rb"^\d+ \(")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FETCH_GM_MSGID = re.compile(rb"\bX-GM-MSGID (\d+)")
_FETCH_GM_THRID = re.compile(rb"\bX-GM-THRID (\d+)")
GMAIL_EXTENSION = b"X-GM-EXT-1"


@dataclass(frozen=True)
class HeaderFields:
    """What the hot FETCH returns of one letter."""

    size: int  # RFC822.SIZE
    raw: bytes  # the header fields asked for
    gm_msgid: str | None = None  # Gmail's X-GM-MSGID: one id per message, whichever label or folder shows it
    gm_thrid: str | None = None  # Gmail's X-GM-THRID: its conversation


@dataclass(eq=False)
class Pending:
    """A FETCH written, its answer not complete yet (or complete, and kept until asked for)."""

    tag: bytes
    uids: set[int]
    item: bytes  # how its responses name what it asked for, e.g. b"BODY[]"
    lines: list[Any] = field(default_factory=list)  # its FETCH responses, as imaplib gives them
    refused: list[Any] | None = None  # the server's NO
    complete: bool = False


@dataclass
class Wire:
    """FETCH commands in flight on one connection. A server may answer pipelined commands in any order,
    even interleaved (Dovecot runs FETCHes side by side): each response goes to the command that asked
    for its UID and item, whichever command's completion it arrived with. Unsolicited FETCH responses
    (another client changing flags) belong to none and are dropped.

    Keeps no more than the caller has in flight: the caller bounds that (a few batches).
    """

    client: IMAPClient
    in_flight: deque[Pending] = field(default_factory=deque)

    def header_fields(self, uids: list[int], fields: str, *, gmail: bool = False) -> Pending:
        """UID, size and the header fields with BODY.PEEK (flags untouched); with `gmail` (the server has
        X-GM-EXT-1) Gmail's message and thread ids too. Read with `headers()`."""
        gm_items = b"X-GM-MSGID X-GM-THRID " if gmail else b""
        what = b"(UID RFC822.SIZE " + gm_items + b"BODY.PEEK[HEADER.FIELDS (" + fields.encode("ascii") + b")])"
        return self._write(uids, what, b"BODY[HEADER.FIELDS")

    def bodies(self, uids: list[int], item: bytes) -> Pending:
        """Whole letters (BODY.PEEK[]) or their headers (BODY.PEEK[HEADER]), never setting \\Seen."""
        return self._write(uids, b"(" + item + b")", item.replace(b".PEEK", b""))

    def _write(self, uids: list[int], what: bytes, item: bytes) -> Pending:
        tag = write_command(self.client._imap, b"UID FETCH", ",".join(map(str, uids)).encode("ascii"), what)
        pending = Pending(tag, set(uids), item)
        self.in_flight.append(pending)
        return pending

    def answer(self, pending: Pending) -> list[Any]:
        """The command's FETCH responses; an IMAPClientError when the server refused it."""
        while not pending.complete:
            self._complete_oldest()
        if pending.refused is not None:
            self.client._checkok("fetch", "NO", pending.refused)
        return pending.lines

    def _complete_oldest(self) -> None:
        imap = self.client._imap
        head = self.in_flight[0]
        typ, data = imap._command_complete("FETCH", head.tag)
        self._route(imap.untagged_responses.pop("FETCH", []))
        self.in_flight.popleft()
        head.complete, head.refused = True, None if typ == "OK" else data

    def _route(self, lines: list[Any]) -> None:
        """Each response to the command in flight that asked for it (its lines: the start, with the
        literal when there is one, and what follows the literal)."""
        responses: list[list[Any]] = []
        for line in lines:
            start = line[0] if isinstance(line, tuple) else line
            if isinstance(start, bytes) and (not responses or _FETCH_START.match(start)):
                responses.append([line])
            else:
                responses[-1].append(line)
        for response in responses:
            meta = b"".join(line[0] if isinstance(line, tuple) else line for line in response)
            uid = _FETCH_UID.search(meta)
            for pending in self.in_flight:
                if uid and int(uid.group(1)) in pending.uids and pending.item in meta:
                    pending.lines.extend(response)
                    break

    def headers(self, pending: Pending) -> dict[int, HeaderFields]:
        """UID -> size and raw header fields, parsed straight from imaplib's reply.

        The one hot command of a first pass: imapclient's general response parser cost as much as the
        server's work for it, while a FETCH of a few known items needs only the numbers and the literal.
        Unsolicited FETCH responses (another client changing flags) start their own entry and are ignored.
        """
        entries: list[list[bytes]] = []  # [meta bytes, literal] per response
        for item in self.answer(pending):
            if isinstance(item, tuple):
                entries.append([item[0], item[1]])
            elif isinstance(item, bytes) and entries and not _FETCH_START.match(item):
                entries[-1][0] += item  # the rest of the response after its literal, e.g. b" RFC822.SIZE 12)"
            elif isinstance(item, bytes):
                entries.append([item, b""])  # a response without a literal (empty header fields, or unsolicited)
        out: dict[int, HeaderFields] = {}
        for meta, literal in entries:
            uid, size = _FETCH_UID.search(meta), _FETCH_SIZE.search(meta)
            if uid and size and b"BODY[HEADER.FIELDS" in meta:
                msgid, thrid = _FETCH_GM_MSGID.search(meta), _FETCH_GM_THRID.search(meta)
                out[int(uid.group(1))] = HeaderFields(int(size.group(1)), literal, msgid and msgid.group(1).decode(),
                                                      thrid and thrid.group(1).decode())
        return out

    def fetched(self, pending: Pending) -> dict[int, dict[bytes, Any]]:
        """UID -> the items, as IMAPClient.fetch gives them: only the UIDs asked for."""
        response = parse_fetch_response(self.answer(pending), self.client.normalise_times, True)
        return {uid: response[uid] for uid in sorted(pending.uids) if uid in response}

    def drain(self) -> None:
        """Read whatever is still in flight (a batch loop that stopped early), so no answer is left for the
        next command to trip over."""
        while self.in_flight:
            self._complete_oldest()
