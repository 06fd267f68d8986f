"""Gmail over IMAP with an app password: X-GM-EXT-1 against a fake imap.gmail.com in front of the real Dovecot.

One Gmail message shows in INBOX, in each label's folder and in `[Gmail]/All Mail`: it is stored once with
a location per folder and downloaded once (counted at the fake), by X-GM-MSGID also when it has no
Message-ID, across passes and kills; X-GM-THRID joins a thread without References; a server without the
extension gets exactly the commands it always got.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from hanna_sync.admin import mailboxes
from hanna_sync.cli import cli
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.demo.sandbox import CertificateAuthority
from tests.fakes_gmail_imap import FakeGmailImap
from tests.faults import Fault, ImapProxy, archive, check_consistent, write_config
from tests.helpers import Env, server_flags

ROOT = Path(__file__).resolve().parent.parent
LABEL = "Klientai"
ALL_MAIL = "[Gmail]/All Mail"
SENT_MAIL = "[Gmail]/Sent Mail"
EVERY_FOLDER = ("INBOX", LABEL, ALL_MAIL, SENT_MAIL)


@pytest.fixture
def gmail(tmp_path, dovecot):
    if not dovecot.running:
        dovecot.start()
    fake = FakeGmailImap(CertificateAuthority(tmp_path / "google-ca", name="fake Google CA"), dovecot)
    yield fake
    fake.close()


def add_gmail(env: Env, user, fake: FakeGmailImap, folders=EVERY_FOLDER, *, port: int | None = None, ca_file=None):
    """A gmail-preset mailbox on the fake (or a proxy in front of it), logging in with the Dovecot password
    (the app password)."""
    for folder in EVERY_FOLDER:
        user.dovecot.create_folder(user.login, folder)
    box = mailboxes.new_mailbox("staff", user.login, "gmail", {
        "imap_host": "127.0.0.1", "imap_port": port or fake.port, "ca_file": str(ca_file or fake.ca.ca_file),
        "folders": list(folders)})
    return mailboxes.add(env.store, env.secrets, box, user.password, verify_first=True, timeout=10,
                         allow_duplicate=True)


def deliver(user, raw: bytes, *folders: str) -> None:
    """One Gmail message with several labels: the same bytes in each folder, as Gmail's IMAP shows it."""
    for folder in folders:
        user.dovecot.deliver(user.login, folder, raw)


def order(i: int, message_id: str | None, to: str) -> bytes:
    return sample.letter("Rūta <ruta@azuolas.lt>", to, f"Užsakymas {i}", f"Tekstas {i}.", message_id=message_id)


def populate(user) -> None:
    """Letters as Gmail shows them: INBOX and All Mail, some labelled, one without a Message-ID, sent
    ones in Sent Mail and All Mail, and mail that concerns nobody."""
    deliver(user, order(1, "<o1@azuolas.lt>", user.login), "INBOX", LABEL, ALL_MAIL)
    deliver(user, order(2, None, user.login), "INBOX", LABEL, ALL_MAIL)  # identity only from its bytes
    deliver(user, order(3, "<o3@azuolas.lt>", user.login), "INBOX", ALL_MAIL)
    deliver(user, order(4, None, user.login), ALL_MAIL)  # archived in Gmail: in All Mail only
    deliver(user, sample.letter(user.login, "ruta@azuolas.lt", "Re: Užsakymas 1", "Ačiū.",
                                message_id="<re1@imone.lt>", in_reply_to="<o1@azuolas.lt>"), SENT_MAIL, ALL_MAIL)
    deliver(user, sample.letter("x@spam.example", user.login, "Akcija", "x", message_id="<spam@spam.example>"),
            "INBOX", ALL_MAIL)


def count(env: Env, sql: str, *args) -> int:
    return env.store.db.execute(sql, args).fetchone()[0]


