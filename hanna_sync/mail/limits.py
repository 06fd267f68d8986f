"""The parser's two hard rules, in one place: bounded work and output, and no exception escaping.

Every byte parsed here was written by someone on the internet: spammers, broken mailers, bounce robots,
20-year-old Outlook versions. One letter that makes the parser raise or hang would stop the archive pass
for a whole mailbox. So each loop is linear in its input and capped by one of these limits (real mail is
far below them), and each field is extracted under `guard`, so one broken header cannot cost the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

#: MIME nesting deeper than this is not descended into (real mail nests < 10 levels).
MAX_MIME_DEPTH = 50
#: At most this many MIME entities (including the root) are looked at per letter.
MAX_PARTS = 1000
#: body_text is cut to this many characters (1 MB of text is far more than any human letter).
MAX_BODY_TEXT_CHARS = 1_000_000
#: Addresses kept per address header (all occurrences of that header together), plus those the caller
#: asks to keep (`keep`: the scan's matched addresses, found anywhere in the header by `address_tokens`).
MAX_ADDRESSES_PER_HEADER = 1000
#: Header fields kept per MIME entity; more are skipped (still scanned to find the body).
MAX_HEADER_FIELDS = 10_000
#: Header lines scanned per entity before jumping to the next blank line.
MAX_HEADER_LINES = 200_000
#: Raw bytes of one unstructured header (Subject, List-Id, ...) that are decoded.
MAX_HEADER_TEXT_BYTES = 64 * 1024
#: Raw bytes of one address header that are parsed (1000 addresses fit easily); with `keep`, the rest is
#: read too, for those addresses only.
MAX_ADDRESS_HEADER_BYTES = 256 * 1024
#: Raw bytes of Content-Type / Content-Disposition that are parsed for parameters.
MAX_PARAM_HEADER_BYTES = 16 * 1024
#: Characters of HTML that are converted to text (the rest of a giant newsletter is dropped).
MAX_HTML_CHARS = 2_000_000
#: Message ids kept from References.
MAX_REFERENCES = 500
#: Longest string kept for a single-line header text (subject, list id, ...).
MAX_HEADER_TEXT_CHARS = 16 * 1024
#: Longest display name / file name kept.
MAX_NAME_CHARS = 1024
#: Longest e-mail address / message id accepted.
MAX_ID_CHARS = 998

_T = TypeVar("_T")
_P = ParamSpec("_P")


def guard(default: _T, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run one extraction step; any exception yields `default` so other fields still get parsed."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        return default
