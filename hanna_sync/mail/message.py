"""The letter parser: raw RFC 5322 bytes in, a `ParsedLetter` record out.

Why this module exists and is written the way it is
---------------------------------------------------
Every byte parsed here was written by someone on the internet: spammers, broken mailers, bounce
robots, 20-year-old Outlook versions.  One letter that makes the parser raise or hang would stop the
archive pass for a whole mailbox, so the two hard rules are:

* **never raise** -- every public function returns a value for any input (each field is extracted
  under its own guard, so one broken header cannot cost the others), and
* **bounded time and memory** -- every loop is linear in the input, nothing recurses on input
  structure, and the output is capped (`MAX_*` constants below).

Why not `email.parser.BytesParser` for the MIME tree
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Both `policy.compat32` and `policy.default` were evaluated (CPython 3.11.7):

* the feed parser recurses once per nesting level (multipart *and* message/rfc822), so a letter
  nested ~330 levels deep raises `RecursionError` and nothing of it can be archived;
* it checks every line against every open boundary, i.e. O(depth x lines): 200 levels with 100k
  lines took 1.4 s, a 25 MB letter would take minutes;
* `policy.default` parses headers lazily and raises on access (`To: ((((...` -> RecursionError,
  `Message-ID: <<<<...` -> IndexError); `email.utils.getaddresses` (what compat32 offers) raises
  RecursionError on the same input;
* `html.parser.HTMLParser` is quadratic on `"<a" * 200_000` (63 s) and `"</" * 200_000` (10 s)
  and raises `AssertionError` on `"<!["`.

compat32 is the more robust of the two policies (it never parses on access), but neither bounds the
structure walk.  So this module splits MIME itself with a small iterative splitter over one bytes
buffer (offsets, no copies per level, `bytes.find` for boundaries, depth and part caps), and keeps
using the stdlib for the parts that are safe: `binascii` for base64/quoted-printable/uuencode,
`email.utils.parsedate_tz` for dates, `html.unescape` for entities, `urllib.parse` for RFC 2231
percent-decoding, and `codecs` for charsets.  Header, address, parameter and HTML scanning are small
hand-written linear state machines.

Charsets
~~~~~~~~
Text is decoded by trying, strictly and in order: the declared charset, UTF-8 (a strict UTF-8
decode practically never succeeds on non-UTF-8 text, and undeclared 8-bit headers are UTF-8 under
RFC 6532, so this catches the commonest lie "declared us-ascii / nothing, sent UTF-8"), the
mailbox's configured ``fallback_charset``, windows-1257 (the product is Lithuanian), and finally
latin-1, which cannot fail.  Codecs that are not text encodings or are slow on hostile input
(punycode, idna, unicode_escape, ...) are refused as if unknown.

No I/O happens here: everything is a pure function over bytes.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz
from typing import Callable, TypeVar
from urllib.parse import unquote_to_bytes

__all__ = [
    "Address",
    "Attachment",
    "ParsedLetter",
    "parse_letter",
    "parse_headers_only",
    "attachment_contents",
    "fingerprint",
    "MAX_MIME_DEPTH",
    "MAX_PARTS",
    "MAX_BODY_TEXT_CHARS",
    "MAX_ADDRESSES_PER_HEADER",
]

# --------------------------------------------------------------------------------------------------
# Limits.  Each one bounds the work or the output for hostile input; real mail is far below them.
# --------------------------------------------------------------------------------------------------

#: MIME nesting deeper than this is not descended into (real mail nests < 10 levels).
MAX_MIME_DEPTH = 50
#: At most this many MIME entities (including the root) are looked at per letter.
MAX_PARTS = 1000
#: body_text is cut to this many characters (1 MB of text is far more than any human letter).
MAX_BODY_TEXT_CHARS = 1_000_000
#: Addresses kept per address header (all occurrences of that header together), plus those the caller
#: asks to keep (`keep`: the scan's matched addresses, found anywhere in the header by `address_tokens`).
MAX_ADDRESSES_PER_HEADER = 1000
#: Header fields kept per MIME entity; more are skipped (still scanned to find the body).
MAX_HEADER_FIELDS = 10_000
#: Header lines scanned per entity before jumping to the next blank line.
MAX_HEADER_LINES = 200_000
#: Raw bytes of one unstructured header (Subject, List-Id, ...) that are decoded.
MAX_HEADER_TEXT_BYTES = 64 * 1024
#: Raw bytes of one address header that are parsed (1000 addresses fit easily); with `keep`, the rest is
#: read too, for those addresses only.
MAX_ADDRESS_HEADER_BYTES = 256 * 1024
#: Raw bytes of Content-Type / Content-Disposition that are parsed for parameters.
MAX_PARAM_HEADER_BYTES = 16 * 1024
#: Characters of HTML that are converted to text (the rest of a giant newsletter is dropped).
MAX_HTML_CHARS = 2_000_000
#: Message ids kept from References.
MAX_REFERENCES = 500
#: Longest string kept for a single-line header text (subject, list id, ...).
MAX_HEADER_TEXT_CHARS = 16 * 1024
#: Longest display name / file name kept.
MAX_NAME_CHARS = 1024
#: Longest e-mail address / message id accepted.
MAX_ID_CHARS = 998

Keep = Callable[[str], bool]  # whether an address (as written) is kept past the per-header bounds

_BASELINE_CHARSET = "cp1257"  # windows-1257: the Baltic code page most Lithuanian mail falls back to

# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """One mailbox from an address header.

    `email` is kept as written (only stripped): matching normalises case and IDNs elsewhere, and the
    archive should show what the sender actually wrote.  It is '' when nothing address-like (no
    '@') was found, so a bare display name is not lost.
    """

    name: str
    email: str


@dataclass(frozen=True)
class Attachment:
    """A file carried by a letter; only metadata, the archive keeps the raw letter anyway."""

    filename: str | None
    content_type: str
    size: int  # decoded size in bytes (best effort for broken encodings)


@dataclass(frozen=True)
class ParsedLetter:
    """Everything the archive and the CRM linker need from one letter, already decoded to text."""

    message_id: str | None
    date_utc: datetime | None
    subject: str
    from_: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    sender: list[Address] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    auto_submitted: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    body_text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    body_skipped: bool = False


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def parse_letter(raw: bytes, fallback_charset: str | None = None, keep: Keep | None = None) -> ParsedLetter:
    """Parse a whole letter.  Never raises; unparseable parts come back empty.

    `fallback_charset` is the mailbox's configured IMAP charset: it is tried for undeclared or
    lying 8-bit text after the declared charset and UTF-8, and ignored if it is not a valid codec.
    `keep` says which addresses past MAX_ADDRESSES_PER_HEADER (or MAX_ADDRESS_HEADER_BYTES) are
    kept all the same: the one that links the letter may be its 60,000th recipient.
    If an unexpected internal error happens anyway, the letter is returned as parsed from its
    headers only (with body_skipped=True, since the body was not read) rather than lost.
    """
    try:
        return _parse(raw, fallback_charset, headers_only=False, keep=keep)
    except Exception:  # pragma: no cover - defence in depth, every step is guarded already
        return parse_headers_only(raw, fallback_charset, keep)


def parse_headers_only(raw_headers: bytes, fallback_charset: str | None = None, keep: Keep | None = None) -> ParsedLetter:
    """Parse only the header block, for letters over the size limit.

    The caller fetched just the headers (e.g. IMAP BODY.PEEK[HEADER]); anything after the first
    blank line is ignored.  body_skipped=True tells the archive the body was deliberately not read.
    """
    try:
        return _parse(raw_headers, fallback_charset, headers_only=True, keep=keep)
    except Exception:  # pragma: no cover - defence in depth
        return ParsedLetter(message_id=None, date_utc=None, subject="", body_skipped=True)


_ADDRESS_FIELD_RE = re.compile(rb"(?im)^(?:from|sender|reply-to|to|cc|bcc)[ \t]*:((?:.*)(?:\r?\n[ \t].*)*)")
# Bounded like real addresses (RFC 5321: 64-octet local part, 255-octet domain): with `+` a long run
# without "@" made the search quadratic (13 s on tests/corpus/address_torture.eml).
_ADDRESS_TOKEN_RE = re.compile(rb"[^\s<>()\[\],;:\"@]{1,64}@[^\s<>()\[\],;:\"@]{1,255}")


def address_tokens(raw_headers: bytes) -> list[str]:
    """Every address-shaped token in the address header fields: a superset of the true addresses.

    The scan's prefilter. Nine letters in ten concern nobody, and finding that out needs no display
    names, no RFC 2047 decoding and no group syntax: if no token matches the directory, neither does
    any real address. A letter that passes is parsed properly (`parse_headers_only`, keeping the
    matched addresses past its bounds) and matched again. A byte scan, linear in the header's size:
    the whole header is scanned, so a customer after the first 1,000 recipients is found too.
    """
    out: list[str] = []
    for field_match in _ADDRESS_FIELD_RE.finditer(raw_headers):
        for token in _ADDRESS_TOKEN_RE.findall(field_match.group(1)):
            out.append(token.decode("utf-8", "replace"))
    return out


_THREAD_FIELD_RE = re.compile(rb"(?im)^(?:in-reply-to|references)[ \t]*:((?:.*)(?:\r?\n[ \t].*)*)")
_THREAD_ID_RE = re.compile(rb"<([^<>\s]{1,995})>")


def thread_tokens(raw_headers: bytes) -> list[str]:
    """The Message-IDs a letter answers (In-Reply-To, then References), as `ParsedLetter` spells them.

    The scan's cheap look at whether a letter continues an archived conversation, for every letter
    looked at, without parsing it; ids written without brackets (rare robots) are not found here.
    """
    in_reply_to: list[str] = []
    references: list[str] = []
    for field_match in _THREAD_FIELD_RE.finditer(raw_headers[:MAX_HEADER_TEXT_BYTES * 8]):
        into = in_reply_to if field_match.group(0)[:1] in b"iI" else references
        for token in _THREAD_ID_RE.findall(field_match.group(1))[:MAX_REFERENCES]:
            cleaned = _clean_id(token.decode("utf-8", "replace"))
            if cleaned:
                into.append(cleaned)
    return in_reply_to + references  # In-Reply-To first, as relink reads them: the same link either way


_MESSAGE_ID_FIELD_RE = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]{1,995})>")


def message_id_token(raw_headers: bytes) -> str | None:
    """The letter's own Message-ID, as `ParsedLetter.message_id` spells it, by the same cheap look."""
    found = _MESSAGE_ID_FIELD_RE.search(raw_headers[:MAX_HEADER_TEXT_BYTES * 8])
    return _clean_id(found.group(1).decode("utf-8", "replace")) if found else None