def test_a_letter_in_inbox_a_label_and_all_mail_is_stored_once_with_three_locations_and_downloaded_once(
        tmp_path, gmail, imap_user):
    populate(imap_user)
    env = Env(tmp_path, batch_size=2)
    add_gmail(env, imap_user, gmail)
    before = server_flags(imap_user, EVERY_FOLDER)
    result = env.run()
    assert result.ok, [m.errors for m in result.mailboxes]
    assert count(env, "SELECT count(*) FROM letters") == 5  # orders 1-4 and the reply; the spam concerns nobody
    places = {subject: sorted(folders.split(",")) for subject, folders in env.store.db.execute(
        "SELECT l.subject, group_concat(p.folder) FROM letters l JOIN letter_locations p ON p.letter_id = l.id"
        " GROUP BY l.id").fetchall()}
    assert places == {"Užsakymas 1": sorted(["INBOX", LABEL, ALL_MAIL]), "Užsakymas 2": sorted(["INBOX", LABEL, ALL_MAIL]),
                      "Užsakymas 3": sorted(["INBOX", ALL_MAIL]), "Užsakymas 4": [ALL_MAIL],
                      "Re: Užsakymas 1": sorted([SENT_MAIL, ALL_MAIL])}
    # Downloaded once each, the letter without a Message-ID too (before, its identity came from each download).
    fetched = gmail.body_fetches()
    assert len(fetched) == 5, fetched
    # One X-GM-MSGID per letter, on each of its locations.
    assert count(env, "SELECT count(DISTINCT gm_msgid) FROM letter_locations") == 5
    assert count(env, "SELECT count(*) FROM letter_locations WHERE gm_msgid IS NULL") == 0
    assert count(env, "SELECT count(*) FROM (SELECT letter_id FROM letter_locations"
                      " GROUP BY letter_id HAVING count(DISTINCT gm_msgid) > 1)") == 0
    # Read-only, through the fake and its side connection: Dovecot's flags are as they were, no SELECT, no STORE.
    assert server_flags(imap_user, EVERY_FOLDER) == before
    verbs = {c.line.split(b" ")[1].upper() for c in gmail.commands}
    assert not verbs & {b"SELECT", b"STORE", b"COPY", b"MOVE", b"EXPUNGE", b"APPEND"}, verbs

    # The letter without a Message-ID gets a new label later: located, not downloaded again, in the next pass.
    deliver(imap_user, order(4, None, imap_user.login), LABEL)
    gmail.commands.clear()
    assert env.run().ok
    assert gmail.body_fetches() == []
    assert count(env, "SELECT count(*) FROM letters") == 5
    assert count(env, "SELECT count(*) FROM letter_locations p JOIN letters l ON l.id = p.letter_id"
                      " WHERE l.subject = 'Užsakymas 4'") == 2


def test_all_mail_alone_is_everything_in_one_folder_and_is_never_a_default(tmp_path, gmail, imap_user):
    populate(imap_user)
    env = Env(tmp_path)
    saved = add_gmail(env, imap_user, gmail, folders=())
    assert saved.mailbox.folders == ["INBOX", SENT_MAIL]
    assert [n for n in saved.notes if ALL_MAIL in n] == [
        f"'{ALL_MAIL}' holds every letter once (all labels, archived ones too) and is not scanned by default;"
        f' to archive everything, choose it: --folder "{ALL_MAIL}" (with INBOX and the Sent folder or alone:'
        " a letter in several folders is downloaded once)"]
    assert env.run().ok
    assert count(env, "SELECT count(*) FROM letters") == 4  # order 4 was archived in Gmail: only in All Mail

    everything = Env(tmp_path / "everything")
    saved = add_gmail(everything, imap_user, gmail, folders=(ALL_MAIL,))
    assert not [n for n in saved.notes if ALL_MAIL in n]
    gmail.commands.clear()
    assert everything.run().ok
    assert count(everything, "SELECT count(*) FROM letters") == 5
    assert len(gmail.body_fetches()) == 5


def test_a_gmail_thread_joins_letters_without_references(tmp_path, gmail, imap_user):
    """A colleague's letter in the customer's Gmail thread (no In-Reply-To, no References, no customer
    address) inherits the thread's link and shows in `hanna-sync thread`; without X-GM-EXT-1 it does not."""
    inbox = sample.letter("Rūta <ruta@azuolas.lt>", imap_user.login, "Kaina", "Kiek?", message_id="<q@azuolas.lt>")
    internal = sample.letter(imap_user.login, "kolega@imone.lt", "Kaina", "Ką atsakom?", message_id="<int@imone.lt>")
    deliver(imap_user, inbox, "INBOX", ALL_MAIL)
    deliver(imap_user, internal, SENT_MAIL, ALL_MAIL)
    gmail.threads["<int@imone.lt>"] = "<q@azuolas.lt>"  # Gmail threads by subject too

    env = Env(tmp_path)
    mailbox = add_gmail(env, imap_user, gmail, folders=("INBOX", SENT_MAIL)).mailbox
    assert env.run().ok
    rows = env.store.db.execute("SELECT l.id, l.subject, k.rule, l.conversation_id FROM letters l"
                                " JOIN links k ON k.letter_id = l.id ORDER BY l.id").fetchall()
    assert [(r[1], r[2]) for r in rows] == [("Kaina", "customer_contact"), ("Kaina", "thread")]
    assert rows[0][3] == rows[1][3] and rows[0][3].startswith(f"gmail:{mailbox.login_name}:")
    answer = CliRunner().invoke(cli, ["--config", str(env.config_file()), "thread", str(rows[1][0]), "--json"])
    assert answer.exit_code == 0, answer.output
    assert [r["id"] for r in json.loads(answer.output)] == [rows[0][0], rows[1][0]]

    plain = Env(tmp_path / "plain")
    gmail.gm_ext = False
    add_gmail(plain, imap_user, gmail, folders=("INBOX", SENT_MAIL))
    assert plain.run().ok
    assert count(plain, "SELECT count(*) FROM letters") == 1
    assert count(plain, "SELECT count(*) FROM letters WHERE conversation_id IS NOT NULL") == 0


