"""Tests for hanna_sync.mail.message, the letter parser: header fields, fingerprints, robustness.

The parser reads mail written by anyone, so besides the table-driven decoding rules these tests
pin the two promises the archive relies on: it never raises, and it is fast on hostile input
(the fixed corpus in tests/corpus/ and hypothesis-generated letters).
"""

from __future__ import annotations

import base64
import email.header
import email.utils
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hanna_sync.mail.message import (
    MAX_ADDRESSES_PER_HEADER,
    MAX_PARTS,
    Address,
    ParsedLetter,
    address_tokens,
    fingerprint,
    parse_headers_only,
    parse_letter,
)
from tests.letters import LT, LT_1257, LT_885913, LT_UTF8, assert_sane, b64, letter, multipart, qword, text_letter

CORPUS = Path(__file__).parent / "corpus"


# --------------------------------------------------------------------------------------------------
# Subjects and other header text (RFC 2047, raw 8-bit, charsets)
# --------------------------------------------------------------------------------------------------

SUBJECT_CASES = [
    ("utf-8 B", b"=?utf-8?B?" + b64(LT_UTF8) + b"?=", None, LT),
    ("utf-8 Q", b"=?UTF-8?Q?" + qword(LT_UTF8) + b"?=", None, LT),
    ("lower-case b", b"=?utf-8?b?" + b64(LT_UTF8) + b"?=", None, LT),
    ("windows-1257 B", b"=?windows-1257?B?" + b64(LT_1257) + b"?=", None, LT),
    ("windows-1257 Q", b"=?windows-1257?Q?" + qword(LT_1257) + b"?=", None, LT),
    ("iso-8859-13 Q", b"=?iso-8859-13?q?" + qword(LT_885913) + b"?=", None, LT),
    ("Q underscores are spaces", b"=?utf-8?q?I=C5=A1si=C5=B3sti_=C4=85?=", None, "Išsiųsti ą"),
    ("char split across words", b"=?utf-8?B?" + b64(LT_UTF8[:2]) + b"?= =?utf-8?B?"
     + b64(LT_UTF8[2:]) + b"?=", None, LT),
    ("space between words dropped", b"=?utf-8?q?a?= \n =?utf-8?q?b?=", None, "ab"),
    ("literal text kept around words", b"Re: =?utf-8?q?=C4=85?= ok", None, "Re: ą ok"),
    ("language suffix", b"=?utf-8*lt?q?=C4=85?=", None, "ą"),
    ("folded plain", b"first\n\tsecond", None, "first second"),
    ("bad base64 padding", b"=?utf-8?B?" + b64(LT_UTF8).rstrip(b"=") + b"?=", None, LT),
    ("junk inside base64", b"=?utf-8?B?" + b64(LT_UTF8)[:4] + b"!*" + b64(LT_UTF8)[4:] + b"?=",
     None, LT),
    ("bad Q escape kept", b"=?utf-8?q?a=ZZb?=", None, "a=ZZb"),
    ("unknown charset x-foo, utf-8 bytes", b"=?x-foo?q?" + qword(LT_UTF8) + b"?=", None, LT),
    ("unknown charset x-foo, 1257 bytes", b"=?x-foo?q?" + qword(LT_1257) + b"?=", None, LT),
    ("lying charset in word", b"=?utf-8?q?" + qword(LT_1257) + b"?=", None, LT),
    ("unterminated word left as is", b"=?utf-8?q?abc", None, "=?utf-8?q?abc"),
    ("raw 8-bit utf-8", LT_UTF8, None, LT),
    ("raw 8-bit windows-1257", LT_1257, None, LT),
    ("raw 8-bit with fallback", "Привет".encode("windows-1251"), "windows-1251", "Привет"),
    ("invalid fallback name ignored", LT_1257, "no-such-codec", LT),
    ("unsafe codec refused", b"=?punycode?q?abc-?=", None, "abc-"),
    ("control chars become spaces", b"a=?utf-8?q?=0A?=b", None, "a b"),
    ("empty", b"", None, ""),
]


@pytest.mark.parametrize(("raw", "fallback", "expected"),
                         [c[1:] for c in SUBJECT_CASES], ids=[c[0] for c in SUBJECT_CASES])
