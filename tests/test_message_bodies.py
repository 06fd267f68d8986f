"""Tests for the parser's body text and attachments: the MIME tree (mail/mime.py), transfer encodings,
charsets and HTML to text, through `parse_letter`."""

from __future__ import annotations

import pytest

from hanna_sync.mail.message import MAX_BODY_TEXT_CHARS, MAX_MIME_DEPTH, MAX_PARTS, Attachment, parse_letter
from tests.letters import LT, LT_1257, LT_885913, LT_UTF8, assert_sane, b64, letter, multipart, qword, text_letter

BODY_CASES = [
    ("plain utf-8", text_letter(LT_UTF8 + b"\n", charset=b"utf-8"), None, LT + "\n"),
    ("plain windows-1257", text_letter(LT_1257, charset=b"windows-1257"), None, LT),
    ("plain iso-8859-13", text_letter(LT_885913, charset=b'"iso-8859-13"'), None, LT),
    ("quoted-printable", text_letter(qword(LT_UTF8[:20]) + b"=\n" + qword(LT_UTF8[20:]),
                                     charset=b"utf-8", cte=b"quoted-printable"), None, LT),
    ("base64", text_letter(b64(LT_UTF8) + b"\n", charset=b"utf-8", cte=b"Base64"), None, LT),
    ("base64 missing padding and junk", text_letter(b"!!" + b64(LT_UTF8).rstrip(b"=") + b"\n\xff",
                                                    charset=b"utf-8", cte=b"base64"), None, LT),
    ("lying charset: utf-8 declared, 1257 sent", text_letter(LT_1257, charset=b"utf-8"), None, LT),
    ("unknown charset x-foo", text_letter(LT_1257, charset=b"x-foo"), None, LT),
    ("unknown charset x-foo, utf-8 bytes", text_letter(LT_UTF8, charset=b"x-foo"), None, LT),
    ("no charset, 8-bit utf-8", text_letter(LT_UTF8), None, LT),
    ("us-ascii declared, 8-bit 1257", text_letter(LT_1257, charset=b"us-ascii"), None, LT),
    ("fallback charset used", text_letter("Привет".encode("windows-1251")), "windows-1251", "Привет"),
    ("fallback charset used for bad declared",
     text_letter("Привет".encode("windows-1251"), charset=b"x-foo"), "windows-1251", "Привет"),
    ("declared beats fallback", text_letter(LT_1257, charset=b"windows-1257"), "windows-1251", LT),
    ("invalid fallback name", text_letter(LT_1257), "not-a-codec", LT),
    ("zlib is not a charset", text_letter(LT_1257, charset=b"zlib"), None, LT),
    ("CRLF becomes LF", text_letter(b"a\r\nb\r\n"), None, "a\nb\n"),
    ("NUL removed", text_letter(b"a\x00b"), None, "ab"),
    ("no content type is text/plain", letter(b"", b"hello"), None, "hello"),
    ("invalid content type is text/plain", text_letter(b"hello", ctype=b"garbage"), None, "hello"),
]


@pytest.mark.parametrize(("raw", "fallback", "expected"), [c[1:] for c in BODY_CASES],
                         ids=[c[0] for c in BODY_CASES])
def test_body_text(raw: bytes, fallback: str | None, expected: str) -> None:
    p = parse_letter(raw, fallback_charset=fallback)
    assert p.body_text == expected
    assert p.body_skipped is False
    assert_sane(p)


def test_alternative_picks_plain() -> None:
    ct, body = multipart(b"alternative", [
        b"Content-Type: text/html; charset=utf-8\n\n<p>HTML version</p>",
        b"Content-Type: text/plain; charset=utf-8\n\nPlain version",
    ])
    p = parse_letter(letter(ct, body))
    assert p.body_text == "Plain version"
    assert p.attachments == []


def test_empty_plain_alternative_falls_back_to_html() -> None:
    ct, body = multipart(b"alternative", [
        b"Content-Type: text/plain; charset=utf-8\n\n \n",
        b"Content-Type: text/html; charset=utf-8\n\n<p>Only here</p>",
    ])
    assert parse_letter(letter(ct, body)).body_text == "Only here"


def test_alternative_with_related_html_and_plain() -> None:
    rel_ct, rel_body = multipart(b"related", [
        b"Content-Type: text/html\n\n<p>html</p>",
        b"Content-Type: image/png; name=logo.png\nContent-Transfer-Encoding: base64\n\n"
        + b64(b"\x89PNG1234"),
    ], boundary=b"REL")
    ct, body = multipart(b"alternative", [
        b"Content-Type: text/plain\n\nplain",
        rel_ct + b"\n" + rel_body,
    ])
    p = parse_letter(letter(ct, body))
    assert p.body_text == "plain"
    assert p.attachments == [Attachment("logo.png", "image/png", 8)]


