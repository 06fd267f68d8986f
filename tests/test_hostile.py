"""Hostile letters: generated MIME of every kind of brokenness, giant letters with time and memory caps,
HTML that is only ever text, attachment names that cannot leave their folder, and letter text that
cannot drive the admin's terminal. (tests/test_message.py has the decoding rules and the fixed corpus.)

`pytest -m slow` runs the generators with ten times the examples and letters up to a few MB each.
"""

from __future__ import annotations

import base64
import os
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hanna_sync.cli import cli
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.linking.match import Link
from hanna_sync.mail.filenames import MAX_BYTES, safe_filename
from hanna_sync.mail.message import (
    MAX_ADDRESSES_PER_HEADER,
    MAX_BODY_TEXT_CHARS,
    ParsedLetter,
    fingerprint,
    parse_headers_only,
    parse_letter,
)
from tests.helpers import Env

DEFAULT = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
HEAVY = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what may drive a terminal (tab and newline allowed)
SECONDS_PER_MB = 1.0  # generous: measured ~0.01 s per MB; CI machines are slower, tracemalloc slows 5x


def check(p: ParsedLetter) -> None:
    """What must hold for any letter: bounded output, storable text, nothing that can drive a terminal."""
    assert isinstance(p, ParsedLetter)
    assert len(p.body_text) <= MAX_BODY_TEXT_CHARS
    for group in (p.from_, p.to, p.cc, p.bcc, p.reply_to, p.sender):
        assert len(group) <= MAX_ADDRESSES_PER_HEADER
    texts = [p.subject, p.body_text, p.message_id or "", p.in_reply_to or "", *p.references]
    texts += [a.name for g in (p.from_, p.to, p.cc) for a in g] + [a.email for g in (p.from_, p.to, p.cc) for a in g]
    texts += [a.filename or "" for a in p.attachments]
    for text in texts:
        text.encode("utf-8")  # SQLite takes it (no lone surrogates)
        assert not CONTROL.search(text.replace("\r", "").replace("\f", "")), repr(CONTROL.search(text))
    for one_line in [p.subject] + [a.name for a in p.to]:
        assert "\n" not in one_line


def parse_all(raw: bytes) -> float:
    """Every parser entry point the scan uses; returns the seconds it took."""
    started = time.perf_counter()
    check(parse_letter(raw))
    check(parse_letter(raw, "windows-1257"))
    check(parse_headers_only(raw))
    assert len(fingerprint(raw)) == 64
    return time.perf_counter() - started


# -- generated MIME --------------------------------------------------------------------------------

CHARSETS = [b"utf-8", b"windows-1257", b"iso-8859-13", b"koi8-r", b"utf-16", b"utf-32", b"utf-7", b"iso-2022-jp",
            b"x-unknown-42", b"punycode", b"idna", b"base64", b"zlib", b"", b'"utf-8"', b"utf-8\x00", b"\xff\xfe"]
CTES = [b"base64", b"quoted-printable", b"7bit", b"8bit", b"binary", b"x-uuencode", b"bogus", b""]
TYPES = [b"text/plain", b"text/html", b"text/enriched", b"application/pdf", b"message/rfc822", b"image/png",
         b"multipart/mixed", b"multipart/alternative", b"multipart/related", b"garbage", b""]
LT = "Ąžuolas ėglė šįšųū ".encode()
BAD_BASE64 = st.sampled_from([b"QUJD", b"QUJD=", b"Q=UJD", b"!!!!", b"QU\x00JD", b"====", b"QUJDRA", b"\xff\xfe"])
BAD_QP = st.sampled_from([b"=C4=85", b"=ZZ", b"=", b"=\n", b"=4", b"==", b"=c4=8", b"\x00", b"=\r\n"])
SPECIAL = st.sampled_from([b"=?utf-8?b?", b"=?x-unknown?q?=C4=85?=", b"=?utf-8?b?###?=", b"=?utf-16?b?AAA?=", b"?=",
                           b"<", b">", b'"', b"(", b")", b",", b";", b":", b"\\", b"@", b"\x00", b"\n", b"\r", b"\n ",
                           b"--", b"\x1b[2J", "\u009b31m".encode(), b"\xc2\x9b", b"[/bold]", LT])
