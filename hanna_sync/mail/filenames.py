"""Attachment names made safe to use as file names, for exporting attachments into a folder.

An attachment's name is chosen by whoever sent the letter: `../../.ssh/authorized_keys`, `/etc/cron.d/x`,
`C:\\Windows\\x`, `report.pdf\\0.sh`, a name of 10,000 characters or of nothing but dots. `safe_filename`
turns any of them into one harmless path component, so `folder / safe_filename(name)` always names a
file directly inside `folder`. (Whoever writes the file should still open it with O_EXCL|O_NOFOLLOW,
so that an existing symlink of the same name is not followed.)

`file_kind` names what a path is when it is not a regular file, for the errors of whoever writes to a
path the user gave (`export -o`, `backup`): such a path is written into or refused, never replaced.
"""

from __future__ import annotations

import re
import stat
import unicodedata

MAX_BYTES = 200  # below every common file system's 255-byte limit, with room for a " (2)" suffix

# Path separators of every OS, what Windows forbids in names, and control characters (C0, DEL, C1).
_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f-\x9f]')
# Invisible characters that can make a name look like another (bidi overrides, zero-width spaces).
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Names Windows reserves whatever the extension (a share exported to, or an archive unpacked, on Windows).
_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$")


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """One path component made from `name`: no separators, no control characters, never `.`, `..` or
    hidden, at most MAX_BYTES of UTF-8 (the extension kept when it is cut), `fallback` when nothing is left.

    Pure and total: any string (or None) gives a usable name.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = _INVISIBLE.sub("", text)
    # Whatever came before the last separator was a directory the sender wished for: dropped.
    text = re.split(r"[/\\]", text)[-1]
    text = _UNSAFE.sub("_", text)
    text = " ".join(text.split())  # tabs, newlines and runs of spaces become one space
    text = text.strip(" .")  # leading dots hide a file or climb (..); Windows drops trailing dots and spaces
    if _RESERVED.match(text):
        text = "_" + text
    text = _shorten(text)
    return text or fallback


def _shorten(text: str) -> str:
    """Cut to MAX_BYTES of UTF-8 on a character boundary, keeping a short extension."""
    if len(text.encode("utf-8")) <= MAX_BYTES:
        return text
    stem, dot, extension = text.rpartition(".")
    if not dot or not stem or len(extension.encode("utf-8")) > 20:
        stem, extension = text, ""
    room = MAX_BYTES - len(extension.encode("utf-8")) - (1 if extension else 0)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return f"{stem}.{extension}" if extension else stem


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file of this `st_mode` is, in words: "a regular file", "a FIFO (named pipe)", ..."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "not a regular file")
