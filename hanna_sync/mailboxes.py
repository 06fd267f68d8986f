"""Adding, changing and removing mailboxes: settings resolved from presets, checked, verified, saved.

The rule throughout: nothing is saved half-way. A mailbox is verified against its server before it
is stored (as the product page says: test, then submit), and its password goes to the secrets store in
the same step, rolled back if the database write fails.
"""

from __future__ import annotations

import codecs
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanna_sync import imap
from hanna_sync.addresses import normalise_email
from hanna_sync.errors import InputError
from hanna_sync.providers import IMAP_PORTS, PROVIDERS, SECURITY_MODES, SMTP_PORTS, Provider, guess_provider
from hanna_sync.store import Mailbox, Store

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore

# Settings an admin may give on the command line, by their Mailbox field name.
SETTINGS = (
    "username", "imap_host", "imap_port", "imap_security", "imap_charset", "smtp_host", "smtp_port",
    "smtp_security", "smtp_charset", "folders", "scan_active", "sync_customers", "sync_leads", "main", "ca_file",
)
CONNECTION_SETTINGS = ("username", "imap_host", "imap_port", "imap_security", "ca_file", "folders")


def provider_for(email: str, provider: str | None) -> Provider:
    """The preset named, or guessed from the email's domain; checks the email on the way."""
    normalised = normalise_email(email)
    if normalised is None:
        raise InputError(f"'{email}' is not an email address")
    name = provider or guess_provider(normalised)
    if name not in PROVIDERS:
        raise InputError(f"unknown provider '{name}'; choose one of {', '.join(PROVIDERS)}")
    return PROVIDERS[name]


def new_mailbox(user: str, email: str, provider: str | None, settings: dict[str, Any]) -> Mailbox:
    """A mailbox from the provider's preset (guessed from the email when not given) and the given settings."""
    preset = provider_for(email, provider)
    mailbox = Mailbox(
        user=user,
        email=normalise_email(email) or email,
        provider=preset.name,
        imap_host=preset.imap_host,
        imap_security=preset.imap_security,
        smtp_host=preset.smtp_host,
        smtp_security=preset.smtp_security,
    )
    mailbox = _apply(mailbox, settings)
    if mailbox.smtp_host is None and preset.host_required:
        mailbox.smtp_host = mailbox.imap_host  # serveriai.lt and most own servers do both on one host
    return _completed(mailbox)


def changed_mailbox(mailbox: Mailbox, settings: dict[str, Any]) -> Mailbox:
    """The mailbox with some settings changed; a port left at its default follows a security change."""
    changed = _apply(replace(mailbox, folders=list(mailbox.folders)), settings)
    for proto, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
        old_security = getattr(mailbox, f"{proto}_security")
        if settings.get(f"{proto}_security") and settings.get(f"{proto}_port") is None:
            if getattr(mailbox, f"{proto}_port") == ports.get(old_security or "", None):
                setattr(changed, f"{proto}_port", None)
    return _completed(changed)


def _apply(mailbox: Mailbox, settings: dict[str, Any]) -> Mailbox:
    for key, value in settings.items():
        if key not in SETTINGS:
            raise ValueError(f"not a mailbox setting: {key}")
        if value is not None and value != ():
            setattr(mailbox, key, list(value) if key == "folders" else value)
    return mailbox


def _completed(mailbox: Mailbox) -> Mailbox:
    """Fill in default ports and check every setting, so a bad one never reaches the database."""
    if not mailbox.imap_host:
        raise InputError(
            f"the {PROVIDERS[mailbox.provider].label} preset needs the server name: give --imap-host"
        )
    for proto, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
        security = getattr(mailbox, f"{proto}_security")
        if security not in SECURITY_MODES:
            raise InputError(f"--{proto}-security must be one of {', '.join(SECURITY_MODES)}, not '{security}'")
        port = getattr(mailbox, f"{proto}_port")
        if port is None:
            setattr(mailbox, f"{proto}_port", ports[security])
        elif not 0 < int(port) < 65536:
            raise InputError(f"--{proto}-port must be between 1 and 65535, not {port}")
        charset = getattr(mailbox, f"{proto}_charset")
        if charset:
            try:
                codecs.lookup(charset)
            except LookupError:
                raise InputError(
                    f"--{proto}-charset '{charset}' is not a known character set (try utf-8 or windows-1257)"
                ) from None
    if mailbox.username is not None and not mailbox.username.strip():
        mailbox.username = None
    if mailbox.ca_file:
        path = Path(mailbox.ca_file).expanduser()
        if not path.is_file():
            raise InputError(f"--ca-file {mailbox.ca_file} does not exist")
        mailbox.ca_file = str(path.resolve())
    return mailbox