def is_automatic(letter: ParsedLetter) -> bool:
    """Whether a program sent the letter rather than a person: an auto-reply or auto-generated
    notice (Auto-Submitted other than "no", RFC 3834), bulk mail (Precedence bulk/list/junk), or a
    mailing-list letter (List-Id, RFC 2919). Such letters are not correspondence with a customer."""
    auto = (letter.auto_submitted or "").split(";")[0].strip()
    return bool(auto and auto != "no") or letter.precedence in ("bulk", "list", "junk") or bool(letter.list_id)


def attachment_contents(raw: bytes, fallback_charset: str | None = None) -> list[tuple[Attachment, bytes]]:
    """Each attachment of a letter with its decoded bytes, in the order `parse_letter` lists them.

    For `hanna-sync export --attachments`: the same MIME walk as `parse_letter` (same caps, never
    raises), so the files written are exactly the attachments `show` lists. Base64 attachments (nearly
    every file) come out byte for byte; like the body text, a 7bit/8bit part is read with LF line ends.
    """
    try:
        data = _normalize_newlines(_to_bytes(raw))
        headers, body_start = _parse_header_block(data, 0, len(data))
        root = _build_tree(data, headers, body_start)
        body_ids = {id(n) for n in _guard([], _choose_body, data, root, fallback_charset)}
        return [(att, _guard(b"", _decode_transfer, data[node.start:node.end], node.cte))
                for node, att in _attachment_nodes(data, root, fallback_charset, body_ids)]
    except Exception:  # pragma: no cover - defence in depth, as in parse_letter
        return []


