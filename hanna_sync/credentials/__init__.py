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
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import keyring
import keyring.backend
import keyring.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyring.backends import chainer, fail, null
from keyring.compat import properties

from hanna_sync.errors import ConfigError, SecretsError

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

DEFAULT_CREDENTIAL_NAME = "hanna-sync-key"
"""Name of the key in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=hanna-sync-key:...``)."""

KEY_SIZE = 32
"""AES-256: the key file holds exactly 32 bytes (base64 text on disk)."""

FORMAT_NAME = "hanna-sync-secrets"
FORMAT_VERSION = 1
_NONCE_SIZE = 12  # 96 bits, the size AES-GCM is designed for
_AD_PREFIX = f"{FORMAT_NAME}/{FORMAT_VERSION}"

_FILE_HINT = 'set [secrets] store = "file" in the config to use the encrypted file store instead'

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Small file helpers: every file holding secret material is created 0600 from the start.
# --------------------------------------------------------------------------------------------


def _create_private(path: Path) -> int:
    """Create `path` exclusively with mode 0600 and return the fd.

    The mode is given to ``open(2)`` rather than applied with chmod afterwards, so there is no
    moment at which another user could open the file; O_EXCL means we never write into (or
    through a symlink to) a file someone else prepared.
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` and fsync, because ``os.write`` may write less than asked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename/link in `directory` durable; best effort (not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A fresh hidden name beside `path`, so that os.replace/os.link stay on one filesystem."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file on the way out of an error; its absence is not a problem."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text.encode("ascii"), validate=True)


# --------------------------------------------------------------------------------------------
# The encrypted file store
# --------------------------------------------------------------------------------------------


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
            if username not in services.get(service, {}):
                raise keyring.errors.PasswordDeleteError(
                    f"no secret for {service}/{username} in {self.path}"
                )
            del services[service][username]
            if not services[service]:
                del services[service]
            self._write(data)  # type: ignore[arg-type]  # data is not None: the entry existed

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
            return cached[1]  # type: ignore[no-any-return]
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
        tmp = _temp_name(self.path)
        try:
            fd = _create_private(tmp)
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise SecretsError(
                f"cannot write the secrets store {self.path}: {exc.strerror or exc}; check that "
                f"{self.path.parent} exists, is writable by the user hanna-sync runs as and is "
                "not full"
            ) from None
        _fsync_dir(self.path.parent)

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


# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------


def _parse_key(data: bytes, source: Path, fix: str) -> bytes:
    """Accept base64 text (what we write, and what ``systemd-creds encrypt`` round-trips) or
    32 raw bytes (what ``head -c 32 /dev/urandom`` gives)."""
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    if not text:
        raise SecretsError(f"the key file {source} is empty; {fix}")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(
            f"the key file {source} holds neither base64 text nor {KEY_SIZE} raw bytes; {fix}"
        ) from None
    if len(key) != KEY_SIZE:
        raise SecretsError(
            f"the key in {source} is {len(key)} bytes long, expected {KEY_SIZE}; {fix}"
        )
    return key


_KEY_FILE_FIX = (
    "restore the key file the secrets store was written with, or, to start over, move both it and "
    "the secrets store away (a new key is then made, and every mailbox password must be set again)"
)


def _read_key_file(key_file: Path) -> bytes:
    """Read and check an existing key file; FileNotFoundError if there is none."""
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretsError(
            f"cannot read the key file {key_file}: {exc.strerror or exc}; make it readable by "
            "the user hanna-sync runs as (and by nobody else: chmod 600)"
        ) from None
    try:
        st = os.fstat(fd)  # the opened file itself, not whatever the name points to later
        if not stat.S_ISREG(st.st_mode):
            raise SecretsError(f"the key file {key_file} is not a regular file; {_KEY_FILE_FIX}")
        if st.st_mode & 0o077:
            raise SecretsError(
                f"the key file {key_file} is accessible by group/others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), so anyone on this host could decrypt the "
                f"stored passwords; run: chmod 600 {key_file}"
            )
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 4096:
                raise SecretsError(f"the key file {key_file} is far too large; {_KEY_FILE_FIX}")
    finally:
        os.close(fd)
    return _parse_key(b"".join(chunks), key_file, _KEY_FILE_FIX)


def _create_key_file(key_file: Path, store_file: Path) -> bytes | None:
    """Generate a key and publish it at `key_file` unless it exists; None if we lost a race.

    Refused while the encrypted store `store_file` exists: it was written with the lost key, and a new
    key could neither read it nor be told apart from the right one later, so every stored password would
    be silently unreadable while the files looked healthy. This is the only place a key is created.

    The key is written to a private temp file first and hard-linked into place: link(2) fails if
    the name exists (like O_EXCL) and makes the complete file appear at once, so a concurrent
    loader never sees an empty key file. Filesystems without hard links fall back to a direct
    O_EXCL create.
    """
    if os.path.lexists(store_file):
        if os.path.lexists(key_file):  # made by a racing process, which has stored a secret since: use it
            return None
        raise SecretsError(
            f"the key file {key_file} is missing, but the secrets store {store_file} exists and can only "
            "be read with it: restore the key file from your backup (no new key is made, as it could not "
            f"read the stored passwords); or, to start over, move {store_file} away and set every "
            "password again ('hanna-sync set-password ID', 'hanna-sync login ID')"
        )
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SecretsError(
            f"cannot create the directory {key_file.parent} for the key file: "
            f"{exc.strerror or exc}; create it, writable by the user hanna-sync runs as"
        ) from None
    key = secrets.token_bytes(KEY_SIZE)
    text = base64.b64encode(key) + b"\n"
    tmp = _temp_name(key_file)
    try:
        fd = _create_private(tmp)
        try:
            _write_all(fd, text)
        finally:
            os.close(fd)
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            try:
                fd = _create_private(key_file)
            except FileExistsError:
                return None
            try:
                _write_all(fd, text)
            finally:
                os.close(fd)
    except OSError as exc:
        raise SecretsError(
            f"cannot create the key file {key_file}: {exc.strerror or exc}; make "
            f"{key_file.parent} writable by the user hanna-sync runs as"
        ) from None
    finally:
        _unlink_quietly(tmp)
    _fsync_dir(key_file.parent)
    log.info("generated a new secrets key in %s", key_file)
    return key


def existing_key(key_file: Path, credential_name: str = DEFAULT_CREDENTIAL_NAME) -> tuple[bytes, str]:
    """The key from the systemd credential or `key_file`, and where it came from; never creates one
    (FileNotFoundError when there is none), so that checking the secrets (doctor) changes nothing."""
    credentials_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir and "/" not in credential_name:
        credential = Path(credentials_dir) / credential_name
        if credential.exists():
            # systemd made this file private to the service; no mode check (it is 0400/0440
            # under a directory only the service can enter).
            fix = f"check LoadCredential={credential_name}:... in the systemd unit"
            try:
                data = credential.read_bytes()
            except OSError as exc:
                raise SecretsError(
                    f"cannot read the systemd credential {credential}: {exc.strerror or exc}; {fix}"
                ) from None
            return _parse_key(data, credential, fix), f"systemd credential {credential_name}"
    key_file = Path(key_file)
    return _read_key_file(key_file), str(key_file)


def _load_key_with_source(key_file: Path, credential_name: str, store_file: Path) -> tuple[bytes, str]:
    """`load_key`, also saying where the key came from (for error messages)."""
    key_file = Path(key_file)
    try:
        return existing_key(key_file, credential_name)
    except FileNotFoundError:
        pass
    key = _create_key_file(key_file, Path(store_file))
    if key is not None:
        return key, str(key_file)
    # Another process created it first: use its key. With the O_EXCL fallback its content may
    # not be written yet, so give it a moment before calling the file broken.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            return _read_key_file(key_file), str(key_file)
        except (SecretsError, FileNotFoundError) as exc:
            if time.monotonic() >= deadline:
                if isinstance(exc, SecretsError):
                    raise
                raise SecretsError(
                    f"the key file {key_file} exists but cannot be opened (a dangling symlink?); "
                    "point it at the key file or remove it to have a new one generated"
                ) from None
            time.sleep(0.02)


def load_key(key_file: Path, store_file: Path, credential_name: str = DEFAULT_CREDENTIAL_NAME) -> bytes:
    """Return the 32-byte key of the encrypted secrets store at `store_file`.

    Order: ``$CREDENTIALS_DIRECTORY/<credential_name>`` (systemd ``LoadCredential=`` or
    ``LoadCredentialEncrypted=``, so the key can live encrypted with the host's TPM); else
    `key_file`; if that does not exist, a new random key is written there (mode 0600, base64
    text with a trailing newline, created exclusively so racing processes agree on one key),
    unless `store_file` exists: then the key was lost, and SecretsError says to restore it.
    A key file readable by group/others is refused: it would make the encryption pointless.
    """
    return _load_key_with_source(key_file, credential_name, store_file)[0]


# --------------------------------------------------------------------------------------------
# What the rest of the code uses
# --------------------------------------------------------------------------------------------


def _describe(backend: keyring.backend.KeyringBackend) -> str:
    """Name the store in error messages, so the sysadmin knows which one to look at."""
    if isinstance(backend, EncryptedFileKeyring):
        return f"the encrypted secrets file {backend.path}"
    return f"the system keyring ({type(backend).__module__}.{type(backend).__name__})"


def _hint(backend: keyring.backend.KeyringBackend | None) -> str:
    """The fix to suggest: for a system keyring that is always switching to the file store."""
    if isinstance(backend, EncryptedFileKeyring):
        return (
            f"check that {backend.path} is on a local, responsive filesystem and that no "
            "stuck hanna-sync process holds its lock"
        )
    return _FILE_HINT


def _exception_text(exc: BaseException) -> str:
    """All text of an exception and its chain, to check it for a secret before showing it."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(repr(current.args))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


class _Call:
    """One backend call running in a daemon thread, so that the caller can stop waiting.

    A locked GNOME keyring (or a D-Bus call with no session bus under systemd) can block forever
    waiting for an unlock prompt; a daemon thread is the only portable way to stop waiting for a
    call we cannot interrupt. An abandoned thread dies with the process.
    """

    def __init__(self, func: Callable[[], Any], what: str) -> None:
        self.result: list[Any] = []
        self.error: list[BaseException] = []
        self.thread = threading.Thread(
            target=self._run, args=(func,), name=f"hanna-sync-secrets: {what}", daemon=True
        )
        self.thread.start()

    def _run(self, func: Callable[[], Any]) -> None:
        try:
            self.result.append(func())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error.append(exc)


def _timeout_error(
    backend: keyring.backend.KeyringBackend | None, what: str, timeout: float, earlier: bool = False
) -> SecretsError:
    """The one-line error for a backend call that outlived its deadline."""
    target = _describe(backend) if backend is not None else "the system keyring"
    when = "to an earlier request and is still busy" if earlier else f"when asked to {what}"
    why = (
        ""
        if isinstance(backend, EncryptedFileKeyring)
        else " (locked and waiting for an unlock prompt? no D-Bus session under systemd?)"
    )
    return SecretsError(
        f"{target} did not answer within {timeout:g} s {when}{why}; {_hint(backend)}"
    )


def _outcome(
    call: _Call,
    what: str,
    backend: keyring.backend.KeyringBackend | None,
    secret: str | None = None,
) -> Any:
    """The finished call's result, or its exception mapped to a SecretsError without secrets."""
    if not call.error:
        return call.result[0]
    exc = call.error[0]
    leaks = bool(secret) and secret in _exception_text(exc)  # type: ignore[operator]
    if isinstance(exc, SecretsError) and not leaks:
        raise exc
    if isinstance(exc, (keyring.errors.KeyringError, SecretsError, OSError)) or leaks:
        # For the user: the type and (unless it holds the secret) the message, on one line.
        detail = type(exc).__name__ if leaks else " ".join(f"{type(exc).__name__}: {exc}".split())
        target = _describe(backend) if backend is not None else "the system keyring"
        new = SecretsError(f"cannot {what} in {target}: {detail}; {_hint(backend)}")
        # Keep the original for `-v` tracebacks, unless its text contains the secret.
        raise new from (None if leaks else exc)
    raise exc  # anything else is a bug: let it surface with its traceback


def _call_with_timeout(
    func: Callable[[], T],
    timeout: float,
    what: str,
    backend: keyring.backend.KeyringBackend | None,
) -> T:
    """Run `func` with a deadline of `timeout` seconds (see `_Call`)."""
    call = _Call(func, what)
    call.thread.join(timeout)
    if call.thread.is_alive():
        raise _timeout_error(backend, what, timeout)
    return _outcome(call, what, backend)  # type: ignore[no-any-return]


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
                raise _timeout_error(self.backend, what, self.timeout, earlier=True)
            self._stuck = None
        call = _Call(func, what)
        call.thread.join(self.timeout)
        if call.thread.is_alive():
            with self._lock:
                self._stuck = call.thread
            raise _timeout_error(self.backend, what, self.timeout)
        return _outcome(call, what, self.backend, secret)  # type: ignore[no-any-return]

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
            try:
                self.backend.delete_password(self.service, ref)
            except keyring.errors.PasswordDeleteError:
                # keyring's way of saying "absent" (also used by some backends for failures,
                # which a following get would reveal; deleting is idempotent here on purpose).
                pass

        self._call(delete, "delete a secret")
        log.debug("secret %s deleted", ref)


def _is_null_backend(backend: keyring.backend.KeyringBackend) -> bool:
    """True for keyring's stand-ins that mean "no real keyring was found"."""
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        return True
    return isinstance(backend, chainer.ChainerBackend) and not backend.backends


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
            key, source = _load_key_with_source(Path(key_file), DEFAULT_CREDENTIAL_NAME, Path(file))
            return EncryptedFileKeyring(Path(file), key, key_source=source)

        return SecretStore(backend, timeout)
    if store == "system":
        # Backend detection talks to D-Bus and may itself hang under systemd: bound it too.
        backend = _call_with_timeout(keyring.get_keyring, timeout, "find the system keyring", None)
        if _is_null_backend(backend):
            raise SecretsError(
                f"no system keyring is available ({type(backend).__module__}."
                f"{type(backend).__name__}; no Secret Service/KWallet on this host); "
                f"{_FILE_HINT}"
            )
        return SecretStore(backend, timeout)
    raise ConfigError(f'[secrets] store must be "file" or "system", not {store!r}')