CHUNK = st.one_of(st.binary(max_size=16), SPECIAL, BAD_BASE64, BAD_QP)


@st.composite
def amplified(draw: st.DrawFn, scale: int) -> bytes:
    """A short chunk of junk, repeated up to `scale` times: big letters without drawing big data."""
    chunk = b"".join(draw(st.lists(CHUNK, max_size=6)))
    return chunk * draw(st.integers(1, scale))


@st.composite
def entity(draw: st.DrawFn, scale: int, depth: int = 0) -> bytes:
    ctype = draw(st.sampled_from(TYPES))
    headers = [b"Content-Type: " + ctype + b"; charset=" + draw(st.sampled_from(CHARSETS))]
    if draw(st.booleans()):
        headers.append(b"Content-Transfer-Encoding: " + draw(st.sampled_from(CTES)))
    if draw(st.booleans()):
        name = draw(st.sampled_from([b"../../etc/passwd", b"/home/victim/.ssh/authorized_keys", b"a\x00b.sh", b"=?utf-8?q?",
                                     b"C:\\Windows\\x.dll", b"..", b"\xc4\x85.pdf"]))
        headers.append(b"Content-Disposition: attachment; filename" + draw(st.sampled_from([b"=", b"*=utf-8''",
                                                                                            b"*0*="])) + name)
    if draw(st.booleans()):
        headers.append(b"X-Junk: " + draw(amplified(scale)))
    if ctype.startswith(b"multipart") and depth < 6:
        boundary = draw(st.sampled_from([b"b%d" % depth, b"b", b"", b"=_", b" ", b"a" * 80]))
        declared = draw(st.sampled_from([boundary, boundary[:-1], b"other"]))
        headers[0] = b'Content-Type: ' + ctype + b'; boundary="' + declared + b'"'
        body = draw(amplified(4))
        for child in draw(st.lists(entity(scale, depth + 1), max_size=4)):
            body += b"\n--" + boundary + draw(st.sampled_from([b"", b"  ", b"--", b"x"])) + b"\n" + child
        if draw(st.booleans()):
            body += b"\n--" + boundary + b"--\n"
        body += draw(amplified(scale))
    elif ctype == b"text/html":
        body = draw(html(scale)).encode("utf-8", "surrogatepass")
    else:
        body = draw(st.one_of(amplified(scale), st.binary(max_size=300).map(base64.encodebytes),
                              st.text(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass")) .map(lambda b: b * 50)))
    return b"\n".join(headers) + draw(st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n", b""])) + body


@st.composite
def letter(draw: st.DrawFn, scale: int) -> bytes:
    headers = b""
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from([b"From", b"To", b"Cc", b"Subject", b"Message-ID", b"References", b"Date",
                                     b"Reply-To", b"Content-Type", b"Received"]))
        value = draw(st.one_of(amplified(scale),
                               st.integers(1, scale).map(lambda n: b", ".join(b"R <r%d@x.lt>" % i for i in range(n))),
                               st.integers(1, scale).map(lambda n: b"=?utf-8?q?=C4=85?= " * n)))
        headers += name + b": " + value + b"\n"
    raw = headers + draw(entity(scale))
    line_ends = draw(st.sampled_from(["lf", "crlf", "cr", "truncate"]))
    if line_ends == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif line_ends == "cr":
        raw = raw.replace(b"\n", b"\r")
    elif line_ends == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@DEFAULT
@given(letter(scale=2000))
def test_generated_hostile_mime_parses_within_bounds(raw: bytes) -> None:
    assert parse_all(raw) < 2 + SECONDS_PER_MB * len(raw) / 1e6


@pytest.mark.slow
@HEAVY
@given(letter(scale=200_000))
def test_generated_hostile_mime_parses_within_bounds_heavy(raw: bytes) -> None:
    assert parse_all(raw) < 2 + SECONDS_PER_MB * len(raw) / 1e6


# -- giant letters: time and memory ----------------------------------------------------------------

def deep(depth: int) -> bytes:
    body = b"Content-Type: text/plain\n\nthe bottom"
    for d in range(depth, 0, -1):
        body = b'Content-Type: multipart/mixed; boundary="d%d"\n\n--d%d\n' % (d, d) + body + b"\n--d%d--\n" % d
    return body


GIANTS = {
    "1 MB header line": lambda: b"Subject: " + b"x" * 1_000_000 + b"\nX-Long: " + b"=?" * 500_000 + b"\n\nbody",
    "100k recipients": lambda: b"To: " + b", ".join(b"R%d <r%d@example.lt>" % (i, i) for i in range(100_000))
                               + b"\nCc: " + b"a@b," * 300_000 + b"\n\nbody",
    "encoded-word soup": lambda: b"Subject: " + b"=?x-unknown?q?=C4=85?= =?utf-16?b?AAA?= =?utf-8?b?###?= " * 30_000
                                 + b"\nFrom: " + b"=?utf-8?q?" * 100_000 + b"\n\nbody",
    "10,000 nested multiparts": lambda: deep(10_000),
    "50,000 parts": lambda: b'Content-Type: multipart/mixed; boundary="p"\n\n'
                            + b"--p\nContent-Type: text/plain\n\nx\n" * 50_000 + b"--p--\n",
    "bad base64 and QP": lambda: b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n"
                                 + b"QU!J\x00D=Q" * 300_000 + b"\n--b\nContent-Transfer-Encoding: quoted-printable\n\n"
                                 + b"=ZZ=4=\n=C4=85\x00" * 200_000 + b"\n--b--\n",
    "lying charsets and NULs": lambda: b"Content-Type: text/plain; charset=utf-16\n\n" + "Ąžuolas\x00".encode() * 250_000,
    "HTML bomb": lambda: b"Content-Type: text/html\n\n" + b"<a" * 400_000 + b"</" * 400_000 + b"<div>" * 200_000
                         + b"<script>" + b"x" * 1_000_000 + b"<!--",
}


@pytest.mark.parametrize("name", GIANTS)
def test_giant_hostile_letters_parse_within_bounds(name: str) -> None:
    raw = GIANTS[name]()
    assert parse_all(raw) < 2 + SECONDS_PER_MB * len(raw) / 1e6 * 4


def twenty_megabytes() -> bytes:
    """All of the above in one letter, and an attachment: about 20 MB."""
    parts = [g() for g in GIANTS.values()] + [b"Content-Type: application/octet-stream; name=x.bin\n"
                                              b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(os.urandom(500_000))]
    return ("From: Rūta <ruta@azuolas.lt>\n".encode() + b"Content-Type: multipart/mixed; boundary=top\n\n"
            + b"".join(b"--top\n" + p + b"\n" for p in parts) + b"--top--\n")


# Most bytes held at once, as a multiple of the letter's size. Measured on a 23 MB letter: parse_letter
# 8 MB (0.3x), parse_headers_only nothing, fingerprint 120 MB (5x: it normalises every line of the body).
PEAK_CAPS = {"parse_letter": 2, "parse_headers_only": 1, "fingerprint": 8}


def test_a_20_mb_hostile_letter_stays_under_the_time_and_memory_caps() -> None:
    raw = twenty_megabytes()
    assert 18_000_000 < len(raw) < 26_000_000
    for name, parse in (("parse_letter", parse_letter), ("parse_headers_only", parse_headers_only),
                        ("fingerprint", fingerprint)):
        tracemalloc.start()
        try:
            started = time.perf_counter()
            parse(raw)
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < PEAK_CAPS[name] * len(raw), f"{name}: peak {peak / 1e6:.0f} MB for {len(raw) / 1e6:.0f} MB"
        assert seconds < 30, f"{name}: {seconds:.1f} s"  # measured under 0.5 s, tracemalloc included


def test_a_pass_over_giant_hostile_letters_archives_them_all_in_bounded_time(tmp_path, imap_user):
    """Through the whole scan (prefilter, header parse, match, body fetch, store), not just the parser."""
    names = ["1 MB header line", "100k recipients", "encoded-word soup", "10,000 nested multiparts", "HTML bomb"]
    for name in names:
        imap_user.dovecot.deliver(imap_user.login, "INBOX", b"Cc: ruta@azuolas.lt\n" + GIANTS[name]())
    env = Env(tmp_path)
    env.add(imap_user, folders=("INBOX",))
    started = time.monotonic()
    m = env.run().mailboxes[0]
    assert m.ok and m.archived == len(names), m.errors
    assert time.monotonic() - started < 30


# -- HTML is text, never run -----------------------------------------------------------------------

TEXT = st.text(alphabet=st.sampled_from(list("abc ąčę.,!?-0123456789")), max_size=20)
ACTIVE_TAG = re.compile(r"</?(script|style|iframe|img|svg|object|embed|meta|body|link|form|template|xml)\b", re.IGNORECASE)


@st.composite
def html(draw: st.DrawFn, scale: int = 50) -> str:
    """Markup built to carry script: <script>, event handlers, javascript: URLs, comments, CDATA, broken tags."""
    pieces = []
    for _ in range(draw(st.integers(0, 30))):
        pieces.append(draw(st.one_of(
            TEXT,
            st.sampled_from(["<p>", "</p>", "<div>", "<br>", "<b>", "</b>", "<table><tr><td>", "</td></tr></table>",
                             "<!--", "-->", "<![CDATA[", "]]>", "<a", "</", "<", ">", "<scr", "ipt>"]),
            st.sampled_from(ACTIVE),
        )))
    return "".join(pieces) * draw(st.integers(1, max(1, scale // 50)))


ACTIVE = [
    "<script>alert(1)</script>", "<SCRIPT type=text/javascript>alert(1)//", "<style>x{a:expression(1)}</style>",
    "<img src=x onerror=alert(1)>", "<a href='javascript:evil()'>", "<a href=\"vbscript:x\">",
    "<iframe src=\"data:text/html,<script>alert(1)</script>\"></iframe>", "<svg onload=alert(1)>",
    "<body onerror=alert(1)>", "<object data=\"javascript:evil()\">", "<scr<script>ipt>",
    "<script><!--\nalert(1)//--></script>", "<template><script>alert(1)</script></template>",
    "<meta http-equiv=refresh content=\"0;url=javascript:evil()\">", "<xml><script>alert(1)</script></xml>",
]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(html())
def test_html_of_any_shape_becomes_text_without_a_tag_that_could_run(markup: str) -> None:
    """Broken markup around it may turn script into text (as it does in a browser), never into a tag."""
    p = parse_letter(b"Content-Type: text/html; charset=utf-8\n\n" + markup.encode())
    assert not ACTIVE_TAG.search(p.body_text), p.body_text


@pytest.mark.parametrize("active", ACTIVE)
def test_script_handlers_and_script_urls_never_reach_the_text(active: str) -> None:
    p = parse_letter(("Content-Type: text/html\n\n<p>Laba diena</p>" + active + "<p>Iki</p>").encode())
    assert p.body_text.startswith("Laba diena")
    for code in ("alert(", "javascript:", "vbscript:", "onerror", "onload", "expression("):
        assert code not in p.body_text, (active, p.body_text)


def test_escaped_markup_is_text_like_any_text_part() -> None:
    """body_text is plain text: what the sender escaped shows as the characters it stands for. It is never
    HTML; a page showing it must escape it, as it must a text/plain letter that says "<script>"."""
    p = parse_letter(b"Content-Type: text/html\n\n<p>Use &lt;b&gt; for bold</p><script>alert(1)</script>")
    assert p.body_text == "Use <b> for bold"


# -- attachment names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"), ("/home/victim/.ssh/authorized_keys", "authorized_keys"),
    ("C:\\Windows\\system32\\evil.dll", "evil.dll"), ("report.pdf\x00.sh", "report.pdf_.sh"),
    ("..", "attachment"), ("...", "attachment"), ("", "attachment"), (None, "attachment"), ("/", "attachment"),
    (".bashrc", "bashrc"), ("CON.txt", "_CON.txt"), ("nul", "_nul"), ("a\nb\tc.txt", "a_b_c.txt"),
    ("\u202etxt.exe", "txt.exe"), ("sąskaita faktūra.pdf", "sąskaita faktūra.pdf"), ("a:b*c?.txt", "a_b_c_.txt"),
    ("  spaced   name .pdf. ", "spaced name .pdf"),
])
def test_safe_filename_examples(name: str | None, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_keeps_the_extension_of_a_long_name() -> None:
    name = safe_filename("ą" * 500 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= MAX_BYTES


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(["..", "/", "\\", ".", "\x00", "a", "ą", "\u202e", ":", " ",
                                                        "con", "~", "$HOME", "%2e%2e", "\n"])).map("".join)))
def test_safe_filename_never_leaves_the_folder(export_dir: Path, name: str) -> None:
    safe = safe_filename(name)
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert not set(safe) & {"/", "\\", "\x00"} and not CONTROL.search(safe)
    assert len(safe.encode("utf-8")) <= MAX_BYTES
    target = export_dir / safe
    assert target.parent == export_dir and target.resolve().parent == export_dir.resolve()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # the file system agrees
    os.close(fd)
    os.unlink(target)


def test_every_attachment_name_of_the_corpus_is_safe(export_dir: Path) -> None:
    for path in (Path(__file__).parent / "corpus").glob("*.eml"):
        for attachment in parse_letter(path.read_bytes()).attachments:
            assert (export_dir / safe_filename(attachment.filename)).resolve().parent == export_dir.resolve()


# -- letter text on the admin's terminal -----------------------------------------------------------

def test_letter_text_cannot_style_or_drive_the_terminal(tmp_path) -> None:
    """Subjects and bodies go to `letters`, `show`, `--json` as text: no rich markup, no escape sequences."""
    subject = "[/bold] [link=file:///etc/passwd]spustelk[/link] \x1b[2J =?latin-1?q?=9B31m?= [red]raudona"
    raw = (f"From: [b]Ruta[/b] <ruta@azuolas.lt>\nTo: {sample.STAFF}\nSubject: {subject}\n"
           "Content-Type: text/plain; charset=latin-1\n\nline \x1b]0;owned\x07 \x9b31m red \x1b[2J\n").encode("latin-1")
    store = Store(tmp_path / "hs.db")
    letter_id, _ = store.archive_letter("mid:x", parse_letter(raw), raw, len(raw))
    store.add_links(letter_id, [Link("customer", "C-1001", "customer_contact", "ruta@azuolas.lt")])
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(f'database = "{tmp_path / "hs.db"}"\n')
    for args in (["letters"], ["show", str(letter_id)], ["letters", "--json"], ["show", str(letter_id), "--json"]):
        result = CliRunner().invoke(cli, ["--config", str(config), *args], env={"COLUMNS": "400"})
        assert result.exit_code == 0, (args, result.output)
        assert not CONTROL.search(result.output.replace("\r", "")), (args, repr(result.output))
        if "--json" not in args:
            assert "[/bold]" in result.output and "[link=file:///etc/passwd]" in result.output