@dataclass(frozen=True)
class Verified:
    folders: list[str]  # the folders to scan, with the default (INBOX + Sent) filled in


def verify(mailbox: Mailbox, password: str, timeout: float) -> Verified:
    """Log in and check the chosen folders exist; picks INBOX and Sent when none were chosen.

    These are the IMAP stages of `hanna-sync test`, so a mailbox is refused with the same cause and fix
    that command shows: its first failed stage becomes the error.
    """
    # Imported here, not at the top: diagnose builds on this module (default_folders).
    from hanna_sync import diagnose

    report = diagnose.check_imap(mailbox, password, diagnose.Options(timeout=timeout))
    if report.failure is not None:
        raise report.failure.error()
    return Verified(folders=report.folders)


def default_folders(mailbox: Mailbox, folders: list[imap.FolderInfo] | None = None) -> list[str]:
    """INBOX and the Sent folder: what a CRM needs to see both sides of a conversation."""
    preset = PROVIDERS[mailbox.provider].sent_folder
    sent = imap.sent_folder(folders, preset) if folders is not None else preset
    return ["INBOX"] + ([sent] if sent else [])


@dataclass(frozen=True)
class Saved:
    mailbox: Mailbox
    previous_main: int | None  # a mailbox of the same user that is no longer main


def add(store: Store, secrets: SecretStore, mailbox: Mailbox, password: str, verify_first: bool, timeout: float) -> Saved:
    """Verify (unless told not to), then save the mailbox and its password together."""
    store.check_unique(mailbox)
    if not password:
        raise InputError("the password is empty")
    if verify_first:
        mailbox.folders = verify(mailbox, password, timeout).folders
    elif not mailbox.folders:
        mailbox.folders = default_folders(mailbox)
    mailbox.secret_ref = uuid.uuid4().hex
    secrets.set(mailbox.secret_ref, password)
    try:
        previous_main = store.add_mailbox(mailbox)
    except BaseException:
        secrets.delete(mailbox.secret_ref)
        raise
    return Saved(mailbox, previous_main)


def edit(
    store: Store, secrets: SecretStore, mailbox_id: int, settings: dict[str, Any], verify_first: bool, timeout: float
) -> Saved:
    """Change settings; verified again when anything that affects the connection changed."""
    old = store.mailbox(mailbox_id)
    mailbox = changed_mailbox(old, settings)
    reconnects = any(getattr(old, name) != getattr(mailbox, name) for name in CONNECTION_SETTINGS)
    if verify_first and reconnects:
        password = secrets.get(mailbox.secret_ref)
        if password is None:
            raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password {mailbox_id}'")
        mailbox.folders = verify(mailbox, password, timeout).folders
    return Saved(mailbox, store.update_mailbox(mailbox))


def set_password(store: Store, secrets: SecretStore, mailbox_id: int, password: str, verify_first: bool, timeout: float) -> Mailbox:
    mailbox = store.mailbox(mailbox_id)
    if not password:
        raise InputError("the password is empty")
    if verify_first:
        with imap.session(mailbox, password, timeout):
            pass
    secrets.set(mailbox.secret_ref, password)
    store.clear_backoff(mailbox_id)
    return mailbox


def remove(store: Store, secrets: SecretStore, mailbox_id: int) -> Mailbox:
    """Forget the mailbox and its password; letters archived from it stay in the archive."""
    mailbox = store.mailbox(mailbox_id)
    store.remove_mailbox(mailbox_id)
    secrets.delete(mailbox.secret_ref)
    return mailbox


@dataclass(frozen=True)
class FolderRow:
    name: str
    messages: int | None
    selected: bool
    special: str | None  # \Sent, \Trash, ... as the server flags it


def folders(store: Store, secrets: SecretStore, mailbox_id: int, timeout: float) -> list[FolderRow]:
    """The server's folders with message counts, marking those this mailbox scans."""
    mailbox = store.mailbox(mailbox_id)
    password = secrets.get(mailbox.secret_ref)
    if password is None:
        raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password {mailbox_id}'")
    with imap.session(mailbox, password, timeout) as client:
        infos = imap.list_folders(client)
        counts = imap.message_counts(client, [f.name for f in infos if f.selectable])
    special_flags = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged")
    return [
        FolderRow(
            name=info.name,
            messages=counts.get(info.name),
            selected=info.name in mailbox.folders,
            special=next((f for f in info.flags if f in special_flags), None),
        )
        for info in infos
    ]
