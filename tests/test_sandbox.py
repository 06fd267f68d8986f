"""Every IMAP test trusts the sandbox Dovecot, so prove it behaves like the real server it is."""

from __future__ import annotations

import os
import socket
import ssl
from datetime import datetime, timezone
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from hanna_sync.demo.sandbox import Dovecot, SandboxUser

LETTER = b"From: a@example.test\r\nSubject: Labas\r\n\r\nSveiki, \xc4\x8dia tekstas.\r\n"


def connect(
    user: SandboxUser, *, starttls: bool = False, password: str | None = None
) -> IMAPClient:
    """Log in the way hanna-sync will: verified TLS against the sandbox CA, implicit or STARTTLS."""
    dc = user.dovecot
    context = ssl.create_default_context(cafile=dc.ca_file)
    if starttls:
        client = IMAPClient(dc.host, dc.imap_port, ssl=False, timeout=5)
        assert b"STARTTLS" in client.capabilities()
        client.starttls(context)
    else:
        client = IMAPClient(dc.host, dc.imaps_port, ssl_context=context, timeout=5)
    try:
        client.login(user.login, user.password if password is None else password)
    except LoginError:
        client.shutdown()
        raise
    return client


@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
def test_login_and_wrong_password(imap_user: SandboxUser, starttls: bool) -> None:
    with connect(imap_user, starttls=starttls) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    with pytest.raises(LoginError):
        connect(imap_user, starttls=starttls, password="wrong")


def test_delivered_mail_has_bytes_flags_and_internaldate(imap_user: SandboxUser) -> None:
    dc, login = imap_user.dovecot, imap_user.login
    when = datetime(2024, 3, 1, 12, 30, tzinfo=timezone.utc)
    paths = [
        dc.deliver(login, "INBOX", LETTER),
        dc.deliver(login, "INBOX", LETTER + b"2", flags="S", internaldate=when),
        dc.deliver(login, "INBOX", LETTER + b"3", flags="RFS"),
        dc.deliver(login, "INBOX", LETTER.replace(b"\r\n", b"\n")),
    ]
    assert paths[0].parent.name == "new" and paths[1].parent.name == "cur"
    assert all(os.stat(p).st_uid == dc.uid and os.stat(p).st_gid == dc.gid for p in paths)
    with connect(imap_user) as client:
        client.select_folder("INBOX", readonly=True)
        got = client.fetch(client.search(), ["FLAGS", "BODY.PEEK[]", "INTERNALDATE", "RFC822.SIZE"])
    bodies = [LETTER, LETTER + b"2", LETTER + b"3", LETTER]  # bare LFs come back as CRLF
    assert [got[uid][b"BODY[]"] for uid in sorted(got)] == bodies
    assert [got[uid][b"RFC822.SIZE"] for uid in sorted(got)] == [len(b) for b in bodies]
    flags = [set(got[uid][b"FLAGS"]) - {b"\\Recent"} for uid in sorted(got)]
    assert flags == [set(), {b"\\Seen"}, {b"\\Seen", b"\\Flagged", b"\\Answered"}, set()]
    assert got[2][b"INTERNALDATE"].astimezone(timezone.utc) == when


def test_non_ascii_and_nested_folders_are_listed_decoded(imap_user: SandboxUser) -> None:
    dc, login = imap_user.dovecot, imap_user.login
    dc.deliver(login, "Išsiųsti", LETTER, flags="S")
    dc.create_folder(login, "Archive/2024")
    assert dc.folder_path(login, "Išsiųsti").name == ".I&AWE-si&AXM-sti"  # modified UTF-7 on disk
    with connect(imap_user) as client:
        names = {name for _flags, _sep, name in client.list_folders()}
        assert {"INBOX", "Išsiųsti", "Archive/2024"} <= names
        assert client.select_folder("Išsiųsti")[b"EXISTS"] == 1
        assert client.select_folder("Archive/2024")[b"EXISTS"] == 0


