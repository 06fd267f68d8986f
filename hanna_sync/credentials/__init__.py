"""Where mailbox passwords (and later OAuth token caches) are kept, and how they are kept secret.

hanna-sync runs unattended under systemd on headless servers, where the usual desktop keyring is
either absent or locked behind an unlock prompt nobody will ever answer. So there are two stores:

* ``store = "file"`` (the default): `EncryptedFileKeyring`, one JSON file whose entries are each
  encrypted with AES-256-GCM under a key kept in a separate key file (or handed in by systemd with
  ``LoadCredential=``/``LoadCredentialEncrypted=``). Stealing the store alone reveals nothing.
* ``store = "system"``: whatever ``keyring.get_keyring()`` picks (GNOME keyring, KWallet, ...),
  for people who run hanna-sync by hand from a desktop session.

The rest of the code only sees `SecretStore`, which puts a timeout around every backend call (a
locked keyring blocks forever instead of failing) and turns every expected failure into a one-line
`SecretsError` that never contains the secret.

File format of the encrypted store (UTF-8 JSON, mode 0600)::

    {"format": "hanna-sync-secrets", "version": 1,
     "key_check": {"nonce": B64, "ciphertext": B64},
     "entries": {SERVICE: {USERNAME: {"nonce": B64, "ciphertext": B64}}}}

``nonce`` is 12 random bytes drawn on every write; ``ciphertext`` is the AES-GCM output (secret +
16-byte tag). The associated data is the JSON array ``["hanna-sync-secrets/1", SERVICE, USERNAME]``
(``key_check`` encrypts an empty string with ``["hanna-sync-secrets/1", "key-check"]``), so an
entry copied under another service/username no longer decrypts, and a wrong key is recognised as
such before anything is written with it.

The package: this module (`SecretStore`, `open_secret_store`); `encrypted_file` (the file store) and
`keyfile` (its key); `system` (the OS keyring); `deadline` (the timeout and error wrapping around every
call); `private_files` (how secret files are written).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import keyring.backend
import keyring.errors

from hanna_sync.credentials.deadline import Call, outcome, timeout_error
from hanna_sync.credentials.encrypted_file import EncryptedFileKeyring
from hanna_sync.credentials.keyfile import (
    DEFAULT_CREDENTIAL_NAME,
    KEY_SIZE,
    existing_key,
    load_key,
    load_key_with_source,
)
from hanna_sync.credentials.system import system_keyring
from hanna_sync.errors import ConfigError

__all__ = [
    "DEFAULT_CREDENTIAL_NAME",
    "KEY_SIZE",
    "SERVICE",
    "EncryptedFileKeyring",
    "SecretStore",
    "existing_key",
    "load_key",
    "open_secret_store",
]

log = logging.getLogger(__name__)

SERVICE = "hanna-sync"
"""Keyring service name under which every hanna-sync secret is filed."""

T = TypeVar("T")


class SecretStore:
    """Secrets of hanna-sync, filed under service "hanna-sync" by an opaque reference.

    `ref` is chosen by the caller (e.g. a uuid kept on the mailbox row), so neither the store nor
    its error messages reveal which account a secret belongs to. Every call to the backend is
    bounded by `timeout` seconds and every failure is a one-line `SecretsError` without the
    secret in it.
    """

    service = SERVICE

    def __init__(
        self,
        backend: keyring.backend.KeyringBackend | Callable[[], keyring.backend.KeyringBackend],
        timeout: float,
    ) -> None:
        """Wrap `backend` (or a function making it on first use); `timeout` (seconds, > 0) bounds each
        get/set/delete. A factory keeps opening free: a command that fails before it needs a secret
        leaves no key file behind."""
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self._backend = backend
        self.timeout = timeout
        self._stuck: threading.Thread | None = None  # a call that timed out and still runs
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()

    @property
    def backend(self) -> keyring.backend.KeyringBackend:
        with self._backend_lock:
            if not isinstance(self._backend, keyring.backend.KeyringBackend):
                self._backend = self._backend()
            return self._backend

    def __repr__(self) -> str:
        return f"SecretStore({self.backend!r}, timeout={self.timeout!r})"

    def _call(self, func: Callable[[], T], what: str, secret: str | None = None) -> T:
        """Run one backend call with the deadline; fail at once while an earlier one hangs.

        Without the fail-fast, a pass over 50 mailboxes against a locked keyring would wait
        50 x timeout and pile up 50 blocked threads; once the earlier call returns (say the
        keyring got unlocked) calls go through again.
        """
        with self._lock:
            if self._stuck is not None and self._stuck.is_alive():
                raise timeout_error(self.backend, what, self.timeout, earlier=True)
            self._stuck = None
        call = Call(func, what)
        call.thread.join(self.timeout)
        if call.thread.is_alive():
            with self._lock:
                self._stuck = call.thread
            raise timeout_error(self.backend, what, self.timeout)
        return outcome(call, what, self.backend, secret)

    @staticmethod
    def _check_ref(ref: str) -> None:
        if not isinstance(ref, str) or not ref:
            raise ValueError("ref must be a non-empty string")

    def get(self, ref: str) -> str | None:
        """Return the secret stored under `ref`, or None if there is none."""
        self._check_ref(ref)
        secret = self._call(lambda: self.backend.get_password(self.service, ref), "read a secret")
        log.debug("secret %s %s", ref, "found" if secret is not None else "not stored")
        return secret

    def set(self, ref: str, secret: str) -> None:
        """Store `secret` under `ref`, replacing any previous one."""
        self._check_ref(ref)
        if not isinstance(secret, str):
            raise TypeError("secret must be a str")
        self._call(
            lambda: self.backend.set_password(self.service, ref, secret),
            "store a secret",
            secret=secret,
        )
        log.debug("secret %s stored", ref)

    def delete(self, ref: str) -> None:
        """Remove the secret stored under `ref`; nothing happens if there is none."""
        self._check_ref(ref)

        def delete() -> None:
            # PasswordDeleteError is keyring's way of saying "absent" (also used by some backends for
            # failures, which a following get would reveal; deleting is idempotent here on purpose).
            with suppress(keyring.errors.PasswordDeleteError):
                self.backend.delete_password(self.service, ref)

        self._call(delete, "delete a secret")
        log.debug("secret %s deleted", ref)



def open_secret_store(store: str, file: Path, key_file: Path, timeout: float) -> SecretStore:
    """Build the `SecretStore` the config asks for.

    ``"file"``: `EncryptedFileKeyring` at `file` with the key from `load_key(key_file)`, made on
    first use (so the key file is created by the first command that stores a secret);
    ``"system"``: the user's usual keyring (``keyring.get_keyring()``), refused when keyring only
    has its fail/null stand-in (a server without a keyring). Opening reads or writes nothing in
    the store; for ``"system"`` the key file is not touched at all.
    """
    if store == "file":
        def backend() -> EncryptedFileKeyring:
            key, source = load_key_with_source(Path(key_file), DEFAULT_CREDENTIAL_NAME, Path(file))
            return EncryptedFileKeyring(Path(file), key, key_source=source)

        return SecretStore(backend, timeout)
    if store == "system":
        return SecretStore(system_keyring(timeout), timeout)
    raise ConfigError(f'[secrets] store must be "file" or "system", not {store!r}')