def test_subject_decoding(raw: bytes, fallback: str | None, expected: str) -> None:
    p = parse_letter(letter(b"Subject: " + raw), fallback_charset=fallback)
    assert p.subject == expected
    assert_sane(p)


def test_missing_subject_is_empty_string() -> None:
    assert parse_letter(letter()).subject == ""


def test_first_of_duplicate_subjects_wins() -> None:
    assert parse_letter(letter(b"Subject: one\nSubject: two")).subject == "one"


# --------------------------------------------------------------------------------------------------
# Message-ID, In-Reply-To, References, Date
# --------------------------------------------------------------------------------------------------

MSGID_CASES = [
    ("normal", b"Message-ID: <abc@example.lt>", "abc@example.lt"),
    ("whitespace around", b"Message-ID:    <abc@example.lt>   ", "abc@example.lt"),
    ("lower-case name", b"message-id: <abc@example.lt>", "abc@example.lt"),
    ("no brackets", b"Message-ID: abc@example.lt", "abc@example.lt"),
    ("folded inside", b"Message-ID: <abc\n @example.lt>", "abc@example.lt"),
    ("with comment", b"Message-ID: <abc@example.lt> (generated)", "abc@example.lt"),
    ("missing", b"", None),
    ("empty", b"Message-ID:", None),
    ("empty brackets", b"Message-ID: <>", None),
    ("unbalanced bracket", b"Message-ID: <abc@example.lt", "abc@example.lt"),
    ("whitespace only", b"Message-ID:    ", None),
]


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in MSGID_CASES],
                         ids=[c[0] for c in MSGID_CASES])
def test_message_id(header: bytes, expected: str | None) -> None:
    assert parse_letter(letter(header)).message_id == expected


def test_in_reply_to_and_references() -> None:
    p = parse_letter(letter(
        b"In-Reply-To: <first@x> <second@x>\n"
        b"References: <a@x>\n <b@x>\t<c@x> <a@x>"
    ))
    assert p.in_reply_to == "first@x"
    assert p.references == ["a@x", "b@x", "c@x"]


def test_references_missing() -> None:
    p = parse_letter(letter())
    assert p.in_reply_to is None and p.references == []


UTC = timezone.utc

DATE_CASES = [
    ("rfc 5322 with offset", b"Mon, 2 Jan 2023 10:00:00 +0200", datetime(2023, 1, 2, 8, 0, tzinfo=UTC)),
    ("negative offset", b"Mon, 2 Jan 2023 10:00:00 -0500", datetime(2023, 1, 2, 15, 0, tzinfo=UTC)),
    ("zone comment", b"Mon, 2 Jan 2023 10:00:00 +0200 (EET)", datetime(2023, 1, 2, 8, 0, tzinfo=UTC)),
    ("named zone GMT", b"2 Jan 2023 10:00:00 GMT", datetime(2023, 1, 2, 10, 0, tzinfo=UTC)),
    ("named zone EEST", b"Mon, 3 Jul 2023 10:00:00 EEST", datetime(2023, 7, 3, 7, 0, tzinfo=UTC)),
    ("no seconds", b"Mon, 2 Jan 2023 10:00 +0000", datetime(2023, 1, 2, 10, 0, tzinfo=UTC)),
    ("two-digit year", b"Mon, 2 Jan 23 10:00:00 +0000", datetime(2023, 1, 2, 10, 0, tzinfo=UTC)),
    ("-0000 is UTC", b"Mon, 2 Jan 2023 10:00:00 -0000", datetime(2023, 1, 2, 10, 0, tzinfo=UTC)),
    ("leap second", b"Sat, 31 Dec 2016 23:59:60 +0000", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("iso 8601 fallback", b"2023-01-02T10:00:00+02:00", datetime(2023, 1, 2, 8, 0, tzinfo=UTC)),
    ("missing", None, None),
    ("empty", b"", None),
    ("garbage", b"yesterday at noon", None),
    ("day out of range", b"Thu, 30 Feb 2023 10:00:00 +0000", None),
    ("hour out of range", b"Mon, 2 Jan 2023 25:00:00 +0000", None),
    ("absurd offset", b"Mon, 2 Jan 2023 10:00:00 +9999", None),
    ("year out of range", b"Mon, 2 Jan 10000 10:00:00 +0000", None),
    ("8-bit junk", b"\xff\xfe\x00", None),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in DATE_CASES],
                         ids=[c[0] for c in DATE_CASES])
