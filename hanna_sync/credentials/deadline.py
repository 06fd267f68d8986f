"""Every backend call under a deadline, and every failure as one line without the secret.

A locked GNOME keyring (or a D-Bus call with no session bus under systemd) can block forever waiting
for an unlock prompt nobody will answer; a stuck network filesystem can do the same to the file store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import keyring.backend
import keyring.errors

from hanna_sync.credentials.encrypted_file import EncryptedFileKeyring
from hanna_sync.errors import SecretsError

FILE_HINT = 'set [secrets] store = "file" in the config to use the encrypted file store instead'

T = TypeVar("T")


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
    return FILE_HINT


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


class Call:
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


def timeout_error(
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


def outcome(
    call: Call,
    what: str,
    backend: keyring.backend.KeyringBackend | None,
    secret: str | None = None,
) -> Any:
    """The finished call's result, or its exception mapped to a SecretsError without secrets."""
    if not call.error:
        return call.result[0]
    exc = call.error[0]
    leaks = bool(secret and secret in _exception_text(exc))
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


def call_with_timeout(
    func: Callable[[], T],
    timeout: float,
    what: str,
    backend: keyring.backend.KeyringBackend | None,
) -> T:
    """Run `func` with a deadline of `timeout` seconds (see `Call`)."""
    call = Call(func, what)
    call.thread.join(timeout)
    if call.thread.is_alive():
        raise timeout_error(backend, what, timeout)
    return outcome(call, what, backend)

