"""Reading a CRM export from wherever it is: a file, standard input, an https:// URL or a command.

A SOURCE is what `import customers|leads SOURCE` and `[directory] customers = SOURCE` name:

* a path (`customers.csv`), or `-` for standard input;
* `https://...`: a GET, the certificate verified (the system CAs, or REQUESTS_CA_BUNDLE), within
  network.timeout; a bearer token or `user:password` (basic auth) kept in the secrets store under
  `directory-source:customers` (`hanna-sync directory-token customers`), never in the config, argv or logs.
  `http://` is refused: the export is the company's customer list;
* `cmd:COMMAND`: the command split as a shell would (shlex) but run without one, its standard output the
  data; a non-zero exit, or one that outlasts network.timeout, is an error naming it and its first stderr line.
  It runs in its own process group, its output read as it comes: past MAX_BYTES or the timeout the whole
  group is killed. A configured source's command runs in the config file's folder.

Whatever comes back is only bytes and a format here; parsing is the directory's (linking/directory.py).
Anything that is not the export (a 401, a 500, an HTML login page where CSV was due, a command that failed)
is a `SourceError` naming the source, raised before anything is parsed: nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from hanna_sync.errors import HannaError, InputError

if TYPE_CHECKING:
    import requests

    from hanna_sync.credentials import SecretStore

log = logging.getLogger(__name__)

FORMATS = ("csv", "json")
MAX_BYTES = 256 * 1024 * 1024  # an export larger than this is not a customer list
CSV_TYPES = ("text/csv", "application/csv", "text/comma-separated-values", "application/vnd.ms-excel",
             "text/tab-separated-values")
JSON_TYPES = ("application/json", "text/json")
VAGUE_TYPES = ("", "text/plain", "application/octet-stream", "binary/octet-stream")  # the URL's extension decides
ENTITY_SOURCES = {"customer": "customers", "lead": "leads"}


class SourceError(HannaError):
    """A source that could not be read: unreachable, refused, a non-2xx answer, not the declared CSV or JSON,
    a command that failed. Exit code 1: the source's fault (or the network's), not the command line's."""


@dataclass(frozen=True)
class SourceData:
    name: str  # what messages call it: the path, "standard input", the URL without its query, "cmd:..."
    data: bytes
    fmt: str  # "csv" or "json"


def secret_ref(entity_type: str) -> str:
    """Where a URL source's token is kept in the secrets store: "directory-source:customers"."""
    return f"directory-source:{ENTITY_SOURCES.get(entity_type, entity_type)}"


def kind(source: str) -> str:
    """"stdin", "https", "command" or "path" (http:// and other URLs are refused by `fetch`)."""
    if source == "-":
        return "stdin"
    if source.startswith("cmd:"):
        return "command"
    lower = source.lower()
    if lower.startswith("https://"):
        return "https"
    if re.match(r"[a-z][a-z0-9+.-]*://", lower) or lower.startswith("http:"):
        return "url"
    return "path"


def display_name(source: str) -> str:
    """The source as messages and logs name it: a URL without its query or fragment (where a careless
    export link may carry a key) and without any user:password@. Never raises, even for a URL that is
    wrong as written (a port out of range, an unclosed bracket): a message must be able to name it."""
    if kind(source) not in ("https", "url"):
        return "standard input" if source == "-" else source
    scheme, _, rest = source.partition("://")
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    netloc, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{netloc.rpartition('@')[2]}{slash}{path}"


def check_url(source: str) -> None:
    """An InputError naming the source when an https:// SOURCE is not a URL as written: no host, a port
    that is not a number from 1 to 65535, an unclosed [IPv6] bracket."""
    name = display_name(source)
    try:
        parts = urlsplit(source)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{name}: not a URL as written ({exc}): https://host[:port]/path") from None
    if not parts.hostname:
        raise InputError(f"{name}: not a URL as written (no host): https://host[:port]/path")
    if port == 0:
        raise InputError(f"{name}: not a URL as written (port 0): https://host[:port]/path")


