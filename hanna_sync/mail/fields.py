"""The structured header fields that are not addresses: message ids (Message-ID, In-Reply-To,
References) and the Date, read as leniently as real mail needs and never guessed."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz

from hanna_sync.mail.charsets import decode_bytes
from hanna_sync.mail.limits import MAX_HEADER_TEXT_BYTES, MAX_ID_CHARS
from hanna_sync.mail.text import CONTROL_RE, clean

_MSGID_RE = re.compile(r"<([^<>]*)>")


def clean_id(s: str) -> str | None:
    s = "".join(clean(s).split())  # ids have no whitespace; broken folding inserts some
    s = s.replace("<", "").replace(">", "")  # stray brackets of an unbalanced "<id" or "id>"
    if not s or len(s) > MAX_ID_CHARS or CONTROL_RE.search(s):
        return None
    return s


def parse_ids(raw: bytes | None, limit: int) -> list[str]:
    """Message ids from Message-ID / In-Reply-To / References, without <>, de-duplicated."""
    if not raw:
        return []
    text = decode_bytes(raw[:MAX_HEADER_TEXT_BYTES * 4], None, None)
    found = _MSGID_RE.findall(text)
    if not found:
        found = text.replace(",", " ").split()
    out: list[str] = []
    seen: set[str] = set()
    for f in found:
        cid = clean_id(f)
        if cid and cid not in seen:
            seen.add(cid)
            out.append(cid)
            if len(out) >= limit:
                break
    return out


def parse_message_id(raw: bytes | None) -> str | None:
    """The id inside <...>; without brackets the whole value (some robots omit them)."""
    if not raw:
        return None
    text = decode_bytes(raw[:MAX_HEADER_TEXT_BYTES], None, None)
    m = _MSGID_RE.search(text)
    return clean_id(m.group(1) if m else text)


_COMMENT_RE = re.compile(r"\([^()]*\)")
# Zone names parsedate_tz does not know but European mail uses (it would treat them as UTC).
_EXTRA_ZONES = {"CET": "+0100", "CEST": "+0200", "MET": "+0100", "MEST": "+0200",
                "EET": "+0200", "EEST": "+0300", "WET": "+0000", "WEST": "+0100",
                "BST": "+0100", "MSK": "+0300"}


def parse_date(raw: bytes | None) -> datetime | None:
    """RFC 5322 date (plus common sloppiness) as aware UTC; None when unparseable.

    A missing zone or "-0000" is taken as UTC (RFC 5322 3.3); impossible offsets (|off| >= 24 h)
    or fields (hour 25, Feb 30) make the date unparseable rather than guessed.  ISO 8601 dates
    from broken robots are accepted as a fallback.
    """
    if not raw:
        return None
    s = decode_bytes(raw[:256], None, None)
    s = " ".join(_COMMENT_RE.sub(" ", clean(s)).split())
    if not s:
        return None
    toks = s.split()
    if toks and toks[-1].upper() in _EXTRA_ZONES:
        toks[-1] = _EXTRA_ZONES[toks[-1].upper()]
        s = " ".join(toks)
    t = None
    try:
        t = parsedate_tz(s)
    except Exception:
        t = None
    if t is not None:
        try:
            y, mo, d, hh, mm, ss = (int(x) for x in t[:6])
            off = t[9] or 0
            if abs(off) >= 24 * 3600 or not 1 <= y <= 9999:
                return None
            dt = datetime(y, mo, d, hh, mm, min(ss, 59), tzinfo=timezone.utc)
            return dt - timedelta(seconds=off)
        except Exception:
            return None
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except Exception:
        return None
    try:
        if dt.tzinfo is None:
            return dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc)
    except Exception:
        return None