def test_html_only_gives_text_without_tags() -> None:
    html = (
        b"<!DOCTYPE html><html><head><title>Title</title><style>p{color:red}</style>"
        b"<script>alert('<b>x</b>')</script></head><body>"
        b"<!-- a comment --><p>Labas,&nbsp;<b>Ona</b> &amp; Co &#261; &lt;tag&gt;</p>"
        b"<div>second<br>line</div><ul><li>one</li><li>two</li></ul>"
        b"<table><tr><td>a</td><td>b</td></tr></table>"
        b"<p>a < b and c > d</p><a href=\"x>y\" title='q'>link</a>"
        b"</body></html>"
    )
    p = parse_letter(text_letter(html, ctype=b"text/html", charset=b"utf-8"))
    assert p.body_text == (
        "Labas, Ona & Co ą <tag>\n\nsecond\nline\n- one\n- two\n\na b\n\na < b and c > d\n\nlink"
    )
    for junk in ("<", "color", "alert", "Title", "comment"):
        assert junk not in p.body_text.replace("<tag>", "").replace("a < b", "")


def test_html_gmail_div_per_line() -> None:
    html = b"<div>line1</div><div>line2</div><div><br></div><div>line3</div>"
    p = parse_letter(text_letter(html, ctype=b"text/html"))
    assert p.body_text == "line1\nline2\n\nline3"


def test_html_pre_keeps_line_breaks() -> None:
    p = parse_letter(text_letter(b"<pre>a\n  b\nc</pre>x   y", ctype=b"text/html"))
    assert p.body_text == "a\nb\nc\nx y"


def test_html_meta_charset_used_when_mime_has_none() -> None:
    html = b'<html><head><meta charset="windows-1257"></head><body>' + LT_1257 + b"</body></html>"
    p = parse_letter(text_letter(html, ctype=b"text/html"))
    assert p.body_text == LT


def test_html_unclosed_script_swallows_rest() -> None:
    p = parse_letter(text_letter(b"<p>before</p><script>" + b"x" * 10000, ctype=b"text/html"))
    assert p.body_text == "before"


def test_mixed_text_parts_around_inline_image_are_joined() -> None:
    ct, body = multipart(b"mixed", [
        b"Content-Type: text/plain\n\nbefore image",
        b"Content-Type: image/jpeg; name=photo.jpg\nContent-Disposition: inline\n\n\xff\xd8",
        b"Content-Type: text/plain\n\nafter image",
    ])
    p = parse_letter(letter(ct, body))
    assert p.body_text == "before image\nafter image"
    assert p.attachments == [Attachment("photo.jpg", "image/jpeg", 2)]


def test_multipart_with_wrong_boundary_is_recovered() -> None:
    body = b"--REAL\nContent-Type: text/plain\n\nrecovered\n--REAL--\n"
    p = parse_letter(letter(b'Content-Type: multipart/mixed; boundary="DECLARED"', body))
    assert p.body_text == "recovered"


def test_multipart_without_any_structure_is_text() -> None:
    p = parse_letter(letter(b'Content-Type: multipart/mixed; boundary="X"', b"just text\n"))
    assert p.body_text == "just text\n"


def test_unterminated_multipart_keeps_last_part() -> None:
    body = b"--B\nContent-Type: text/plain\n\nfirst\n--B\nContent-Type: text/plain\n\nlast, no end"
    p = parse_letter(letter(b"Content-Type: multipart/mixed; boundary=B", body))
    assert p.body_text == "first\nlast, no end"


def test_body_text_is_capped() -> None:
    p = parse_letter(text_letter(b"a" * (MAX_BODY_TEXT_CHARS + 1000)))
    assert len(p.body_text) == MAX_BODY_TEXT_CHARS


def test_capped_utf8_body_does_not_fall_back_to_mojibake() -> None:
    # The cut lands inside a two-byte character; the text must still be decoded as UTF-8.
    raw = ("ą" * (MAX_BODY_TEXT_CHARS * 3)).encode("utf-8")
    p = parse_letter(text_letter(raw, charset=b"utf-8"))
    assert p.body_text == "ą" * MAX_BODY_TEXT_CHARS


def test_depth_cap() -> None:
    def nested(depth: int) -> bytes:
        out = b""
        for i in range(depth):
            out += b"Content-Type: multipart/mixed; boundary=\"l%d\"\n\n--l%d\n" % (i, i)
        out += b"Content-Type: text/plain\n\ndeep text\n"
        for i in reversed(range(depth)):
            out += b"--l%d--\n" % i
        return b"Subject: deep\n" + out

    assert parse_letter(nested(MAX_MIME_DEPTH)).body_text == "deep text"
    p = parse_letter(nested(MAX_MIME_DEPTH + 1))
    assert p.body_text == "" and p.subject == "deep"


