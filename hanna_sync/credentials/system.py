"""The OS keyring (``store = "system"``): whatever keyring picks on a desktop (GNOME keyring, KWallet, ...)."""

from __future__ import annotations

import keyring
import keyring.backend
from keyring.backends import chainer, fail, null

from hanna_sync.credentials.deadline import FILE_HINT, call_with_timeout
from hanna_sync.errors import SecretsError


def system_keyring(timeout: float) -> keyring.backend.KeyringBackend:
    """The user's usual keyring, refused when keyring only has its fail/null stand-in (a server without one)."""
    # Backend detection talks to D-Bus and may itself hang under systemd: bound it too.
    backend = call_with_timeout(keyring.get_keyring, timeout, "find the system keyring", None)
    if _is_null_backend(backend):
        raise SecretsError(
            f"no system keyring is available ({type(backend).__module__}."
            f"{type(backend).__name__}; no Secret Service/KWallet on this host); "
            f"{FILE_HINT}"
        )
    return backend


def _is_null_backend(backend: keyring.backend.KeyringBackend) -> bool:
    """True for keyring's stand-ins that mean "no real keyring was found"."""
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        return True
    return isinstance(backend, chainer.ChainerBackend) and not backend.backends


