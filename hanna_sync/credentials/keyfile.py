"""The key of the encrypted file store: from a systemd credential or the key file, made once when there is none.

The key file is the one thing that must never be silently replaced: a new key cannot read what the old
one wrote. So it is created exclusively, only while no store exists, and refused when others can read it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
import time
from pathlib import Path

from hanna_sync.credentials.private_files import publish_new
from hanna_sync.errors import SecretsError

log = logging.getLogger(__name__)

DEFAULT_CREDENTIAL_NAME = "hanna-sync-key"
"""Name of the key in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=hanna-sync-key:...``)."""

KEY_SIZE = 32
"""AES-256: the key file holds exactly 32 bytes (base64 text on disk)."""


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


def create_key_file(key_file: Path, store_file: Path, *, owner: tuple[int, int] | None = None) -> bytes | None:
    """Generate a key and publish it at `key_file` unless it exists; None if we lost a race.

    Refused while the encrypted store `store_file` exists: it was written with the lost key, and a new
    key could neither read it nor be told apart from the right one later, so every stored password would
    be silently unreadable while the files looked healthy. This is the only place a key is created: by a
    first password saved, and by `hanna-sync setup-service`, which makes the service's key before any.

    Published whole and exclusively (private_files.publish_new), so a concurrent loader never sees an empty
    key file; `owner`: the service user's, for root making the service's key (setup-service).
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
    try:
        if not publish_new(key_file, base64.b64encode(key) + b"\n", owner=owner):
            return None
    except OSError as exc:
        raise SecretsError(
            f"cannot create the key file {key_file}: {exc.strerror or exc}; make "
            f"{key_file.parent} writable by the user hanna-sync runs as"
        ) from None
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


def load_key_with_source(key_file: Path, credential_name: str, store_file: Path) -> tuple[bytes, str]:
    """`load_key`, also saying where the key came from (for error messages)."""
    key_file = Path(key_file)
    try:
        return existing_key(key_file, credential_name)
    except FileNotFoundError:
        pass
    key = create_key_file(key_file, Path(store_file))
    if key is not None:
        log.info("generated a new secrets key in %s", key_file)  # made on first use: said (setup-service says its own)
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
    return load_key_with_source(key_file, credential_name, store_file)[0]

