"""The letter parser's entry points: raw RFC 5322 bytes in, a `ParsedLetter` record out.

Every byte parsed here was written by someone on the internet, so the parser never raises and its time
and memory are bounded (`limits.py`). The work is done by one module per seam, bottom up:

    text, charsets, transfer    safe text; charset decoding with fallbacks; base64 / QP / uuencode
    headers, params, fields     header block and encoded words; MIME parameters; message ids and dates
    address_list                From/To/Cc... into `Address` records
    html_text, mime             HTML to text; the MIME tree, body text and attachments
    tokens                      the cheap byte scans a pass runs before (or instead of) parsing

The stdlib is used where it is safe (`binascii`, `parsedate_tz`, `html.unescape`, `codecs`), not for the
structure walk: see `mime.py`, `html_text.py` and `address_list.py` for why. What other packages import
from the parser is importable from here, the scanners and limits included, so callers need one path.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime

from hanna_sync.mail.address_list import Address, Keep, parse_addresses
from hanna_sync.mail.charsets import text_codec
from hanna_sync.mail.fields import parse_date, parse_ids, parse_message_id
from hanna_sync.mail.headers import all_values, first_value, parse_header_block, text_header
from hanna_sync.mail.limits import (
    MAX_ADDRESSES_PER_HEADER,
    MAX_BODY_TEXT_CHARS,
    MAX_HTML_CHARS,
    MAX_MIME_DEPTH,
    MAX_PARTS,
    MAX_REFERENCES,
    guard,
)
from hanna_sync.mail.mime import (
    Attachment,
    attachment_nodes,
    body_and_attachments,
    build_tree,
    choose_body,
    choose_shown,
    leaf_source,
)
from hanna_sync.mail.text import normalize_newlines, to_bytes
from hanna_sync.mail.tokens import address_tokens, fingerprint, message_id_token, thread_tokens
from hanna_sync.mail.transfer import decode_transfer

__all__ = [
    "Address",
    "Attachment",
    "Keep",
    "ParsedLetter",
    "parse_letter",
    "parse_headers_only",
    "attachment_contents",
    "html_body",
    "is_automatic",
    "address_tokens",
    "thread_tokens",
    "message_id_token",
    "fingerprint",
    "text_codec",
    "MAX_MIME_DEPTH",
    "MAX_PARTS",
    "MAX_BODY_TEXT_CHARS",
    "MAX_ADDRESSES_PER_HEADER",
]


@dataclass(frozen=True, kw_only=True)
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


def parse_headers_only(
    raw_headers: bytes, fallback_charset: str | None = None, keep: Keep | None = None
) -> ParsedLetter:
    """Parse only the header block, for letters over the size limit.

    The caller fetched just the headers (e.g. IMAP BODY.PEEK[HEADER]); anything after the first
    blank line is ignored.  body_skipped=True tells the archive the body was deliberately not read.
    """
    try:
        return _parse(raw_headers, fallback_charset, headers_only=True, keep=keep)
    except Exception:  # pragma: no cover - defence in depth
        return ParsedLetter(message_id=None, date_utc=None, subject="", body_skipped=True)


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
        data = normalize_newlines(to_bytes(raw))
        headers, body_start = parse_header_block(data, 0, len(data))
        root = build_tree(data, headers, body_start)
        body_ids = {id(n) for n in guard([], choose_body, data, root, fallback_charset)}
        return [(att, guard(b"", decode_transfer, data[node.start:node.end], node.cte))
                for node, att in attachment_nodes(data, root, fallback_charset, body_ids)]
    except Exception:  # pragma: no cover - defence in depth, as in parse_letter
        return []


def html_body(raw: bytes, fallback_charset: str | None = None) -> str | None:
    """The body as HTML, as a mail client would show it: None when the letter has no HTML body part.

    For the web view, which shows this (sanitised) instead of body_text. The HTML part of an
    alternative is chosen over its plain one; text parts shown beside it (a multipart/mixed) come as
    escaped <pre> blocks, in order. Each part is decoded with its declared charset, else an HTML
    part's <meta> one, then the fallbacks `parse_letter` uses. At most MAX_HTML_CHARS characters in
    all; never raises (None).
    """
    try:
        data = normalize_newlines(to_bytes(raw))
        headers, body_start = parse_header_block(data, 0, len(data))
        shown = choose_shown(data, build_tree(data, headers, body_start), fallback_charset)
        if not any(n.ctype == "text/html" for n in shown):
            return None
        out: list[str] = []
        budget = MAX_HTML_CHARS
        for node in shown:
            text = guard("", leaf_source, data, node, fallback_charset, budget)
            if node.ctype != "text/html":
                text = "<pre>" + html.escape(text) + "</pre>"
            out.append(text[:budget])
            budget -= len(out[-1])
            if budget <= 0:
                break
        return "\n".join(out)
    except Exception:  # pragma: no cover - defence in depth, as in parse_letter
        return None


def _lower_or_none(s: str | None) -> str | None:
    return s.lower() if s is not None else None


def _parse(raw: object, fallback: object, headers_only: bool, keep: Keep | None = None) -> ParsedLetter:
    fb = fallback if isinstance(fallback, str) else None
    data = normalize_newlines(to_bytes(raw))
    headers, body_start = guard(([], len(data)), parse_header_block, data, 0, len(data))

    def addrs(name: str) -> list[Address]:
        return guard([], parse_addresses, all_values(headers, name), fb, keep)

    in_reply = guard([], parse_ids, first_value(headers, "in-reply-to"), 1)
    body_text = ""
    attachments: list[Attachment] = []
    if not headers_only:
        root = guard(None, build_tree, data, headers, body_start)
        if root is not None:
            body_text, attachments = guard(("", []), body_and_attachments, data, root, fb)

    return ParsedLetter(
        message_id=guard(None, parse_message_id, first_value(headers, "message-id")),
        date_utc=guard(None, parse_date, first_value(headers, "date")),
        subject=guard(None, text_header, headers, "subject", fb) or "",
        from_=addrs("from"),
        to=addrs("to"),
        cc=addrs("cc"),
        bcc=addrs("bcc"),
        reply_to=addrs("reply-to"),
        sender=addrs("sender"),
        in_reply_to=in_reply[0] if in_reply else None,
        references=guard([], parse_ids, first_value(headers, "references"), MAX_REFERENCES),
        auto_submitted=_lower_or_none(guard(None, text_header, headers, "auto-submitted", fb)),
        list_id=guard(None, text_header, headers, "list-id", fb),
        # Precedence is a keyword (bulk/list/junk) compared case-insensitively: lower-case it too.
        precedence=_lower_or_none(guard(None, text_header, headers, "precedence", fb)),
        body_text=body_text,
        attachments=attachments,
        body_skipped=headers_only,
    )

