"""The server changes under the archive: letters expunged, folders renamed or deleted in the middle of a
pass, thousands of letters arriving while one runs. (A UIDVALIDITY reset is in test_scan.py.)"""

from __future__ import annotations

import ssl
import threading
from dataclasses import replace

from imapclient import DELETED, IMAPClient

from hanna_sync.admin import mailboxes
from hanna_sync.demo import sample
from tests.faults import Fault, ImapProxy, check_consistent
from tests.helpers import Env, deliver_sample

OLD = "2020-01-01T00:00:00+00:00"


def expunge(user, folder: str, uids: list[int]) -> None:
    """What a staff member's mail program does on delete: flag \\Deleted and EXPUNGE (hanna-sync never does)."""
    dc = user.dovecot
    with IMAPClient(dc.host, dc.imaps_port, ssl_context=ssl.create_default_context(cafile=str(dc.ca_file))) as c:
        c.login(user.login, user.password)
        c.select_folder(folder)
        c.add_flags(uids, [DELETED])
        c.uid_expunge(uids)


def live_and_gone(env, box_id: int, folder: str = "INBOX") -> tuple[set[int], set[int]]:
    rows = env.store.db.execute("SELECT uid, gone_at IS NULL FROM letter_locations WHERE mailbox_id = ? AND folder = ?",
                                [box_id, folder]).fetchall()
    return {uid for uid, live in rows if live}, {uid for uid, live in rows if not live}


def test_expunged_letters_stay_archived_and_their_locations_are_marked_gone(tmp_path, imap_user):
    deliver_sample(imap_user)
    env = Env(tmp_path)
    with ImapProxy(imap_user.dovecot) as proxy:
        box = env.add(imap_user)
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        assert env.run().ok
        letters = env.store.db["letters"].count
        live, _ = live_and_gone(env, box.id)
        first, second, third, fourth = sorted(live)[:4]
        skipped = next(uid for uid in range(1, 10) if uid not in live)

        # Deleted on the server (one unrelated letter too): MESSAGES drops, so the pass looks which.
        expunge(imap_user, "INBOX", [first, second, skipped])
        proxy.reset()
        assert env.run().ok
        assert "UID SEARCH" in proxy.commands
        assert live_and_gone(env, box.id) == (live - {first, second}, {first, second})
        assert env.store.db["letters"].count == letters  # the archive keeps them
        gone_letter = env.store.letter(env.store.db.execute(
            "SELECT letter_id FROM letter_locations WHERE uid = ? AND folder = 'INBOX'", [first]).fetchone()[0])
        assert gone_letter["locations"][0]["gone_at"] is not None

        # Nothing changed: one STATUS per folder and nothing else, not even EXAMINE.
        proxy.reset()
        assert env.run().ok
        assert set(proxy.commands) - {"CAPABILITY", "LOGIN", "LOGOUT"} == {"STATUS"}, proxy.commands

        # One deleted and one arrived: MESSAGES is what it was, but below what it should be.
        expunge(imap_user, "INBOX", [third])
        imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
            "ruta@azuolas.lt", sample.STAFF, "Naujas", "x", message_id="<after-expunge@azuolas.lt>"))
        m = env.run().mailboxes[0]
        assert (m.ok, m.archived) == (True, 1)
        assert third in live_and_gone(env, box.id)[1]

        # Without the count to go by (state from an older version), the daily gap check finds it.
        state = env.store.folder_state(box.id, "INBOX")
        env.store.save_folder_state(replace(state, messages=None, gap_checked_at=OLD))
        expunge(imap_user, "INBOX", [fourth])
        assert env.run().ok
        assert fourth in live_and_gone(env, box.id)[1]
        assert env.store.db["letters"].count == letters + 1
        check_consistent(env.store)


def archive_folder(user, count: int) -> None:
    for i in range(count):
        user.dovecot.deliver(user.login, "Archyvas", sample.letter(
            "Rūta <ruta@azuolas.lt>", sample.STAFF, f"Senas {i}", f"Tekstas {i}",
            message_id=None if i % 5 == 0 else f"<old-{i}@azuolas.lt>"))