def test_date(value: bytes | None, expected: datetime | None) -> None:
    headers = b"" if value is None else b"Date: " + value
    p = parse_letter(letter(headers))
    assert p.date_utc == expected
    if p.date_utc is not None:
        assert p.date_utc.tzinfo is not None and p.date_utc.utcoffset().total_seconds() == 0


# --------------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------------

ADDRESS_CASES = [
    ("bare", b"ona@example.lt", [("", "ona@example.lt")]),
    ("angle", b"<ona@example.lt>", [("", "ona@example.lt")]),
    ("name and angle", b"Ona Onaite <ona@example.lt>", [("Ona Onaite", "ona@example.lt")]),
    ("quoted name with comma", b'"Onaite, Ona" <ona@example.lt>, b@x.lt',
     [("Onaite, Ona", "ona@example.lt"), ("", "b@x.lt")]),
    ("quoted escapes", b'"A \\"B\\" C" <a@x.lt>', [('A "B" C', "a@x.lt")]),
    ("comment as name", b"ona@example.lt (Ona Onaite)", [("Ona Onaite", "ona@example.lt")]),
    ("encoded name", b"=?utf-8?B?" + b64(LT_UTF8) + b"?= <a@x.lt>", [(LT, "a@x.lt")]),
    ("encoded word inside quotes", b'"=?windows-1257?Q?' + qword(LT_1257) + b'?=" <a@x.lt>',
     [(LT, "a@x.lt")]),
    ("raw 8-bit name", b'"' + LT_UTF8 + b'" <a@x.lt>', [(LT, "a@x.lt")]),
    ("case kept", b"Ona <Ona.Onaite@Example.LT>", [("Ona", "Ona.Onaite@Example.LT")]),
    ("group", b"Team: a@x.lt, b@x.lt;, c@x.lt", [("", "a@x.lt"), ("", "b@x.lt"), ("", "c@x.lt")]),
    ("empty group", b"undisclosed-recipients:;", []),
    ("outlook single quotes", b"'Ona' <ona@x.lt>", [("Ona", "ona@x.lt")]),
    ("missing closing bracket", b"Ona <ona@x.lt, b@x.lt", [("Ona", "ona@x.lt"), ("", "b@x.lt")]),
    ("name without address", b"Ona Onaite", [("Ona Onaite", "")]),
    ("bare name and address", b"Ona ona@x.lt", [("Ona", "ona@x.lt")]),
    ("mailto", b"<mailto:ona@x.lt>", [("", "ona@x.lt")]),
    ("spaces inside address", b"<ona @ x.lt>", [("", "ona@x.lt")]),
    ("source route", b"<@relay.x,@relay.y:ona@x.lt>", [("", "ona@x.lt")]),
    ("empty entries", b", ,, a@x.lt ,", [("", "a@x.lt")]),
    ("folded", b"a@x.lt,\n b@x.lt", [("", "a@x.lt"), ("", "b@x.lt")]),
    ("nested comment", b"a@x.lt (Ona (sales))", [("Ona (sales)", "a@x.lt")]),
    ("unclosed quote", b'"Ona <a@x.lt>', [("Ona", "a@x.lt")]),
    ("empty", b"", []),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in ADDRESS_CASES],
                         ids=[c[0] for c in ADDRESS_CASES])
def test_addresses(value: bytes, expected: list[tuple[str, str]]) -> None:
    p = parse_letter(b"To: " + value + b"\n\nbody")
    assert [(a.name, a.email) for a in p.to] == expected
    assert_sane(p)


def test_all_address_headers() -> None:
    p = parse_letter(
        b"From: A <a@x.lt>\nTo: b@x.lt\nCc: c@x.lt\nBcc: d@x.lt\nReply-To: e@x.lt\n"
        b"Sender: f@x.lt\nTo: second-to@x.lt\n\nbody"
    )
    assert p.from_ == [Address("A", "a@x.lt")]
    assert [a.email for a in p.to] == ["b@x.lt", "second-to@x.lt"]  # duplicate headers joined
    assert p.cc == [Address("", "c@x.lt")]
    assert p.bcc == [Address("", "d@x.lt")]
    assert p.reply_to == [Address("", "e@x.lt")]
    assert p.sender == [Address("", "f@x.lt")]


