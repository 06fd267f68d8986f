"""`html_body`: the HTML a mail client would show, for the web view (the parser's other entry points are
tested in test_message_bodies.py). Pure: letters in, text or None out, same caps, never raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanna_sync.mail.message import MAX_HTML_CHARS, html_body
from tests.letters import LT, LT_1257, LT_UTF8, b64, letter, multipart, qword, text_letter

CORPUS = Path(__file__).parent / "corpus"
HTML_PART = b"Content-Type: text/html; charset=utf-8\n\n<p>" + LT_UTF8 + b"</p>"
PLAIN_PART = b"Content-Type: text/plain; charset=utf-8\n\nplain <not a tag> & text"


def test_an_alternative_shows_its_html_part() -> None:
    assert html_body(letter(*multipart(b"alternative", [PLAIN_PART, HTML_PART]))) == f"<p>{LT}</p>"


def test_a_text_letter_has_no_html_body() -> None:
    assert html_body(text_letter(LT_UTF8, charset=b"utf-8")) is None
    assert html_body(letter(*multipart(b"alternative", [PLAIN_PART]))) is None


@pytest.mark.parametrize(("raw", "fallback"), [
    (text_letter(b"<p>" + LT_1257 + b"</p>", ctype=b"text/html", charset=b"windows-1257"), None),
    (text_letter(b'<html><head><meta charset="windows-1257"></head><p>' + LT_1257 + b"</p>", ctype=b"text/html"), None),
    (text_letter(b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-13"><p>'
                 + LT.encode("iso-8859-13") + b"</p>", ctype=b"text/html"), None),
    (text_letter(qword(b"<p>" + LT_UTF8 + b"</p>"), ctype=b"text/html", charset=b"utf-8", cte=b"quoted-printable"), None),
    (text_letter(b64(b"<p>" + LT_UTF8 + b"</p>"), ctype=b"text/html", charset=b"utf-8", cte=b"base64"), None),
    (text_letter(b"<p>" + "Привет".encode("windows-1251") + b"</p>", ctype=b"text/html"), "windows-1251"),
], ids=["declared", "meta charset", "meta http-equiv", "quoted-printable", "base64", "fallback"])
def test_the_html_is_decoded_with_its_charset(raw: bytes, fallback: str | None) -> None:
    shown = html_body(raw, fallback)
    assert shown is not None and (LT in shown or "Привет" in shown)


def test_text_shown_beside_the_html_comes_escaped_in_pre() -> None:
    shown = html_body(letter(*multipart(b"mixed", [PLAIN_PART, HTML_PART])))
    assert shown == f"<pre>plain &lt;not a tag&gt; &amp; text</pre>\n<p>{LT}</p>"


def test_nested_structures_as_clients_show_them() -> None:
    image = b"Content-Type: image/png\nContent-ID: <i1>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo="
    related = b"".join(multipart(b"related", [HTML_PART, image], b"REL"))
    alternative = b"".join(multipart(b"alternative", [PLAIN_PART, related], b"ALT"))
    attached = (b'Content-Type: text/html; name="page.html"\nContent-Disposition: attachment; filename="page.html"\n\n'
                b"<script>attached</script>")
    assert html_body(letter(*multipart(b"mixed", [alternative, attached]))) == f"<p>{LT}</p>"
    # An HTML attachment is never the body: a letter whose only HTML is attached has none.
    assert html_body(letter(*multipart(b"mixed", [PLAIN_PART, attached]))) is None


def test_the_html_is_capped() -> None:
    shown = html_body(text_letter(b"<p>" + b"x" * (MAX_HTML_CHARS + 1000), ctype=b"text/html"))
    assert shown is not None and len(shown) == MAX_HTML_CHARS


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.stem)
def test_the_hostile_corpus_never_raises(path: Path) -> None:
    shown = html_body(path.read_bytes())
    assert shown is None or (isinstance(shown, str) and len(shown) <= MAX_HTML_CHARS)
    if path.stem.startswith("html_"):  # the corpus's HTML letters: their HTML is found, not given up on
        assert shown and "<" in shown


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"Content-Type: text/html\n", None, "not bytes", 42])
def test_anything_in_gives_text_or_none(raw: object) -> None:
    shown = html_body(raw)  # type: ignore[arg-type]
    assert shown is None or isinstance(shown, str)
