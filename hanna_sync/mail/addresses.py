"""Email addresses and domains in the one canonical form every comparison uses.

The CRM's directory, the letters' headers and the config all spell addresses their own way
(`Jonas@Acme.LT `, `jonas@acme.lt`, `info@žalgiris.lt`); linking only works when all three are reduced
to the same string first. Plus-tags and dots are kept: they can be distinct mailboxes.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING

import idna

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

# Public mail services: one address there says nothing about which company a person works for,
# so their domains never link a letter to a customer. `free_mail_domains` in the config extends this.
FREE_MAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "ymail.com", "rocketmail.com",
    "outlook.com", "hotmail.com", "hotmail.co.uk", "live.com", "msn.com", "icloud.com", "me.com",
    "mac.com", "aol.com", "proton.me", "protonmail.com", "pm.me", "zoho.com", "yandex.com", "yandex.ru",
    "mail.ru", "bk.ru", "list.ru", "inbox.ru", "rambler.ru", "gmx.*", "web.de", "t-online.de",
    "inbox.lt", "one.lt", "takas.lt", "mail.lt", "zebra.lt", "delfi.lt", "inbox.lv", "mail.ee",
    "wp.pl", "o2.pl", "onet.pl", "interia.pl", "seznam.cz", "libero.it", "orange.fr", "laposte.net",
    "free.fr", "qq.com", "163.com", "126.com", "tutanota.com", "fastmail.com", "hey.com",
)


_ASCII_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@lru_cache(maxsize=65536)
def normalise_domain(domain: str) -> str | None:
    """Lower-cased ASCII (IDNA) form of a domain, or None when it is not a plausible domain.

    Cached, and plain ASCII names skip the IDNA codec: a pass meets the same few hundred domains on
    tens of thousands of letters.
    """
    domain = domain.strip().strip(".").lower()
    if not domain or "@" in domain or " " in domain or "." not in domain:
        return None
    labels = domain.split(".")
    if domain.isascii() and all(_ASCII_LABEL.fullmatch(label) for label in labels) and not any(
        label.startswith("xn--") for label in labels
    ):
        return domain
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    return ascii_domain


@lru_cache(maxsize=65536)
def normalise_email(address: str) -> str | None:
    """`Jonas@Žalgiris.LT ` -> `jonas@xn--algiris-cxb.lt`; None when it is not an address."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or any(c.isspace() for c in local) or '"' in local:
        return None
    ascii_domain = normalise_domain(domain)
    if ascii_domain is None:
        return None
    return f"{local.lower()}@{ascii_domain}"


def domain_of(email: str) -> str:
    """The domain part of a normalised address."""
    return email.rpartition("@")[2]


@lru_cache(maxsize=1)
def _suffix_list() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList  # loading the list costs ~50 ms: only when used

    return PublicSuffixList()


@lru_cache(maxsize=65536)
def registrable_domain(domain: str) -> str:
    """`mail.acme.co.uk` -> `acme.co.uk`, by the Public Suffix List shipped with the package."""
    return _suffix_list().privatesuffix(domain) or domain


@lru_cache(maxsize=65536)
def is_listed(domain: str, patterns: tuple[str, ...]) -> bool:
    """Whether a domain (or the domain it is a subdomain of) is in a list; `gmx.*` style globs allowed."""
    for pattern in patterns:
        if "*" in pattern:
            if fnmatch.fnmatchcase(domain, pattern) or fnmatch.fnmatchcase(domain, "*." + pattern):
                return True
        elif domain == pattern or domain.endswith("." + pattern):
            return True
    return False


def is_ip_address(host: str) -> bool:
    """Whether a server name is an IP address (a certificate names it as IPAddress, not DNSName)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
