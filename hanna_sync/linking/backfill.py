"""Keyed hashes that let a customer added today find the letters a pass skipped last month.

A pass archives only letters that concern the directory; the rest are counted and left on the server.
When the directory grows (an import adds a customer, a contact, a domain), some of those letters
concern it after all. Re-reading every mailbox's envelopes to find them would cost as much as a first
pass, for every import. Instead each skipped letter leaves behind where it is (mailbox, folder, UID)
and a few 64-bit keys: keyed BLAKE2b hashes of its addresses, of their registrable domains and of
the Message-IDs it answers. A directory change turns into keys too, the matching skipped letters
are marked wanted, and the next pass fetches just those.

The hashes are keyed with a per-install secret kept in the secrets store, not in the database: a
copy of the database alone does not tell who wrote to whom (without the key, hashing a guessed
address gives a different number). A 64-bit key can collide; a collision only means one letter
fetched, matched and skipped again.
"""

from __future__ import annotations

import hashlib
import secrets as random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hanna_sync.linking.match import Directory
from hanna_sync.mail.addresses import (
    domain_of,
    is_listed,
    normalise_email,
    registrable_domain,
)
from hanna_sync.mail.message import address_tokens, message_id_token, thread_tokens

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

SECRET_REF = "backfill-index-key"  # where the per-install key lives in the secrets store


@dataclass
class LetterKeys:
    """What the skip index keeps of a skipped letter: the keys it is found by, and the key of its own
    Message-ID, by which the letters answering it are found when it is wanted (a chain of replies is
    fetched in one pass, not one level per pass)."""

    keys: set[int]
    own: int | None = None


@dataclass
class SkipIndex:
    """Turns addresses, domains and Message-IDs into the keys skipped letters are found by."""

    key: bytes
    never_link: frozenset[str] = frozenset()  # staff addresses: on most letters, and never a link
    own_domains: tuple[str, ...] = ()
    free_mail_domains: tuple[str, ...] = ()  # never link by domain: their addresses get no domain key
    _cache: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def _hash(self, kind: bytes, text: str) -> int:
        digest = hashlib.blake2b(kind + text.encode("utf-8", "surrogatepass"), key=self.key, digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)  # SQLite's INTEGER is a signed 64-bit number

    def address_key(self, email: str) -> int:
        return self._hash(b"a:", email)

    def domain_key(self, domain: str) -> int:
        return self._hash(b"d:", domain)

    def thread_key(self, message_id: str) -> int:
        return self._hash(b"m:", message_id)

    def letter_keys(
        self, raw_headers: bytes, tokens: list[str] | None = None, answers: list[str] | None = None
    ) -> LetterKeys:
        """The keys of a skipped letter: each address on it, each address's registrable domain, and
        each Message-ID it answers. Taken from the same cheap scans as the prefilter (`tokens`,
        `answers`: when the caller has them already), so it is a superset of what matching would look
        at; staff addresses and own domains, which never link, are left out."""
        keys: set[int] = set()
        for token in address_tokens(raw_headers) if tokens is None else tokens:
            keys.update(self._token_keys(token))
        for message_id in thread_tokens(raw_headers) if answers is None else answers:
            keys.update(self._token_keys(message_id, thread=True))
        own = message_id_token(raw_headers)
        return LetterKeys(keys, self.thread_key(own) if own else None)

    def _token_keys(self, token: str, thread: bool = False) -> tuple[int, ...]:
        """An address token's keys (or a Message-ID's, `thread`), remembered: the same correspondents,
        and the same conversations, are on letter after letter."""
        name = f"\0{token}" if thread else token  # no address token starts with NUL
        keys = self._cache.get(name)
        if keys is None:
            keys = (self.thread_key(token),) if thread else self._address_keys(token)
            if len(self._cache) >= 100_000:
                self._cache.clear()
            self._cache[name] = keys
        return keys

    def envelope_keys(
        self, addresses: Iterable[str], conversation_id: str | None, message_id: str | None
    ) -> LetterKeys:
        """The keys of a letter Graph skipped: its addresses and their domains (as letter_keys), and
        its Outlook conversation, which Graph letters inherit links through."""
        keys = {key for address in addresses for key in self._token_keys(address)}
        if conversation_id:
            keys.add(self.thread_key(f"conversation:{conversation_id}"))
        return LetterKeys(keys, self.thread_key(message_id) if message_id else None)

    def _address_keys(self, token: str) -> tuple[int, ...]:
        email = normalise_email(token)
        if email is None or email in self.never_link or is_listed(domain_of(email), self.own_domains):
            return ()
        if is_listed(domain_of(email), self.free_mail_domains):
            return (self.address_key(email),)
        return self.address_key(email), self.domain_key(registrable_domain(domain_of(email)))

    def directory_keys(self, directory: Directory, settings: str = "") -> dict[int, int]:
        """The keys every letter concerning the directory has at least one of (its entities' and
        contacts' addresses, the domains that link customers), each with what it means now: which
        entities it links to (an address), which customers claim it (a domain: two of them link
        neither), and the linking `settings`. A key whose meaning changes (a contact moved to a
        customer, an ambiguous domain resolved, [linking] changed) wants its letters looked at again,
        like a new key."""
        keys = {self.address_key(address): self._meaning(settings, sorted(set(owners)))
                for address, owners in directory.by_address.items()}
        keys.update({self.domain_key(domain): self._meaning(settings, sorted(owners))
                     for domain, owners in directory.customers_by_domain.items()})
        return keys

    def _meaning(self, settings: str, owners: list[Any]) -> int:
        return self._hash(b"x:", f"{settings}|{owners!r}")

    def thread_keys(self, message_ids: Iterable[str]) -> set[int]:
        return {self.thread_key(message_id) for message_id in message_ids}


def load_skip_index(secrets: SecretStore, directory: Directory | None = None) -> SkipIndex:
    """The install's index key from the secrets store, made on first use. Called under the pass lock
    only (a pass, relink), so two processes never make two keys. With the directory, the index
    leaves out what never links (its staff addresses and own domains, free-mail domains).

    Raises SecretsError when the store cannot be read or written (a pass then records no skipped
    letters and says so; nothing else depends on it).
    """
    stored = secrets.get(SECRET_REF)
    if stored is None:
        stored = random.token_hex(32)
        secrets.set(SECRET_REF, stored)
    if directory is None:
        return SkipIndex(bytes.fromhex(stored))
    return SkipIndex(bytes.fromhex(stored), directory.staff_addresses, directory.own_domains,
                     directory.free_mail_domains)
