"""Address headers (From, To, Cc, ...) parsed into `Address` records, by a linear state machine.

Not `email.utils.getaddresses`: it recurses on `"(((("` and raises RecursionError on a hostile To:.
Display names are decoded (RFC 2047, charsets); the address is kept as written: `addresses.py` brings it
to the canonical form when matching.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hanna_sync.mail.charsets import decode_bytes
from hanna_sync.mail.headers import decode_words
from hanna_sync.mail.limits import MAX_ADDRESS_HEADER_BYTES, MAX_ADDRESSES_PER_HEADER, MAX_ID_CHARS, MAX_NAME_CHARS
from hanna_sync.mail.text import CONTROL_RE, clean, one_line

Keep = Callable[[str], bool]  # whether an address (as written) is kept past the per-header bounds


@dataclass(frozen=True)
class Address:
    """One mailbox from an address header.

    `email` is kept as written (only stripped): matching normalises case and IDNs elsewhere, and the
    archive should show what the sender actually wrote.  It is '' when nothing address-like (no
    '@') was found, so a bare display name is not lost.
    """

    name: str
    email: str


_ADDR_SPECIAL_RE = re.compile(r'["(),:;<>\\]')
_QUOTED_RE = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"?', re.S)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_COMMENT_SPECIAL_RE = re.compile(r"[()\\]")
# Inside <...>: an optional obsolete source route "@a,@b:" (it may contain commas), then the
# address up to '>' or, when '>' is missing, up to the next comma.  A route cannot cross '<', so
# a failed route attempt only rescans its own mailbox: linear.
_ANGLE_RE = re.compile(r"(?:@[^,:<>\s]*(?:,\s*@[^,:<>\s]*)*:)?[^>,]*")


def _finish_mailbox(
    phrase: list[str], angle: str | None, comments: list[str], fallback: str | None
) -> Address | None:
    phrase_raw = "".join(phrase)
    comment_raw = " ".join(c for c in comments if c.strip())
    if angle is not None:
        email_raw = angle
        name_raw = phrase_raw if phrase_raw.strip() else comment_raw
    else:
        tokens = phrase_raw.split()
        at = next((k for k in range(len(tokens) - 1, -1, -1) if "@" in tokens[k]), None)
        if at is not None:
            email_raw = tokens[at]
            rest = tokens[:at] + tokens[at + 1:]
            name_raw = " ".join(rest) if rest else comment_raw
        else:
            email_raw = ""
            name_raw = " ".join(tokens) if tokens else comment_raw

    name = ""
    if name_raw.strip():
        name = decode_words(name_raw.encode("latin-1", "replace"), fallback)
        name = " ".join(one_line(name, MAX_NAME_CHARS * 4).split())
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
            name = name[1:-1].strip()
        name = name[:MAX_NAME_CHARS]

    email = ""
    if email_raw.strip():
        email = decode_bytes(email_raw.encode("latin-1", "replace"), None, fallback)
        email = clean(email).strip().strip("<>").strip()
        if email[:7].lower() == "mailto:":
            email = email[7:]
        if email.startswith("@") and ":" in email:  # obsolete source route @a,@b:user@host
            email = email.rsplit(":", 1)[1]
        if '"' not in email:
            email = "".join(email.split())
        if "@" not in email or len(email) > MAX_ID_CHARS or CONTROL_RE.search(email):
            email = ""
    if not name and not email:
        return None
    return Address(name=name, email=email)


def parse_addresses(values: list[bytes], fallback: str | None, keep: Keep | None = None) -> list[Address]:
    """Parse all occurrences of one address header, keeping at most MAX_ADDRESSES_PER_HEADER, and
    past that (or past MAX_ADDRESS_HEADER_BYTES) the addresses `keep` asks for: then the whole header
    is read, and the list stays bounded by what the caller keeps.

    Tolerates what real mail contains: groups ("undisclosed-recipients:;"), comments as names,
    encoded words inside quotes, missing '>' or quotes, bare "Name a@b" without brackets.
    """
    out: list[Address] = []
    budget = MAX_ADDRESS_HEADER_BYTES
    for raw in values:
        if keep is None and (budget <= 0 or len(out) >= MAX_ADDRESSES_PER_HEADER):
            break
        within = max(budget, 0)  # characters of this value inside the byte bound
        if keep is None:
            raw = raw[:budget]
        budget -= len(raw)
        s = raw.decode("latin-1")  # 1:1 bytes<->chars; real decoding happens per token
        phrase: list[str] = []
        comments: list[str] = []
        angle: str | None = None
        i = 0
        n = len(s)

        def finish(inside: bool) -> None:
            """End the mailbox read so far; `inside`: whether it ended within the byte bound."""
            nonlocal phrase, comments, angle
            if phrase or angle is not None or comments:
                addr = _finish_mailbox(phrase, angle, comments, fallback)
                if addr is not None and (
                        (len(out) < MAX_ADDRESSES_PER_HEADER and inside)
                        or (keep is not None and addr.email and keep(addr.email))):
                    out.append(addr)
            phrase, comments, angle = [], [], None

        while i < n and (len(out) < MAX_ADDRESSES_PER_HEADER or keep is not None):
            m = _ADDR_SPECIAL_RE.search(s, i)
            if m is None:
                phrase.append(s[i:])
                break
            j = m.start()
            if j > i:
                phrase.append(s[i:j])
            c = s[j]
            if c == '"':
                q = _QUOTED_RE.match(s, j)
                assert q is not None  # the pattern cannot fail at a '"'
                phrase.append(_QUOTED_PAIR_RE.sub(r"\1", q.group(1)))
                i = q.end()
            elif c == "(":
                depth = 0
                k = j
                while k < n:
                    cm = _COMMENT_SPECIAL_RE.search(s, k)
                    if cm is None:
                        k = n
                        break
                    k = cm.start()
                    ch = s[k]
                    if ch == "\\":
                        k += 2
                        continue
                    depth += 1 if ch == "(" else -1
                    k += 1
                    if depth == 0:
                        break
                closed = depth == 0
                comments.append(s[j + 1:k - 1] if closed else s[j + 1:k])
                i = min(k, n)
            elif c == "<":
                am = _ANGLE_RE.match(s, j + 1)
                assert am is not None
                if angle is None:
                    angle = am.group(0)
                i = am.end()
                if i < n and s[i] == ">":
                    i += 1
            elif c in ",;":
                finish(i <= within)
                i = j + 1
            elif c == ":":
                if angle is None:  # group "name:" -- the phrase was the group's name
                    phrase, comments = [], []
                i = j + 1
            elif c == "\\":
                phrase.append(s[j + 1:j + 2])
                i = j + 2
            else:  # stray '>' or ')'
                i = j + 1
        finish(i <= within)
    return out

