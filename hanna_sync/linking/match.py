"""Which Customers and Leads a letter concerns: the five linking rules, as pure functions.

Rules, strongest first: the customer's main email, a customer contact's email, the lead's main email,
a lead contact's email, and the customer's email domain. An exact address always beats a domain: the
domain rule only looks at addresses no customer claims exactly, on domains no exact match already
explained, and never at free-mail domains (gmail.com says nothing about a company), the company's
own domains, or a domain two customers claim (that would be a guess).

Two things stand beside the rules. A blocked address (`[linking] blocked`: globs such as "noreply@*"
or "*@notifications.example") is no participant at all: it links by no rule, so a letter it alone
concerns is never archived. A link made by hand (rule "manual") or taken off by hand is kept by
relink whatever the rules say (see relink.py and the `link`/`unlink` commands).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.mail.addresses import (
    FREE_MAIL_DOMAINS,
    domain_of,
    is_listed,
    normalise_email,
    registrable_domain,
)
from hanna_sync.models import ENTITY_TYPES, Entity

# Rule names as stored in links.rule; the order is their strength. "thread" is a link inherited from
# the letters a reply answers (its address is the Message-ID it came through), never from an address.
RULES = ("customer_email", "customer_contact", "lead_email", "lead_contact", "customer_domain", "thread")
# A link made by hand with `hanna-sync link`: no address made it, so its address is "-".
MANUAL, MANUAL_ADDRESS = "manual", "-"


@dataclass(frozen=True)
class Link:
    entity_type: str  # "customer" or "lead"
    entity_id: str
    rule: str
    address: str  # the normalised address that matched


@dataclass
class Directory:
    """The CRM's Customers and Leads indexed for matching, plus who counts as staff."""

    by_address: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    customers_by_domain: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    staff_addresses: frozenset[str] = frozenset()
    own_domains: tuple[str, ...] = ()
    free_mail_domains: tuple[str, ...] = FREE_MAIL_DOMAINS
    blocked: tuple[str, ...] = ()  # lower-case address globs that never link ([linking] blocked)
    entities: frozenset[tuple[str, str]] = frozenset()  # every (entity type, id): a manual link needs its entity

    @classmethod
    def build(
        cls,
        customers: Iterable[Entity],
        leads: Iterable[Entity],
        staff_addresses: Iterable[str] = (),
        *,
        own_domains: Iterable[str] = (),
        free_mail_domains: Iterable[str] = (),
        blocked: Iterable[str] = (),
    ) -> Directory:
        directory = cls(
            staff_addresses=frozenset(a for a in (normalise_email(s) for s in staff_addresses) if a),
            own_domains=tuple(own_domains),
            free_mail_domains=FREE_MAIL_DOMAINS + tuple(free_mail_domains),
            blocked=tuple(glob.lower() for glob in blocked),
        )
        known: set[tuple[str, str]] = set()
        for entity_type, entities in (("customer", customers), ("lead", leads)):
            for entity in entities:
                known.add((entity_type, entity.id))
                if entity.email:
                    directory.by_address[entity.email].append((entity_type, entity.id, f"{entity_type}_email"))
                for contact in entity.contacts:
                    directory.by_address[contact.email].append((entity_type, entity.id, f"{entity_type}_contact"))
                if entity_type == "customer":
                    for domain in directory.customer_domains(entity):
                        directory.customers_by_domain[domain].add(entity.id)
        directory.entities = frozenset(known)
        return directory

    def is_blocked(self, address: str) -> bool:
        """Whether a normalised address is on the blocklist: it then links to nobody, by any rule."""
        return is_blocked(address, self.blocked)

    def customer_domains(self, customer: Entity) -> set[str]:
        """The customer's domain column, and the domain of its main email unless that is free mail."""
        domains = set()
        if customer.domain:
            domains.add(registrable_domain(customer.domain))
        if customer.email:
            domains.add(registrable_domain(domain_of(customer.email)))
        return {d for d in domains if self.domain_may_link(d)}

    def domain_may_link(self, domain: str) -> bool:
        return not is_listed(domain, self.free_mail_domains) and not is_listed(domain, self.own_domains)

    def ambiguous_domains(self) -> dict[str, set[str]]:
        """Domains claimed by more than one customer: they link to neither."""
        return {d: ids for d, ids in self.customers_by_domain.items() if len(ids) > 1}


