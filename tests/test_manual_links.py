"""Links made and taken off by hand (`link` / `unlink`): kept by every relink, import and pass, shown by `show`,
passed along threads like any link; passes on the sandbox Dovecot."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.demo import sample
from hanna_sync.linking.match import build_directory
from hanna_sync.linking.relink import links_removed, relink
from hanna_sync.lock import pass_lock
from hanna_sync.models import Contact, Entity
from tests.helpers import Env

START = datetime(2025, 5, 1, 9, tzinfo=timezone.utc)
COLLEAGUE = f"kolega@{sample.OWN_DOMAINS[0]}"


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def cli_run(env, *args):
    return CliRunner().invoke(cli, ["--config", str(env.config_file()), *args])


def deliver(dovecot, user, *letters):
    for raw in letters:
        dovecot.deliver(user.login, "INBOX", raw)


@pytest.fixture
def archived(env, imap_user, dovecot):
    """Two conversations, each a customer's letter and a staff-only reply linked through its thread:
    "Lentos" (C-1001, by ruta's contact address) and "Krovinys" (C-1002, by anna's). Letter ids by subject."""
    deliver(dovecot, imap_user,
            sample.letter("ruta@azuolas.lt", imap_user.login, "Lentos", "Kaina?", message_id="<a@azuolas.lt>",
                          date=START),
            sample.letter(imap_user.login, COLLEAGUE, "Re: Lentos", "Ar turim?", message_id="<b@imone.lt>",
                          in_reply_to="<a@azuolas.lt>", date=START + timedelta(hours=1)),
            sample.letter("anna@partners.eu", imap_user.login, "Krovinys", "Kada?", message_id="<c@partners.eu>",
                          date=START + timedelta(hours=2)),
            sample.letter(imap_user.login, COLLEAGUE, "Re: Krovinys", "Rytoj.", message_id="<d@imone.lt>",
                          in_reply_to="<c@partners.eu>", date=START + timedelta(hours=3)))
    env.add(imap_user, folders=("INBOX",))
    assert env.run().ok
    return {r["subject"]: r["id"] for r in env.store.letters()}


def links(env, letter_id):
    return {(k["entity_type"], k["entity_id"]): k["rule"] for k in env.store.letter(letter_id)["links"]}


def dump(env):
    return "\n".join(env.store.db.conn.iterdump())


def test_a_letter_linked_by_hand_is_shown_listed_inherited_and_kept_by_every_relink(env, archived, imap_user, dovecot):
    lentos, reply = archived["Lentos"], archived["Re: Lentos"]
    result = cli_run(env, "link", str(lentos), "--customer", "C-1003")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Linked letter {lentos} to customer C-1003 by hand.\nRelinked 4 letters: 1 links")
    assert links(env, lentos) == {("customer", "C-1001"): "customer_contact", ("customer", "C-1003"): "manual"}
    assert links(env, reply) == {("customer", "C-1001"): "thread", ("customer", "C-1003"): "thread"}  # inherited

    shown = cli_run(env, "show", str(lentos))
    assert "Linked:     customer C-1003 by manual\n" in shown.output
    assert "Linked:     customer C-1001 by customer_contact (ruta@azuolas.lt)" in shown.output
    card = json.loads(cli_run(env, "letters", "--customer", "C-1003", "--json").stdout)
    assert [(r["subject"], [k for k in r["links"] if k["entity_id"] == "C-1003"][0]["rule"]) for r in card] == [
        ("Re: Lentos", "thread"), ("Lentos", "manual")]
    assert [k for k in card[1]["links"] if k["rule"] == "manual"][0]["address"] == "-"
    text = cli_run(env, "letters", "--customer", "C-1003")
    assert text.exit_code == 0 and "manual" in text.output

    # The rules do not know C-1003 on this letter: relinks, imports and passes keep the link all the same.
    again = relink(env.store, env.config, env.secrets)
    assert (again.links_added, again.links_removed, again.links_changed) == (0, 0, 0)
    path = env.tmp / "c.csv"
    path.write_text("id,name,email,domain,contacts\nC-1003,\"Šviesa, MB\",naujas@sviesa.lt,,\n")
    assert cli_run(env, "import", "customers", str(path)).exit_code == 0
    assert env.run().ok
    assert links(env, lentos)[("customer", "C-1003")] == "manual"

    # A later staff-only reply, archived by a pass, inherits the hand-made link through its thread.
    deliver(dovecot, imap_user, sample.letter(imap_user.login, COLLEAGUE, "Re: Lentos (2)", "Išsiųsta.",
                                              message_id="<e@imone.lt>", in_reply_to="<a@azuolas.lt>",
                                              date=START + timedelta(days=1)))
    assert env.run().ok
    (later,) = [r for r in env.store.letters(customer="C-1003") if r["subject"] == "Re: Lentos (2)"]
    assert [k["rule"] for k in later["links"] if k["entity_id"] == "C-1003"] == ["thread"]

    # Linking again: said, exit 0, nothing written.
    before = dump(env)
    same = cli_run(env, "link", str(lentos), "--customer", "C-1003", "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout) == {"letter": lentos, "entity_type": "customer", "entity_id": "C-1003",
                                       "result": "already linked", "was": "manual", "changed": False,
                                       "relink": None}
    assert dump(env) == before
    assert "already linked to customer C-1003 by hand" in cli_run(env, "link", str(lentos), "--customer",
                                                                  "C-1003").output


def test_a_rule_link_linked_by_hand_becomes_manual_and_outlives_the_rule(env, archived):
    krovinys = archived["Krovinys"]
    result = cli_run(env, "link", str(krovinys), "--customer", "C-1002", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert (done["result"], done["was"], done["changed"]) == ("linked", "customer_contact", True)
    assert done["relink"]["letters"] == 4
    # Anna leaves Baltic Freight: the rule no longer links her letter, the hand-made link stays, and so does
    # the reply's thread link through it.
    env.store.save_entity("customer", Entity("C-1002", "Baltic Freight Ltd", "office@balticfreight.co.uk"),
                          replace_contacts=True)
    changed = relink(env.store, env.config, env.secrets)
    assert (changed.links_removed, changed.unlinked) == (0, 0)
    assert links(env, krovinys) == {("customer", "C-1002"): "manual"}
    assert links(env, archived["Re: Krovinys"]) == {("customer", "C-1002"): "thread"}


def test_an_unlinked_rule_link_never_comes_back_and_its_replies_no_longer_inherit_it(
        env, archived, imap_user, dovecot):
    krovinys, reply = archived["Krovinys"], archived["Re: Krovinys"]
    result = cli_run(env, "unlink", str(krovinys), "--customer", "C-1002")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Unlinked letter {krovinys} from customer C-1002 (it was linked by"
                                    " customer_contact): no relink or pass links it again")
    assert "1 letters left unlinked" in result.output  # the reply: its only link came through this letter
    assert links(env, krovinys) == {} and links(env, reply) == {}
    assert {r["id"] for r in env.store.letters()} == set(archived.values())  # both stay archived
    assert cli_run(env, "letters", "--customer", "C-1002").output == "No letters.\n"

    shown = cli_run(env, "show", str(krovinys))
    assert "Unlinked by hand: customer C-1002 (was customer_contact, 20" in shown.output
    letter = json.loads(cli_run(env, "show", str(krovinys), "--json").stdout)
    assert [(u["entity_type"], u["entity_id"], u["rule"]) for u in letter["unlinked"]] == [
        ("customer", "C-1002", "customer_contact")]
    assert letter["links"] == [] and {"locations", "participants", "body_text"} <= set(letter)  # extended only

    # No relink, import or pass brings it back: not even the letter found again in another mailbox.
    assert relink(env.store, env.config, env.secrets).links_added == 0
    env.store.save_entity("customer", Entity("C-1002", "Baltic Freight", "office@balticfreight.co.uk", None,
                                             [Contact("anna@partners.eu"), Contact("ops@partners.eu")]),
                          replace_contacts=True)
    assert cli_run(env, "relink").exit_code == 0
    env.add(imap_user, folders=("INBOX",), email=f"kopija-{imap_user.login}")
    second = env.run()
    assert second.ok and links(env, krovinys) == {} and links(env, reply) == {}

    # Again: said, exit 0, nothing written.
    before = dump(env)
    again = cli_run(env, "unlink", str(krovinys), "--customer", "C-1002", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["result"] == "already unlinked"
    assert dump(env) == before

    # `link` undoes it: the unlink is forgotten, the link is manual, the reply inherits it again.
    assert cli_run(env, "link", str(krovinys), "--customer", "C-1002").exit_code == 0
    assert links(env, krovinys) == {("customer", "C-1002"): "manual"}
    assert links(env, reply) == {("customer", "C-1002"): "thread"}
    assert env.store.letter(krovinys)["unlinked"] == []


def test_a_thread_link_unlinked_by_hand_stays_off_that_letter_only(env, archived):
    lentos, reply = archived["Lentos"], archived["Re: Lentos"]
    result = cli_run(env, "unlink", str(reply), "--customer", "C-1001")
    assert result.exit_code == 0, result.output
    assert "(it was linked by thread)" in result.output
    assert links(env, reply) == {} and links(env, lentos) == {("customer", "C-1001"): "customer_contact"}
    assert relink(env.store, env.config, env.secrets).links_added == 0
    assert links(env, reply) == {}


def test_unlinking_a_manual_link_removes_it_and_its_thread_links(env, archived):
    lentos, reply = archived["Lentos"], archived["Re: Lentos"]
    assert cli_run(env, "link", str(lentos), "--lead", "L-2001").exit_code == 0
    assert links(env, reply)[("lead", "L-2001")] == "thread"
    result = cli_run(env, "unlink", str(lentos), "--lead", "L-2001", "--json")
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["result"], json.loads(result.stdout)["was"]) == ("unlinked", "manual")
    assert ("lead", "L-2001") not in links(env, lentos) and ("lead", "L-2001") not in links(env, reply)
    assert [u["rule"] for u in env.store.letter(lentos)["unlinked"]] == ["manual"]


def test_unlinking_what_is_not_linked_says_so_and_writes_nothing(env, archived):
    before = dump(env)
    result = cli_run(env, "unlink", str(archived["Lentos"]), "--customer", "C-1003")
    assert result.exit_code == 0, result.output
    assert result.output == f"Letter {archived['Lentos']} is not linked to customer C-1003: nothing to unlink.\n"
    assert dump(env) == before


@pytest.mark.parametrize("args, code, message", [
    (["link", "999", "--customer", "C-1001"], 3, "Error: no letter 999"),
    (["unlink", "999", "--lead", "L-2001"], 3, "Error: no letter 999"),
    (["link", "{lentos}", "--customer", "C-404"], 3, "Error: no customer 'C-404'"),
    (["unlink", "{lentos}", "--lead", "L-404"], 3, "Error: no lead 'L-404'"),
    (["link", "{lentos}"], 2, "Error: give exactly one of --customer ID or --lead ID"),
    (["unlink", "{lentos}", "--customer", "C-1001", "--lead", "L-2001"], 2, "Error: give exactly one of"),
    (["link", "Lentos", "--customer", "C-1001"], 2, "Error: Invalid value for 'LETTER'"),
])
def test_bad_input_is_one_line_an_exit_code_and_nothing_written(env, archived, args, code, message):
    before = dump(env)
    result = cli_run(env, *[a.format(lentos=archived["Lentos"]) for a in args])
    assert result.exit_code == code, result.output
    assert message in result.output and result.output.count("Error:") == 1
    assert dump(env) == before


def customers_csv(env, *entities, name="c.csv"):
    path = env.tmp / name
    path.write_text("id,name,email,domain,contacts\n" + "".join(
        f'{e.id},"{e.name}",{e.email or ""},{e.domain or ""},{";".join(c.email for c in e.contacts)}\n'
        for e in entities))
    return str(path)


def test_decisions_by_hand_outlive_an_entity_that_leaves_and_come_back_with_it(env, archived):
    lentos, krovinys = archived["Lentos"], archived["Krovinys"]
    assert cli_run(env, "link", str(lentos), "--customer", "C-1003").exit_code == 0
    assert cli_run(env, "unlink", str(krovinys), "--customer", "C-1002").exit_code == 0
    # What a snapshot without C-1003 would take off, before it is applied: the hand-made link too.
    without = {"customer": [e for e in env.store.entities("customer") if e.id != "C-1003"],
               "lead": env.store.entities("lead")}
    gone = links_removed(env.store, env.config, build_directory(env.store, env.config, without))
    assert sorted((letter_id, k.entity_id, k.rule) for letter_id, k in gone) == [
        (lentos, "C-1003", "manual"), (archived["Re: Lentos"], "C-1003", "thread")]
    # An export missing C-1002 and C-1003 once: the dry run and the summary say what is kept for them.
    only = customers_csv(env, sample.CUSTOMERS[0])
    dry = cli_run(env, "import", "customers", only, "--snapshot", "--force", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["kept_by_hand"] == 2
    removed = cli_run(env, "import", "customers", only, "--snapshot", "--force")
    assert removed.exit_code == 0, removed.output
    assert "2 link(s) made or taken off by hand kept for when the removed customers return." in removed.output
    q = env.store.db.execute
    assert q("SELECT count(*) FROM links WHERE entity_id IN ('C-1002', 'C-1003')").fetchone() == (0,)
    assert links(env, lentos) == {("customer", "C-1001"): "customer_contact"}
    # They come back under the same ids: the link by hand is back, the unlinked link is not.
    back = cli_run(env, "import", "customers", customers_csv(env, *sample.CUSTOMERS, name="all.csv"), "--snapshot")
    assert back.exit_code == 0, back.output
    assert links(env, lentos) == {("customer", "C-1001"): "customer_contact", ("customer", "C-1003"): "manual"}
    assert links(env, krovinys) == {} and links(env, archived["Re: Krovinys"]) == {}
    assert "Unlinked by hand: customer C-1002" in cli_run(env, "show", str(krovinys)).output
    # The same when the CRM deletes the rows itself, and with remove-entity.
    with env.store.transaction():
        q("DELETE FROM customers WHERE id IN ('C-1002', 'C-1003')")
    assert q("SELECT count(*) FROM links WHERE entity_id = 'C-1003' AND rule = 'manual'").fetchone() == (0,)
    assert cli_run(env, "remove-entity", "customer", "C-1001", "--yes").exit_code == 0
    assert cli_run(env, "import", "customers", customers_csv(env, *sample.CUSTOMERS, name="all.csv")).exit_code == 0
    assert links(env, lentos) == {("customer", "C-1001"): "customer_contact", ("customer", "C-1003"): "manual"}
    assert links(env, krovinys) == {}


def test_a_converted_leads_decisions_by_hand_move_to_its_customer(env, archived):
    lentos, krovinys = archived["Lentos"], archived["Krovinys"]
    assert cli_run(env, "link", str(lentos), "--lead", "L-2001").exit_code == 0
    with env.store.transaction():  # the lead also writes from anna's address: a rule link to unlink
        env.store.save_entity("lead", Entity("L-2001", "Naujas Klientas", "pirkimai@naujas.lt", None,
                                             [Contact("vadovas@naujas.lt"), Contact("anna@partners.eu")]),
                              replace_contacts=True)
    assert cli_run(env, "relink").exit_code == 0
    assert cli_run(env, "unlink", str(krovinys), "--lead", "L-2001").exit_code == 0
    # The CRM converts the lead into C-2001 (same address); the lead export is then empty of it.
    convert = customers_csv(env, *sample.CUSTOMERS, Entity("C-2001", "Naujas", "pirkimai@naujas.lt", None,
                                                           [Contact("anna@partners.eu")]))
    assert cli_run(env, "import", "customers", convert, "--snapshot", "--allow-conflicts").exit_code == 0
    (env.tmp / "l.csv").write_text("id,name,email,contacts\n")
    assert links(env, krovinys)[("customer", "C-2001")] == "customer_contact"  # anna: both customers' contact
    leads = ["import", "leads", str(env.tmp / "l.csv"), "--snapshot", "--force", "--allow-conflicts"]
    dry_run = cli_run(env, *leads, "--dry-run", "--json")
    assert dry_run.exit_code == 0, dry_run.output
    dry = json.loads(dry_run.stdout)
    assert dry["kept_by_hand"] == 0 and dry["converted"] == [{"lead": "L-2001", "customer": "C-2001"}]
    assert {(k["letter"], k["entity_id"], k["rule"]) for k in dry["removed_links"]} >= {
        (krovinys, "C-2001", "customer_contact"), (archived["Re: Krovinys"], "C-2001", "thread")}
    done = cli_run(env, *leads)
    assert done.exit_code == 0, done.output
    assert "converted to a customer" in done.output and "kept for when" not in done.output
    assert links(env, lentos)[("customer", "C-2001")] == "manual"
    assert ("customer", "C-2001") not in links(env, krovinys)  # unlinked from the lead: from its customer too
    q = env.store.db.execute
    assert q("SELECT count(*) FROM manual_links WHERE entity_type = 'lead'").fetchone() == (0,)
    assert q("SELECT entity_type, entity_id FROM unlinks").fetchall() == [("customer", "C-2001")]


def test_purging_a_letter_takes_its_decisions_with_it(env, archived):
    krovinys = archived["Krovinys"]
    assert cli_run(env, "unlink", str(krovinys), "--customer", "C-1002").exit_code == 0
    assert cli_run(env, "purge", str(krovinys), "--yes").exit_code == 0
    assert env.store.db.execute("SELECT count(*) FROM unlinks").fetchone() == (0,)


def test_a_link_by_hand_while_a_pass_runs_leaves_the_relink_to_that_pass(env, archived):
    lentos, reply = archived["Lentos"], archived["Re: Lentos"]
    with pass_lock(env.config.database):
        result = cli_run(env, "link", str(lentos), "--customer", "C-1003")
        assert result.exit_code == 0, result.output
        assert "a pass is running; it relinks the archive at its end" in result.output
    assert links(env, lentos)[("customer", "C-1003")] == "manual"  # written at once
    assert ("customer", "C-1003") not in links(env, reply)
    assert env.run().ok
    assert links(env, reply)[("customer", "C-1003")] == "thread"


def test_a_mailbox_that_does_not_sync_the_entity_type_keeps_links_made_by_hand(env, archived):
    lentos = archived["Lentos"]
    assert cli_run(env, "link", str(lentos), "--lead", "L-2001").exit_code == 0
    box = env.store.mailboxes()[0]
    env.store.update_mailbox(replace(box, sync_leads=False), allow_duplicate=True)
    relink(env.store, env.config, env.secrets)
    assert links(env, lentos)[("lead", "L-2001")] == "manual"