def fingerprint(raw: bytes) -> str:
    """Stable sha256 hex fingerprint of a letter, for letters without a Message-ID.

    The same letter fetched from two mailboxes or folders must give the same value, so the
    canonical form keeps only what the *author's* mail program wrote and nothing that delivery or
    storage adds or rewrites:

    * headers: only From, Sender, Reply-To, To, Cc, Subject, Date, Message-ID, In-Reply-To and
      References, in that fixed order, each occurrence decoded (RFC 2047, so a server re-encoding
      Q to B does not matter) and whitespace-collapsed (so re-folding does not matter).  Everything
      else is left out: Received, Return-Path, Delivered-To, X-Original-To, Envelope-To,
      Status/X-Status/X-Keywords/X-UID, Content-Length/Lines, every X-* header, DKIM/ARC/
      Authentication-Results, spam scores, and Bcc (only the sender's Sent copy has it).
    * body: the raw bytes after the header block (still MIME-encoded; decoding would cost time
      and add nothing for byte-identical copies), with CRLF/CR turned into LF, trailing spaces and
      tabs removed from each line and trailing blank lines removed, because IMAP servers differ in
      exactly those.  A leading mbox "From " line is ignored.

    The form is versioned ("hanna-fp-v1"): changing it changes every fingerprint, so do not.
    Never raises; on an internal error it falls back to the hash of the raw bytes.
    """
    data = _to_bytes(raw)
    try:
        return _fingerprint(data)
    except Exception:  # pragma: no cover - defence in depth
        return hashlib.sha256(b"hanna-fp-raw\n" + data).hexdigest()


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------

_T = TypeVar("_T")


def _guard(default: _T, fn: Callable[..., _T], *args: object) -> _T:
    """Run one extraction step; any exception yields `default` so other fields still get parsed."""
    try:
        return fn(*args)
    except Exception:
        return default


def _to_bytes(raw: object) -> bytes:
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


def _normalize_newlines(data: bytes) -> bytes:
    """CRLF and lone CR become LF, so every later scan deals with one line ending only."""
    if b"\r" not in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # C1 too: U+009B is a terminal CSI