def test_rename_and_delete_folder(imap_user: SandboxUser) -> None:
    dc, login = imap_user.dovecot, imap_user.login
    dc.deliver(login, "Projects", LETTER)
    dc.create_folder(login, "Projects/Old")
    dc.create_folder(login, "Trash")
    dc.rename_folder(login, "Projects", "Projektai")
    dc.delete_folder(login, "Trash")
    with connect(imap_user) as client:
        names = {name for _flags, _sep, name in client.list_folders()}
        assert names == {"INBOX", "Projektai", "Projektai/Old"}
        assert client.select_folder("Projektai")[b"EXISTS"] == 1


def test_reset_uidvalidity_keeps_the_letters(imap_user: SandboxUser) -> None:
    dc, login = imap_user.dovecot, imap_user.login
    for n in range(3):
        dc.deliver(login, "Išsiųsti", LETTER + str(n).encode(), flags="S")
    watching = connect(imap_user)  # a session with the folder selected, like a sync mid-pass
    before = watching.select_folder("Išsiųsti")[b"UIDVALIDITY"]
    after = dc.reset_uidvalidity(login, "Išsiųsti")
    assert after != before
    with pytest.raises((OSError, IMAPClient.AbortError)):
        watching.noop()  # Dovecot drops it: "IMAP session state is inconsistent, please relogin"
    watching.shutdown()
    with connect(imap_user) as client:
        assert client.folder_status("Išsiųsti", [b"UIDVALIDITY"])[b"UIDVALIDITY"] == after
        assert client.select_folder("Išsiųsti")[b"UIDVALIDITY"] == after
        got = client.fetch(client.search(), ["BODY.PEEK[]", "FLAGS"])
    assert [got[uid][b"BODY[]"] for uid in sorted(got)] == [LETTER + b"%d" % n for n in range(3)]
    assert all(b"\\Seen" in m[b"FLAGS"] for m in got.values())


def test_restart_keeps_ports_and_mail(imap_user: SandboxUser) -> None:
    dc = imap_user.dovecot
    dc.deliver(imap_user.login, "INBOX", LETTER)
    ports = dc.imap_port, dc.imaps_port
    client = connect(imap_user)
    client.select_folder("INBOX")
    dc.restart()
    with pytest.raises((OSError, IMAPClient.AbortError)):
        client.noop()  # the old session died with the old server
    client.shutdown()
    dc.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((dc.host, dc.imaps_port), timeout=2)
    dc.start()
    assert (dc.imap_port, dc.imaps_port) == ports
    with connect(imap_user, starttls=True) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


def test_served_certificate_can_be_for_another_host(imap_user: SandboxUser) -> None:
    dc = imap_user.dovecot
    own = dc.cert_file, dc.key_file
    dc.cert_file, dc.key_file = dc.make_cert(["mail.other.test"])
    try:
        dc.restart()
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            connect(imap_user)
        context = ssl.create_default_context(cafile=dc.ca_file)
        with socket.create_connection((dc.host, dc.imaps_port), timeout=5) as sock, \
                context.wrap_socket(sock, server_hostname="mail.other.test") as tls:
            assert tls.recv(64).startswith(b"* OK")
    finally:
        dc.cert_file, dc.key_file = own
        dc.restart()


def test_close_leaves_no_process_and_no_files(dovecot: Dovecot) -> None:
    """A second, own instance (the fixture only brings the skip-if-not-installed rule)."""
    with Dovecot() as dc:
        assert dc.running
        pgid, root = dc._proc.pid, dc.root  # type: ignore[union-attr]
    assert live_processes_in_group(pgid) == []
    assert not root.exists()


def live_processes_in_group(pgid: int) -> list[str]:
    """/proc stat lines of group members that still run (zombies wait for init, they do nothing)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        state, _ppid, pgrp = text.rsplit(")", 1)[1].split()[:3]
        if pgrp == str(pgid) and state != "Z":
            found.append(text)
    return found
