"""The MIME tree: a letter split into its parts, and which parts are the body text and which attachments.

Why not `email.parser.BytesParser` (both `policy.compat32` and `policy.default`, CPython 3.11.7): the feed
parser recurses once per nesting level (multipart *and* message/rfc822), so a letter nested ~330 levels
deep raises `RecursionError` and nothing of it can be archived; and it checks every line against every
open boundary, O(depth x lines): 200 levels with 100k lines took 1.4 s, a 25 MB letter would take minutes.
So the split here is a small iterative one over one bytes buffer (offsets, no copies per level,
`bytes.find` for boundaries), capped at MAX_MIME_DEPTH levels and MAX_PARTS entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hanna_sync.mail.charsets import decode_prefix
from hanna_sync.mail.headers import first_value, parse_header_block
from hanna_sync.mail.html_text import html_to_text
from hanna_sync.mail.limits import MAX_BODY_TEXT_CHARS, MAX_HTML_CHARS, MAX_MIME_DEPTH, MAX_PARTS, guard
from hanna_sync.mail.params import Param, param_text, parse_params
from hanna_sync.mail.text import clean_body
from hanna_sync.mail.transfer import decode_transfer, decoded_size


@dataclass(frozen=True)
class Attachment:
    """A file carried by a letter; only metadata, the archive keeps the raw letter anyway."""

    filename: str | None
    content_type: str
    size: int  # decoded size in bytes (best effort for broken encodings)


_CTYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_PART_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


@dataclass(kw_only=True)
class Node:
    """One MIME entity: its content headers, parsed, and where its body lies in the letter's buffer."""

    ctype: str
    params: dict[str, Param]
    disposition: str
    disp_params: dict[str, Param]
    cte: str
    start: int  # body range in the normalised buffer
    end: int
    depth: int
    is_root: bool
    children: list[Node] = field(default_factory=list)
    opaque: bool = False  # a multipart that was not split (too deep / no parts budget)

    @property
    def maintype(self) -> str:
        return self.ctype.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.ctype.split("/", 1)[1]


def _content_type(raw: bytes | None, default: str) -> tuple[str, dict[str, Param]]:
    """RFC 2045 5.2: a missing or syntactically invalid Content-Type means the default."""
    main, params = parse_params(raw)
    if not _CTYPE_RE.fullmatch(main):
        return default, params if raw else {}
    return main, params


def _make_node(
    headers: list[tuple[str, bytes]], *, body_start: int, end: int, depth: int, default_ctype: str, is_root: bool
) -> Node:
    ctype, params = _content_type(first_value(headers, "content-type"), default_ctype)
    disposition, disp_params = parse_params(first_value(headers, "content-disposition"))
    cte_raw = first_value(headers, "content-transfer-encoding") or b""
    cte = cte_raw[:100].decode("latin-1").strip().strip('"').strip().lower()
    cte = cte.split("(", 1)[0].split(";", 1)[0].strip()
    return Node(ctype=ctype, params=params, disposition=disposition, disp_params=disp_params, cte=cte,
                start=body_start, end=end, depth=depth, is_root=is_root)


_WS_EOL_RE = re.compile(rb"[ \t]*(?:\n|\Z)")
_GUESS_BOUNDARY_RE = re.compile(rb"(?m)^--([\x21-\x7e]{1,200}?)[ \t]*$")