# What a first pass sends to a server without X-GM-EXT-1 (recorded with the code before it, tags left out):
# Gmail's extensions change none of it. The greeting lists the capabilities (no CAPABILITY), every folder's
# STATUS goes with the login (without HIGHESTMODSEQ: CONDSTORE is listed only after the login), and a folder
# that changed is read by a fresh STATUS.
PLAIN_COMMANDS = [
    "LOGIN u ***", 'STATUS "INBOX" (MESSAGES UIDNEXT UIDVALIDITY)', 'STATUS "Klientai" (MESSAGES UIDNEXT UIDVALIDITY)',
    'STATUS "INBOX" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)', 'EXAMINE "INBOX"', "UID SEARCH UID 1:4",
    "UID FETCH 1,2,3,4 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM SENDER REPLY-TO TO CC BCC IN-REPLY-TO"
    " REFERENCES AUTO-SUBMITTED PRECEDENCE LIST-ID)])",
    "UID FETCH 1,2,3 (BODY.PEEK[])",
    'STATUS "Klientai" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)', 'EXAMINE "Klientai"', "UID SEARCH UID 1:2",
    "UID FETCH 1,2 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM SENDER REPLY-TO TO CC BCC IN-REPLY-TO"
    " REFERENCES AUTO-SUBMITTED PRECEDENCE LIST-ID)])",
    "UID FETCH 2 (BODY.PEEK[])",
    "LOGOUT",
]


def test_a_server_without_the_extension_gets_exactly_the_commands_it_always_got(tmp_path, gmail, imap_user):
    populate(imap_user)
    gmail.gm_ext = False
    env = Env(tmp_path)
    add_gmail(env, imap_user, gmail, folders=("INBOX", LABEL))
    gmail.commands.clear()
    assert env.run().ok
    sent = [c.line.split(b" ", 1)[1].decode().replace(imap_user.login, "u") for c in gmail.commands]
    assert sent == PLAIN_COMMANDS
    # Without X-GM-MSGID the letter without a Message-ID is downloaded again in the label's folder (and
    # stored once, by its bytes): what the extension saves.
    assert count(env, "SELECT count(*) FROM letters") == 3
    assert count(env, "SELECT count(*) FROM letter_locations WHERE gm_msgid IS NOT NULL") == 0


def test_kills_mid_pass_lose_nothing_duplicate_nothing_and_download_nothing_twice(tmp_path, gmail, imap_user):
    """SIGKILL `hanna-sync run` at random responses (a fault proxy in front of the fake); after each, a pass
    completes to the clean run's archive, and never downloads a letter archived before the kill."""
    populate(imap_user)
    for i in range(5, 15):
        deliver(imap_user, order(i, None if i % 3 == 0 else f"<o{i}@azuolas.lt>", imap_user.login),
                *(("INBOX", LABEL, ALL_MAIL) if i % 2 else ("INBOX", ALL_MAIL)))
    fake_server = SimpleNamespace(host="127.0.0.1", imaps_port=gmail.port, ca_file=gmail.ca.ca_file,
                                  cert_file=imap_user.dovecot.cert_file, key_file=imap_user.dovecot.key_file)
    rng = random.Random(18)
    with ImapProxy(fake_server) as proxy:
        template = Env(tmp_path / "template", batch_size=3)
        add_gmail(template, imap_user, gmail, port=proxy.port, ca_file=imap_user.dovecot.ca_file)
        template.store.close()

        def clone(name: str) -> tuple[Path, Path]:
            shutil.copytree(tmp_path / "template", tmp_path / name)
            config = replace(template.config, database=tmp_path / name / "hs.db", secrets=replace(
                template.config.secrets, file=tmp_path / name / "secrets.enc", key_file=tmp_path / name / "secrets.key"))
            return tmp_path / name, write_config(tmp_path / name, config)

        def hanna(config_file: Path) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "hanna_sync", "--config", str(config_file), "run"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)

        clean_dir, clean_config = clone("clean")
        proxy.reset()
        assert hanna(clean_config).wait(120) == 0
        round_trips = proxy.tagged
        store = Store(clean_dir / "hs.db")
        reference = archive(store)
        assert len(reference.letters) == 15 and len(reference.locations) == 11 + 5 * 3 + 5 * 2
        store.close()
        gm = {(folder, uid): ids[0] for folder in EVERY_FOLDER
              for uid, ids in gmail.ids(imap_user.login, imap_user.password, folder).items()}

        killed = 0
        for n in range(8):
            directory, config_file = clone(f"kill-{n}")
            proxy.reset(Fault("kill", at=rng.randint(4, round_trips), delay=None if n % 2 else rng.uniform(0, 0.03)))
            proc = hanna(config_file)
            proxy.victim = proc.pid
            code = proc.wait(120)
            assert code in (-signal.SIGKILL, 0), proc.stderr.read()
            killed += code == -signal.SIGKILL
            store = Store(directory / "hs.db")
            check_consistent(store, reference)
            had = {row[0] for row in store.db.execute("SELECT gm_msgid FROM letter_locations")}
            store.close()
            gmail.commands.clear()
            proxy.reset()
            assert hanna(config_file).wait(120) == 0
            store = Store(directory / "hs.db")
            assert archive(store) == reference, n
            again = [gm[place] for place in gmail.body_fetches() if str(gm[place]) in had]
            assert again == [], f"kill point {n}: downloaded again after the kill: {again}"
            store.close()
        assert killed >= 5
