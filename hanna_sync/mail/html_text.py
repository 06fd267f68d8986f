"""HTML bodies to readable text, in one linear pass.

Not `html.parser.HTMLParser`: on CPython 3.11 it is quadratic on `"<a" * 200_000` (63 s) and
`"</" * 200_000` (10 s) and raises `AssertionError` on `"<!["`. Only `html.unescape` is used, for entities.
"""

from __future__ import annotations

import html
import re

from hanna_sync.mail.limits import MAX_HTML_CHARS

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


def html_to_text(s: str, limit: int) -> str:
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