def test_address_cap() -> None:
    many = b", ".join(b"u%d@x.lt" % i for i in range(MAX_ADDRESSES_PER_HEADER + 500))
    p = parse_letter(b"To: " + many + b"\n\n")
    assert len(p.to) == MAX_ADDRESSES_PER_HEADER
    assert p.to[0].email == "u0@x.lt"


def test_an_address_past_the_caps_is_found_by_the_prefilter_and_kept_when_asked() -> None:
    """The 60,000th recipient, 2.3 MB into a folded header: the byte prefilter sees it, and the parser
    keeps it (and only it) past MAX_ADDRESSES_PER_HEADER and MAX_ADDRESS_HEADER_BYTES when asked to."""
    fillers = [b"recipient-%05d@list-server.example" % i for i in range(59_999)]
    header = b"To: " + b",\r\n ".join(fillers + [b"Ruta <Ruta@Azuolas.lt>"]) + b"\r\nSubject: x\r\n\r\n"
    assert len(header) > 2 * 1024 * 1024

    assert address_tokens(header)[-1] == "Ruta@Azuolas.lt" and len(address_tokens(header)) == 60_000
    assert len(parse_headers_only(header).to) == MAX_ADDRESSES_PER_HEADER  # the bound stays
    kept = parse_headers_only(header, keep=lambda a: a.lower() == "ruta@azuolas.lt")
    assert len(kept.to) == MAX_ADDRESSES_PER_HEADER + 1
    assert kept.to[-1] == Address("Ruta", "Ruta@Azuolas.lt")
    assert kept.to[0].email == "recipient-00000@list-server.example"
    whole = parse_letter(header + b"body\r\n", keep=lambda a: a.lower() == "ruta@azuolas.lt")
    assert whole.to == kept.to and whole.subject == "x"


# --------------------------------------------------------------------------------------------------
# Auto-Submitted, List-Id, Precedence
# --------------------------------------------------------------------------------------------------


def test_list_and_robot_headers() -> None:
    p = parse_letter(letter(
        b"Auto-Submitted: Auto-Replied\nList-Id: Company News <news.example.lt>\nPrecedence: Bulk"
    ))
    assert p.auto_submitted == "auto-replied"
    assert p.list_id == "Company News <news.example.lt>"
    assert p.precedence == "bulk"


def test_list_and_robot_headers_absent() -> None:
    p = parse_letter(letter())
    assert p.auto_submitted is None and p.list_id is None and p.precedence is None



# --------------------------------------------------------------------------------------------------
# Headers only
# --------------------------------------------------------------------------------------------------


def test_parse_headers_only() -> None:
    ct, body = multipart(b"mixed", [
        b"Content-Type: text/plain\n\nbody text",
        b"Content-Type: application/pdf; name=a.pdf\n\nx",
    ])
    raw = letter(b"Subject: =?utf-8?q?=C4=85?=\nMessage-ID: <h@x>\nDate: Mon, 2 Jan 2023 10:00:00 +0000\n"
                 + ct, body)
    full = parse_letter(raw)
    head = parse_headers_only(raw)
    assert head.body_skipped is True
    assert head.body_text == "" and head.attachments == []
    assert full.body_skipped is False and full.body_text == "body text"
    for name in ("message_id", "date_utc", "subject", "from_", "to", "in_reply_to"):
        assert getattr(head, name) == getattr(full, name)
    assert head.subject == "ą"


def test_parse_headers_only_without_blank_line() -> None:
    p = parse_headers_only(b"From: a@x.lt\r\nSubject: hi\r\nMessage-ID: <m@x>")
    assert (p.subject, p.message_id, p.from_) == ("hi", "m@x", [Address("", "a@x.lt")])
    assert p.body_skipped
    assert_sane(p)


def test_parse_headers_only_never_raises() -> None:
    for raw in (b"", b"\xff" * 100, b":\n:\n", b"\n\n\n", b" continuation first\n"):
        assert_sane(parse_headers_only(raw, fallback_charset="bogus"))


# --------------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------------

FP_BASE = (
    b"From: Jonas <jonas@example.lt>\n"
    b"To: ona@example.lt\n"
    b"Subject: =?utf-8?q?Sveiki_=C4=85?=\n"
    b"Date: Mon, 2 Jan 2023 10:00:00 +0200\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"Labas, Ona.\n"
    b"Iki.\n"
)


