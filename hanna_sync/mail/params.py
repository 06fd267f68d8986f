"""MIME parameters of Content-Type and Content-Disposition (RFC 2045), with RFC 2231 continuations and
charsets, and the RFC 2047 words Outlook and Gmail put in file names anyway."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from hanna_sync.mail.charsets import decode_bytes
from hanna_sync.mail.headers import decode_words
from hanna_sync.mail.limits import MAX_NAME_CHARS, MAX_PARAM_HEADER_BYTES
from hanna_sync.mail.text import one_line

_PARAM_SPLIT_RE = re.compile(rb'[;"\\]')
_PARAM_NAME_RE = re.compile(r"^([^*]+?)(?:\*(\d{1,4}))?(\*)?$")


@dataclass
class Param:
    """One parameter as the letter wrote it; decoded to text only when asked (`param_text`)."""

    value: bytes  # raw (unquoted; percent-decoded for RFC 2231 extended values)
    charset: str | None  # RFC 2231 charset, if the value was extended
    extended: bool


def _unquote(value: bytes) -> bytes:
    """Strip a quoted-string's quotes and backslash escapes; unterminated quotes run to the end."""
    value = value.strip()
    if not value.startswith(b'"'):
        return value
    out = bytearray()
    i = 1
    n = len(value)
    j = k = 0  # next quote / backslash at or after i; re-searched only once passed (linear)
    while i < n:
        if j != -1 and j < i:
            j = value.find(b'"', i)
        if k != -1 and k < i:
            k = value.find(b"\\", i)
        if k != -1 and (j == -1 or k < j):
            out += value[i:k]
            out += value[k + 1:k + 2]
            i = k + 2
            continue
        if j == -1:
            out += value[i:]
            break
        out += value[i:j]
        break
    return bytes(out)


def parse_params(raw: bytes | None) -> tuple[str, dict[str, Param]]:
    """Parse `value; a=b; c="d"; e*=utf-8''%C4%85; f*0*=...; f*1=...` linearly.

    Returns the lower-cased main value and the parameters by lower-cased name, with RFC 2231
    continuations joined and percent-decoded (charset decoding happens later, with the chain).
    """
    if not raw:
        return "", {}
    raw = raw[:MAX_PARAM_HEADER_BYTES]
    pieces: list[bytes] = []
    start = 0
    i = 0
    in_quote = False
    n = len(raw)
    while i < n:
        m = _PARAM_SPLIT_RE.search(raw, i)
        if m is None:
            break
        j = m.start()
        c = raw[j]
        if c == 0x5C:  # backslash
            i = j + 2
            continue
        if c == 0x22:
            in_quote = not in_quote
        elif not in_quote:
            pieces.append(raw[start:j])
            start = j + 1
        i = j + 1
    pieces.append(raw[start:])
    main = pieces[0].decode("latin-1").strip().strip('"').strip().lower()

    plain: dict[str, Param] = {}
    ext: dict[str, dict[int, tuple[bool, bytes]]] = {}
    for piece in pieces[1:]:
        eq = piece.find(b"=")
        if eq <= 0:
            continue
        name = piece[:eq].decode("latin-1").strip().lower()
        value = piece[eq + 1:].strip()
        if not name:
            continue
        nm = _PARAM_NAME_RE.match(name)
        if nm is None or (nm.group(2) is None and nm.group(3) is None):
            if name not in plain:
                plain[name] = Param(_unquote(value), None, False)
            continue
        base = nm.group(1)
        idx = int(nm.group(2)) if nm.group(2) is not None else 0
        slots = ext.setdefault(base, {})
        if idx not in slots and len(slots) < 1000:
            slots[idx] = (nm.group(3) is not None, _unquote(value))

    for base, slots in ext.items():
        charset: str | None = None
        chunks: list[bytes] = []
        for k, idx in enumerate(sorted(slots)):
            is_ext, value = slots[idx]
            if is_ext:
                if k == 0 and value.count(b"'") >= 2:
                    cs, _lang, value = value.split(b"'", 2)
                    charset = cs.decode("latin-1").strip() or None
                with contextlib.suppress(Exception):
                    value = unquote_to_bytes(value)
            chunks.append(value)
        plain[base] = Param(b"".join(chunks), charset, True)
    return main, plain


def param_text(p: Param | None, fallback: str | None) -> str | None:
    """A parameter value as text: RFC 2231 charset or RFC 2047 words (Outlook/Gmail use both)."""
    if p is None:
        return None
    text = decode_bytes(p.value, p.charset, fallback) if p.extended else decode_words(p.value, fallback)
    text = one_line(text, MAX_NAME_CHARS)
    return text or None

