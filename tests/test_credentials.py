"""Tests of hanna_sync.credentials: the encrypted file keyring, key loading and SecretStore.

They guard the promises a sysadmin relies on: secrets never lie in clear text or in an error
message, files are private from the first byte, concurrent runs lose nothing, and a locked or
missing keyring gives a one-line error with the fix instead of a hang or a traceback.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail, null

from hanna_sync.credentials import (
    SERVICE,
    EncryptedFileKeyring,
    SecretStore,
    load_key,
    open_secret_store,
)
from hanna_sync.errors import ConfigError, SecretsError

SECRET = "Zebra-Quokka-7781-s3cr3t"  # distinctive, so a leak is easy to spot
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture(autouse=True)
def _no_systemd_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run under systemd (CI runners) must not pick up a real $CREDENTIALS_DIRECTORY."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "secrets.enc"


@pytest.fixture
def ring(store_path: Path) -> EncryptedFileKeyring:
    return EncryptedFileKeyring(store_path, KEY)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def assert_one_line_without(exc: BaseException, *forbidden: str) -> str:
    """The message a sysadmin sees: one line, no traceback text, no secret."""
    text = str(exc)
    assert "\n" not in text
    assert "Traceback" not in text and "InvalidTag" not in text
    for word in forbidden:
        assert word not in text
        assert word not in repr(exc.args)
    return text


# --- EncryptedFileKeyring ---------------------------------------------------------------------


def test_missing_store_means_no_secrets(ring: EncryptedFileKeyring, store_path: Path) -> None:
    assert ring.get_password(SERVICE, "ref-1") is None
    assert not store_path.exists()  # reading creates nothing


def test_round_trip_set_get_delete(ring: EncryptedFileKeyring) -> None:
    ring.set_password(SERVICE, "ref-1", SECRET)
    assert ring.get_password(SERVICE, "ref-1") == SECRET
    ring.delete_password(SERVICE, "ref-1")
    assert ring.get_password(SERVICE, "ref-1") is None


def test_delete_absent_raises_password_delete_error(ring: EncryptedFileKeyring) -> None:
    with pytest.raises(keyring.errors.PasswordDeleteError):
        ring.delete_password(SERVICE, "never-stored")
    ring.set_password(SERVICE, "ref-1", SECRET)
    with pytest.raises(keyring.errors.PasswordDeleteError):
        ring.delete_password(SERVICE, "ref-2")


def test_overwrite_replaces_secret(ring: EncryptedFileKeyring) -> None:
    ring.set_password(SERVICE, "ref-1", "old")
    ring.set_password(SERVICE, "ref-1", "new ünïcødé ✓")
    assert ring.get_password(SERVICE, "ref-1") == "new ünïcødé ✓"


def test_services_and_refs_are_isolated(ring: EncryptedFileKeyring, store_path: Path) -> None:
    ring.set_password("svc-a", "ref", "a-secret")
    ring.set_password("svc-b", "ref", "b-secret")
    ring.set_password("svc-a", "other", "other-secret")
    assert ring.get_password("svc-a", "ref") == "a-secret"
    assert ring.get_password("svc-b", "ref") == "b-secret"
    assert ring.get_password("svc-a", "other") == "other-secret"
    assert ring.get_password("svc-b", "other") is None
    ring.delete_password("svc-a", "ref")
    assert ring.get_password("svc-b", "ref") == "b-secret"
    # A second instance (another process) sees the same data.
    assert EncryptedFileKeyring(store_path, KEY).get_password("svc-a", "other") == "other-secret"


def test_store_file_is_0600_and_secret_not_in_clear(
    ring: EncryptedFileKeyring, store_path: Path
) -> None:
    ring.set_password(SERVICE, "ref-1", SECRET)
    ring.set_password(SERVICE, "ref-2", SECRET)
    assert mode(store_path) == 0o600
    assert mode(ring.lock_path) == 0o600
    raw = store_path.read_bytes()
    assert SECRET.encode() not in raw
    assert base64.b64encode(SECRET.encode()) not in raw
    data = json.loads(raw)
    entries = data["entries"][SERVICE]
    # Fresh 96-bit nonce per write: same secret, different ciphertexts.
    assert len(base64.b64decode(entries["ref-1"]["nonce"])) == 12
    assert entries["ref-1"]["nonce"] != entries["ref-2"]["nonce"]
    assert entries["ref-1"]["ciphertext"] != entries["ref-2"]["ciphertext"]
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["secrets.enc", "secrets.enc.lock"]


def test_store_file_stays_0600_under_loose_umask(store_path: Path) -> None:
    old = os.umask(0)
    try:
        EncryptedFileKeyring(store_path, KEY).set_password(SERVICE, "ref", SECRET)
    finally:
        os.umask(old)
    assert mode(store_path) == 0o600


def test_wrong_key_is_a_clear_secrets_error(ring: EncryptedFileKeyring, store_path: Path) -> None:
    ring.set_password(SERVICE, "ref-1", SECRET)
    wrong = EncryptedFileKeyring(store_path, OTHER_KEY)
    for action in (
        lambda: wrong.get_password(SERVICE, "ref-1"),
        lambda: wrong.get_password(SERVICE, "absent"),  # not a misleading "no secret"
        lambda: wrong.set_password(SERVICE, "ref-2", "x"),  # never mixes two keys in one store
    ):
        with pytest.raises(SecretsError) as info:
            action()
        text = assert_one_line_without(info.value, SECRET)
        assert "cannot decrypt" in text
        assert "the key file is not the one this store was written with" in text
        assert str(store_path) in text
        assert info.value.__cause__ is None and info.value.__suppress_context__
    assert ring.get_password(SERVICE, "ref-1") == SECRET  # nothing was changed


def test_swapped_entries_do_not_decrypt(ring: EncryptedFileKeyring, store_path: Path) -> None:
    ring.set_password(SERVICE, "alice", "alice-secret")
    ring.set_password(SERVICE, "bob", "bob-secret")
    data = json.loads(store_path.read_text())
    entries = data["entries"][SERVICE]
    entries["alice"], entries["bob"] = entries["bob"], entries["alice"]
    data["entries"]["other-service"] = {"alice": entries["alice"]}
    store_path.write_text(json.dumps(data))
    for service, ref in ((SERVICE, "alice"), (SERVICE, "bob"), ("other-service", "alice")):
        with pytest.raises(SecretsError) as info:
            ring.get_password(service, ref)
        text = assert_one_line_without(info.value, "alice-secret", "bob-secret")
        assert "cannot decrypt" in text


def test_corrupt_store_is_a_secrets_error(ring: EncryptedFileKeyring, store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_text("{not json")
    with pytest.raises(SecretsError, match="damaged"):
        ring.get_password(SERVICE, "ref")


def test_backend_is_never_auto_selected_but_can_be_built() -> None:
    assert EncryptedFileKeyring.priority < 1  # below every desktop keyring
    assert EncryptedFileKeyring in keyring.backend.KeyringBackend._classes
    with pytest.raises(TypeError):  # keyring's auto-detection instantiates without arguments
        EncryptedFileKeyring()  # type: ignore[call-arg]
    with pytest.raises(SecretsError, match="32 bytes"):
        EncryptedFileKeyring(Path("x"), b"short")


def test_key_not_exposed_by_repr(ring: EncryptedFileKeyring) -> None:
    assert KEY.hex() not in repr(ring) + str(ring) + repr(vars(ring))
    assert repr(KEY) not in repr(vars(ring))


def _writer(store: str, key: bytes, worker: int, count: int) -> None:
    ring = EncryptedFileKeyring(Path(store), key)
    for i in range(count):
        ring.set_password(SERVICE, f"w{worker}-r{i}", f"secret-{worker}-{i}")


def test_concurrent_writers_lose_no_entry(store_path: Path) -> None:
    workers, count = 4, 20
    ctx = multiprocessing.get_context("spawn")  # no fork of pytest's threads
    procs = [
        ctx.Process(target=_writer, args=(str(store_path), KEY, w, count)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    ring = EncryptedFileKeyring(store_path, KEY)
    data = json.loads(store_path.read_text())
    assert len(data["entries"][SERVICE]) == workers * count
    for w in range(workers):
        for i in range(count):
            assert ring.get_password(SERVICE, f"w{w}-r{i}") == f"secret-{w}-{i}"
    assert mode(store_path) == 0o600


def test_concurrent_threads_lose_no_entry(store_path: Path) -> None:
    """flock is per open file, so threads of one process are serialised too."""
    threads = [threading.Thread(target=_writer, args=(str(store_path), KEY, w, 10)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(json.loads(store_path.read_text())["entries"][SERVICE]) == 40


# --- load_key ---------------------------------------------------------------------------------


def test_key_file_created_once_0600_base64(tmp_path: Path) -> None:
    key_file = tmp_path / "conf" / "secrets.key"
    key = load_key(key_file, tmp_path / "secrets.enc")
    assert len(key) == 32
    assert mode(key_file) == 0o600
    text = key_file.read_text()
    assert text.endswith("\n") and base64.b64decode(text.strip()) == key
    stat_before = key_file.stat()
    assert load_key(key_file, tmp_path / "secrets.enc") == key
    assert key_file.stat().st_ino == stat_before.st_ino
    assert [p.name for p in key_file.parent.iterdir()] == ["secrets.key"]  # no temp files left


def test_key_file_created_0600_under_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_key(tmp_path / "secrets.key", tmp_path / "secrets.enc")
    finally:
        os.umask(old)
    assert mode(tmp_path / "secrets.key") == 0o600


def test_raw_32_byte_key_file_accepted(tmp_path: Path) -> None:
    key_file = tmp_path / "raw.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    assert load_key(key_file, tmp_path / "secrets.enc") == KEY


@pytest.mark.parametrize("file_mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_refused(tmp_path: Path, file_mode: int) -> None:
    key_file = tmp_path / "secrets.key"
    key_file.write_text(base64.b64encode(KEY).decode() + "\n")
    key_file.chmod(file_mode)
    with pytest.raises(SecretsError) as info:
        load_key(key_file, tmp_path / "secrets.enc")
    text = assert_one_line_without(info.value, base64.b64encode(KEY).decode())
    assert f"chmod 600 {key_file}" in text


@pytest.mark.parametrize("content", [b"", b"dG9vIHNob3J0\n", b"not base64 at all!!\n"])
def test_bad_key_content_is_clear_error(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(SecretsError) as info:
        load_key(key_file, tmp_path / "secrets.enc")
    text = assert_one_line_without(info.value)
    assert str(key_file) in text


def test_wrong_length_key_names_the_length(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    key_file.write_text(base64.b64encode(b"x" * 16).decode() + "\n")
    key_file.chmod(0o600)
    with pytest.raises(SecretsError, match="16 bytes long, expected 32"):
        load_key(key_file, tmp_path / "secrets.enc")


def test_credentials_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "secrets.key"
    key_file.write_text(base64.b64encode(OTHER_KEY).decode() + "\n")
    key_file.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hanna-sync-key").write_text(base64.b64encode(KEY).decode() + "\n")
    (creds / "hanna-sync-key").chmod(0o440)  # systemd's mode: no mode check here
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_key(key_file, tmp_path / "secrets.enc") == KEY
    assert load_key(key_file, tmp_path / "secrets.enc", credential_name="absent") == OTHER_KEY  # falls back


def test_credentials_directory_means_no_key_file_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hanna-sync-key").write_bytes(KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_key(tmp_path / "secrets.key", tmp_path / "secrets.enc") == KEY
    assert not (tmp_path / "secrets.key").exists()


def _load_key_into(key_file: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(load_key(Path(key_file), Path(key_file).with_name("secrets.enc")))


def test_racing_key_creation_agrees_on_one_key(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_key_into, args=(str(key_file), queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for proc in procs:
        proc.join(30)
    assert keys == {load_key(key_file, tmp_path / "secrets.enc")}


# --- SecretStore --------------------------------------------------------------------------------


class FakeBackend(keyring.backend.KeyringBackend):
    """A stand-in system keyring whose behaviour each test chooses.

    Its constructor needs an argument, so keyring's auto-detection (which instantiates every
    registered backend without arguments) skips it in the rest of the test session.
    """

    priority = -10  # type: ignore[assignment]

    def __init__(self, error: BaseException | None, block: threading.Event | None = None):
        super().__init__()
        self.error = error
        self.block = block
        self.calls = 0

    def _act(self) -> None:
        self.calls += 1
        if self.block is not None:
            self.block.wait(10)
        if self.error is not None:
            raise self.error

    def get_password(self, service: str, username: str) -> str | None:
        self._act()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self._act()

    def delete_password(self, service: str, username: str) -> None:
        self._act()


def test_secret_store_round_trip(ring: EncryptedFileKeyring, store_path: Path) -> None:
    store = SecretStore(ring, timeout=5)
    assert store.get("6f1c-uuid") is None
    store.set("6f1c-uuid", SECRET)
    store.set("other", "x")
    assert store.get("6f1c-uuid") == SECRET
    assert SERVICE in json.loads(store_path.read_text())["entries"]
    store.delete("6f1c-uuid")
    store.delete("6f1c-uuid")  # absent: no error
    assert store.get("6f1c-uuid") is None
    assert store.get("other") == "x"


def test_secret_store_timeout(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    backend = FakeBackend(None, block=release)
    store = SecretStore(backend, timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(SecretsError) as info:
            store.set("ref", SECRET)
        assert time.monotonic() - started < 2
        text = assert_one_line_without(info.value, SECRET)
        assert "did not answer within 0.2 s" in text
        assert 'store = "file"' in text
        # While that call still hangs, further calls fail at once instead of piling up.
        started = time.monotonic()
        with pytest.raises(SecretsError, match='store = "file"'):
            store.get("ref")
        assert time.monotonic() - started < 0.1
        assert backend.calls == 1
    finally:
        release.set()
    # Once the backend answers again (keyring unlocked), calls go through.
    for _ in range(100):
        if not any(t.name.startswith("hanna-sync-secrets") for t in threading.enumerate()):
            break
        time.sleep(0.01)
    assert store.get("ref") is None
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "error",
    [
        keyring.errors.KeyringLocked("Failed to unlock the collection!"),
        keyring.errors.NoKeyringError("No recommended backend was available."),
        keyring.errors.InitError("Failed to create the collection: Prompt dismissed."),
        keyring.errors.PasswordSetError("cannot set"),
    ],
)
def test_keyring_errors_become_secrets_errors(error: Exception) -> None:
    store = SecretStore(FakeBackend(error=error), timeout=5)
    for action in (lambda: store.get("ref"), lambda: store.set("ref", SECRET)):
        with pytest.raises(SecretsError) as info:
            action()
        text = assert_one_line_without(info.value, SECRET)
        assert 'store = "file"' in text
        assert type(error).__name__ in text


def test_secret_never_in_error_even_if_backend_leaks_it() -> None:
    leaky = keyring.errors.PasswordSetError(f"refusing to store {SECRET!r}")
    store = SecretStore(FakeBackend(error=leaky), timeout=5)
    with pytest.raises(SecretsError) as info:
        store.set("ref", SECRET)
    assert_one_line_without(info.value, SECRET)
    assert info.value.__cause__ is None  # the leaky original is not chained for -v either


def test_unexpected_non_keyring_bug_propagates() -> None:
    store = SecretStore(FakeBackend(error=ZeroDivisionError("bug")), timeout=5)
    with pytest.raises(ZeroDivisionError):
        store.get("ref")


def test_delete_absent_on_system_backend_is_quiet() -> None:
    store = SecretStore(FakeBackend(error=keyring.errors.PasswordDeleteError("absent")), timeout=5)
    store.delete("ref")


def test_secret_not_in_logs(
    ring: EncryptedFileKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    store = SecretStore(ring, timeout=5)
    store.set("ref", SECRET)
    store.get("ref")
    store.delete("ref")
    assert SECRET not in caplog.text


# --- open_secret_store ----------------------------------------------------------------------------


def test_open_file_store(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    store = open_secret_store("file", tmp_path / "secrets.enc", key_file, timeout=5)
    assert isinstance(store, SecretStore) and isinstance(store.backend, EncryptedFileKeyring)
    assert mode(key_file) == 0o600
    assert not (tmp_path / "secrets.enc").exists()  # opening is cheap: nothing written yet
    store.set("ref", SECRET)
    again = open_secret_store("file", tmp_path / "secrets.enc", key_file, timeout=5)
    assert again.get("ref") == SECRET


def test_open_file_store_with_a_different_key_file(tmp_path: Path) -> None:
    open_secret_store("file", tmp_path / "s.enc", tmp_path / "a.key", timeout=5).set("ref", SECRET)
    (tmp_path / "b.key").write_text(base64.b64encode(OTHER_KEY).decode() + "\n")  # another key (a missing one is
    (tmp_path / "b.key").chmod(0o600)  # never replaced: test_no_new_key_is_made_while_an_encrypted_store_exists)
    store = open_secret_store("file", tmp_path / "s.enc", tmp_path / "b.key", timeout=5)
    with pytest.raises(SecretsError) as info:
        store.get("ref")
    text = assert_one_line_without(info.value, SECRET)
    assert "the key file is not the one this store was written with" in text
    assert str(tmp_path / "b.key") in text


@pytest.mark.parametrize("stand_in", [fail.Keyring, null.Keyring])
def test_open_system_store_without_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in: type
) -> None:
    monkeypatch.setattr(keyring, "get_keyring", lambda: stand_in())
    with pytest.raises(SecretsError) as info:
        open_secret_store("system", tmp_path / "s.enc", tmp_path / "secrets.key", timeout=5)
    text = assert_one_line_without(info.value)
    assert "no system keyring" in text and 'store = "file"' in text
    assert not (tmp_path / "secrets.key").exists()


def test_open_system_store_does_not_touch_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FakeBackend(None)
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    store = open_secret_store("system", tmp_path / "s.enc", tmp_path / "secrets.key", timeout=5)
    assert store.backend is backend
    assert list(tmp_path.iterdir()) == []


def test_open_unknown_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='"file" or "system"'):
        open_secret_store("vault", tmp_path / "s.enc", tmp_path / "k", timeout=5)


# --- a lost key is never replaced while the store exists --------------------------------------------


def test_no_new_key_is_made_while_an_encrypted_store_exists(tmp_path: Path) -> None:
    key_file, store_file = tmp_path / "secrets.key", tmp_path / "secrets.enc"
    open_secret_store("file", store_file, key_file, timeout=5).set("ref", SECRET)
    before = store_file.read_bytes()
    key_file.unlink()
    for attempt in (lambda s: s.get("ref"), lambda s: s.set("other", "x")):
        with pytest.raises(SecretsError) as info:
            attempt(open_secret_store("file", store_file, key_file, timeout=5))
        text = assert_one_line_without(info.value, SECRET)
        assert text.startswith(f"the key file {key_file} is missing, but the secrets store {store_file} exists")
        assert "restore the key file from your backup" in text
        assert not key_file.exists()
    with pytest.raises(SecretsError, match="restore the key file"):
        load_key(key_file, store_file)
    assert not key_file.exists() and store_file.read_bytes() == before
    # Starting over is possible, as the message says: with the store moved away, a key is made.
    store_file.rename(tmp_path / "secrets.enc.old")
    open_secret_store("file", store_file, key_file, timeout=5).set("ref", "new")
    assert key_file.exists()


def test_verify_decrypts_every_entry(ring: EncryptedFileKeyring, store_path: Path) -> None:
    assert ring.verify() == 0  # no store yet
    ring.set_password(SERVICE, "ref-1", SECRET)
    ring.set_password("other", "ref-2", SECRET)
    assert ring.verify() == 2
    with pytest.raises(SecretsError, match="not the one this store was written with"):
        EncryptedFileKeyring(store_path, OTHER_KEY).verify()


# --- through the CLI: doctor decrypts the store; run never makes a new key ------------------------------


def _hanna(config: Path, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from hanna_sync.cli import cli

    return CliRunner().invoke(cli, ["--config", str(config), *args], input=stdin)


def _flip_a_bit(path: Path, where: str) -> None:
    """One bit of an entry's ciphertext, or of the key check's, flipped (the JSON stays valid)."""
    data = json.loads(path.read_text())
    record = data["key_check"] if where == "key check" else next(iter(data["entries"][SERVICE].values()))
    ciphertext = bytearray(base64.b64decode(record["ciphertext"]))
    ciphertext[len(ciphertext) // 2] ^= 0x04
    record["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
    path.write_text(json.dumps(data))


CORRUPTIONS = {
    "garbage": (lambda env: env.config.secrets_file.write_bytes(b"\x8b\x00PK garbage \xff" * 40),
                "is damaged (not valid JSON)"),
    "truncated": (lambda env: env.config.secrets_file.write_bytes(env.config.secrets_file.read_bytes()[:150]),
                  "is damaged (not valid JSON)"),
    "bit-flipped entry": (lambda env: _flip_a_bit(env.config.secrets_file, "entry"),
                          "the entry was altered or copied from another mailbox"),
    "bit-flipped key check": (lambda env: _flip_a_bit(env.config.secrets_file, "key check"),
                              "not the one this store was written with"),
    "wrong key": (lambda env: env.config.secrets_key_file.write_text(base64.b64encode(OTHER_KEY).decode() + "\n"),
                  "not the one this store was written with"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_doctor_fails_when_the_secrets_store_cannot_be_decrypted(tmp_path: Path, imap_user, kind: str) -> None:
    from tests.helpers import Env

    env = Env(tmp_path)
    env.add(imap_user, folders=("INBOX",))
    config = env.config_file()
    healthy = _hanna(config, "doctor")
    assert healthy.exit_code == 0, healthy.output
    assert f"ok     secrets store    {env.config.secrets_file}: 1 secret(s), each decrypts with the key" in healthy.stdout

    corrupt, found = CORRUPTIONS[kind]
    corrupt(env)
    assert mode(env.config.secrets_file) == 0o600 and mode(env.config.secrets_key_file) == 0o600
    result = _hanna(config, "doctor", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["secrets store"]
    assert found in failed[0]["detail"] and str(env.config.secrets_file) in failed[0]["detail"]
    assert failed[0]["fix"].startswith("restore the key file and secrets.enc from the same backup")
    plain = _hanna(config, "doctor")
    assert plain.exit_code == 1 and "FAILED secrets store" in plain.stdout
    assert plain.stderr.startswith("Error: 1 problem(s); first: secrets store: ")
    assert imap_user.password not in result.output + plain.output


def test_a_lost_key_stops_run_and_doctor_until_it_is_restored(tmp_path: Path, imap_user) -> None:
    from tests.helpers import Env

    env = Env(tmp_path)
    env.add(imap_user, folders=("INBOX",))
    config = env.config_file()
    assert _hanna(config, "run").exit_code == 0
    key_file = env.config.secrets_key_file
    saved = key_file.read_bytes()
    key_file.unlink()

    for args, stdin in ((["run"], None), (["set-password", "1", "--password-stdin", "--no-verify"], "new\n")):
        result = _hanna(config, *args, stdin=stdin)
        assert result.exit_code != 0, (args, result.output)
        assert f"the key file {key_file} is missing" in result.output, (args, result.output)
        assert "restore the key file from your backup" in result.output
        assert not key_file.exists(), args  # no new key that would make doctor green again
    result = _hanna(config, "doctor", "--json")
    assert result.exit_code == 1
    failed = {c["name"]: c for c in json.loads(result.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {"secrets key"} and "is missing" in failed["secrets key"]["detail"]
    assert not key_file.exists()

    key_file.write_bytes(saved)
    key_file.chmod(0o600)
    assert _hanna(config, "run").exit_code == 0
    assert _hanna(config, "doctor").exit_code == 0