def _clean(s: str) -> str:
    """Make text safe to store: no NUL bytes and no lone surrogates (sqlite3 refuses those)."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8", "replace")
    return s


_BODY_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]+")


def _clean_body(s: str) -> str:
    """Body text for storage and search: LF line ends, no BOM, no control characters but
    tab, newline and form feed (binary junk in a mislabelled part would otherwise end up here)."""
    s = _clean(s)
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _BODY_CONTROL_RE.sub("", s)
    return s.lstrip("\ufeff")


def _one_line(s: str, limit: int = MAX_HEADER_TEXT_CHARS) -> str:
    """Header text is single-line: control characters (CR, LF, TAB, ...) become one space."""
    s = _CONTROL_RE.sub(" ", _clean(s)).strip()
    if len(s) > limit:
        s = s[:limit].rstrip()
    return s


# --------------------------------------------------------------------------------------------------
# Charsets
# --------------------------------------------------------------------------------------------------

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


def _decode_bytes(data: bytes, declared: str | None, fallback: str | None) -> str:
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


def _decode_prefix(data: bytes, declared: str | None, fallback: str | None, max_chars: int) -> str:
    """Decode at most ~max_chars characters of a large body without decoding all of it.

    A plain byte cut could split a multi-byte character and make the strict UTF-8 attempt fail
    (falling back to mojibake), so an incremental decoder with final=False is used on the cut.
    """
    max_bytes = max_chars * 4
    if len(data) <= max_bytes:
        return _decode_bytes(data, declared, fallback)[:max_chars]
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


# --------------------------------------------------------------------------------------------------
# Transfer encodings
# --------------------------------------------------------------------------------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DELETE = bytes(b for b in range(256) if b not in _B64_ALPHABET)


def _b64_clean(data: bytes) -> bytes:
    """Keep the base64 alphabet up to the first '=' (RFC 2045 6.8: '=' marks the end of data)."""
    cut = data.find(b"=")
    if cut != -1:
        data = data[:cut]
    data = data.translate(None, _B64_DELETE)
    if len(data) % 4 == 1:  # a lone trailing sextet carries no whole byte
        data = data[:-1]
    return data


def _b64_decode(data: bytes) -> bytes:
    """Tolerant base64: junk characters skipped, missing padding added, never raises."""
    clean = _b64_clean(data)
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except Exception:
        return b""


def _b64_size(data: bytes) -> int:
    """Decoded size of base64 without materialising the decoded bytes."""
    n = len(_b64_clean(data))
    return n * 3 // 4


def _qp_decode(data: bytes) -> bytes:
    try:
        return binascii.a2b_qp(data)
    except Exception:
        return data


def _uu_decode(data: bytes) -> bytes:
    """x-uuencode bodies (still sent by some old systems); bad lines are skipped."""
    out = []
    started = False
    for line in data.split(b"\n"):
        if not started:
            if line.startswith(b"begin"):
                started = True
            continue
        if line.strip() in (b"end", b"`end"):
            break
        if not line:
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except Exception:
            try:
                nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                out.append(binascii.a2b_uu(line[:nbytes]))
            except Exception:
                continue
    return b"".join(out)


def _decode_transfer(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        return _b64_decode(body)
    if cte == "quoted-printable":
        return _qp_decode(body)
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uu_decode(body)
    return body


def _decoded_size(body: bytes, cte: str) -> int:
    if cte == "base64":
        return _b64_size(body)
    if cte in ("7bit", "8bit", "binary", ""):
        return len(body)
    return len(_decode_transfer(body, cte))


# --------------------------------------------------------------------------------------------------
# RFC 2047 encoded words
# --------------------------------------------------------------------------------------------------

# Linear: every piece is bounded or stops at the next '?', and each attempt starts at a "=?".
_EW_RE = re.compile(rb"=\?([^?\s]{1,64})\?([BbQq])\?([^?]*)\?=")
_QP_HEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _q_word_decode(text: bytes) -> bytes:
    text = text.replace(b"_", b" ")
    return _QP_HEX_RE.sub(lambda m: bytes((int(m.group(1), 16),)), text)


def _decode_words(raw: bytes, fallback: str | None) -> str:
    """Decode a header value: encoded words plus raw 8-bit text in unknown charsets.

    Adjacent encoded words in the same charset are joined *before* decoding, because mailers split
    multi-byte characters across words.  Whitespace between encoded words is dropped (RFC 2047
    6.2).  Malformed words (bad base64, bad charset, missing separators) are decoded leniently.
    """
    if b"=?" not in raw:
        return _decode_bytes(raw, None, fallback)
    out: list[str] = []
    pending_cs: str | None = None
    pending = bytearray()
    last = 0
    prev_word = False

    def flush() -> None:
        nonlocal pending_cs
        if pending_cs is not None:
            out.append(_decode_bytes(bytes(pending), pending_cs, fallback))
            pending.clear()
            pending_cs = None

    for m in _EW_RE.finditer(raw):
        literal = raw[last:m.start()]
        if not (prev_word and not literal.strip(b" \t\n")):
            flush()
            if literal:
                out.append(_decode_bytes(literal, None, fallback))
        charset = m.group(1).decode("ascii", "replace").split("*", 1)[0].lower()
        text = m.group(3)
        decoded = _b64_decode(text) if m.group(2) in (b"B", b"b") else _q_word_decode(text)
        if pending_cs != charset:
            flush()
            pending_cs = charset
        pending.extend(decoded)
        last = m.end()
        prev_word = True
    flush()
    if last < len(raw):
        out.append(_decode_bytes(raw[last:], None, fallback))
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Header block
# --------------------------------------------------------------------------------------------------

_HEADER_NAME_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def _parse_header_block(
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


def _first(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def _all(headers: list[tuple[str, bytes]], name: str) -> list[bytes]:
    return [v for n, v in headers if n == name]


# --------------------------------------------------------------------------------------------------
# MIME parameters (Content-Type, Content-Disposition), RFC 2045 + RFC 2231
# --------------------------------------------------------------------------------------------------

_PARAM_SPLIT_RE = re.compile(rb'[;"\\]')
_PARAM_NAME_RE = re.compile(r"^([^*]+?)(?:\*(\d{1,4}))?(\*)?$")
_CTYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


@dataclass
class _Param:
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


def _parse_params(raw: bytes | None) -> tuple[str, dict[str, _Param]]:
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

    plain: dict[str, _Param] = {}
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
                plain[name] = _Param(_unquote(value), None, False)
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
                try:
                    value = unquote_to_bytes(value)
                except Exception:
                    pass
            chunks.append(value)
        plain[base] = _Param(b"".join(chunks), charset, True)
    return main, plain


def _param_text(p: _Param | None, fallback: str | None) -> str | None:
    """A parameter value as text: RFC 2231 charset or RFC 2047 words (Outlook/Gmail use both)."""
    if p is None:
        return None
    if p.extended:
        text = _decode_bytes(p.value, p.charset, fallback)
    else:
        text = _decode_words(p.value, fallback)
    text = _one_line(text, MAX_NAME_CHARS)
    return text or None


# --------------------------------------------------------------------------------------------------
# MIME tree
# --------------------------------------------------------------------------------------------------

_PART_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


@dataclass
class _Node:
    ctype: str
    params: dict[str, _Param]
    disposition: str
    disp_params: dict[str, _Param]
    cte: str
    start: int  # body range in the normalised buffer
    end: int
    depth: int
    is_root: bool
    children: list[_Node] = field(default_factory=list)
    opaque: bool = False  # a multipart that was not split (too deep / no parts budget)

    @property
    def maintype(self) -> str:
        return self.ctype.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.ctype.split("/", 1)[1]


def _content_type(raw: bytes | None, default: str) -> tuple[str, dict[str, _Param]]:
    """RFC 2045 5.2: a missing or syntactically invalid Content-Type means the default."""
    main, params = _parse_params(raw)
    if not _CTYPE_RE.fullmatch(main):
        return default, params if raw else {}
    return main, params


def _make_node(
    data: bytes,
    headers: list[tuple[str, bytes]],
    body_start: int,
    end: int,
    depth: int,
    default_ctype: str,
    is_root: bool,
) -> _Node:
    ctype, params = _content_type(_first(headers, "content-type"), default_ctype)
    disposition, disp_params = _parse_params(_first(headers, "content-disposition"))
    cte_raw = _first(headers, "content-transfer-encoding") or b""
    cte = cte_raw[:100].decode("latin-1").strip().strip('"').strip().lower()
    cte = cte.split("(", 1)[0].split(";", 1)[0].strip()
    return _Node(ctype, params, disposition, disp_params, cte, body_start, end, depth, is_root)


_WS_EOL_RE = re.compile(rb"[ \t]*(?:\n|\Z)")
_GUESS_BOUNDARY_RE = re.compile(rb"(?m)^--([\x21-\x7e]{1,200}?)[ \t]*$")


def _split_multipart(
    data: bytes, start: int, end: int, boundary: bytes, limit: int
) -> tuple[list[tuple[int, int]], bool] | None:
    """(body ranges of the parts, close delimiter seen), or None if no delimiter line was found.

    Linear: `bytes.find` for each "\\n--boundary", and a delimiter must be followed only by
    optional "--" and whitespace.  Preamble and epilogue are ignored; a missing close delimiter
    (unterminated multipart) makes the last part run to the end.
    """
    delim = b"--" + boundary
    needle = b"\n" + delim
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    search = start
    first = True
    while True:
        if first and data.startswith(delim, start, end):
            idx = start
        else:
            k = data.find(needle, search, end)
            if k == -1:
                break
            idx = k + 1
        first = False
        after = idx + len(delim)
        closing = data.startswith(b"--", after, end)
        m = _WS_EOL_RE.match(data, after + 2 if closing else after, end)
        if m is None:
            if closing:
                m = _WS_EOL_RE.match(data, after, end)
                closing = False
            if m is None:  # "--boundaryXYZ": a longer token, not our delimiter
                search = after
                continue
        if part_start is not None:
            part_end = idx - 1 if idx > part_start else part_start
            parts.append((part_start, part_end))
            if len(parts) >= limit:
                return parts, closing
        if closing:
            return parts, True
        part_start = m.end()
        search = part_start - 1 if part_start > start else part_start
    if part_start is None:
        return None
    parts.append((part_start, end))  # unterminated multipart
    return parts, False


def _build_tree(data: bytes, root_headers: list[tuple[str, bytes]], body_start: int) -> _Node:
    """Build the MIME tree iteratively, capped at MAX_MIME_DEPTH levels and MAX_PARTS entities."""
    root = _make_node(data, root_headers, body_start, len(data), 0, "text/plain", True)
    count = 1
    stack = [root]
    while stack:
        node = stack.pop()
        if node.maintype != "multipart":
            continue
        if node.depth >= MAX_MIME_DEPTH or count >= MAX_PARTS:
            node.opaque = True
            continue
        ranges: list[tuple[int, int]] | None = None
        bparam = node.params.get("boundary")
        boundary = bparam.value.rstrip() if bparam is not None else b""
        if boundary and len(boundary) <= 1000:
            split = _split_multipart(data, node.start, node.end, boundary, MAX_PARTS - count)
            ranges = split[0] if split is not None else None
        if ranges is None:
            # Broken boundary: use the first "--token" line of the body if it really delimits
            # (at least two delimiter lines, or one plus the close delimiter).
            m = _GUESS_BOUNDARY_RE.search(data, node.start, node.end)
            if m is not None:
                guess = m.group(1)
                if guess.endswith(b"--"):
                    guess = guess[:-2]
                if guess and guess != boundary:
                    split = _split_multipart(data, node.start, node.end, guess, MAX_PARTS - count)
                    if split is not None and (len(split[0]) >= 2 or split[1]):
                        ranges = split[0]
        if ranges is None:
            # No structure at all: most likely a plain text letter mislabelled as multipart.
            node.ctype = "text/plain"
            continue
        child_default = "message/rfc822" if node.subtype == "digest" else "text/plain"
        for s, e in ranges:
            if count >= MAX_PARTS:
                break
            headers, bstart = _parse_header_block(data, s, e, _PART_HEADERS)
            child = _make_node(data, headers, bstart, e, node.depth + 1, child_default, False)
            node.children.append(child)
            count += 1
        stack.extend(reversed(node.children))
    return root


def _filename(node: _Node, fallback: str | None) -> str | None:
    name = _param_text(node.disp_params.get("filename"), fallback)
    if name is None:
        name = _param_text(node.params.get("name"), fallback)
    return name


_NON_SPACE_RE = re.compile(rb"[^ \t\n]")


def _is_body_candidate(data: bytes, node: _Node, fallback: str | None) -> bool:
    if node.ctype not in ("text/plain", "text/html"):
        return False
    if node.disposition == "attachment":
        return False
    if _NON_SPACE_RE.search(data, node.start, node.end) is None:
        return False  # an empty plain alternative must not hide the HTML one (Outlook sends those)
    if node.is_root:
        return True  # a single-part text letter is the body even if it carries a name
    return _filename(node, fallback) is None


def _choose_body(data: bytes, node: _Node, fallback: str | None) -> list[_Node]:
    """The leaves whose text makes up body_text.

    multipart/alternative: the first alternative that is all text/plain, else the first that
    gives any text (HTML).  multipart/related: its root part (the first one that has text).
    Other multiparts (mixed, signed, report, ...): the bodies of all their parts in order, so text
    split around an inline image is kept whole.  Depth is capped at MAX_MIME_DEPTH, so this
    recursion is bounded.
    """
    if node.maintype == "multipart":
        if node.opaque or not node.children:
            return []
        if node.subtype in ("alternative", "related"):
            choices = [_choose_body(data, c, fallback) for c in node.children]
            if node.subtype == "alternative":
                for ch in choices:
                    if ch and all(n.ctype == "text/plain" for n in ch):
                        return ch
            for ch in choices:
                if ch:
                    return ch
            return []
        out: list[_Node] = []
        for c in node.children:
            out.extend(_choose_body(data, c, fallback))
        return out
    return [node] if _is_body_candidate(data, node, fallback) else []


_META_CHARSET_RE = re.compile(rb"""(?i)<meta[^>]{0,300}?charset\s*=\s*["']?\s*([a-z0-9_:.+-]{1,40})""")


