"""`hanna-sync export`: byte-identical .eml files and mboxrd, attachments extracted safely, all or nothing.

Letters are delivered to the sandbox Dovecot and archived by a real pass; what an export writes is compared
with the bytes delivered.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.admin.export import export_letters
from hanna_sync.cli import cli
from hanna_sync.demo import sample
from tests.helpers import Env, deliver_sample

ROOT = Path(__file__).resolve().parent.parent

# Lines an mbox reader would take for a separator, quoted already, and the like: mboxrd must keep them all.
FROM_LINES = (b"Subject: From lines\r\n\r\nFrom the start of a line\r\n>From quoted once\r\n>>From quoted twice\r\n"
              b"From\r\n From indented\r\nnot From here\r\nFrom the end\r\n")
HOSTILE_NAMES = ["../../evil.sh", "/etc/cron.d/evil", "..\\..\\win.bat", "CON", "..", ".bashrc", "same.txt",
                 "same.txt", "\u202egnp.exe", None]


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def hostile_letter() -> tuple[bytes, list[bytes]]:
    """A customer's letter with an attachment for every trick in HOSTILE_NAMES; returns it and their contents."""
    msg = EmailMessage()
    msg["From"] = "ruta@azuolas.lt"
    msg["To"] = sample.STAFF
    msg["Subject"] = "Priedai"
    msg["Message-ID"] = "<hostile-names@azuolas.lt>"
    msg["Date"] = format_datetime(datetime(2025, 3, 20, 10, 0, tzinfo=timezone.utc))
    msg.set_content("Priedai.")
    contents = []
    for n, name in enumerate(HOSTILE_NAMES):
        data = hashlib.sha256(bytes([n])).digest() * 3  # binary: base64 on the wire
        contents.append(data)
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    for n, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"=_hostile_{n}")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")), contents


@pytest.fixture
def archived(env, imap_user):
    """The sample mailbox plus a letter of From lines and one of hostile attachment names, archived by a pass.

    Returns the env and the delivered bytes by Message-ID.
    """
    delivered = deliver_sample(imap_user)
    from_lines = (b"From: ruta@azuolas.lt\r\nTo: jonas@imone.lt\r\nMessage-ID: <from-lines@azuolas.lt>\r\n"
                  b"Date: Mon, 10 Mar 2025 09:00:00 +0000\r\n" + FROM_LINES)
    hostile, _ = hostile_letter()
    for raw in (from_lines, hostile):
        imap_user.dovecot.deliver(imap_user.login, "INBOX", raw)
        delivered.append(raw)
    env.add(imap_user)
    assert env.run().ok
    by_id = {}
    for raw in delivered:
        found = re.search(rb"Message-ID: <([^>]+)>", raw, re.IGNORECASE)
        by_id[found.group(1).decode()] = raw
    return env, by_id


