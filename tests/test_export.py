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
import stat
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync import sample
from hanna_sync.cli import cli
from hanna_sync.export import export_letters
from tests.helpers import Env, deliver_sample

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
    for path, data in zip(written, contents):
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