def _leaf_text(data: bytes, node: _Node, fallback: str | None, budget: int) -> str:
    body = _decode_transfer(data[node.start:node.end], node.cte)
    cs = node.params.get("charset")
    declared = cs.value.decode("latin-1", "replace") if cs is not None else None
    if node.ctype == "text/html":
        if not declared:
            m = _META_CHARSET_RE.search(body, 0, 4096)
            if m is not None:
                declared = m.group(1).decode("ascii", "replace")
        text = _decode_prefix(body, declared, fallback, MAX_HTML_CHARS)
        return _html_to_text(text, budget)
    return _decode_prefix(body, declared, fallback, budget)


def _body_and_attachments(
    data: bytes, root: _Node, fallback: str | None
) -> tuple[str, list[Attachment]]:
    chosen = _guard([], _choose_body, data, root, fallback)
    chosen_ids = {id(n) for n in chosen}
    texts: list[str] = []
    used = 0
    for node in chosen:
        if used >= MAX_BODY_TEXT_CHARS:
            break
        t = _guard("", _leaf_text, data, node, fallback, MAX_BODY_TEXT_CHARS - used)
        t = _clean_body(t)
        if t.strip():
            texts.append(t)
            used += len(t) + 1
    body_text = "\n".join(texts)[:MAX_BODY_TEXT_CHARS]
    return body_text, [att for _, att in _attachment_nodes(data, root, fallback, chosen_ids)]


