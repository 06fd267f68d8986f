"""How hanna-sync talks IMAP on the wire: as few round trips as the protocol allows.

At 50-150 ms from the server a waited-for answer costs more than anything hanna-sync computes, so:
the capabilities the greeting or the login's OK carry ([CAPABILITY ...], RFC 3501 7.1) are used instead
of asking again; commands that do not depend on each other's answers are written in one go and their
answers read after (RFC 3501 5.5), e.g. the login and every STATUS of a mailbox; and LOGOUT is written
without waiting for its answer. imaplib does the parsing: commands go through its tags, so its response
reader files each answer where it belongs.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient, imap4, tls
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_response

STATUS_ITEMS = (b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY")


class _GreetingCapabilities:
    """imaplib asks CAPABILITY right after the greeting; a greeting that lists them already is believed.

    Only at connect time: after STARTTLS, capabilities are asked again over TLS (RFC 3501 6.2.1), since a
    man in the middle could have put them into the plaintext part.
    """

    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]

    def _get_capabilities(self) -> None:
        greeted = self.untagged_responses.pop("CAPABILITY", None)
        if greeted and not hasattr(self, "capabilities"):
            self.capabilities = tuple(greeted[-1].decode("ascii", "replace").upper().split())
            return
        super()._get_capabilities()  # type: ignore[misc]


class _Tls(_GreetingCapabilities, tls.IMAP4_TLS):
    pass


class _Plain(_GreetingCapabilities, imap4.IMAP4WithTimeout):
    pass


class Client(IMAPClient):
    """IMAPClient without the CAPABILITY round trip when the greeting answered it."""

    status_request: StatusRequest | None = None  # STATUS written with the login, answers not read yet

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _Tls(self.host, self.port, self.ssl_context, timeout)
        return _Plain(self.host, self.port, timeout)

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
        """Folder -> its STATUS items, or the server's refusal as text (a folder renamed or deleted)."""
        imap = client._imap
        out: dict[str, dict[bytes, int] | str] = {}
        for folder, tag in zip(self.folders, self.tags, strict=True):
            try:
                typ, data = imap._command_complete("STATUS", tag)
                client._checkok("status", typ, data)
            except IMAPClientError as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                imap.untagged_responses.pop("STATUS", None)
                out[folder] = str(exc)
                continue
            _, lines = imap._untagged_response(typ, data, "STATUS")
            out[folder] = dict(_pairs(parse_response(lines)[-1]))
        return out


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