def _with_headers(extra: bytes, raw: bytes = FP_BASE) -> bytes:
    return extra + raw


FP_SAME = [
    ("CRLF vs LF", FP_BASE.replace(b"\n", b"\r\n")),
    ("Received differ", _with_headers(b"Received: from mx1.example.lt by imap.example.lt; "
                                      b"Mon, 2 Jan 2023 10:00:05 +0200\n"
                                      b"Received: from a by b\n")),
    ("delivery headers", _with_headers(b"Return-Path: <bounce@x>\nDelivered-To: ona@example.lt\n"
                                       b"X-Original-To: ona@example.lt\nEnvelope-To: ona@x\n")),
    ("X- and storage headers", FP_BASE.replace(b"\n\nLabas", b"\nStatus: RO\nX-Status: A\n"
                                               b"X-Keywords: $Seen\nX-UID: 42\nContent-Length: 20\n"
                                               b"X-Spam-Score: 3.1\nDKIM-Signature: v=1; b=abc\n"
                                               b"Authentication-Results: mx; spf=pass\n\nLabas")),
    ("Bcc only in Sent copy", FP_BASE.replace(b"To: ", b"Bcc: boss@example.lt\nTo: ")),
    ("mbox From line", b"From jonas@example.lt Mon Jan  2 10:00:00 2023\n" + FP_BASE),
    ("trailing whitespace and newlines", FP_BASE.replace(b"Ona.\n", b"Ona.  \t\n") + b"\n\n"),
    ("header re-folded", FP_BASE.replace(b"To: ona@example.lt", b"To:\n   ona@example.lt")),
    ("subject re-encoded Q to B", FP_BASE.replace(
        b"=?utf-8?q?Sveiki_=C4=85?=", b"=?UTF-8?B?" + b64("Sveiki ą".encode()) + b"?=")),
    ("header order among kept ones", FP_BASE.replace(
        b"From: Jonas <jonas@example.lt>\nTo: ona@example.lt\n",
        b"To: ona@example.lt\nFrom: Jonas <jonas@example.lt>\n")),
]


@pytest.mark.parametrize("variant", [c[1] for c in FP_SAME], ids=[c[0] for c in FP_SAME])
def test_fingerprint_same_letter(variant: bytes) -> None:
    assert fingerprint(variant) == fingerprint(FP_BASE)


FP_DIFFERENT = [
    ("different body", FP_BASE.replace(b"Iki.", b"Viso gero.")),
    ("body line added", FP_BASE + b"P.S.\n"),
    ("different subject", FP_BASE.replace(b"Sveiki", b"Labas")),
    ("different date", FP_BASE.replace(b"10:00:00", b"10:00:01")),
    ("different recipient", FP_BASE.replace(b"To: ona@", b"To: petras@")),
    ("different sender", FP_BASE.replace(b"jonas@", b"jonas2@")),
    ("added cc", FP_BASE.replace(b"To: ", b"Cc: x@example.lt\nTo: ")),
]


@pytest.mark.parametrize("variant", [c[1] for c in FP_DIFFERENT], ids=[c[0] for c in FP_DIFFERENT])
def test_fingerprint_different_letter(variant: bytes) -> None:
    assert fingerprint(variant) != fingerprint(FP_BASE)


def test_fingerprint_format() -> None:
    fp = fingerprint(FP_BASE)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(FP_BASE) == fp  # deterministic
    assert len(fingerprint(b"")) == 64


# --------------------------------------------------------------------------------------------------
# Robustness: odd argument types, the corpus, hypothesis
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [bytearray(b"Subject: x\n\nb"), memoryview(b"Subject: x\n\nb"),
                                 "Subject: x\n\nb", None, 42])
def test_odd_argument_types_do_not_raise(raw: object) -> None:
    p = parse_letter(raw)  # type: ignore[arg-type]
    assert_sane(p)
    assert_sane(parse_headers_only(raw))  # type: ignore[arg-type]
    assert len(fingerprint(raw)) == 64  # type: ignore[arg-type]


@pytest.mark.parametrize("fallback", [None, "", "utf-8", "windows-1257", "no-such", "zlib",
                                      "punycode", "x" * 1000, "utf\x00-8", 42])