def _split_multipart(
    data: bytes, start: int, end: int, *, boundary: bytes, limit: int
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


def build_tree(data: bytes, root_headers: list[tuple[str, bytes]], body_start: int) -> Node:
    """Build the MIME tree iteratively, capped at MAX_MIME_DEPTH levels and MAX_PARTS entities."""
    root = _make_node(
        root_headers, body_start=body_start, end=len(data), depth=0, default_ctype="text/plain", is_root=True)
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
            split = _split_multipart(data, node.start, node.end, boundary=boundary, limit=MAX_PARTS - count)
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
                    split = _split_multipart(data, node.start, node.end, boundary=guess, limit=MAX_PARTS - count)
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
            headers, bstart = parse_header_block(data, s, e, _PART_HEADERS)
            child = _make_node(headers, body_start=bstart, end=e, depth=node.depth + 1,
                               default_ctype=child_default, is_root=False)
            node.children.append(child)
            count += 1
        stack.extend(reversed(node.children))
    return root


def _filename(node: Node, fallback: str | None) -> str | None:
    name = param_text(node.disp_params.get("filename"), fallback)
    if name is None:
        name = param_text(node.params.get("name"), fallback)
    return name


_NON_SPACE_RE = re.compile(rb"[^ \t\n]")


def _is_body_candidate(data: bytes, node: Node, fallback: str | None) -> bool:
    if node.ctype not in ("text/plain", "text/html"):
        return False
    if node.disposition == "attachment":
        return False
    if _NON_SPACE_RE.search(data, node.start, node.end) is None:
        return False  # an empty plain alternative must not hide the HTML one (Outlook sends those)
    if node.is_root:
        return True  # a single-part text letter is the body even if it carries a name
    return _filename(node, fallback) is None


def choose_body(data: bytes, node: Node, fallback: str | None) -> list[Node]:
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
            choices = [choose_body(data, c, fallback) for c in node.children]
            if node.subtype == "alternative":
                for ch in choices:
                    if ch and all(n.ctype == "text/plain" for n in ch):
                        return ch
            for ch in choices:
                if ch:
                    return ch
            return []
        out: list[Node] = []
        for c in node.children:
            out.extend(choose_body(data, c, fallback))
        return out
    return [node] if _is_body_candidate(data, node, fallback) else []


_META_CHARSET_RE = re.compile(rb"""(?i)<meta[^>]{0,300}?charset\s*=\s*["']?\s*([a-z0-9_:.+-]{1,40})""")


def leaf_source(data: bytes, node: Node, fallback: str | None, budget: int) -> str:
    """A text leaf decoded as written (HTML still HTML): the MIME charset, else an HTML part's <meta> one."""
    body = decode_transfer(data[node.start:node.end], node.cte)
    cs = node.params.get("charset")
    declared = cs.value.decode("latin-1", "replace") if cs is not None else None
    if node.ctype == "text/html" and not declared:
        m = _META_CHARSET_RE.search(body, 0, 4096)
        if m is not None:
            declared = m.group(1).decode("ascii", "replace")
    return decode_prefix(body, declared, fallback, budget)


def _leaf_text(data: bytes, node: Node, fallback: str | None, budget: int) -> str:
    if node.ctype == "text/html":
        return html_to_text(leaf_source(data, node, fallback, MAX_HTML_CHARS), budget)
    return leaf_source(data, node, fallback, budget)


def choose_shown(data: bytes, node: Node, fallback: str | None) -> list[Node]:
    """The leaves a mail client shows as the body: `choose_body`, except that a multipart/alternative
    shows its last alternative that has HTML (the richest; the text/plain one is for clients without
    HTML). Bounded like choose_body (MAX_MIME_DEPTH)."""
    if node.maintype == "multipart" and not node.opaque and node.subtype == "alternative":
        choices = [choose_shown(data, c, fallback) for c in node.children]
        for ch in reversed(choices):
            if any(n.ctype == "text/html" for n in ch):
                return ch
        return next((ch for ch in choices if ch), [])
    if node.maintype == "multipart" and not node.opaque and node.children:
        if node.subtype == "related":
            return next((ch for c in node.children if (ch := choose_shown(data, c, fallback))), [])
        return [n for c in node.children for n in choose_shown(data, c, fallback)]
    return choose_body(data, node, fallback)


def body_and_attachments(
    data: bytes, root: Node, fallback: str | None
) -> tuple[str, list[Attachment]]:
    chosen = guard([], choose_body, data, root, fallback)
    chosen_ids = {id(n) for n in chosen}
    texts: list[str] = []
    used = 0
    for node in chosen:
        if used >= MAX_BODY_TEXT_CHARS:
            break
        t = guard("", _leaf_text, data, node, fallback, MAX_BODY_TEXT_CHARS - used)
        t = clean_body(t)
        if t.strip():
            texts.append(t)
            used += len(t) + 1
    body_text = "\n".join(texts)[:MAX_BODY_TEXT_CHARS]
    return body_text, [att for _, att in attachment_nodes(data, root, fallback, chosen_ids)]


def attachment_nodes(
    data: bytes, root: Node, fallback: str | None, body_ids: set[int]
) -> list[tuple[Node, Attachment]]:
    """The leaves that are attachments (not part of the body text), in document order."""
    out: list[tuple[Node, Attachment]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.maintype == "multipart":
            stack.extend(reversed(node.children))
            continue
        if id(node) in body_ids:
            continue
        att = guard(None, _attachment, data, node, fallback)
        if att is not None:
            out.append((node, att))
    return out


def _attachment(data: bytes, node: Node, fallback: str | None) -> Attachment | None:
    """Parts with Content-Disposition: attachment or with a file name are attachments."""
    name = _filename(node, fallback)
    if node.disposition != "attachment" and name is None:
        return None
    size = decoded_size(data[node.start:node.end], node.cte)
    return Attachment(filename=name, content_type=node.ctype, size=size)