def test_a_folder_renamed_mid_pass_is_reported_and_its_letters_are_not_stored_twice(tmp_path, imap_user):
    deliver_sample(imap_user)
    archive_folder(imap_user, 20)
    env = Env(tmp_path, batch_size=5)
    dc = imap_user.dovecot
    with ImapProxy(dc) as proxy:
        box = env.add(imap_user, folders=("INBOX", "Archyvas"))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        # INBOX's 9 header and 6 body FETCHes first; the 20th FETCH is in Archyvas.
        proxy.reset(Fault("call", at=20, kind="fetch",
                          call=lambda: dc.rename_folder(imap_user.login, "Archyvas", "Archyvas-2024")))
        first = env.run().mailboxes[0]
        assert not first.ok and first.archived >= 6, first.errors
        kept = env.store.db["letters"].count
        check_consistent(env.store)

        second = env.run().mailboxes[0]
        assert not second.ok and second.archived == 0
        (error,) = second.errors
        assert error.startswith("folder 'Archyvas' cannot be read (") and "Mailbox doesn't exist" in error
        assert f"'hanna-sync folders {box.id}' lists the folders" in error
        assert env.store.db["letters"].count == kept

        mailboxes.edit(env.store, env.secrets, box.id, {"folders": ["INBOX", "Archyvas-2024"]}, verify_first=False, timeout=10)
        third = env.run().mailboxes[0]
        assert third.ok, third.errors
        assert third.archived == 6 + 20 - kept  # only what was never stored
        assert env.store.db["letters"].count == 6 + 20
        live, _ = live_and_gone(env, box.id, "Archyvas-2024")
        assert len(live) == 20
        check_consistent(env.store)


def test_a_folder_deleted_mid_pass_keeps_what_was_archived(tmp_path, imap_user):
    archive_folder(imap_user, 40)
    env = Env(tmp_path, batch_size=5)
    dc = imap_user.dovecot
    with ImapProxy(dc) as proxy:
        box = env.add(imap_user, folders=("INBOX", "Archyvas"))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        # After the first commit: pipelined, several batches' FETCHes are answered before it.
        proxy.reset(Fault("call", at=30, kind="fetch", call=lambda: dc.delete_folder(imap_user.login, "Archyvas")))
        first = env.run().mailboxes[0]
        assert not first.ok and 0 < first.archived < 40, (first.archived, first.errors)
        kept = env.store.db["letters"].count
        second = env.run().mailboxes[0]
        assert "folder 'Archyvas' cannot be read" in second.errors[0]
        assert env.store.db["letters"].count == kept
        check_consistent(env.store)