def test_any_fallback_charset_is_accepted(fallback: object) -> None:
    p = parse_letter(text_letter(LT_1257), fallback_charset=fallback)  # type: ignore[arg-type]
    assert_sane(p)
    assert p.body_text == LT  # invalid, unsafe or non-matching fallbacks end at windows-1257


CORPUS_FILES = sorted(CORPUS.glob("*.eml"))

# What must still be extracted from some corpus letters, beyond "no exception, fast".
CORPUS_EXPECT = {
    "broken_boundaries": lambda p: "first part" in p.body_text and "no headers here" in p.body_text,
    "unterminated_multipart": lambda p: p.body_text == "inner text that never ends",
    "bad_base64": lambda p: p.body_text == LT and len(p.attachments) == 4,
    "nul_bytes": lambda p: p.subject == "nul bytes inword" and "bodywithnuls" in p.body_text,
    "huge_header_line": lambda p: p.subject == "huge-header-line" and p.body_text == "body\n",
    "deep_nesting": lambda p: p.subject == "deep-nesting" and p.body_text == "",
    "many_recipients": lambda p: len(p.to) == MAX_ADDRESSES_PER_HEADER
    and p.to[0] == Address("Recipient 0", "r0@example.lt"),
    "encoded_word_soup": lambda p: len(p.to) == 50 and p.to[0].name == LT,
    "empty": lambda p: p == ParsedLetter(message_id=None, date_utc=None, subject=""),
    "only_headers": lambda p: p.message_id == "only-headers@example.lt" and p.body_text == "",
    "html_huge_script": lambda p: p.body_text == "Visible & kept",
    "html_pathological": lambda p: p.body_text.startswith("start\nsecond"),
    "many_parts": lambda p: len(p.attachments) == MAX_PARTS - 1,
    "lying_charsets": lambda p: p.body_text.startswith(LT + "\n"),
    "mixed_line_endings": lambda p: p.subject == "cr only" and p.body_text == "cr text\nlf text\n",
    "many_header_fields": lambda p: p.body_text == "body after many headers\n",
    "rfc2231_torture": lambda p: [a.filename for a in p.attachments][2] == "ščc",
}


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS_FILES) >= 12
    assert set(CORPUS_EXPECT) <= {f.stem for f in CORPUS_FILES}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[f.stem for f in CORPUS_FILES])