def test_part_cap() -> None:
    parts = [b"Content-Type: application/pdf; name=f%d.pdf\n\nx" % i for i in range(MAX_PARTS + 50)]
    ct, body = multipart(b"mixed", parts)
    p = parse_letter(letter(ct, body))
    assert len(p.attachments) == MAX_PARTS - 1  # the root counts as one entity
    assert p.attachments[0].filename == "f0.pdf"


# --------------------------------------------------------------------------------------------------
# Attachments
# --------------------------------------------------------------------------------------------------

ATTACHMENT_CASES = [
    ("rfc 2231 utf-8 Lithuanian",
     b"Content-Type: application/pdf\nContent-Disposition: attachment; filename*=utf-8''"
     + b"".join(b"%%%02X" % c for c in "Sąskaita faktūra.pdf".encode()),
     Attachment("Sąskaita faktūra.pdf", "application/pdf", 1)),
    ("rfc 2231 iso-8859-13 with language",
     b"Content-Type: application/pdf\nContent-Disposition: attachment; filename*=iso-8859-13'lt'"
     + b"".join(b"%%%02X" % c for c in "Ataskaita_ąčęėįšųūž.pdf".encode("iso-8859-13")),
     Attachment("Ataskaita_ąčęėįšųūž.pdf", "application/pdf", 1)),
    ("rfc 2231 continuations",
     b"Content-Type: application/pdf\nContent-Disposition: attachment;\n"
     b" filename*0*=utf-8''%C5%A0ilumos;\n filename*1*=%20%C4%AFrenginys;\n filename*2=\".pdf\"",
     Attachment("Šilumos įrenginys.pdf", "application/pdf", 1)),
    ("rfc 2231 beats plain filename",
     b"Content-Type: application/pdf\nContent-Disposition: attachment; filename=\"plain.pdf\";"
     b" filename*=utf-8''%C4%85.pdf",
     Attachment("ą.pdf", "application/pdf", 1)),
    ("rfc 2047 filename (Outlook/Gmail style)",
     b"Content-Type: application/pdf\nContent-Disposition: attachment; filename=\"=?utf-8?B?"
     + b64("Sutartis ąč.pdf".encode()) + b"?=\"",
     Attachment("Sutartis ąč.pdf", "application/pdf", 1)),
    ("raw 8-bit filename", b"Content-Type: application/pdf\nContent-Disposition: attachment; "
     b"filename=\"" + "Sąskaita.pdf".encode() + b"\"",
     Attachment("Sąskaita.pdf", "application/pdf", 1)),
    ("name from Content-Type only", b"Content-Type: image/png; name=\"logo.png\"",
     Attachment("logo.png", "image/png", 1)),
    ("disposition attachment without name", b"Content-Type: application/zip\n"
     b"Content-Disposition: ATTACHMENT", Attachment(None, "application/zip", 1)),
    ("text attachment is not body", b"Content-Type: text/plain\nContent-Disposition: attachment; "
     b"filename=notes.txt", Attachment("notes.txt", "text/plain", 1)),
    ("content type lower-cased", b"Content-Type: Application/PDF; name=a.pdf",
     Attachment("a.pdf", "application/pdf", 1)),
]


@pytest.mark.parametrize(("part_headers", "expected"), [c[1:] for c in ATTACHMENT_CASES],
                         ids=[c[0] for c in ATTACHMENT_CASES])
def test_attachment(part_headers: bytes, expected: Attachment) -> None:
    ct, body = multipart(b"mixed", [b"Content-Type: text/plain\n\nthe body", part_headers + b"\n\nX"])
    p = parse_letter(letter(ct, body))
    assert p.body_text == "the body"
    assert p.attachments == [expected]


def test_attachment_decoded_sizes() -> None:
    payload = bytes(range(256)) * 10
    ct, body = multipart(b"mixed", [
        b"Content-Type: text/plain\n\nbody",
        b"Content-Type: application/octet-stream; name=a.bin\nContent-Transfer-Encoding: base64\n\n"
        + b"\n".join(b64(payload)[i:i + 76] for i in range(0, len(b64(payload)), 76)),
        b"Content-Type: application/octet-stream; name=b.bin\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nab=3Dc=\nd",
        b"Content-Type: application/octet-stream; name=c.bin\n"
        b"Content-Transfer-Encoding: base64\n\n" + b64(b"hello")[:-2] + b"!\n",
        b"Content-Type: message/rfc822; name=fwd.eml\n\nSubject: inner\n\ninner body",
    ])
    p = parse_letter(letter(ct, body))
    assert p.body_text == "body"
    assert [(a.filename, a.size) for a in p.attachments] == [
        ("a.bin", len(payload)), ("b.bin", 5), ("c.bin", 4), ("fwd.eml", len(b"Subject: inner\n\ninner body")),
    ]


def test_single_part_letter_with_name_is_still_the_body() -> None:
    p = parse_letter(letter(b"Content-Type: text/plain; name=letter.txt", b"hello"))
    assert p.body_text == "hello"
    assert p.attachments == []