def cli_run(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def original_of(env, by_id, letter_id: int) -> bytes:
    return by_id[env.store.letter(letter_id)["message_id"]]


def customer_ids(env, customer="C-1001") -> list[int]:
    return env.store.export_ids(customer=customer)


def tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def read_mboxrd(data: bytes) -> list[tuple[bytes, bytes]]:
    """(From_ line, letter) for each letter of an mboxrd file, unquoted: written here, not by the product."""
    assert data.startswith(b"From ")
    starts = [0] + [m.start() + 1 for m in re.finditer(rb"\nFrom ", data)]
    out = []
    for n, start in enumerate(starts):
        chunk = data[start : starts[n + 1] if n + 1 < len(starts) else len(data)]
        separator, _, letter = chunk.partition(b"\n")
        assert letter.endswith(b"\n"), "a letter is followed by an empty line"
        out.append((separator, re.sub(rb"(?m)^>(>*From )", rb"\1", letter[:-1])))
    return out


def test_eml_exports_are_the_delivered_bytes(archived, tmp_path):
    env, by_id = archived
    first = customer_ids(env)[0]
    result = cli_run(env, "export", str(first), "-o", str(tmp_path / "one.eml"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.eml").read_bytes() == original_of(env, by_id, first)
    assert stat.S_IMODE((tmp_path / "one.eml").stat().st_mode) == 0o600
    result = cli_run(env, "export", str(first))
    assert result.stdout_bytes == original_of(env, by_id, first)

    ids = customer_ids(env)
    out = tmp_path / "c-1001"
    result = cli_run(env, "export", "--customer", "C-1001", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"letters", "format", "files", "bytes", "attachments", "headers_only"}
    assert (summary["letters"], summary["format"], summary["attachments"]) == (len(ids), "eml", [])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert sorted(summary["files"]) == sorted(str(p) for p in out.iterdir())
    for path in out.iterdir():
        letter_id = int(path.name.split("-")[0])
        letter = env.store.letter(letter_id)
        assert path.name.startswith(f"{letter_id}-{letter['date_utc'][:10]}-") and path.suffix == ".eml"
        assert path.read_bytes() == original_of(env, by_id, letter_id)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert summary["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert any(p.name.endswith("-2025-03-04-Sąskaita faktūra 2025-03.eml") for p in out.iterdir())

    # Again into the same directory: the same files, replaced whole, no duplicates.
    assert cli_run(env, "export", "--customer", "C-1001", "-o", str(out)).exit_code == 0
    assert len(list(out.iterdir())) == len(ids)


def test_mbox_round_trips_every_letter_byte_for_byte(archived, tmp_path):
    env, by_id = archived
    ids = customer_ids(env)
    target = tmp_path / "c-1001.mbox"
    result = cli_run(env, "export", "--customer", "C-1001", "--format", "mbox", "-o", str(target), "--json")
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert json.loads(result.stdout)["files"] == [str(target)] and json.loads(result.stdout)["bytes"] == len(data)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert b"\n>From the start of a line\r\n>>From quoted once\r\n>>>From quoted twice\r\nFrom\r\n" in data

    letters = read_mboxrd(data)
    assert [letter for _, letter in letters] == [original_of(env, by_id, i) for i in ids]  # oldest first
    separator = letters[0][0].decode()
    first = env.store.letter(ids[0])
    asctime = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"
    assert re.fullmatch(rf"From {re.escape(first['from_addr'])} {asctime}", separator)
    assert len(mailbox.mbox(str(target))) == len(ids)

    # To stdout as well, the same bytes.
    result = cli_run(env, "export", "--customer", "C-1001", "--format", "mbox")
    assert result.exit_code == 0 and result.stdout_bytes == data


def test_a_search_result_is_exported_and_filters_combine(archived, tmp_path):
    env, by_id = archived
    out = tmp_path / "found"
    result = cli_run(env, "export", "--search", "ąžuolinės", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    subjects = sorted(env.store.letter(int(os.path.basename(f).split("-")[0]))["subject"]
                      for f in json.loads(result.stdout)["files"])
    assert subjects == ["Re: Užsakymas Nr. 17: ąžuolinės lentos", "Užsakymas Nr. 17: ąžuolinės lentos"]
    result = cli_run(env, "export", "--search", "lentos", "--since", "2025-03-04", "-o", str(tmp_path / "none"))
    assert result.exit_code == 3 and "no letters match" in result.stderr
    result = cli_run(env, "export", "--search", "sutartį", "--customer", "C-1003", "--format", "mbox")
    assert result.exit_code == 0
    assert [letter for _, letter in read_mboxrd(result.stdout_bytes)] == [by_id["contract@imone.lt"]]


def test_hostile_attachment_names_stay_inside_their_folder(archived, tmp_path):
    env, _ = archived
    (letter_id,) = env.store.export_ids(query='"Priedai"')
    _, contents = hostile_letter()
    work = tmp_path / "work"
    work.mkdir()
    files = work / "files"
    result = cli_run(env, "export", str(letter_id), "-o", str(work / "letter.eml"), "--attachments", str(files),
                     "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["attachments"]
    folder = files / str(letter_id)
    assert sorted(written) == sorted(str(p) for p in folder.iterdir()) and len(written) == len(HOSTILE_NAMES)
    assert tree(work) == sorted(["letter.eml", "files", f"files/{letter_id}"]
                                + [f"files/{letter_id}/{os.path.basename(p)}" for p in written])
    assert not list(tmp_path.glob("evil*")) and not (tmp_path / "win.bat").exists()
    names = [os.path.basename(p) for p in written]
    assert names == ["evil.sh", "evil", "win.bat", "_CON", "attachment", "bashrc", "same.txt", "same (2).txt",
                     "gnp.exe", "attachment (2)"]
    for path, data in zip(written, contents, strict=True):
        assert Path(path).read_bytes() == data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(files.stat().st_mode) == stat.S_IMODE(folder.stat().st_mode) == 0o700

    # Exported again: nothing is overwritten, and a symlink planted where a file would go is not followed.
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    (folder / "same.txt").unlink()
    (folder / "same.txt").symlink_to(outside)
    result = cli_run(env, "export", str(letter_id), "-o", str(work / "letter.eml"), "--attachments", str(files),
                     "--json")
    assert result.exit_code == 0, result.output
    again = [os.path.basename(p) for p in json.loads(result.stdout)["attachments"]]
    assert again[:2] == ["evil (2).sh", "evil (2)"] and again[6:8] == ["same (3).txt", "same (4).txt"]
    assert outside.read_bytes() == b"keep me" and (folder / "same.txt").is_symlink()
    assert len(list(folder.iterdir())) == 2 * len(HOSTILE_NAMES)


def test_a_failure_half_way_leaves_nothing(archived, tmp_path):
    env, _ = archived
    ids = customer_ids(env)
    work = tmp_path / "work"
    out, files = work / "out", work / "files"
    files.mkdir(parents=True)
    (files / str(ids[-1])).write_bytes(b"a file where the last letter's folder would go")
    before = tree(work)
    result = cli_run(env, "export", *map(str, ids), "-o", str(out), "--attachments", str(files))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot write {files / str(ids[-1])}: Not a directory")
    assert "nothing was written" in line
    assert tree(work) == before  # the .eml files staged for the other letters, and `out`, are gone

    # A target that cannot be written: under a file.
    result = cli_run(env, "export", "--customer", "C-1001", "--format", "mbox", "-o",
                     str(files / str(ids[-1]) / "x.mbox"))
    assert result.exit_code == 2 and f"cannot write {files / str(ids[-1]) / 'x.mbox'}" in result.stderr
    assert tree(work) == before


@pytest.mark.parametrize("args, code, says", [
    (["4242"], 3, "no letter 4242"),
    (["1", "4242", "-o", "{tmp}/x"], 3, "no letter 4242"),
    (["--customer", "C-NOPE", "-o", "{tmp}/x"], 3, "no customer 'C-NOPE'"),
    (["--lead", "L-2001", "--search", "kaina", "-o", "{tmp}/x"], 3, "no letters match"),
    (["--search", '"ąžuolinės', "-o", "{tmp}/x"], 2, "unclosed quote"),
    (["1", "--customer", "C-1001", "-o", "{tmp}/x"], 2, "not both"),
    ([], 2, "name what to export"),
    (["1", "2"], 2, "give -o DIR"),
    (["--customer", "C-1001", "--json"], 2, "--json prints the summary"),
    (["1", "--since", "2025-01-01"], 2, "--since goes with"),
    (["1", "2", "-o", "{tmp}/a-file"], 2, "is not a directory"),
    (["1", "--attachments", "{tmp}/a-file", "-o", "{tmp}/x.eml"], 2, "is not a directory"),
    (["--customer", "C-1001", "--format", "mbox", "-o", "{tmp}"], 2, "is a directory"),
])
def test_bad_exports_are_one_line_and_write_nothing(archived, tmp_path, args, code, says):
    env, _ = archived
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_bytes(b"x")
    result = cli_run(env, "export", *[a.replace("{tmp}", str(work)) for a in args])
    assert result.exit_code == code, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and says in line, line
    assert tree(work) == ["a-file"]


def test_progress_is_reported_per_letter(archived, tmp_path):
    env, _ = archived
    ids = customer_ids(env)
    seen = []
    export_letters(env.store, ids, "mbox", tmp_path / "x.mbox", progress=lambda *a: seen.append(a))
    assert seen == [("Exporting", n, len(ids)) for n in range(1, len(ids) + 1)]


# -- -o and names that are not regular files: written into or refused, never replaced ---------------------


def read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader at the other end of a FIFO, as a pipe to another program would be."""
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


def null_device(path: Path) -> Path:
    """A character device like /dev/null (1,3) of our own: what a test may write into, and see replaced."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.close(os.open(path, os.O_WRONLY))
    except PermissionError:
        pytest.skip("making and opening a device node needs root on a file system without nodev")
    return path


def test_export_writes_into_a_fifo_or_character_device_and_never_replaces_it(archived, tmp_path):
    env, by_id = archived
    first = customer_ids(env)[0]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    reader, got = read_fifo(fifo)
    result = cli_run(env, "export", str(first), "-o", str(fifo))
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert got == [original_of(env, by_id, first)]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    reader, got = read_fifo(fifo)
    result = cli_run(env, "export", "--customer", "C-1001", "--format", "mbox", "-o", str(fifo), "--json")
    reader.join(30)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"] == [str(fifo)] and summary["bytes"] == len(got[0])
    assert [letter for _, letter in read_mboxrd(got[0])] == [original_of(env, by_id, i) for i in customer_ids(env)]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    device = null_device(tmp_path / "null")
    for args in ([str(first)], ["--customer", "C-1001", "--format", "mbox"]):
        result = cli_run(env, "export", *args, "-o", str(device))
        assert result.exit_code == 0, result.output
        st = os.lstat(device)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_export_to_dev_stdout_writes_to_standard_output(archived, tmp_path):
    """`-o /dev/stdout` in a pipe (a subprocess: CliRunner's stdout is not the process's fd 1)."""
    env, by_id = archived
    first = customer_ids(env)[0]
    proc = subprocess.run([sys.executable, "-m", "hanna_sync", "--config", str(env.config_file()), "export",
                           str(first), "-o", "/dev/stdout"], capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == original_of(env, by_id, first)
    assert os.path.islink("/dev/stdout")  # still the system's link to /proc/self/fd/1


def test_export_refuses_sockets_and_replaces_no_special_file_in_a_directory(archived, tmp_path):
    env, _ = archived
    ids = customer_ids(env)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        result = cli_run(env, "export", str(ids[0]), "-o", str(tmp_path / "sock"))
    finally:
        server.close()
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line == (f"Error: {tmp_path / 'sock'} is a socket: name a regular file, or a FIFO or character device"
                    " (such as /dev/stdout) to write into (nothing was written)")
    assert stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)

    out = tmp_path / "out"
    assert cli_run(env, "export", "--customer", "C-1001", "-o", str(out)).exit_code == 0
    names = sorted(p.name for p in out.iterdir())
    outside = tmp_path / "outside.eml"
    outside.write_bytes(b"keep me")
    for n, make in enumerate([lambda p: os.mkfifo(p, 0o600), lambda p: p.symlink_to(outside),
                              lambda p: null_device(p)]):
        victim = out / names[n]
        victim.unlink()
        make(victim)
        before = {p.name: (os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in out.iterdir()}
        result = cli_run(env, "export", "--customer", "C-1001", "-o", str(out))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        kind = ["a FIFO (named pipe)", "a symbolic link", "a character device"][n]
        assert line == (f"Error: {victim} is {kind}: an export only replaces regular files; move it away or"
                        " export elsewhere (nothing was written)")
        assert {p.name: (os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in out.iterdir()} == before
        victim.unlink()
        victim.write_bytes(b"x")  # the next round puts its special file on another name
    assert outside.read_bytes() == b"keep me"


def test_export_through_a_symlink_replaces_the_file_it_names_and_keeps_the_link(archived, tmp_path):
    env, by_id = archived
    first = customer_ids(env)[0]
    real = tmp_path / "real.eml"
    real.write_bytes(b"old")
    link = tmp_path / "link.eml"
    link.symlink_to(real)
    result = cli_run(env, "export", str(first), "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and real.read_bytes() == original_of(env, by_id, first)


def test_attachments_never_replace_a_fifo_or_device_in_their_folder(archived, tmp_path):
    """--attachments DIR was already safe (each file takes a free name, created O_EXCL): kept so."""
    env, _ = archived
    (letter_id,) = env.store.export_ids(query='"Priedai"')
    folder = tmp_path / "files" / str(letter_id)
    folder.mkdir(parents=True)
    os.mkfifo(folder / "evil.sh", 0o600)
    result = cli_run(env, "export", str(letter_id), "-o", str(tmp_path / "letter.eml"),
                     "--attachments", str(tmp_path / "files"), "--json")
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(folder / "evil.sh").st_mode)
    assert str(folder / "evil (2).sh") in json.loads(result.stdout)["attachments"]