def _attachment_nodes(
    data: bytes, root: _Node, fallback: str | None, body_ids: set[int]
) -> list[tuple[_Node, Attachment]]:
    """The leaves that are attachments (not part of the body text), in document order."""
    out: list[tuple[_Node, Attachment]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.maintype == "multipart":
            stack.extend(reversed(node.children))
            continue
        if id(node) in body_ids:
            continue
        att = _guard(None, _attachment, data, node, fallback)
        if att is not None:
            out.append((node, att))
    return out


def _attachment(data: bytes, node: _Node, fallback: str | None) -> Attachment | None:
    """Parts with Content-Disposition: attachment or with a file name are attachments."""
    name = _filename(node, fallback)
    if node.disposition != "attachment" and name is None:
        return None
    size = _decoded_size(data[node.start:node.end], node.cte)
    return Attachment(filename=name, content_type=node.ctype, size=size)


# --------------------------------------------------------------------------------------------------
# HTML to text (linear; html.parser.HTMLParser is quadratic on hostile input in 3.11)
# --------------------------------------------------------------------------------------------------

_TAG_NAME_RE = re.compile(r"</?([A-Za-z][A-Za-z0-9:_-]*)")
# Attributes up to '>': a quote only opens a value right after '='.  Nothing follows the group in
# the pattern, so the greedy loop never backtracks; an unclosed quote fails to match only if it is
# the last quote of the document, so at most one such scan runs to the end.
_TAG_REST_RE = re.compile(r"""(?:[^>=]+|=\s*"[^"]*"|=\s*'[^']*'|=)*""")
_WS_RE = re.compile(r"[ \t\n\r\f\v]+")
_SKIP_CONTENT = frozenset({"script", "style", "template", "xml"})
_SKIP_IF_CLOSED = frozenset({"head", "title"})
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "hr"})
_BLOCK_TAGS = frozenset(
    {"div", "tr", "ul", "ol", "dl", "dt", "dd", "pre", "section", "article", "header", "footer",
     "address", "center", "form", "fieldset", "nav", "aside", "main", "figure", "figcaption",
     "caption", "tbody", "thead", "tfoot", "body", "html", "details", "summary"}
)
_CLOSE_RE_CACHE: dict[str, re.Pattern[str]] = {}


def _closing_tag_re(name: str) -> re.Pattern[str]:
    pat = _CLOSE_RE_CACHE.get(name)
    if pat is None:
        pat = re.compile("</" + re.escape(name), re.IGNORECASE)
        _CLOSE_RE_CACHE[name] = pat
    return pat


def _html_to_text(s: str, limit: int) -> str:
    """Visible text of an HTML body with sensible line breaks; linear in len(s).

    Drops tags, comments, <script>/<style> contents (an unclosed one swallows the rest, like a
    browser), and <head>/<title> when closed; collapses whitespace outside <pre>; unescapes
    entities; stops after `limit` characters.  Line breaks follow browsers: <br> always breaks,
    a block element (div, li, tr, ...) only makes sure a new line starts (Gmail writes one <div>
    per line), a paragraph or heading makes sure a blank line separates it.
    """
    s = s[:MAX_HTML_CHARS]
    out: list[str] = []
    size = 0
    pre = 0
    trailing_nl = 0  # line breaks at the end of `out` since the last visible text
    i = 0
    n = len(s)
    # Where the next "</name" is, per skipped tag name, so repeated unclosed <title>s do not each
    # rescan to the end of the document (that would be quadratic).
    closers: dict[str, int] = {}

    def emit_text(chunk: str) -> None:
        nonlocal size, trailing_nl
        if not chunk:
            return
        if not pre:
            chunk = _WS_RE.sub(" ", chunk)
        if "&" in chunk:
            chunk = html.unescape(chunk)
        out.append(chunk)
        size += len(chunk)
        if chunk.strip():
            body = chunk.rstrip(" \t")
            trailing_nl = len(body) - len(body.rstrip("\n"))
        else:
            trailing_nl += chunk.count("\n")

    def line_breaks(k: int) -> None:
        """Make sure at least k line breaks end the output (none at the very start)."""
        nonlocal size, trailing_nl
        if size and trailing_nl < k:
            out.append("\n" * (k - trailing_nl))
            size += k - trailing_nl
            trailing_nl = k

    while i < n and size <= limit:
        j = s.find("<", i)
        if j == -1:
            emit_text(s[i:])
            break
        emit_text(s[i:j])
        if s.startswith("<!--", j):
            k = s.find("-->", j + 4)
            i = n if k == -1 else k + 3
            continue
        if s.startswith("<!", j) or s.startswith("<?", j):
            k = s.find(">", j + 2)
            i = n if k == -1 else k + 1
            continue
        m = _TAG_NAME_RE.match(s, j)
        if m is None:  # a literal '<' ("a < b")
            emit_text("<")
            i = j + 1
            continue
        closing = s[j + 1] == "/"
        name = m.group(1).lower()
        r = _TAG_REST_RE.match(s, m.end())
        tag_end = r.end() if r is not None else m.end()
        if tag_end >= n or s[tag_end] != ">":
            break  # unterminated tag at EOF: a browser drops it and everything after it
        i = tag_end + 1
        if not closing and (name in _SKIP_CONTENT or name in _SKIP_IF_CLOSED):
            at = closers.get(name)
            if at is None or (at != -1 and at < i):
                cm = _closing_tag_re(name).search(s, i)
                at = -1 if cm is None else cm.start()
                closers[name] = at
            if at == -1:
                if name in _SKIP_CONTENT:
                    break
                continue
            k = s.find(">", at + 2)
            i = n if k == -1 else k + 1
            continue
        if name == "br":
            out.append("\n")
            size += 1
            trailing_nl += 1
        elif name in _PARAGRAPH_TAGS:
            line_breaks(2)
        elif name in _BLOCK_TAGS:
            line_breaks(1)
            if name == "pre":
                if closing:
                    pre = max(0, pre - 1)
                elif not s[j:tag_end].endswith("/"):
                    pre += 1
        elif name == "li" and not closing:
            line_breaks(1)
            emit_text("- ")
            trailing_nl = 0
        elif name == "li":
            line_breaks(1)
        elif name in ("td", "th") and not closing:
            emit_text(" ")

    text = "".join(out).replace("\xa0", " ")
    lines: list[str] = []
    blank = 0
    for line in text.split("\n"):
        line = line.strip()
        if line:
            blank = 0
            lines.append(line)
        else:
            blank += 1
            if blank == 1 and lines:
                lines.append("")
    return "\n".join(lines).strip()[:limit]


