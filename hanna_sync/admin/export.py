"""Export: archived letters as .eml files or one mbox file, byte for byte the originals, and their attachments.

A privacy request, a lawyer or a move to another system needs the letters as they were received, not a
rendering of them; so an export writes the archived original bytes, untouched.

- **eml**: one file per letter, the original bytes. Several letters go into a directory, one
  `<id>-<YYYY-MM-DD>-<subject>.eml` each (the subject made a safe file name).
- **mbox**: one file in the mboxrd flavour. Each letter is preceded by a `From <sender> <date>` line and
  followed by one empty line (`\\n`); every line of the letter that starts with `>*From ` (any number of
  `>`, then "From ") gets one more `>`. Unquoting (removing one `>` from every line that starts with
  `>+From `) gives back the original bytes exactly, which the older mboxo flavour cannot promise. The
  letters' own line endings (CRLF as IMAP serves them) are kept; the separator lines end in LF.
- **attachments**: decoded from the original MIME by the archive's own parser (`attachment_contents`,
  the same walk that listed them when the letter was archived), each into `DIR/<letter id>/` under
  `safe_filename(name)`: never outside that folder, never over an existing file (" (2)" is added).

Nothing is ever half written: each file goes to a hidden temp file (0600, created with O_EXCL|O_NOFOLLOW)
beside its final name, and only when every file of the export is written are they renamed into place.
A failure on the way removes the temp files, and the directories the export created. Only regular files
are ever replaced: `-o` naming a FIFO or a character device (`/dev/stdout`, a pipe to another program)
writes into it, as the shell's `>` would (so, like stdout, not all-or-nothing); a block device or socket,
or a name inside an export directory that is anything but a regular file, is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from hanna_sync.db.rows import Original
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError, NotFound
from hanna_sync.mail.filenames import file_kind, safe_filename
from hanna_sync.mail.message import attachment_contents

FORMATS = ("eml", "mbox")
SUBJECT_CHARS = 80  # of the subject in an .eml's name: enough to recognise it in a file list

Progress = Callable[[str, int, int], None]  # (label, done, total), as the scan's

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


@dataclass
class ExportResult:
    """What an export wrote: the summary line and `export --json`."""

    letters: int
    format: str
    files: list[str] = field(default_factory=list)  # the .eml files or the mbox, in the order written
    bytes: int = 0  # written to those files (or to stdout)
    attachments: list[str] = field(default_factory=list)
    headers_only: list[int] = field(default_factory=list)  # letters archived without their body (too large)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def select(
    store: Store, letter_ids: list[int], customer: str | None = None, lead: str | None = None,
    *, query: str | None = None, since: str | None = None,
) -> list[int]:
    """The letters an export covers: those named, or a customer's, a lead's or a search's, oldest first.

    The named letters must all exist; a customer, lead or search that finds nothing is an error too, so
    that a typo never writes an empty export that looks like "no mail". The customer and lead are checked
    by the caller (as `letters` checks them).
    """
    chosen = customer is not None or lead is not None or query is not None
    if letter_ids and chosen:
        raise InputError("give LETTER ids, or --customer, --lead, --search: not both")
    if not letter_ids and not chosen:
        raise InputError("name what to export: LETTER ids, --customer ID, --lead ID or --search QUERY")
    if since is not None and not chosen:
        raise InputError("--since goes with --customer, --lead or --search")
    if letter_ids:
        missing = store.missing_letters(letter_ids)
        if missing:
            raise NotFound(f"no letter {missing[0]}; 'hanna-sync letters' lists them (nothing was written)")
        return list(dict.fromkeys(letter_ids))
    found = store.export_ids(customer, lead, since, query)
    if not found:
        raise NotFound("no letters match; 'hanna-sync letters' or 'hanna-sync search' shows what there is"
                       " (nothing was written)")
    return found


def export_letters(
    store: Store,
    letter_ids: list[int],
    fmt: str = "eml",
    output: Path | None = None,
    *,
    attachments: Path | None = None,
    one_file: bool = False,
    stdout: BinaryIO | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the letters to `output` (None: to `stdout`) and their attachments under `attachments`.

    For eml, `output` is a file when `one_file` (one letter was named), else a directory, created 0700
    when missing. For mbox it is one file. Raises InputError, with nothing written, when a target cannot be.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    to_directory = fmt == "eml" and not one_file
    if output is None and (to_directory or stdout is None):
        raise InputError("several letters as .eml files need a directory: give -o DIR (or --format mbox,"
                         " which can go to standard output)")
    if attachments is not None and attachments.exists() and not attachments.is_dir():
        raise InputError(f"{attachments} is not a directory: name a directory for the attachments")
    stream = None
    if output is not None:
        output, stream = _target(output, to_directory, fmt)
    sink = stream or stdout  # None only when the letters go to files

    result = ExportResult(len(letter_ids), fmt)
    staging = _Staging()
    if stream is not None:
        staging.where = output  # type: ignore[assignment]
    try:
        if output is None or stream is not None:
            target: Any = None
        elif to_directory:
            target = staging.directory(output)
        else:
            target = staging.file(staging.directory(output.parent, create=False, where=output), output.name)
        attachment_dir = None if attachments is None else staging.directory(attachments)
        for done, letter_id in enumerate(letter_ids, 1):
            letter = store.original(letter_id)
            raw = letter["raw"]
            if letter["body_skipped"]:
                result.headers_only.append(letter_id)
            if fmt == "mbox":
                data = _from_line(letter) + _FROM_LINE.sub(rb">\1", raw) + b"\n"
                (target or sink).write(data)  # type: ignore[union-attr]  # see `sink`
                result.bytes += len(data)
            else:
                if target is None:
                    sink.write(raw)  # type: ignore[union-attr]
                elif to_directory:
                    with staging.file(target, eml_name(letter)) as file:
                        file.write(raw)
                else:
                    target.write(raw)
                result.bytes += len(raw)
            if attachment_dir is not None:
                contents = attachment_contents(raw)
                if contents:
                    folder = staging.directory(Path(str(letter_id)), parent=attachment_dir)
                    for att, data in contents:
                        with staging.file(folder, safe_filename(att.filename), exclusive=True) as file:
                            file.write(data)
            if progress:
                progress("Exporting", done, len(letter_ids))
        if target is not None and not to_directory:
            target.close()
        if stream is not None:
            staging.where = output  # type: ignore[assignment]
            stream.flush()  # before the attachments are renamed into place: its failure leaves none behind
        written = staging.commit()
    except OSError as exc:
        staging.abort()
        raise InputError(f"cannot write {staging.where}: {exc.strerror or exc}: check that the directory exists"
                         " and that you may write there (nothing was written)") from None
    except BaseException:
        staging.abort()
        raise
    finally:
        staging.close()
        if stream is not None:
            _quietly(stream.close)
    if stdout is not None and output is None:
        stdout.flush()
    result.attachments = [str(path) for path, is_attachment in written if is_attachment]
    result.files = [str(path) for path, is_attachment in written if not is_attachment]
    if stream is not None:
        result.files = [str(output)]
    return result


def _target(output: Path, to_directory: bool, fmt: str) -> tuple[Path, BinaryIO | None]:
    """Where `-o` writes, and the open stream when that is a FIFO or a character device.

    Followed through symlinks, as the shell's `>` is: a directory; a regular file or a new one (the
    path it really has, so a symlink to it stays a symlink); or a FIFO or character device, written
    into (`/dev/stdout`, `/dev/null`, a pipe), never replaced by a file. Anything else is refused.
    """
    try:
        st: os.stat_result | None = os.stat(output)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc} (nothing was written)") from None
    is_dir = st is not None and stat.S_ISDIR(st.st_mode)
    if to_directory:
        if st is not None and not is_dir:
            raise InputError(f"{output} is not a directory: several letters are written as one .eml each into"
                             " a directory, so name one with -o (it is created when missing)")
        return output, None
    if is_dir:
        raise InputError(f"{output} is a directory: name the file to write, e.g. {output / f'letters.{fmt}'}")
    if st is None or stat.S_ISREG(st.st_mode):
        return Path(os.path.realpath(output)), None
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return output, _open_stream(output)
    raise InputError(f"{output} is {file_kind(st.st_mode)}: name a regular file, or a FIFO or character device"
                     " (such as /dev/stdout) to write into (nothing was written)")


def _open_stream(output: Path) -> BinaryIO:
    """Open a FIFO or character device for writing, as it is: never created, truncated or replaced (a FIFO
    waits here for its reader, as with the shell's `>`)."""
    try:
        fd = os.open(output, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc} (nothing was written)") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # swapped for something else since it was looked at
        os.close(fd)
        raise InputError(f"{output} changed while it was opened: run the export again (nothing was written)")
    return os.fdopen(fd, "wb")


def eml_name(letter: Original) -> str:
    """`<id>-<YYYY-MM-DD>-<subject>.eml`: a letter's file in an export, and the name `/api/letters/{id}/raw` offers."""
    subject = safe_filename((letter["subject"] or "")[:SUBJECT_CHARS], fallback="no subject")
    return f"{letter['id']}-{letter['date'][:10]}-{subject}.eml"


def _from_line(letter: Original) -> bytes:
    """mbox's separator: `From <sender> <asctime date>`, the sender without spaces (they would end it)."""
    sender = "".join(c for c in letter["from_addr"] or "" if c.isprintable() and not c.isspace()) or "MAILER-DAEMON"
    when = datetime.fromisoformat(letter["date"]).astimezone(timezone.utc).ctime()
    return f"From {sender} {when}\n".encode()


@dataclass
class _Directory:
    fd: int
    path: Path


@dataclass
class _Pending:
    folder: _Directory
    temp: str
    name: str
    exclusive: bool  # never replaces a file: takes "name (2)" instead


class _Staging:
    """The files of one export, written to temp files and renamed into place all at once by `commit`.

    Directories are used through their descriptors (and those it creates inside another one opened with
    O_NOFOLLOW), so a symlink planted in the middle of an export cannot redirect a file elsewhere.
    """

    def __init__(self) -> None:
        self.pending: list[_Pending] = []
        self.placed: list[tuple[_Directory, str]] = []
        self.made: list[tuple[int | None, Path]] = []  # directories created: (parent fd, name or path)
        self.opened: list[int] = []
        self.files: list[_SyncedFile] = []
        self.where: Path = Path(".")  # what is being written: named in an error
        self.count = 0

    def directory(
        self, path: Path, parent: _Directory | None = None, create: bool = True, where: Path | None = None
    ) -> _Directory:
        self.where = where or (path if parent is None else parent.path / path)
        parent_fd = None if parent is None else parent.fd
        if create:
            try:
                os.mkdir(path, 0o700, dir_fd=parent_fd)
                self.made.append((parent_fd, path))
            except FileExistsError:
                pass
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (os.O_NOFOLLOW if parent is not None else 0)
        fd = os.open(path, flags, dir_fd=parent_fd)
        self.opened.append(fd)
        return _Directory(fd, path if parent is None else parent.path / path)

    def file(self, folder: _Directory, name: str, exclusive: bool = False) -> _SyncedFile:
        self.where = folder.path / name
        self.count += 1
        temp = f".hanna-export.{os.getpid()}.{self.count}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=folder.fd)
        self.pending.append(_Pending(folder, temp, name, exclusive))
        self.files.append(_SyncedFile(fd))
        return self.files[-1]

    def commit(self) -> list[tuple[Path, bool]]:
        """Rename every temp file to its name; returns (path, whether it is an attachment) in order.

        First, before anything is renamed, every name to be replaced must be a regular file (or free):
        a FIFO, device, socket, directory or symlink found there is refused, never renamed over.
        """
        for p in self.pending:
            if p.exclusive:
                continue  # takes a free name of its own (_reserve)
            self.where = p.folder.path / p.name
            try:
                st = os.stat(p.name, dir_fd=p.folder.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{self.where} is {file_kind(st.st_mode)}: an export only replaces regular files;"
                                 " move it away or export elsewhere (nothing was written)")
        written = []
        for p in self.pending:
            self.where = p.folder.path / p.name
            name = self._reserve(p) if p.exclusive else p.name
            os.replace(p.temp, name, src_dir_fd=p.folder.fd, dst_dir_fd=p.folder.fd)
            if not p.exclusive:
                self.placed.append((p.folder, name))
            written.append((p.folder.path / name, p.exclusive))
        self.pending = []
        return written

    def _reserve(self, p: _Pending) -> str:
        """The first free one of name, "name (2)", "name (3)"...: created empty (O_EXCL, so never an existing
        file and never through a symlink), to be replaced by the temp file at once."""
        stem, dot, extension = p.name.rpartition(".")
        n = 1
        while True:
            name = p.name if n == 1 else f"{stem} ({n}).{extension}" if dot and stem else f"{p.name} ({n})"
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                                 dir_fd=p.folder.fd))
                self.placed.append((p.folder, name))
                return name
            except FileExistsError:
                n += 1

    def abort(self) -> None:
        for file in self.files:
            file.file.close()
        for p in self.pending:
            _quietly(os.unlink, p.temp, dir_fd=p.folder.fd)
        for folder, name in self.placed:
            _quietly(os.unlink, name, dir_fd=folder.fd)
        for parent_fd, path in reversed(self.made):
            _quietly(os.rmdir, path, dir_fd=parent_fd)

    def close(self) -> None:
        for fd in self.opened:
            os.close(fd)
        self.opened = []


class _SyncedFile:
    """A file written whole: flushed to disk on close, so the rename never exposes a file still in cache."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def close(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def __enter__(self) -> _SyncedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quietly(operation: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """A clean-up step after a failure: the first error is what the admin needs to hear, not this one."""
    with contextlib.suppress(OSError):
        operation(*args, **kwargs)