def test_corpus_letter(path: Path) -> None:
    raw = path.read_bytes()
    start = time.perf_counter()
    p = parse_letter(raw)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{path.name} took {elapsed:.2f}s"
    assert_sane(p)

    start = time.perf_counter()
    h = parse_headers_only(raw, fallback_charset="windows-1257")
    fp = fingerprint(raw)
    fp_crlf = fingerprint(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert time.perf_counter() - start < 2.0
    assert_sane(h)
    assert fp == fp_crlf

    check = CORPUS_EXPECT.get(path.stem)
    if check is not None:
        assert check(p), p


# ---- hypothesis ----------------------------------------------------------------------------------

FAST = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

_HEADER_NAMES = [b"From", b"To", b"Cc", b"Bcc", b"Reply-To", b"Sender", b"Subject", b"Date",
                 b"Message-ID", b"In-Reply-To", b"References", b"Auto-Submitted", b"List-Id",
                 b"Precedence", b"Content-Type", b"Content-Disposition",
                 b"Content-Transfer-Encoding", b"X-Junk", b"Received"]
_CTYPES = [b"text/plain", b"text/html", b"application/pdf", b"image/png", b"message/rfc822",
           b"multipart/mixed", b"text/PLAIN", b"garbage", b""]
_CHARSETS = [b"utf-8", b"windows-1257", b"iso-8859-13", b"x-foo", b"us-ascii", b"utf-16",
             b"punycode", b"\"utf-8\"", b""]
_CTES = [b"base64", b"quoted-printable", b"7bit", b"8bit", b"x-uuencode", b"bogus", b""]
_SPECIALS = st.sampled_from([b"=?", b"?=", b"=?utf-8?q?", b"=?utf-8?b?", b"<", b">", b"\"", b"(",
                             b")", b",", b";", b":", b"\\", b"@", b"\n", b"\r\n", b"\n ", b"--",
                             b"\x00", b"\xff", LT_UTF8, LT_1257, b"=C4=85", b"%C4%85", b"*0*=",
                             b"''", b"boundary=", b"filename*="])
_CHUNK = st.one_of(st.binary(max_size=12), _SPECIALS,
                   st.text(max_size=10).map(lambda s: s.encode("utf-8", "surrogatepass")))
_JUNK = st.lists(_CHUNK, max_size=12).map(b"".join)


@st.composite
def mime_entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME entity that is roughly well-formed, with random damage sprinkled in."""
    ctype = draw(st.sampled_from(_CTYPES))
    headers = [b"Content-Type: " + ctype + b"; charset=" + draw(st.sampled_from(_CHARSETS))]
    if draw(st.booleans()):
        headers.append(b"Content-Transfer-Encoding: " + draw(st.sampled_from(_CTES)))
    if draw(st.booleans()):
        headers.append(b"Content-Disposition: " + draw(st.sampled_from([b"attachment", b"inline"]))
                       + b"; filename" + draw(st.sampled_from([b"=", b"*=utf-8''", b"*0*="]))
                       + draw(_JUNK))
    if draw(st.booleans()):
        headers.append(draw(st.sampled_from(_HEADER_NAMES)) + b": " + draw(_JUNK))
    if ctype == b"multipart/mixed" and depth < 4:
        boundary = draw(st.sampled_from([b"b%d" % depth, b"=_x", b"", b"b"]))
        headers[0] = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
        children = draw(st.lists(mime_entity(depth + 1), max_size=4))
        body = b"".join(b"--" + boundary + b"\n" + c + b"\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\n"
        body += draw(_JUNK)
    else:
        body = draw(st.one_of(_JUNK, st.binary(max_size=200),
                              st.binary(max_size=100).map(base64.b64encode),
                              st.sampled_from([b"<p>a<b>b</b><script>x", b"<!--", b"<a href='"])))
    return b"\n".join(headers) + draw(st.sampled_from([b"\n\n", b"\n", b"\r\n\r\n"])) + body


@st.composite
def mime_letter(draw: st.DrawFn) -> bytes:
    top = b"".join(draw(st.sampled_from(_HEADER_NAMES)) + b": " + draw(_JUNK) + b"\n"
                   for _ in range(draw(st.integers(0, 6))))
    raw = top + draw(mime_entity())
    mutation = draw(st.sampled_from(["none", "crlf", "truncate", "cr"]))
    if mutation == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif mutation == "cr":
        raw = raw.replace(b"\n", b"\r")
    elif mutation == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@FAST
@given(st.binary(max_size=2000), st.sampled_from([None, "windows-1251", "bogus", "utf-8"]))
def test_property_arbitrary_bytes_never_raise(raw: bytes, fallback: str | None) -> None:
    assert_sane(parse_letter(raw, fallback_charset=fallback))
    assert_sane(parse_headers_only(raw, fallback_charset=fallback))
    assert len(fingerprint(raw)) == 64


@FAST
@given(mime_letter(), st.sampled_from([None, "windows-1257", "bogus"]))
def test_property_mime_structures_never_raise(raw: bytes, fallback: str | None) -> None:
    p = parse_letter(raw, fallback_charset=fallback)
    assert_sane(p)
    assert fingerprint(raw) == fingerprint(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


_WORDS = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 .,!?=_-:;'\"ąčęėįšųūžĄČŠŽ€😀")), min_size=1, max_size=60
)


@FAST
@given(_WORDS)
def test_property_subject_round_trips_through_stdlib_encoder(subject: str) -> None:
    encoded = email.header.Header(subject, "utf-8", header_name="Subject").encode()
    p = parse_letter(b"Subject: " + encoded.encode("ascii") + b"\n\nbody")
    assert p.subject == subject.strip()


@FAST
@given(_WORDS, st.from_regex(r"[a-z0-9.]{1,10}@[a-z0-9]{1,8}\.lt", fullmatch=True))
def test_property_address_round_trips_through_stdlib_formatter(name: str, addr: str) -> None:
    raw = email.utils.formataddr((name, addr))
    p = parse_letter(b"To: " + raw.encode("ascii") + b"\n\nbody")
    clean = " ".join(name.split())
    if len(clean) >= 2 and clean[0] == clean[-1] and clean[0] in "'\"":
        clean = clean[1:-1].strip()  # Outlook-style 'Name' quotes are dropped on purpose
    assert [(a.name, a.email) for a in p.to] == [(clean, addr)]