# --------------------------------------------------------------------------------------------------
# Addresses (linear state machine; email.utils.getaddresses recurses on "((((")
# --------------------------------------------------------------------------------------------------

_ADDR_SPECIAL_RE = re.compile(r'["(),:;<>\\]')
_QUOTED_RE = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"?', re.S)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_COMMENT_SPECIAL_RE = re.compile(r"[()\\]")
# Inside <...>: an optional obsolete source route "@a,@b:" (it may contain commas), then the
# address up to '>' or, when '>' is missing, up to the next comma.  A route cannot cross '<', so
# a failed route attempt only rescans its own mailbox: linear.
_ANGLE_RE = re.compile(r"(?:@[^,:<>\s]*(?:,\s*@[^,:<>\s]*)*:)?[^>,]*")


def _finish_mailbox(
    phrase: list[str], angle: str | None, comments: list[str], fallback: str | None
) -> Address | None:
    phrase_raw = "".join(phrase)
    comment_raw = " ".join(c for c in comments if c.strip())
    if angle is not None:
        email_raw = angle
        name_raw = phrase_raw if phrase_raw.strip() else comment_raw
    else:
        tokens = phrase_raw.split()
        at = next((k for k in range(len(tokens) - 1, -1, -1) if "@" in tokens[k]), None)
        if at is not None:
            email_raw = tokens[at]
            rest = tokens[:at] + tokens[at + 1:]
            name_raw = " ".join(rest) if rest else comment_raw
        else:
            email_raw = ""
            name_raw = " ".join(tokens) if tokens else comment_raw

    name = ""
    if name_raw.strip():
        name = _decode_words(name_raw.encode("latin-1", "replace"), fallback)
        name = " ".join(_one_line(name, MAX_NAME_CHARS * 4).split())
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
            name = name[1:-1].strip()
        name = name[:MAX_NAME_CHARS]

    email = ""
    if email_raw.strip():
        email = _decode_bytes(email_raw.encode("latin-1", "replace"), None, fallback)
        email = _clean(email).strip().strip("<>").strip()
        if email[:7].lower() == "mailto:":
            email = email[7:]
        if email.startswith("@") and ":" in email:  # obsolete source route @a,@b:user@host
            email = email.rsplit(":", 1)[1]
        if '"' not in email:
            email = "".join(email.split())
        if "@" not in email or len(email) > MAX_ID_CHARS or _CONTROL_RE.search(email):
            email = ""
    if not name and not email:
        return None
    return Address(name=name, email=email)


def _parse_addresses(values: list[bytes], fallback: str | None, keep: Keep | None = None) -> list[Address]:
    """Parse all occurrences of one address header, keeping at most MAX_ADDRESSES_PER_HEADER, and
    past that (or past MAX_ADDRESS_HEADER_BYTES) the addresses `keep` asks for: then the whole header
    is read, and the list stays bounded by what the caller keeps.

    Tolerates what real mail contains: groups ("undisclosed-recipients:;"), comments as names,
    encoded words inside quotes, missing '>' or quotes, bare "Name a@b" without brackets.
    """
    out: list[Address] = []
    budget = MAX_ADDRESS_HEADER_BYTES
    for raw in values:
        if keep is None and (budget <= 0 or len(out) >= MAX_ADDRESSES_PER_HEADER):
            break
        within = max(budget, 0)  # characters of this value inside the byte bound
        if keep is None:
            raw = raw[:budget]
        budget -= len(raw)
        s = raw.decode("latin-1")  # 1:1 bytes<->chars; real decoding happens per token
        phrase: list[str] = []
        comments: list[str] = []
        angle: str | None = None
        i = 0
        n = len(s)

        def finish() -> None:
            nonlocal phrase, comments, angle
            if phrase or angle is not None or comments:
                addr = _finish_mailbox(phrase, angle, comments, fallback)
                if addr is not None and (
                        (len(out) < MAX_ADDRESSES_PER_HEADER and i <= within)
                        or (keep is not None and addr.email and keep(addr.email))):
                    out.append(addr)
            phrase, comments, angle = [], [], None

        while i < n and (len(out) < MAX_ADDRESSES_PER_HEADER or keep is not None):
            m = _ADDR_SPECIAL_RE.search(s, i)
            if m is None:
                phrase.append(s[i:])
                break
            j = m.start()
            if j > i:
                phrase.append(s[i:j])
            c = s[j]
            if c == '"':
                q = _QUOTED_RE.match(s, j)
                assert q is not None  # the pattern cannot fail at a '"'
                phrase.append(_QUOTED_PAIR_RE.sub(r"\1", q.group(1)))
                i = q.end()
            elif c == "(":
                depth = 0
                k = j
                while k < n:
                    cm = _COMMENT_SPECIAL_RE.search(s, k)
                    if cm is None:
                        k = n
                        break
                    k = cm.start()
                    ch = s[k]
                    if ch == "\\":
                        k += 2
                        continue
                    depth += 1 if ch == "(" else -1
                    k += 1
                    if depth == 0:
                        break
                closed = depth == 0
                comments.append(s[j + 1:k - 1] if closed else s[j + 1:k])
                i = min(k, n)
            elif c == "<":
                am = _ANGLE_RE.match(s, j + 1)
                assert am is not None
                if angle is None:
                    angle = am.group(0)
                i = am.end()
                if i < n and s[i] == ">":
                    i += 1
            elif c in ",;":
                finish()
                i = j + 1
            elif c == ":":
                if angle is None:  # group "name:" -- the phrase was the group's name
                    phrase, comments = [], []
                i = j + 1
            elif c == "\\":
                phrase.append(s[j + 1:j + 2])
                i = j + 2
            else:  # stray '>' or ')'
                i = j + 1
        finish()
    return out


# --------------------------------------------------------------------------------------------------
# Message ids and dates
# --------------------------------------------------------------------------------------------------

_MSGID_RE = re.compile(r"<([^<>]*)>")