def fetch(
    source: str, entity_type: str, *, secrets: SecretStore | None, timeout: float, fmt: str | None = None,
    stdin: BinaryIO | None = None, cwd: Path | None = None,
) -> SourceData:
    """The source's bytes and their format; a SourceError (or InputError for a SOURCE that is wrong as
    written) when it cannot be had. `fmt` is what the admin declared (--format), else it is told by the
    Content-Type, the URL's or the file's extension, or (commands, stdin) by the data itself. A command
    runs in `cwd` (a configured source: the config file's folder), else in the current directory."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"format must be csv or json, not {fmt!r}")
    which = kind(source)
    if which == "url":
        raise InputError(f"{display_name(source)}: only https:// URLs are read (the export is the company's"
                         " customer list: it does not travel in clear)")
    if which == "https":
        check_url(source)
        return _fetch_https(source, entity_type, secrets=secrets, timeout=timeout, fmt=fmt)
    if which == "command":
        return _run_command(source, timeout=timeout, fmt=fmt, cwd=cwd)
    if which == "stdin":
        data = (stdin or sys.stdin.buffer).read()
        return SourceData("standard input", data, fmt or _sniff(data, "standard input"))
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{source} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{source} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None
    suffix = path.suffix.lower().lstrip(".")
    if fmt is None and suffix not in FORMATS:
        raise InputError(f"{source}: cannot tell the file's format from its name: give --format csv or --format json")
    return SourceData(source, data, fmt or suffix)


# -- https:// ----------------------------------------------------------------------------------------

def _fetch_https(
    url: str, entity_type: str, *, secrets: SecretStore | None, timeout: float, fmt: str | None
) -> SourceData:
    import requests

    name = display_name(url)
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InputError(f"{name}: a user or password in the URL would be in the config and the logs: store it"
                         f" with 'hanna-sync directory-token {ENTITY_SOURCES.get(entity_type, entity_type)}'"
                         " ('user:password' means basic auth) and take it out of the URL")
    if not parts.hostname:
        raise InputError(f"{url!r} is not a URL (https://host/path)")
    token = secrets.get(secret_ref(entity_type)) if secrets is not None else None
    headers = {"Accept": "text/csv, application/json;q=0.9, */*;q=0.1", "User-Agent": "hanna-sync"}
    auth: tuple[str, str] | None = None
    if token and ":" in token:
        user, _, password = token.partition(":")
        auth = (user, password)
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with requests.get(url, headers=headers, auth=auth, timeout=timeout, stream=True, allow_redirects=True) as r:
            if r.history and urlsplit(r.url).scheme != "https":
                raise SourceError(f"{name}: redirected to a URL that is not https ({display_name(r.url)}): refused")
            status, content_type = r.status_code, r.headers.get("Content-Type", "")
            data = _read_body(r, name)
    except requests.exceptions.SSLError as exc:
        raise SourceError(f"{name}: the server's certificate is not trusted ({_reason(exc)}): give its CA with"
                          " REQUESTS_CA_BUNDLE, or install it among the system's CAs") from None
    except requests.exceptions.Timeout:
        raise SourceError(f"{name}: no answer within {timeout:g} s (network.timeout)") from None
    except requests.RequestException as exc:
        raise SourceError(f"{name}: cannot reach the server: {_reason(exc)}") from None
    if status in (401, 403):
        hint = (f"store it with 'hanna-sync directory-token {ENTITY_SOURCES.get(entity_type, entity_type)}'"
                if not token else "the stored token or password was refused: replace it with"
                f" 'hanna-sync directory-token {ENTITY_SOURCES.get(entity_type, entity_type)}'")
        raise SourceError(f"{name}: HTTP {status}, the server wants credentials: {hint}")
    if not 200 <= status < 300:
        raise SourceError(f"{name}: HTTP {status}{_first_line(data, content_type)}: nothing read")
    return SourceData(name, data, _declared_format(name, parts.path, content_type, data, fmt=fmt))


def _read_body(response: requests.Response, name: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(65536):
        data += chunk
        if len(data) > MAX_BYTES:
            raise SourceError(f"{name}: more than {MAX_BYTES // 1024 // 1024} MiB: not a CRM export")
    return bytes(data)


def _declared_format(name: str, path: str, content_type: str, data: bytes, *, fmt: str | None) -> str:
    """The format the answer declares (its Content-Type; a vague one leaves it to the URL's extension), checked
    against --format and against the body: an HTML page where CSV or JSON was due is an error page."""
    media = content_type.split(";", 1)[0].strip().lower()
    extension = path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if media in ("text/html", "application/xhtml+xml") or _looks_like_html(data):
        raise SourceError(f"{name}: the server sent an HTML page, not the CSV or JSON export"
                          f"{_first_line(data, media)} (a login page or an error page?): nothing read")
    declared = ("csv" if media in CSV_TYPES else "json" if media in JSON_TYPES or media.endswith("+json")
                else None)
    if declared is None and media not in VAGUE_TYPES:
        raise SourceError(f"{name}: the server sent {media}, not CSV or JSON: nothing read")
    if declared is None:
        declared = extension if extension in FORMATS else fmt
    if declared is None:
        raise SourceError(f"{name}: the answer ({media or 'no Content-Type'}) does not say whether it is CSV or"
                          " JSON, nor does the URL's extension: give --format csv or --format json")
    if fmt is not None and fmt != declared:
        raise SourceError(f"{name}: the server sent {declared.upper()} ({media or 'by the URL'}), not the"
                          f" {fmt.upper()} given with --format: nothing read")
    return declared


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _first_line(data: bytes, media: str) -> str:
    """A short quote of an error answer, when it is text (a JSON error or a plain message), for the one line."""
    if media.startswith("text/html") or _looks_like_html(data):
        return ""
    text = " ".join(data[:300].decode("utf-8", "replace").split())
    return f" ({text[:120]})" if text else ""


def _reason(exc: Exception) -> str:
    from hanna_sync.remote.graph import network_reason

    return network_reason(exc)  # type: ignore[arg-type]


# -- cmd: --------------------------------------------------------------------------------------------

def _run_command(source: str, *, timeout: float, fmt: str | None, cwd: Path | None = None) -> SourceData:
    """Run the command in its own process group, its output read as it comes: more than MAX_BYTES, or
    still running after `timeout`, and the whole group (its children too) is killed."""
    name = source
    try:
        argv = shlex.split(source.removeprefix("cmd:"))
    except ValueError as exc:
        raise InputError(f"{name}: cannot split the command ({exc})") from None
    if not argv:
        raise InputError(f"{name}: no command after 'cmd:'")
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, cwd=cwd)
    except FileNotFoundError:
        where = f" (run in {cwd})" if cwd is not None and "/" in argv[0] else ""
        raise SourceError(f"{name}: command {argv[0]!r} not found{where}") from None
    except PermissionError:
        raise SourceError(f"{name}: command {argv[0]!r} cannot be run (permission denied)") from None
    except OSError as exc:
        raise SourceError(f"{name}: cannot run {argv[0]!r}: {exc.strerror}") from None
    try:
        stdout, stderr = _collect(process, name, timeout)
    except BaseException:
        _kill_group(process)
        raise
    if process.returncode != 0:
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        said = f": {lines[0][:200]}" if lines else ""
        code = process.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        raise SourceError(f"{name}: {how}{said}")
    return SourceData(name, stdout, fmt or _sniff(stdout, name))


STDERR_KEPT = 64 * 1024  # of a command's stderr, only the first line is quoted


def _collect(process: subprocess.Popen[bytes], name: str, timeout: float) -> tuple[bytes, bytes]:
    """The command's stdout and (the start of) its stderr, read as they come until both close and it exits."""
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceError(f"{name}: still running after {timeout:g} s (network.timeout): stopped")
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                elif key.data is out:
                    out += chunk
                    if len(out) > MAX_BYTES:
                        raise SourceError(f"{name}: more than {MAX_BYTES // 1024 // 1024} MiB of output:"
                                          " not a CRM export: stopped")
                elif len(err) < STDERR_KEPT:
                    err += chunk
    try:
        process.wait(max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        raise SourceError(f"{name}: still running after {timeout:g} s (network.timeout): stopped") from None
    return bytes(out), bytes(err)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the command and whatever it started (its own session: start_new_session), and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    process.wait()


def _sniff(data: bytes, name: str) -> str:
    """CSV or JSON by the data itself, for a command's output: a JSON export starts with [ or {."""
    if _looks_like_html(data):
        raise SourceError(f"{name}: printed an HTML page, not the CSV or JSON export: nothing read")
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" if head.startswith((b"[", b"{")) else "csv"
