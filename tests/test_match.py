"""The linking rules, table-driven, as pure functions."""

from __future__ import annotations

import pytest

from hanna_sync.linking.match import Directory, Link, match
from hanna_sync.models import Contact, Entity

CUSTOMERS = [
    Entity("C1", "Acme", "info@acme.lt", "acme.lt", [Contact("jonas@acme.lt"), Contact("ceo@gmail.com")]),
    Entity("C2", "Beta", "office@beta.co.uk", None, [Contact("ona@partner.lt")]),
    Entity("C3", "Gmail user", "someone@gmail.com", None, []),
    Entity("C4", "Shared A", "a@shared.lt", "shared.lt", []),
    Entity("C5", "Shared B", "b@other.lt", "shared.lt", []),
    Entity("C6", "Bigcorp", None, "bigcorp.lt", []),
]
LEADS = [
    Entity("L1", "Lead", "lead@prospect.lt", None, [Contact("buyer@prospect.lt")]),
    Entity("L2", "Lead on customer address", "info@acme.lt", None, []),
]
DIRECTORY = Directory.build(
    CUSTOMERS, LEADS, staff_addresses=["me@imone.lt", "Sales@Acme.lt"], own_domains=["imone.lt"],
    free_mail_domains=["zebra.lt"],
)


def links(*addresses: str, customers: bool = True, leads: bool = True) -> set[tuple[str, str, str, str]]:
    return {(link.entity_type, link.entity_id, link.rule, link.address) for link in match(addresses, DIRECTORY, customers, leads)}


@pytest.mark.parametrize("addresses, expected", [
    # Customer main email, case and whitespace do not matter; a lead shares it.
    (["INFO@acme.lt "], {("customer", "C1", "customer_email", "info@acme.lt"),
                         ("lead", "L2", "lead_email", "info@acme.lt")}),
    # A contact person's email, even on a free-mail domain.
    (["ceo@gmail.com"], {("customer", "C1", "customer_contact", "ceo@gmail.com")}),
    # Domain rule: any address on the customer's domain, subdomains included.
    (["petras@mail.acme.lt"], {("customer", "C1", "customer_domain", "petras@mail.acme.lt")}),
    # Domain from the main email when no domain column, by registrable domain (co.uk).
    (["x@sales.beta.co.uk"], {("customer", "C2", "customer_domain", "x@sales.beta.co.uk")}),
    # A free-mail main email does not make gmail.com the customer's domain.
    (["stranger@gmail.com"], set()),
    (["someone@gmail.com"], {("customer", "C3", "customer_email", "someone@gmail.com")}),
    # A domain claimed by two customers links to neither.
    (["x@shared.lt"], set()),
    # The strongest rule wins for one entity.
    (["info@acme.lt", "jonas@acme.lt", "z@acme.lt"], {("customer", "C1", "customer_email", "info@acme.lt"),
                                                      ("lead", "L2", "lead_email", "info@acme.lt")}),
    # Lead main email and lead contact.
    (["buyer@prospect.lt"], {("lead", "L1", "lead_contact", "buyer@prospect.lt")}),
    (["lead@prospect.lt", "buyer@prospect.lt"], {("lead", "L1", "lead_email", "lead@prospect.lt")}),
    # Several entities on one letter.
    (["ona@partner.lt", "x@bigcorp.lt"], {("customer", "C2", "customer_contact", "ona@partner.lt"),
                                          ("customer", "C6", "customer_domain", "x@bigcorp.lt")}),
    # Staff addresses and own domains never match, even when a customer lists them.
    (["me@imone.lt", "boss@imone.lt", "sales@acme.lt"], set()),
    # Unparseable addresses are ignored.
    (["", "undisclosed-recipients:;", "no-at-sign"], set()),
])
def test_rules(addresses, expected):
    assert links(*addresses) == expected


def test_exact_address_beats_another_customers_domain():
    directory = Directory.build(
        [Entity("A", None, None, None, [Contact("ona@bigcorp.lt")]), Entity("B", None, None, "bigcorp.lt", [])], [],
    )
    found = match(["ona@bigcorp.lt", "petras@bigcorp.lt"], directory)
    assert found == [Link("customer", "A", "customer_contact", "ona@bigcorp.lt")]


def test_configured_free_mail_domains_extend_the_built_in_list():
    directory = Directory.build([Entity("Z", None, "z@zebra.lt", "zebra.lt", [])], [], free_mail_domains=["zebra.lt"])
    assert match(["anyone@zebra.lt"], directory) == []
    assert match(["z@zebra.lt"], directory) == [Link("customer", "Z", "customer_email", "z@zebra.lt")]


def test_gmx_glob_is_free_mail():
    directory = Directory.build([Entity("G", None, "g@gmx.de", None, [])], [])
    assert match(["other@gmx.de"], directory) == []


@pytest.mark.parametrize("customers, leads, expected_types", [
    (True, True, {"customer", "lead"}),
    (True, False, {"customer"}),
    (False, True, {"lead"}),
    (False, False, set()),
])
def test_mailbox_sync_flags_limit_entity_types(customers, leads, expected_types):
    found = links("info@acme.lt", "buyer@prospect.lt", customers=customers, leads=leads)
    assert {t for t, *_ in found} == expected_types


def test_ambiguous_domains_are_reported():
    assert DIRECTORY.ambiguous_domains() == {"shared.lt": {"C4", "C5"}}


@pytest.mark.parametrize("raw", [
    b"From: =?utf-8?q?R=C5=ABta?= <ruta@azuolas.lt>\r\nTo: a@b.lt, \"Doe, John\" <john@doe.lt>\r\n",
    b"To: undisclosed-recipients:;\r\nCc: group: one@x.lt, two@y.lt;\r\nBcc: (comment) plain@z.lt\r\n",
    b"From: \"info@acme.lt via LinkedIn\" <noreply@linkedin.com>\r\nReply-To: x@y.lt\r\n",
    b"To: first@a.lt,\r\n second@b.lt,\r\n\tthird@c.lt\r\nSubject: not@an-address.lt\r\n",
    b"FROM: UPPER@CASE.LT\r\nsender: s@s.lt\r\n",
])
def test_address_tokens_are_a_superset_of_the_parsed_addresses(raw):
    from hanna_sync.db.store import participants_of as participants
    from hanna_sync.mail.message import address_tokens, parse_headers_only

    tokens = {t.lower() for t in address_tokens(raw)}
    assert {a.lower() for a in participants(parse_headers_only(raw))} <= tokens
    assert "not@an-address.lt" not in tokens  # only address fields are looked at
