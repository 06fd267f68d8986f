"""Header fields: the header block split into unfolded (name, raw value) pairs, and RFC 2047 encoded
words decoded to text.

Values stay raw bytes until a field is needed: most headers of a letter (Received, DKIM, ...) are never
decoded at all.
"""

from __future__ import annotations

import re

from hanna_sync.mail.charsets import decode_bytes
from hanna_sync.mail.limits import MAX_HEADER_FIELDS, MAX_HEADER_LINES, MAX_HEADER_TEXT_BYTES
from hanna_sync.mail.text import one_line
from hanna_sync.mail.transfer import b64_decode

# Linear: every piece is bounded or stops at the next '?', and each attempt starts at a "=?".
_EW_RE = re.compile(rb"=\?([^?\s]{1,64})\?([BbQq])\?([^?]*)\?=")
_QP_HEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _q_word_decode(text: bytes) -> bytes:
    text = text.replace(b"_", b" ")
    return _QP_HEX_RE.sub(lambda m: bytes((int(m.group(1), 16),)), text)


def decode_words(raw: bytes, fallback: str | None) -> str:
    """Decode a header value: encoded words plus raw 8-bit text in unknown charsets.

    Adjacent encoded words in the same charset are joined *before* decoding, because mailers split
    multi-byte characters across words.  Whitespace between encoded words is dropped (RFC 2047
    6.2).  Malformed words (bad base64, bad charset, missing separators) are decoded leniently.
    """
    if b"=?" not in raw:
        return decode_bytes(raw, None, fallback)
    out: list[str] = []
    pending_cs: str | None = None
    pending = bytearray()
    last = 0
    prev_word = False

    def flush() -> None:
        nonlocal pending_cs
        if pending_cs is not None:
            out.append(decode_bytes(bytes(pending), pending_cs, fallback))
            pending.clear()
            pending_cs = None

    for m in _EW_RE.finditer(raw):
        literal = raw[last:m.start()]
        if not (prev_word and not literal.strip(b" \t\n")):
            flush()
            if literal:
                out.append(decode_bytes(literal, None, fallback))
        charset = m.group(1).decode("ascii", "replace").split("*", 1)[0].lower()
        text = m.group(3)
        decoded = b64_decode(text) if m.group(2) in (b"B", b"b") else _q_word_decode(text)
        if pending_cs != charset:
            flush()
            pending_cs = charset
        pending.extend(decoded)
        last = m.end()
        prev_word = True
    flush()
    if last < len(raw):
        out.append(decode_bytes(raw[last:], None, fallback))
    return "".join(out)


_HEADER_NAME_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def parse_header_block(
    data: bytes, start: int, end: int, wanted: frozenset[str] | None = None
) -> tuple[list[tuple[str, bytes]], int]:
    """Split the header block of the entity data[start:end]; return (headers, body_start).

    Follows the stdlib's rules for where headers end: at a blank line, or at the first line that
    is neither "name:" nor a continuation (then that line starts the body).  A leading mbox
    "From " line is skipped.  `data` must already have LF line endings.  Values are unfolded
    (line breaks removed, the folding whitespace kept) and not decoded.
    """
    headers: list[tuple[str, bytes]] = []
    cur_name: str | None = None
    cur_parts: list[bytes] = []
    pos = start
    lines = 0
    first = True

    def flush() -> None:
        if cur_name is not None and len(headers) < MAX_HEADER_FIELDS:
            headers.append((cur_name, b"".join(cur_parts)))

    while pos < end:
        lines += 1
        if lines > MAX_HEADER_LINES:
            # Hostile header block: stop collecting, the body starts after the next blank line.
            flush()
            cur_name = None
            blank = data.find(b"\n\n", pos, end)
            return headers, end if blank == -1 else blank + 2
        nl = data.find(b"\n", pos, end)
        line_end = end if nl == -1 else nl
        next_pos = end if nl == -1 else nl + 1
        if line_end == pos:  # blank line: end of headers
            pos = next_pos
            break
        c = data[pos]
        if c == 0x20 or c == 0x09:  # continuation line
            if cur_name is not None and len(headers) < MAX_HEADER_FIELDS:
                cur_parts.append(data[pos:line_end])
            pos = next_pos
            first = False
            continue
        if first and data.startswith(b"From ", pos, line_end):
            pos = next_pos
            first = False
            continue
        first = False
        m = _HEADER_NAME_RE.match(data, pos, line_end)
        if m is None:  # not a header: the body starts here, without a separator line
            break
        flush()
        cur_name = m.group(1).decode("ascii").lower()
        if wanted is not None and cur_name not in wanted:
            cur_name = None  # not needed: skip it and its continuation lines
        cur_parts = [data[m.end():line_end]] if cur_name is not None else []
        pos = next_pos
    flush()
    return headers, min(pos, end)


def first_value(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def all_values(headers: list[tuple[str, bytes]], name: str) -> list[bytes]:
    return [v for n, v in headers if n == name]


def text_header(headers: list[tuple[str, bytes]], name: str, fallback: str | None) -> str | None:
    raw = first_value(headers, name)
    if raw is None:
        return None
    return one_line(decode_words(raw[:MAX_HEADER_TEXT_BYTES].strip(), fallback))

