"""The encrypted file store: AES-256-GCM entries in one JSON file, for servers without a usable keyring.

The file format is described in the package's docstring (`hanna_sync.credentials`).
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyring.compat import properties

from hanna_sync.credentials.keyfile import KEY_SIZE
from hanna_sync.credentials.private_files import create_private, fsync_dir, temp_name, unlink_quietly, write_all
from hanna_sync.errors import SecretsError

FORMAT_NAME = "hanna-sync-secrets"
FORMAT_VERSION = 1
_NONCE_SIZE = 12  # 96 bits, the size AES-GCM is designed for
_AD_PREFIX = f"{FORMAT_NAME}/{FORMAT_VERSION}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text.encode("ascii"), validate=True)



class EncryptedFileKeyring(keyring.backend.KeyringBackend):
    """A keyring backend keeping AES-GCM encrypted secrets in one JSON file.

    It exists because a headless server under systemd has no usable desktop keyring. It is a real
    `KeyringBackend` so the rest of the code (and `SecretStore`) treats both stores alike.

    Its priority is low and its constructor needs a path and a key, so keyring's auto-detection
    (which instantiates backends without arguments and drops those raising TypeError) never picks
    it over a user's desktop keyring; build it explicitly from the config instead.

    Concurrency: writers (a manual ``hanna-sync`` command and the systemd timer may run at once)
    take an exclusive ``flock`` on ``<file>.lock`` and re-read the store under it, so no update is
    lost; the new store is written to a temp file, fsynced and ``os.replace``-d, so readers (who
    take no lock) and crashes only ever see a complete old or new file.
    """

    @properties.classproperty
    def priority(cls) -> float:  # noqa: N805 - keyring's classproperty passes the class
        """Low, so that keyring never prefers this store to a desktop keyring."""
        return 0.1

    def __init__(
        self,
        path: Path | str,
        key: bytes,
        *,
        key_source: str | None = None,
        lock_timeout: float = 30.0,
    ) -> None:
        """Open (lazily) the store at `path` encrypted with the 32-byte `key`.

        `key_source` only names where the key came from in error messages. `lock_timeout` bounds
        the wait for another process's write, so a stuck writer gives an error, not a hang.
        Nothing is read or created until the first call, so construction is cheap.
        """
        # keyring's __init__ copies KEYRING_PROPERTY_* environment variables onto the instance;
        # run it first so that the environment cannot override the path or the key below.
        super().__init__()
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            length = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
            raise SecretsError(
                f"the secrets key{self._from(key_source)} must be {KEY_SIZE} bytes, not {length}; "
                "restore the key file the secrets store was written with"
            )
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.key_source = key_source
        self.lock_timeout = lock_timeout
        # Only the cipher object is kept, not the raw key, so it does not show up in vars()/repr.
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r})"

    @staticmethod
    def _from(key_source: str | None) -> str:
        return f" (key from {key_source})" if key_source else ""

    # -- keyring API ---------------------------------------------------------------------------

    def get_password(self, service: str, username: str) -> str | None:
        """Return the secret stored for (service, username), or None if there is none."""
        data = self._read()
        if data is None:
            return None
        # Checked even when the entry is absent: "no secret" from a store we cannot read would
        # send the caller off asking for a password it then cannot store.
        self._check_key(data)
        entry = data["entries"].get(service, {}).get(username)
        if entry is None:
            return None
        return self._decrypt_entry(entry, service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store (or replace) the secret for (service, username) with a fresh nonce."""
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        try:
            plaintext = password.encode("utf-8")
        except UnicodeEncodeError:
            # The exception text would quote part of the secret: say what is wrong without it.
            raise SecretsError(
                f"the secret for {service}/{username} contains characters that are not valid "
                "text (lone surrogates) and cannot be stored; enter it again"
            ) from None
        with self._locked():
            data = self._parse_file() or self._empty()  # fresh, never the cached copy: it is changed here
            self._check_key(data)
            data["entries"].setdefault(service, {})[username] = self._encrypt(
                plaintext, self._ad(service, username)
            )
            self._write(data)

    def delete_password(self, service: str, username: str) -> None:
        """Remove the secret for (service, username); PasswordDeleteError if there is none."""
        with self._locked():
            data = self._parse_file()
            services = data["entries"] if data is not None else {}
            if data is None or username not in services.get(service, {}):
                raise keyring.errors.PasswordDeleteError(
                    f"no secret for {service}/{username} in {self.path}"
                )
            del services[service][username]
            if not services[service]:
                del services[service]
            self._write(data)

    def verify(self) -> int:
        """Decrypt every entry (the secrets are dropped at once) and return how many there are.

        What `doctor` runs: a garbled, truncated or altered store, or a key that is not the store's,
        fails here with the same SecretsError a pass would meet, instead of at the next login.
        """
        data = self._parse_file()
        if data is None:
            return 0
        self._check_key(data)
        count = 0
        for service, users in data["entries"].items():
            for username, entry in users.items():
                self._decrypt_entry(entry, service, username)
                count += 1
        return count

    # -- crypto ----------------------------------------------------------------------------------

    @staticmethod
    def _ad(service: str, username: str) -> bytes:
        """Associated data binding a ciphertext to its slot, so entries cannot be swapped.

        A JSON array is unambiguous (no separator a username could contain).
        """
        return json.dumps([_AD_PREFIX, service, username]).encode("utf-8")

    _KEY_CHECK_AD = json.dumps([_AD_PREFIX, "key-check"]).encode("utf-8")

    def _encrypt(self, plaintext: bytes, ad: bytes) -> dict[str, str]:
        nonce = secrets.token_bytes(_NONCE_SIZE)  # fresh on every write: never reuse with a key
        return {"nonce": _b64(nonce), "ciphertext": _b64(self._aead.encrypt(nonce, plaintext, ad))}

    def _decrypt(self, entry: Any, ad: bytes) -> bytes:
        """Decrypt one {"nonce", "ciphertext"} record; InvalidTag on a wrong key or tampering."""
        try:
            nonce = _unb64(entry["nonce"])
            ciphertext = _unb64(entry["ciphertext"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise self._corrupt("an entry is not a nonce/ciphertext pair") from None
        if len(nonce) != _NONCE_SIZE:
            raise self._corrupt("an entry has a nonce of the wrong size")
        return self._aead.decrypt(nonce, ciphertext, ad)

    def _check_key(self, data: dict[str, Any]) -> None:
        """Fail clearly when the key is not the store's, before reading or writing with it.

        Without this, a wrong key would look like a damaged entry, and set_password would happily
        add entries under a second key, leaving a store nobody can fully read.
        """
        try:
            self._decrypt(data["key_check"], self._KEY_CHECK_AD)
        except InvalidTag:
            raise SecretsError(
                f"cannot decrypt the secrets store {self.path}: the key file is not the one this "
                f"store was written with{self._from(self.key_source)}; restore the original key "
                f"file, or move {self.path} away and enter the mailbox passwords again"
            ) from None

    def _decrypt_entry(self, entry: Any, service: str, username: str) -> str:
        try:
            plaintext = self._decrypt(entry, self._ad(service, username))
        except InvalidTag:
            # The key is right (checked before), so the entry was altered or moved here.
            raise SecretsError(
                f"cannot decrypt the secret for {service}/{username} in {self.path}: the entry "
                "was altered or copied from another mailbox; store that secret again"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise self._corrupt(f"the secret for {service}/{username} is not UTF-8 text") from None

    # -- file handling -----------------------------------------------------------------------------

    def _empty(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "key_check": self._encrypt(b"", self._KEY_CHECK_AD),
            "entries": {},
        }

    def _corrupt(self, what: str) -> SecretsError:
        return SecretsError(
            f"the secrets store {self.path} is damaged ({what}); restore it from a backup, or "
            "move it away and enter the mailbox passwords again"
        )

    def _read(self) -> dict[str, Any] | None:
        """The parsed store, or None if the file does not exist yet (no secrets stored so far).

        Kept while the file is unchanged (a write replaces it: new inode): a pass over 1,000 mailboxes
        would otherwise read and parse the whole store 1,000 times.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError:
            st = None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns) if st else None
        cached = getattr(self, "_cache", None)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        data = self._parse_file()
        if data is not None and stamp is not None:
            self._cache = (stamp, data)
        return data

    def _parse_file(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsError(
                f"cannot read the secrets store {self.path}: {exc.strerror or exc}; make it "
                "readable by the user hanna-sync runs as"
            ) from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._corrupt("not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise self._corrupt("not a hanna-sync secrets file")
        if data.get("version") != FORMAT_VERSION:
            raise SecretsError(
                f"the secrets store {self.path} has format version {data.get('version')!r}, this "
                f"hanna-sync reads version {FORMAT_VERSION}; upgrade hanna-sync"
            )
        entries = data.get("entries")
        if (
            not isinstance(entries, dict)
            or not all(isinstance(users, dict) for users in entries.values())
            or not isinstance(data.get("key_check"), dict)
        ):
            raise self._corrupt("unexpected structure")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the store atomically: temp file (0600) + fsync + os.replace + dir fsync."""
        payload = json.dumps(data, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        tmp = temp_name(self.path)
        try:
            fd = create_private(tmp)
            try:
                write_all(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            unlink_quietly(tmp)
            raise SecretsError(
                f"cannot write the secrets store {self.path}: {exc.strerror or exc}; check that "
                f"{self.path.parent} exists, is writable by the user hanna-sync runs as and is "
                "not full"
            ) from None
        fsync_dir(self.path.parent)

    class _Lock:
        """Exclusive flock on the side lock file, polled so that waiting has a deadline."""

        def __init__(self, owner: EncryptedFileKeyring) -> None:
            self.owner = owner
            self.fd = -1

        def __enter__(self) -> None:
            owner = self.owner
            try:
                owner.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.fd = os.open(owner.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise SecretsError(
                    f"cannot create the lock file {owner.lock_path}: {exc.strerror or exc}; "
                    f"make {owner.path.parent} writable by the user hanna-sync runs as"
                ) from None
            deadline = time.monotonic() + owner.lock_timeout
            delay = 0.001
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        os.close(self.fd)
                        raise SecretsError(
                            f"cannot lock {owner.lock_path}: {exc.strerror or exc}"
                        ) from None
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise SecretsError(
                        f"another process has held {owner.lock_path} for more than "
                        f"{owner.lock_timeout:g} s; wait for it to finish, or stop the stuck "
                        "hanna-sync process"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

        def __exit__(self, *exc_info: object) -> None:
            # Closing the fd releases the flock; the lock file itself stays (deleting it would
            # let two processes lock two different inodes).
            os.close(self.fd)

    def _locked(self) -> EncryptedFileKeyring._Lock:
        return self._Lock(self)

