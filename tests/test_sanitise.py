"""The web view's sanitiser (web/sanitise.py), directly: every hostile case, the parser's hostile corpus,
and what must survive for a letter to stay readable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hanna_sync.mail.message import html_body
from hanna_sync.web.sanitise import clean
from tests.hostile_html import CASES, Case, xss_letter

CORPUS = Path(__file__).parent / "corpus"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_html_loses_what_runs_or_fetches(case: Case) -> None:
    for html in (case.html, html_body(xss_letter(case, 0))):  # as written, and as the parser hands it on
        assert html is not None
        cleaned = clean(html)
        for forbidden in case.forbidden:
            assert forbidden.lower() not in cleaned.lower(), forbidden
        assert case.kept in cleaned


def test_a_readable_letter_stays_readable() -> None:
    html = ('<table width="100%" cellpadding="4"><tr><td align="right" style="color: #333; font-weight: bold">'
            'Ąžuolas</td></tr></table><p><a href="https://azuolas.lt/kaina?x=1&amp;y=2">kaina</a> '
            '<a href="mailto:ruta@azuolas.lt">Rūta</a><br><img src="data:image/png;base64,iVBORw0KGgo=" alt="logo">'
            '<font color="red">!</font></p><ul><li>vienas</li></ul>')
    assert clean(html) == (
        '<table width="100%" cellpadding="4"><tbody><tr><td align="right" style="color:#333;font-weight:bold">'
        'Ąžuolas</td></tr></tbody></table><p><a href="https://azuolas.lt/kaina?x=1&amp;y=2" target="_blank"'
        ' rel="noopener noreferrer">kaina</a> <a href="mailto:ruta@azuolas.lt" target="_blank"'
        ' rel="noopener noreferrer">Rūta</a><br><img src="data:image/png;base64,iVBORw0KGgo=" alt="logo">'
        '<font color="red">!</font></p><ul><li>vienas</li></ul>')


@pytest.mark.parametrize("style", [
    "background: url(http://evil.example/a.png)", "background:URL ( 'http://evil.example/a.png' )",
    "list-style-image: url(x)", "width: expression(alert(1))", "color: r\\65 d; background: u\\72l(x)",
    "behavior: url(x.htc)", "-moz-binding: url(x.xml#xss)", "background-image: image-set('x.png' 1x)",
])
def test_a_style_that_could_fetch_or_run_goes_whole(style: str) -> None:
    assert clean(f'<p style="{style}">t</p>') == "<p>t</p>"


def test_only_inline_raster_images_keep_their_source() -> None:
    for src in ("http://evil.example/p.gif", "https://evil.example/p.gif", "//evil.example/p.gif", "cid:a@b",
                "data:image/svg+xml;base64,PHN2Zz4=", "data:text/html;base64,PHNjcmlwdD4=", "/api/letters/1/raw",
                "p.gif", "javascript:alert(1)"):
        assert clean(f'<img src="{src}" alt="a">') == '<img alt="a">', src
    assert clean('<a href="/logout">x</a>') == '<a target="_blank" rel="noopener noreferrer">x</a>'  # nothing relative


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.stem)
def test_the_parser_corpus_cleans_quickly(path: Path) -> None:
    html = html_body(path.read_bytes())
    if html is None:
        return
    started = time.monotonic()
    cleaned = clean(html)
    assert time.monotonic() - started < 5
    assert "<script" not in cleaned.lower() and "<style" not in cleaned.lower()