def test_thousands_of_letters_arriving_during_a_pass_are_all_archived_once(tmp_path, imap_user):
    dc = imap_user.dovecot

    def deliver(start: int, count: int) -> None:
        for i in range(start, start + count):
            if i % 4 == 0:
                raw = sample.letter("Rūta <ruta@azuolas.lt>", sample.STAFF, f"Nr. {i}", "x", message_id=f"<n{i}@azuolas.lt>")
            else:
                raw = sample.letter("x@spam.example", sample.STAFF, f"Spam {i}", "x", message_id=f"<s{i}@spam.example>")
            dc.deliver(imap_user.login, "INBOX", raw)

    deliver(0, 200)
    env = Env(tmp_path, batch_size=50)
    box = env.add(imap_user, folders=("INBOX",))
    arrivals = threading.Thread(target=deliver, args=(200, 2000))

    def progress(label: str, done: int, total: int) -> None:
        if not arrivals.is_alive() and arrivals.ident is None:
            arrivals.start()  # the moment the first batch is in

    first = env.run(progress=progress)
    arrivals.join()
    assert first.ok and 50 <= first.mailboxes[0].archived < 2200 // 4  # the rest arrived after its STATUS
    check_consistent(env.store)

    second = env.run()
    assert second.ok
    assert first.mailboxes[0].archived + second.mailboxes[0].archived == 2200 // 4
    assert env.store.db["letters"].count == 2200 // 4
    assert env.store.db["letter_locations"].count == 2200 // 4
    state = env.store.folder_state(box.id, "INBOX")
    assert (state.last_uid, state.uidnext, state.skipped) == (2200, 2201, 2200 - 2200 // 4)
    # Nothing was jumped over: the gap check, made due, finds no letter never looked at.
    env.store.save_folder_state(replace(state, gap_checked_at=OLD))
    assert env.run().mailboxes[0].gaps == 0
    check_consistent(env.store)


def test_finding_letters_costs_round_trips_per_letters_not_per_uid_span(tmp_path, imap_user):
    """Gmail's All Mail: two letters whose UIDs start at 3,000,000. The first pass and the gap check each
    find them with one UID SEARCH (it was one per 20,000 UIDs of the span: 150 round trips)."""
    dc = imap_user.dovecot
    dc.create_folder(imap_user.login, "Visi laiškai")
    dc.doveadm("mailbox", "update", "-u", imap_user.login, "--min-next-uid", "3000000", "Visi laiškai")
    for i in range(2):
        dc.deliver(imap_user.login, "Visi laiškai", sample.letter(
            "ruta@azuolas.lt", sample.STAFF, f"Visi {i}", "x", message_id=f"<all-{i}@azuolas.lt>"))
    env = Env(tmp_path)
    with ImapProxy(dc) as proxy:
        box = env.add(imap_user, folders=("Visi laiškai",))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        proxy.reset()
        m = env.run().mailboxes[0]
        assert (m.ok, m.new, m.archived) == (True, 2, 2), m.errors
        assert proxy.commands.count("UID SEARCH") == 1, proxy.commands
        assert live_and_gone(env, box.id, "Visi laiškai") == ({3000000, 3000001}, set())

        state = env.store.folder_state(box.id, "Visi laiškai")
        env.store.save_folder_state(replace(state, gap_checked_at=OLD))
        expunge(imap_user, "Visi laiškai", [3000000])
        proxy.reset()
        m = env.run().mailboxes[0]
        assert m.ok and m.gaps == 0, m.errors
        assert proxy.commands.count("UID SEARCH") == 1, proxy.commands
        assert live_and_gone(env, box.id, "Visi laiškai") == ({3000001}, {3000000})


def test_a_folder_larger_than_one_search_window_is_searched_in_windows_of_letters(tmp_path, imap_user, monkeypatch):
    """Over SEARCH_WINDOW letters (here 4, for 11 letters): windows of sequence numbers, so each answer
    stays small and every letter is found, in as many SEARCHes as windows of letters."""
    from hanna_sync.scan import imap_source

    monkeypatch.setattr(imap_source, "SEARCH_WINDOW", 4)
    deliver_sample(imap_user)  # 9 in INBOX
    for i in range(2):
        imap_user.dovecot.deliver(imap_user.login, "INBOX", sample.letter(
            "ruta@azuolas.lt", sample.STAFF, f"Dar {i}", "x", message_id=f"<more-{i}@azuolas.lt>"))
    env = Env(tmp_path)
    with ImapProxy(imap_user.dovecot) as proxy:
        box = env.add(imap_user, folders=("INBOX",))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        proxy.reset()
        m = env.run().mailboxes[0]
        assert m.ok and m.new == 11, m.errors
        assert proxy.commands.count("UID SEARCH") == 3  # 11 letters: 4 + 4 + 3
        live, _ = live_and_gone(env, box.id)

        expunge(imap_user, "INBOX", sorted(live)[:2])
        state = env.store.folder_state(box.id, "INBOX")
        env.store.save_folder_state(replace(state, gap_checked_at=OLD))
        proxy.reset()
        m = env.run().mailboxes[0]
        assert m.ok and m.gaps == 0, m.errors
        assert proxy.commands.count("UID SEARCH") == 3  # 9 letters left: 4 + 4 + 1
        assert live_and_gone(env, box.id) == (live - set(sorted(live)[:2]), set(sorted(live)[:2]))
    check_consistent(env.store)


def test_a_folder_gone_from_the_server_or_from_the_folder_list_has_its_locations_marked_gone(tmp_path, imap_user):
    deliver_sample(imap_user)
    archive_folder(imap_user, 20)
    imap_user.dovecot.deliver(imap_user.login, "Archyvas", sample.letter(
        "x@spam.example", sample.STAFF, "Spam", "x", message_id="<spam-archyvas@spam.example>"))
    env = Env(tmp_path)
    dc = imap_user.dovecot
    q = env.store.db.execute

    def rows(table: str, folder: str) -> int:
        return q(f"SELECT count(*) FROM {table} WHERE mailbox_id = ? AND folder = ?", [box.id, folder]).fetchone()[0]

    with ImapProxy(dc) as proxy:
        box = env.add(imap_user, folders=("INBOX", "Archyvas"))
        env.store.update_mailbox(replace(box, imap_port=proxy.port))
        assert env.run().ok
        archived, _ = live_and_gone(env, box.id, "Archyvas")
        inbox, _ = live_and_gone(env, box.id, "INBOX")
        assert (len(archived), rows("skipped_letters", "Archyvas"), rows("folder_states", "Archyvas")) == (20, 1, 1)

        # Unreadable for a moment (the connection drops at its STATUS): nothing is marked gone.
        proxy.reset()
        assert env.run().ok
        at = [i for i, name in enumerate(proxy.commands, 1) if name == "STATUS"][1]
        proxy.reset(Fault("drop", at=at))
        assert not env.run().ok
        assert live_and_gone(env, box.id, "Archyvas") == (archived, set())
        assert (rows("skipped_letters", "Archyvas"), rows("folder_states", "Archyvas")) == (1, 1)

        # Renamed on the server: LIST no longer returns it, so its places are gone; the letters stay.
        letters = env.store.db["letters"].count
        dc.rename_folder(imap_user.login, "Archyvas", "Archyvas-2024")
        proxy.reset()
        m = env.run().mailboxes[0]
        assert not m.ok and m.errors[0].startswith("folder 'Archyvas' cannot be read ("), m.errors
        assert live_and_gone(env, box.id, "Archyvas") == (set(), archived)
        assert (rows("skipped_letters", "Archyvas"), rows("folder_states", "Archyvas")) == (0, 0)
        assert live_and_gone(env, box.id, "INBOX") == (inbox, set())
        assert env.store.db["letters"].count == letters
        some = q("SELECT letter_id FROM letter_locations WHERE folder = 'Archyvas'").fetchone()[0]
        assert all(loc["gone_at"] for loc in env.store.letter(some)["locations"])

        # Chosen again under its new name: read from the start, nothing stored or linked twice.
        mailboxes.edit(env.store, env.secrets, box.id, {"folders": ["INBOX", "Archyvas-2024"]}, verify_first=False, timeout=10)
        m = env.run().mailboxes[0]
        assert (m.ok, m.archived, m.linked, m.skipped) == (True, 0, 0, 1), m.errors
        assert len(live_and_gone(env, box.id, "Archyvas-2024")[0]) == 20

        # Taken off the folder list: the next pass marks its places gone, and drops its state and skipped rows.
        mailboxes.edit(env.store, env.secrets, box.id, {"folders": ["INBOX"]}, verify_first=False, timeout=10)
        assert env.run().ok
        assert live_and_gone(env, box.id, "Archyvas-2024") == (set(), set(range(1, 21)))
        assert (rows("skipped_letters", "Archyvas-2024"), rows("folder_states", "Archyvas-2024")) == (0, 0)
        assert live_and_gone(env, box.id, "INBOX") == (inbox, set())
    check_consistent(env.store)