def match(
    addresses: Iterable[str], directory: Directory, sync_customers: bool = True, sync_leads: bool = True
) -> list[Link]:
    """The links a letter with these participant addresses gets, one per entity, strongest rule kept."""
    allowed = {"customer"} if sync_customers else set()
    if sync_leads:
        allowed.add("lead")
    best: dict[tuple[str, str], Link] = {}

    def offer(link: Link) -> None:
        key = (link.entity_type, link.entity_id)
        current = best.get(key)
        if current is None or RULES.index(link.rule) < RULES.index(current.rule):
            best[key] = link

    candidates: list[str] = []
    for raw in addresses:
        address = normalise_email(raw)
        if address is None or address in directory.staff_addresses:
            continue
        if is_listed(domain_of(address), directory.own_domains) or directory.is_blocked(address):
            continue
        candidates.append(address)

    exact_domains: set[str] = set()
    for address in candidates:
        for entity_type, entity_id, rule in directory.by_address.get(address, ()):
            if entity_type in allowed:
                offer(Link(entity_type, entity_id, rule, address))
                if entity_type == "customer":
                    exact_domains.add(registrable_domain(domain_of(address)))

    if "customer" in allowed:
        for address in candidates:
            if any(t == "customer" for t, _, _ in directory.by_address.get(address, ())):
                continue
            domain = registrable_domain(domain_of(address))
            if domain in exact_domains or not directory.domain_may_link(domain):
                continue
            owners = directory.customers_by_domain.get(domain, set())
            if len(owners) == 1:
                offer(Link("customer", next(iter(owners)), "customer_domain", address))

    return sorted(best.values(), key=lambda link: (RULES.index(link.rule), link.entity_type, link.entity_id))


def inherited_links(
    answers: Iterable[str],
    linked: Mapping[str, Iterable[tuple[str, str]]],
    own: Iterable[Link] = (),
    *,
    sync_customers: bool = True,
    sync_leads: bool = True,
) -> list[Link]:
    """The links a reply inherits from the letters it answers (`answers`: its In-Reply-To and
    References; `linked`: Message-ID -> (entity type, entity id) of archived letters), for entities
    its own addresses do not link it to already. A colleague's "Re: offer" to a colleague belongs on
    the customer's card as much as the offer did."""
    allowed = {t for t, on in (("customer", sync_customers), ("lead", sync_leads)) if on}
    have = {(link.entity_type, link.entity_id) for link in own}
    out: dict[tuple[str, str], Link] = {}
    for message_id in answers:
        for entity in linked.get(message_id, ()):
            if entity[0] in allowed and entity not in have and entity not in out:
                out[entity] = Link(entity[0], entity[1], "thread", message_id)
    return sorted(out.values(), key=lambda link: (link.entity_type, link.entity_id))


def is_blocked(address: str, globs: Iterable[str]) -> bool:
    """Whether an address matches one of the blocklist's globs (fnmatch, case already lowered: "*@x.lt",
    "noreply@*", "billing@vendor.lt"). A bare domain in the config is "*@domain" already; its
    subdomains need their own glob ("*@*.x.lt")."""
    return any(fnmatch.fnmatchcase(address, glob) for glob in globs)


def build_directory(store: Store, config: Config, entities: dict[str, list[Entity]] | None = None) -> Directory:
    """The directory as it is now (or with these customers and leads: as an import would make it),
    with every mailbox address counted as staff."""
    boxes = store.mailboxes()
    staff = [m.email for m in boxes] + [m.username for m in boxes if m.username]
    entities = entities or {t: store.entities(t) for t in ENTITY_TYPES}
    return Directory.build(entities["customer"], entities["lead"], staff, own_domains=config.own_domains,
                           free_mail_domains=config.free_mail_domains, blocked=config.linking.blocked)
