"""Making bytes and text safe to work on and to store: one line ending, no NUL, no lone surrogates, and
no control characters that could drive a terminal when `show` prints a hostile subject."""

from __future__ import annotations

import re

from hanna_sync.mail.limits import MAX_HEADER_TEXT_CHARS


def to_bytes(raw: object) -> bytes:
    """Accept what callers might plausibly pass (bytes-likes, str, None) without raising."""
    try:
        if isinstance(raw, bytes):
            return raw
        if isinstance(raw, (bytearray, memoryview)):
            return bytes(raw)
        if isinstance(raw, str):
            return raw.encode("utf-8", "surrogateescape")
    except Exception:
        pass
    return b""


def normalize_newlines(data: bytes) -> bytes:
    """CRLF and lone CR become LF, so every later scan deals with one line ending only."""
    if b"\r" not in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # C1 too: U+009B is a terminal CSI


def clean(s: str) -> str:
    """Make text safe to store: no NUL bytes and no lone surrogates (sqlite3 refuses those)."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8", "replace")
    return s


_BODY_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]+")


def clean_body(s: str) -> str:
    """Body text for storage and search: LF line ends, no BOM, no control characters but
    tab, newline and form feed (binary junk in a mislabelled part would otherwise end up here)."""
    s = clean(s)
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _BODY_CONTROL_RE.sub("", s)
    return s.lstrip("\ufeff")


def one_line(s: str, limit: int = MAX_HEADER_TEXT_CHARS) -> str:
    """Header text is single-line: control characters (CR, LF, TAB, ...) become one space."""
    s = CONTROL_RE.sub(" ", clean(s)).strip()
    if len(s) > limit:
        s = s[:limit].rstrip()
    return s

