"""Letters built for the parser tests, and the invariants every parsed letter must keep."""

from __future__ import annotations

import base64

from hanna_sync.mail.message import (
    MAX_ADDRESSES_PER_HEADER,
    MAX_BODY_TEXT_CHARS,
    MAX_PARTS,
    Address,
    Attachment,
    ParsedLetter,
)

LT = "Išsiųsti ąčęėįšųūž"
LT_UTF8 = LT.encode("utf-8")
LT_1257 = LT.encode("windows-1257")
LT_885913 = LT.encode("iso-8859-13")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def qword(data: bytes) -> bytes:
    return b"".join(b"=%02X" % c for c in data)


def letter(headers: bytes = b"", body: bytes = b"", *, crlf: bool = False) -> bytes:
    """A letter with sensible default headers; `headers` lines are appended (LF separated)."""
    base = b"From: Jonas <jonas@example.lt>\nTo: ona@example.lt\n"
    raw = base + headers + (b"" if headers.endswith(b"\n") or not headers else b"\n") + b"\n" + body
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def text_letter(body: bytes, ctype: bytes = b"text/plain", charset: bytes | None = None,
                cte: bytes | None = None) -> bytes:
    h = b"Content-Type: " + ctype + (b"; charset=" + charset if charset is not None else b"") + b"\n"
    if cte:
        h += b"Content-Transfer-Encoding: " + cte + b"\n"
    return letter(h, body)


def multipart(subtype: bytes, parts: list[bytes], boundary: bytes = b"BOUND") -> tuple[bytes, bytes]:
    """(Content-Type header line, body) of a multipart made of already-rendered parts."""
    body = b"preamble\n"
    for p in parts:
        body += b"--" + boundary + b"\n" + p + b"\n"
    body += b"--" + boundary + b"--\nepilogue\n"
    return b'Content-Type: multipart/' + subtype + b'; boundary="' + boundary + b'"\n', body


def assert_sane(p: ParsedLetter) -> None:
    """Invariants that must hold for *any* input, however broken."""
    assert isinstance(p, ParsedLetter)
    strings: list[str] = [p.subject, p.body_text]
    strings += [s for s in (p.message_id, p.in_reply_to, p.auto_submitted, p.list_id,
                            p.precedence) if s is not None]
    strings += p.references
    for lst in (p.from_, p.to, p.cc, p.bcc, p.reply_to, p.sender):
        assert isinstance(lst, list)
        assert len(lst) <= MAX_ADDRESSES_PER_HEADER
        for a in lst:
            assert isinstance(a, Address)
            assert a.name or a.email
            strings += [a.name, a.email]
    for att in p.attachments:
        assert isinstance(att, Attachment)
        assert isinstance(att.size, int) and att.size >= 0
        assert "/" in att.content_type
        if att.filename is not None:
            assert att.filename
            strings.append(att.filename)
    for s in strings:
        assert isinstance(s, str)
        assert "\x00" not in s
        s.encode("utf-8")  # no lone surrogates: sqlite3 would refuse them
    assert len(p.body_text) <= MAX_BODY_TEXT_CHARS
    assert len(p.attachments) < MAX_PARTS
    if p.message_id is not None:
        assert p.message_id and "<" not in p.message_id and ">" not in p.message_id
        assert not any(c.isspace() for c in p.message_id)
    if p.date_utc is not None:
        assert p.date_utc.utcoffset() is not None
        assert p.date_utc.utcoffset().total_seconds() == 0
    if p.body_skipped:
        assert p.body_text == "" and p.attachments == []
