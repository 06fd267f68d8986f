"""The cheap byte scans a pass runs over every letter it looks at, without parsing it.

Regular expressions over the raw header bytes: no decoding, no MIME, linear in the header's size. They
find a superset of what `parse_letter` would (addresses, thread ids), so a letter they find nothing in
needs no parse at all; and `fingerprint` names a letter without a Message-ID the same in every mailbox.
"""

from __future__ import annotations

import hashlib
import re

from hanna_sync.mail.fields import clean_id
from hanna_sync.mail.headers import all_values, decode_words, parse_header_block
from hanna_sync.mail.limits import MAX_HEADER_TEXT_BYTES, MAX_REFERENCES
from hanna_sync.mail.text import clean, normalize_newlines, to_bytes

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
            cleaned = clean_id(token.decode("utf-8", "replace"))
            if cleaned:
                into.append(cleaned)
    return in_reply_to + references  # In-Reply-To first, as relink reads them: the same link either way


_MESSAGE_ID_FIELD_RE = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]{1,995})>")


def message_id_token(raw_headers: bytes) -> str | None:
    """The letter's own Message-ID, as `ParsedLetter.message_id` spells it, by the same cheap look."""
    found = _MESSAGE_ID_FIELD_RE.search(raw_headers[:MAX_HEADER_TEXT_BYTES * 8])
    return clean_id(found.group(1).decode("utf-8", "replace")) if found else None

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
    data = to_bytes(raw)
    try:
        return _fingerprint(data)
    except Exception:  # pragma: no cover - defence in depth
        return hashlib.sha256(b"hanna-fp-raw\n" + data).hexdigest()

_FP_HEADERS = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
               "in-reply-to", "references")


def _fingerprint(data: bytes) -> str:
    data = normalize_newlines(data)
    headers, body_start = parse_header_block(data, 0, len(data))
    h = hashlib.sha256(b"hanna-fp-v1\n")
    for name in _FP_HEADERS:
        for value in all_values(headers, name):
            text = " ".join(clean(decode_words(value[:MAX_HEADER_TEXT_BYTES * 4], None)).split())
            h.update(name.encode("ascii") + b":" + text.encode("utf-8", "replace") + b"\n")
    h.update(b"\n")
    body = data[body_start:]
    if b" \n" in body or b"\t\n" in body:
        body = b"\n".join(line.rstrip(b" \t") for line in body.split(b"\n"))
    h.update(body.rstrip(b" \t\n"))
    return h.hexdigest()
