"""Charsets: which codec a label from a letter means, and decoding that never fails.

Text is decoded by trying, strictly and in order: the declared charset, UTF-8 (a strict UTF-8 decode
practically never succeeds on non-UTF-8 text, and undeclared 8-bit headers are UTF-8 under RFC 6532, so
this catches the commonest lie "declared us-ascii / nothing, sent UTF-8"), the mailbox's configured
``fallback_charset``, windows-1257 (the product is Lithuanian), and finally latin-1, which cannot fail.
Codecs that are not text encodings or are slow on hostile input (punycode, idna, unicode_escape, ...) are
refused as if unknown.
"""

from __future__ import annotations

import codecs
import functools
import re

_BASELINE_CHARSET = "cp1257"  # windows-1257: the Baltic code page most Lithuanian mail falls back to

# Names mail programs use that Python does not know, or knows as something narrower.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "win-1257": "cp1257",
    "win-1251": "cp1251",
    "win-1250": "cp1250",
    "unicode-1-1-utf-7": "utf-7",
    "utf8mb4": "utf-8",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc_jp",
}
# Labels that mean "no idea": treat as undeclared.
_CHARSET_UNKNOWN = frozenset(
    {"unknown", "x-unknown", "unknown-8bit", "x-user-defined", "default", "8bit", "binary",
     "charset", "none", "us-ascii8bit", "auto", "_autodetect_all", "autodetect"}
)
# Python text codecs that must never see hostile bytes: not charsets, or slow (punycode is
# quadratic), or platform-specific.
_UNSAFE_CODECS = frozenset(
    {"punycode", "idna", "unicode-escape", "unicode_escape", "raw-unicode-escape",
     "raw_unicode_escape", "undefined", "mbcs", "oem", "escape"}
)
_CHARSET_LABEL_RE = re.compile(r"[a-z0-9._:+-]{1,40}")


@functools.lru_cache(maxsize=512)
def _codec_for(label: str | None) -> str | None:
    """Map a charset label from a letter to a safe Python text codec name, or None."""
    if not label or not isinstance(label, str):
        return None
    name = label.strip().strip("\"'").strip().lower()
    if "*" in name:  # RFC 2231 language suffix: utf-8*lt
        name = name.split("*", 1)[0]
    if not name or name in _CHARSET_UNKNOWN or not _CHARSET_LABEL_RE.fullmatch(name):
        return None
    name = _CHARSET_ALIASES.get(name, name)
    for candidate in (name, name[2:] if name.startswith("x-") else None):
        if not candidate:
            continue
        try:
            info = codecs.lookup(candidate)
        except Exception:
            continue
        if not getattr(info, "_is_text_encoding", True):
            continue
        if info.name in _UNSAFE_CODECS or candidate in _UNSAFE_CODECS:
            continue
        if info.name in ("gb2312", "gbk"):
            return "gb18030"
        return info.name
    return None


def text_codec(label: str | None) -> str | None:
    """The codec a configured charset decodes with, or None when parsing would ignore it.

    `hanna-sync test` asks this rather than `codecs.lookup`: "base64" or "idna" are codecs, but
    never used for text here, so such a mailbox charset would silently do nothing.
    """
    return _codec_for(label)


@functools.lru_cache(maxsize=512)
def _codec_chain(declared: str | None, fallback: str | None) -> tuple[str, ...]:
    """The order in which decodings are tried (see the module docstring for why)."""
    chain: list[str] = []
    for c in (_codec_for(declared), "utf-8", _codec_for(fallback), _BASELINE_CHARSET):
        if c and c not in chain:
            chain.append(c)
    return tuple(chain)


def decode_bytes(data: bytes, declared: str | None, fallback: str | None) -> str:
    """Decode with the charset chain; the last resort latin-1 cannot fail."""
    if not data:
        return ""
    if not isinstance(fallback, str):
        fallback = None
    if not isinstance(declared, str):
        declared = None
    for codec in _codec_chain(declared, fallback):
        try:
            return data.decode(codec)
        except Exception:
            continue
    return data.decode("latin-1", "replace")


def decode_prefix(data: bytes, declared: str | None, fallback: str | None, max_chars: int) -> str:
    """Decode at most ~max_chars characters of a large body without decoding all of it.

    A plain byte cut could split a multi-byte character and make the strict UTF-8 attempt fail
    (falling back to mojibake), so an incremental decoder with final=False is used on the cut.
    """
    max_bytes = max_chars * 4
    if len(data) <= max_bytes:
        return decode_bytes(data, declared, fallback)[:max_chars]
    chunk = data[:max_bytes]
    if not isinstance(fallback, str):
        fallback = None
    if not isinstance(declared, str):
        declared = None
    for codec in _codec_chain(declared, fallback):
        try:
            return codecs.getincrementaldecoder(codec)("strict").decode(chunk, False)[:max_chars]
        except Exception:
            continue
    return chunk.decode("latin-1", "replace")[:max_chars]

