"""Regenerate the nasty-letter corpus in this folder: `python tests/corpus/make_corpus.py`.

The .eml files are committed and the tests read them as they are (a fixed corpus: a test must not
change because a generator changed).  This script only documents how each one was made, and is
deterministic (fixed random seeds), so rerunning it rewrites identical files.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

LT = "Išsiųsti ąčęėįšųūž"


def _hdr(subject: str = "corpus", extra: bytes = b"") -> bytes:
    return (
        b"From: Corpus <corpus@example.lt>\r\n"
        b"To: test@example.lt\r\n"
        b"Date: Mon, 2 Jan 2023 10:00:00 +0200\r\n"
        b"Message-ID: <" + subject.encode() + b"@corpus.example.lt>\r\n"
        b"Subject: " + subject.encode() + b"\r\n" + extra
    )


def broken_boundaries() -> bytes:
    # Declared boundary never used; body uses another one; a prefix-colliding line; a delimiter
    # with trailing junk; a part without headers.
    return _hdr("broken-boundaries", b'Content-Type: multipart/mixed; boundary="DECLARED"\r\n') + (
        b"\r\npreamble\r\n"
        b"--REAL\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"first part\r\n"
        b"--REALLY-not-a-delimiter\r\n"
        b"still first part\r\n"
        b"--REAL junk after delimiter\r\n"
        b"--REAL\r\n"
        b"\r\nno headers here\r\n"
        b"--REAL\r\n"
        b"Content-Type: multipart/alternative; boundary=\r\n\r\n"
        b"--\r\n--\r\n"
        b"--REAL--\r\n"
        b"epilogue\r\n"
    )


def unterminated_multipart() -> bytes:
    return _hdr("unterminated", b'Content-Type: multipart/mixed; boundary="o"\r\n') + (
        b"\r\n--o\r\n"
        b"Content-Type: multipart/alternative; boundary=\"i\"\r\n\r\n"
        b"--i\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"inner text that never ends\r\n"
        b"--i\r\n"
        b"Content-Type: text/html\r\n\r\n"
        b"<p>cut in the middle of a ta"
    )


def bad_base64() -> bytes:
    good = base64.b64encode(LT.encode("utf-8")).decode()
    return _hdr("bad-base64", b'Content-Type: multipart/mixed; boundary="b"\r\n') + (
        b"\r\n--b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + good[:7].encode() + b"!!*\xff\xfe" + good[7:].rstrip("=").encode() + b"\r\n"
        b"--b\r\n"
        b"Content-Type: application/octet-stream; name=\"x.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"A\r\nAB\r\nABC\r\n====\r\n=\r\n@@@@\r\n\x00\x00\r\nQUJD\r\n"
        b"--b\r\n"
        b"Content-Type: application/octet-stream; name=\"trunc.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(bytes(range(256)) * 40)[:-3] + b"\r\n"
        b"--b\r\n"
        b"Content-Type: application/octet-stream; name=\"qp.bin\"\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"=ZZ=4=\r\n=\xff=0A=\r\n"
        b"--b\r\n"
        b"Content-Type: application/octet-stream; name=\"uu.bin\"\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\n"
        b"begin 644 uu.bin\r\n#86)C\r\n\xff\xff\xff\r\nM\r\n`\r\nend\r\n"
        b"--b--\r\n"
    )


def nul_bytes() -> bytes:
    return (
        b"From: N\x00ul <nul\x00@example.lt>\r\n"
        b"To: a@b.lt\x00, \x00\r\n"
        b"Subject: nul\x00 bytes =?utf-8?q?in=00word?=\r\n"
        b"Message-ID: <nul\x00@x>\r\n"
        b"Date: Mon, 2 Jan 2023 10:00:00 +0200\x00\r\n"
        b"Content-Type: text/plain; charset=\"utf\x00-8\"\r\n\r\n"
        b"body\x00with\x00nuls\r\n" + b"\x00" * 10000 + b"\r\nend\r\n"
    )


def huge_header_line() -> bytes:
    return (
        _hdr("huge-header-line")
        + b"X-Huge: " + b"a" * (1024 * 1024) + b"\r\n"
        + b"Thread-Topic: " + b"=?utf-8?q?x" + b"=C4" * 30000 + b"\r\n"
        + b"\r\nbody\r\n"
    )


def deep_nesting() -> bytes:
    depth = 200
    out = [_hdr("deep-nesting")]
    for i in range(depth):
        out.append(b'Content-Type: multipart/mixed; boundary="lvl%d"\r\n\r\n--lvl%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\ninnermost text\r\n")
    for i in reversed(range(depth)):
        out.append(b"--lvl%d--\r\n" % i)
    return b"".join(out)


def deep_message_rfc822() -> bytes:
    return _hdr("deep-rfc822", b"Content-Type: message/rfc822\r\n") + b"\r\n" + (
        b"Content-Type: message/rfc822\r\n\r\n" * 5000
    ) + b"Subject: inner\r\n\r\ninner body\r\n"


def many_recipients() -> bytes:
    to = b",\r\n ".join(b'"Recipient %d" <r%d@example.lt>' % (i, i) for i in range(20000))
    return (
        b"From: bulk@example.lt\r\nTo: " + to + b"\r\nCc: " + to[:100000] + b"\r\n"
        b"Subject: 20k recipients\r\n\r\nhello all\r\n"
    )


def encoded_word_soup() -> bytes:
    rng = random.Random(2047)
    lt = LT.encode("utf-8")
    words = []
    for i in range(8000):
        kind = rng.randrange(10)
        if kind == 0:
            words.append(b"=?utf-8?B?" + base64.b64encode(lt[: rng.randrange(len(lt))]) + b"?=")
        elif kind == 1:
            words.append(b"=?utf-8?q?" + b"".join(b"=%02X" % c for c in lt[:7]) + b"?=")
        elif kind == 2:
            words.append(b"=?x-foo-%d?q?unknown_charset?=" % i)
        elif kind == 3:
            words.append(b"=?utf-8?B?!!!not base64!!!?=")
        elif kind == 4:
            words.append(b"=?windows-1257?Q?" + b"".join(b"=%02X" % c for c in LT.encode("cp1257")) + b"?=")
        elif kind == 5:
            words.append(b"=?utf-8?q?unterminated")
        elif kind == 6:
            words.append(b"=??q??=")
        elif kind == 7:
            words.append(b"=?punycode?q?" + b"a" * 50 + b"?=")
        elif kind == 8:
            words.append(b"\xc4\x85\xe0\xf0raw")
        else:
            words.append(b"=?utf-8*lt?Q?a=?=")
    soup = b" ".join(words)
    return (
        b"From: =?utf-8?q?" + b"=C4=85" * 100 + b"?= <soup@example.lt>\r\n"
        b"To: " + b", ".join(b"=?utf-8?b?" + base64.b64encode(lt) + b"?= <to%d@x.lt>" % i for i in range(50)) + b"\r\n"
        b"Subject: " + soup + b"\r\n"
        b"Content-Type: text/plain; charset=\"=?utf-8?q?x?=\"\r\n\r\nsoup body\r\n"
    )


def empty() -> bytes:
    return b""


def only_headers() -> bytes:
    return (
        b"From: only@example.lt\r\n"
        b"Subject: only headers\r\n"
        b"Content-Type: multipart/mixed; boundary=\"never\"\r\n"
        b"Message-ID: <only-headers@example.lt>"
    )


def binary_garbage() -> bytes:
    rng = random.Random(12345)
    return bytes(rng.getrandbits(8) for _ in range(256 * 1024))


def html_huge_script() -> bytes:
    script = b"<script>" + b"var x = '<a href=\"\">' + 1 < 2 > 3;\n" * 30000 + b"</script>"
    style = b"<style>" + b"p { color: red; }\n" * 10000 + b"</style>"
    html = (
        b"<html><head><title>t</title>" + style + b"</head><body>"
        + script + b"<p>Visible &amp; kept</p>" + b"<script>" + b"x" * 200000
    )
    return _hdr("html-huge-script", b"Content-Type: text/html; charset=utf-8\r\n") + b"\r\n" + html


def html_pathological() -> bytes:
    parts = [
        b"<p>start</p>",
        b"<a" * 100000,
    ]
    html2 = b"<p>second</p>" + b"</" * 100000 + b"<?" * 50000 + b"<![" * 50000 + b"<!--" + b"-" * 10000
    return _hdr("html-pathological", b'Content-Type: multipart/mixed; boundary="h"\r\n') + (
        b"\r\n--h\r\nContent-Type: text/html\r\n\r\n" + b"".join(parts) + b"\r\n"
        b"--h\r\nContent-Type: text/html\r\n\r\n" + html2 + b"\r\n"
        b"--h\r\nContent-Type: text/html\r\n\r\n" + b"<title>" * 50000 + b"<head>" * 50000 + b"x\r\n"
        b"--h\r\nContent-Type: text/html\r\n\r\n" + b"<a b=\"" + b"=' " * 100000 + b">\r\n"
        b"--h--\r\n"
    )


def address_torture() -> bytes:
    return (
        b"From: " + b"(" * 100000 + b"\r\n"
        b"To: " + b'"' * 50001 + b"\r\n"
        b"Cc: " + b"<" * 100000 + b"\r\n"
        b"Bcc: " + b"a:" * 50000 + b"\r\n"
        b"Reply-To: " + b"\\" * 100000 + b"\r\n"
        b"Sender: " + b"@," * 50000 + b"\r\n"
        b"Subject: address torture\r\n\r\nbody\r\n"
    )


def many_parts() -> bytes:
    out = [_hdr("many-parts", b'Content-Type: multipart/mixed; boundary="p"\r\n'), b"\r\n"]
    for i in range(5000):
        out.append(
            b"--p\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"f%d.bin\"\r\n\r\nxx\r\n" % i
        )
    out.append(b"--p--\r\n")
    return b"".join(out)


def lying_charsets() -> bytes:
    return _hdr("lying-charsets", b'Content-Type: multipart/mixed; boundary="c"\r\n') + (
        b"\r\n--c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + LT.encode("cp1257") + b"\r\n"
        b"--c\r\nContent-Type: text/plain; charset=punycode\r\n\r\n" + b"a-" * 50000 + b"\r\n"
        b"--c\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2D3-+2D3-+AGEAYgBj-\r\n"
        b"--c\r\nContent-Type: text/plain; charset=zlib\r\n\r\nx\x9c\x03\x00\x00\x00\x00\x01\r\n"
        b"--c\r\nContent-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfe\x00\xd8\r\n"
        b"--c--\r\n"
    )


def mixed_line_endings() -> bytes:
    return (
        b"From: cr@example.lt\rSubject: cr only\r\n"
        b"To: lf@example.lt\n"
        b"Content-Type: multipart/mixed; boundary=m\n\r\n"
        b"--m\rContent-Type: text/plain\r\rcr text\r\n--m\n\nlf text\n\r--m--\r"
    )


def many_header_fields() -> bytes:
    return (
        _hdr("many-header-fields")
        + b"".join(b"X-F%d: v\r\n" % i for i in range(120000))
        + b" continuation\r\n" * 1000
        + b"\r\nbody after many headers\r\n"
    )


def rfc2231_torture() -> bytes:
    cont = b"".join(b"; filename*%d*=%%C4%%85" % i for i in range(1500))
    params = b"; a=\"" * 3000
    return _hdr("rfc2231-torture", b'Content-Type: multipart/mixed; boundary="r"\r\n') + (
        b"\r\n--r\r\nContent-Type: application/pdf" + params + b"\r\n"
        b"Content-Disposition: attachment" + cont + b"\r\n\r\nx\r\n"
        b"--r\r\nContent-Type: application/pdf; name*=''\r\n"
        b"Content-Disposition: attachment; filename*=x-bogus'lt'%FF%FE%C4\r\n\r\nx\r\n"
        b"--r\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''%C5%A1; filename*2=\"c\"; "
        b"filename*1*=%C4%8D; filename=\"plain.pdf\"\r\n\r\nx\r\n"
        b"--r--\r\n"
    )


CORPUS = {
    "broken_boundaries": broken_boundaries,
    "unterminated_multipart": unterminated_multipart,
    "bad_base64": bad_base64,
    "nul_bytes": nul_bytes,
    "huge_header_line": huge_header_line,
    "deep_nesting": deep_nesting,
    "deep_message_rfc822": deep_message_rfc822,
    "many_recipients": many_recipients,
    "encoded_word_soup": encoded_word_soup,
    "empty": empty,
    "only_headers": only_headers,
    "binary_garbage": binary_garbage,
    "html_huge_script": html_huge_script,
    "html_pathological": html_pathological,
    "address_torture": address_torture,
    "many_parts": many_parts,
    "lying_charsets": lying_charsets,
    "mixed_line_endings": mixed_line_endings,
    "many_header_fields": many_header_fields,
    "rfc2231_torture": rfc2231_torture,
}


def main() -> None:
    for name, make in CORPUS.items():
        (HERE / f"{name}.eml").write_bytes(make())


if __name__ == "__main__":
    main()