def _clean_id(s: str) -> str | None:
    s = "".join(_clean(s).split())  # ids have no whitespace; broken folding inserts some
    s = s.replace("<", "").replace(">", "")  # stray brackets of an unbalanced "<id" or "id>"
    if not s or len(s) > MAX_ID_CHARS or _CONTROL_RE.search(s):
        return None
    return s


def _ids(raw: bytes | None, limit: int) -> list[str]:
    """Message ids from Message-ID / In-Reply-To / References, without <>, de-duplicated."""
    if not raw:
        return []
    text = _decode_bytes(raw[:MAX_HEADER_TEXT_BYTES * 4], None, None)
    found = _MSGID_RE.findall(text)
    if not found:
        found = text.replace(",", " ").split()
    out: list[str] = []
    seen: set[str] = set()
    for f in found:
        cid = _clean_id(f)
        if cid and cid not in seen:
            seen.add(cid)
            out.append(cid)
            if len(out) >= limit:
                break
    return out


def _message_id(raw: bytes | None) -> str | None:
    """The id inside <...>; without brackets the whole value (some robots omit them)."""
    if not raw:
        return None
    text = _decode_bytes(raw[:MAX_HEADER_TEXT_BYTES], None, None)
    m = _MSGID_RE.search(text)
    return _clean_id(m.group(1) if m else text)


_COMMENT_RE = re.compile(r"\([^()]*\)")
# Zone names parsedate_tz does not know but European mail uses (it would treat them as UTC).
_EXTRA_ZONES = {"CET": "+0100", "CEST": "+0200", "MET": "+0100", "MEST": "+0200",
                "EET": "+0200", "EEST": "+0300", "WET": "+0000", "WEST": "+0100",
                "BST": "+0100", "MSK": "+0300"}


def _parse_date(raw: bytes | None) -> datetime | None:
    """RFC 5322 date (plus common sloppiness) as aware UTC; None when unparseable.

    A missing zone or "-0000" is taken as UTC (RFC 5322 3.3); impossible offsets (|off| >= 24 h)
    or fields (hour 25, Feb 30) make the date unparseable rather than guessed.  ISO 8601 dates
    from broken robots are accepted as a fallback.
    """
    if not raw:
        return None
    s = _decode_bytes(raw[:256], None, None)
    s = " ".join(_COMMENT_RE.sub(" ", _clean(s)).split())
    if not s:
        return None
    toks = s.split()
    if toks and toks[-1].upper() in _EXTRA_ZONES:
        toks[-1] = _EXTRA_ZONES[toks[-1].upper()]
        s = " ".join(toks)
    t = None
    try:
        t = parsedate_tz(s)
    except Exception:
        t = None
    if t is not None:
        try:
            y, mo, d, hh, mm, ss = (int(x) for x in t[:6])
            off = t[9] or 0
            if abs(off) >= 24 * 3600 or not 1 <= y <= 9999:
                return None
            dt = datetime(y, mo, d, hh, mm, min(ss, 59), tzinfo=timezone.utc)
            return dt - timedelta(seconds=off)
        except Exception:
            return None
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except Exception:
        return None
    try:
        if dt.tzinfo is None:
            return dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------------


def _text_header(headers: list[tuple[str, bytes]], name: str, fallback: str | None) -> str | None:
    raw = _first(headers, name)
    if raw is None:
        return None
    return _one_line(_decode_words(raw[:MAX_HEADER_TEXT_BYTES].strip(), fallback))


def _lower_or_none(s: str | None) -> str | None:
    return s.lower() if s is not None else None


def _parse(raw: object, fallback: object, headers_only: bool, keep: Keep | None = None) -> ParsedLetter:
    fb = fallback if isinstance(fallback, str) else None
    data = _normalize_newlines(_to_bytes(raw))
    headers, body_start = _guard(([], len(data)), _parse_header_block, data, 0, len(data))

    def addrs(name: str) -> list[Address]:
        return _guard([], _parse_addresses, _all(headers, name), fb, keep)

    in_reply = _guard([], _ids, _first(headers, "in-reply-to"), 1)
    body_text = ""
    attachments: list[Attachment] = []
    if not headers_only:
        root = _guard(None, _build_tree, data, headers, body_start)
        if root is not None:
            body_text, attachments = _guard(("", []), _body_and_attachments, data, root, fb)

    return ParsedLetter(
        message_id=_guard(None, _message_id, _first(headers, "message-id")),
        date_utc=_guard(None, _parse_date, _first(headers, "date")),
        subject=_guard(None, _text_header, headers, "subject", fb) or "",
        from_=addrs("from"),
        to=addrs("to"),
        cc=addrs("cc"),
        bcc=addrs("bcc"),
        reply_to=addrs("reply-to"),
        sender=addrs("sender"),
        in_reply_to=in_reply[0] if in_reply else None,
        references=_guard([], _ids, _first(headers, "references"), MAX_REFERENCES),
        auto_submitted=_lower_or_none(_guard(None, _text_header, headers, "auto-submitted", fb)),
        list_id=_guard(None, _text_header, headers, "list-id", fb),
        # Precedence is a keyword (bulk/list/junk) compared case-insensitively: lower-case it too.
        precedence=_lower_or_none(_guard(None, _text_header, headers, "precedence", fb)),
        body_text=body_text,
        attachments=attachments,
        body_skipped=headers_only,
    )


_FP_HEADERS = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
               "in-reply-to", "references")


def _fingerprint(data: bytes) -> str:
    data = _normalize_newlines(data)
    headers, body_start = _parse_header_block(data, 0, len(data))
    h = hashlib.sha256(b"hanna-fp-v1\n")
    for name in _FP_HEADERS:
        for value in _all(headers, name):
            text = " ".join(_clean(_decode_words(value[:MAX_HEADER_TEXT_BYTES * 4], None)).split())
            h.update(name.encode("ascii") + b":" + text.encode("utf-8", "replace") + b"\n")
    h.update(b"\n")
    body = data[body_start:]
    if b" \n" in body or b"\t\n" in body:
        body = b"\n".join(line.rstrip(b" \t") for line in body.split(b"\n"))
    h.update(body.rstrip(b" \t\n"))
    return h.hexdigest()
