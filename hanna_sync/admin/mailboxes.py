"""Adding, changing and removing mailboxes: settings resolved from presets, checked, verified, saved.

The rule throughout: nothing is saved half-way. A mailbox is verified against its server before it
is stored (as the product page says: test, then submit), and its password goes to the secrets store in
the same step, rolled back if the database write fails.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanna_sync.db.store import Store
from hanna_sync.errors import InputError
from hanna_sync.mail.addresses import normalise_email
from hanna_sync.models import GOOGLE_KINDS, Mailbox, merged_folders
from hanna_sync.remote import imap
from hanna_sync.remote.providers import (
    IMAP_PORTS,
    PROVIDERS,
    SECURITY_MODES,
    SMTP_PORTS,
    Provider,
    default_folders,
    guess_provider,
)

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore
    from hanna_sync.diagnose.report import Report
    from hanna_sync.remote.google_auth import GoogleSignIn
    from hanna_sync.remote.oauth import MicrosoftSignIn

# Settings an admin may give on the command line, by their Mailbox field name.
SETTINGS = (
    "username", "imap_host", "imap_port", "imap_security", "imap_charset", "smtp_host", "smtp_port",
    "smtp_security", "smtp_charset", "folders", "scan_active", "sync_customers", "sync_leads", "main", "ca_file",
    "allow_plaintext", "no_smtp",
)
CONNECTION_SETTINGS = ("username", "imap_host", "imap_port", "imap_security", "ca_file", "folders")
# imap: a password over IMAP. o365-scan: Microsoft Graph. google-scan: the Gmail API. o365-client, google-client:
# IMAP and SMTP with XOAUTH2.
O365_KINDS = ("o365-scan", "o365-client")
TOKEN_KINDS = (*O365_KINDS, *GOOGLE_KINDS)  # no password: tokens from a sign-in
API_KINDS = ("o365-scan", "google-scan")  # read through an HTTP API: no IMAP or SMTP server of theirs
SERVER_SETTINGS = tuple(name for name in SETTINGS if name.startswith(("imap_", "smtp_")) and name != "imap_charset")


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
    mailbox = apply_settings(mailbox, settings)
    if mailbox.smtp_host is None and preset.host_required and not settings.get("no_smtp"):
        mailbox.smtp_host = mailbox.imap_host  # serveriai.lt and most own servers do both on one host
    return completed(mailbox)


def changed_mailbox(mailbox: Mailbox, settings: dict[str, Any]) -> Mailbox:
    """The mailbox with some settings changed; a port left at its default follows a security change."""
    if settings.get("ca_file") is None and mailbox.ca_file and not Path(mailbox.ca_file).is_file():
        # Saved earlier (a demo's CA in a temp dir that is gone): not an option given now.
        raise InputError(f"mailbox {mailbox.id}'s CA file {mailbox.ca_file} (set with --ca-file) no longer exists:"
                         f" give another with 'hanna-sync edit-mailbox {mailbox.id} --ca-file CA.pem'")
    changed = apply_settings(replace(mailbox, folders=list(mailbox.folders)), settings)
    for proto, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
        old_security = getattr(mailbox, f"{proto}_security")
        if (settings.get(f"{proto}_security") and settings.get(f"{proto}_port") is None
                and getattr(mailbox, f"{proto}_port") == ports.get(old_security or "", None)):
            setattr(changed, f"{proto}_port", None)
    return completed(changed)


def apply_settings(mailbox: Mailbox, settings: dict[str, Any]) -> Mailbox:
    for key in settings:
        if key not in SETTINGS:
            raise ValueError(f"not a mailbox setting: {key}")
    given = {key: value for key, value in settings.items() if value is not None and value != ()}
    if given.pop("no_smtp", False):
        smtp = [key for key in given if key.startswith("smtp_")]
        if smtp:
            raise InputError(f"--no-smtp and --{smtp[0].replace('_', '-')} contradict each other: give one of them")
        mailbox.smtp_host = mailbox.smtp_port = mailbox.smtp_security = mailbox.smtp_charset = None
    host = given.get("smtp_host")
    if host is not None and host.strip().lower() in ("", "none"):
        raise InputError(f"--smtp-host {host!r} is not a server name: for a mailbox that is only read (no SMTP"
                         " server), give --no-smtp")
    for key, value in given.items():
        setattr(mailbox, key, list(value) if key == "folders" else value)
    if "folders" in given:
        mailbox.folders_chosen = True
    return mailbox


def completed(mailbox: Mailbox) -> Mailbox:
    """Fill in default ports and check every setting, so a bad one never reaches the database."""
    if mailbox.kind in API_KINDS:
        given = [name for name in SERVER_SETTINGS + ("ca_file",) if getattr(mailbox, name) is not None]
        if given:
            api, imap_kind = (("Microsoft Graph", "o365-client") if mailbox.kind == "o365-scan"
                              else ("the Gmail API", "google-client"))
            raise InputError(f"--{given[0].replace('_', '-')} is for IMAP servers: a {mailbox.kind} mailbox is read"
                             f" through {api} (--kind {imap_kind} uses IMAP)")
        return _checked_charset(mailbox)
    if not mailbox.imap_host:
        raise InputError(
            f"the {PROVIDERS[mailbox.provider].label} preset needs the server name: give --imap-host"
        )
    if not mailbox.smtp_host:  # none (--no-smtp): only read; SMTP given again later starts from the preset
        mailbox.smtp_host = mailbox.smtp_port = mailbox.smtp_security = None
    elif mailbox.smtp_security is None:
        mailbox.smtp_security = PROVIDERS[mailbox.provider].smtp_security
    for proto, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
        if not getattr(mailbox, f"{proto}_host"):
            continue
        security = getattr(mailbox, f"{proto}_security")
        if security not in SECURITY_MODES:
            raise InputError(f"--{proto}-security must be one of {', '.join(SECURITY_MODES)}, not '{security}'")
        port = getattr(mailbox, f"{proto}_port")
        if port is None:
            setattr(mailbox, f"{proto}_port", ports[security])
        elif not 0 < int(port) < 65536:
            raise InputError(f"--{proto}-port must be between 1 and 65535, not {port}")
    if mailbox.ca_file:
        path = Path(mailbox.ca_file).expanduser()
        if not path.is_file():
            raise InputError(f"--ca-file {mailbox.ca_file} does not exist")
        mailbox.ca_file = str(path.resolve())
    return _checked_charset(mailbox)


def _checked_charset(mailbox: Mailbox) -> Mailbox:
    """The settings every kind has: charsets that exist, and a username that is not blank."""
    for proto in ("imap", "smtp"):
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
    return mailbox


def check_plaintext(mailbox: Mailbox) -> None:
    """Security none sends the password in clear (and the letters): saved only when the admin allows it."""
    if mailbox.allow_plaintext:
        return
    for proto in ("imap", "smtp"):
        if getattr(mailbox, f"{proto}_security") == "none" and getattr(mailbox, f"{proto}_host"):
            raise InputError(
                f"--{proto}-security none would send the password unencrypted: use ssl or starttls, or give"
                " --allow-plaintext (only on a network you trust)"
            )


@dataclass(frozen=True)
class Verified:
    folders: list[str]  # the folders to scan, with the default (INBOX + Sent) filled in, as the server spells them
    notes: list[str] = field(default_factory=list)  # what add-mailbox tells the admin: no Sent folder found, ...
    ca_file: str | None = None  # the mailbox's CA file: --ca-file, or a copy of SSL_CERT_FILE when only it made
    # the server trusted


def verify(mailbox: Mailbox, password: str, timeout: float, *, ca_dir: Path) -> Verified:
    """Log in and check the chosen folders exist; picks INBOX and Sent when none were chosen.

    These are the IMAP stages of `hanna-sync test`, so a mailbox is refused with the same cause and fix
    that command shows: its first failed stage becomes the error; the folders stage's note (no Sent
    folder found, folders merged) is passed on. A CA file kept from SSL_CERT_FILE is copied into `ca_dir`.
    """
    # Imported here, not at the top: only verifying loads diagnose's TLS and certificate machinery.
    from hanna_sync import diagnose

    report = diagnose.check_imap(mailbox, password, diagnose.Options(timeout=timeout))
    if report.failure is not None:
        raise report.failure.error()
    notes = [s.hint for s in report.stages if s.stage == "folders" and s.hint]
    ca_file, trust_note = _kept_trust(mailbox, timeout, ca_dir)
    return Verified(folders=report.folders, notes=notes + ([trust_note] if trust_note else []), ca_file=ca_file)


TRUST_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _kept_trust(mailbox: Mailbox, timeout: float, ca_dir: Path) -> tuple[str | None, str | None]:
    """The CA file to save, and a note, when the server's certificate was trusted only through SSL_CERT_FILE
    (or SSL_CERT_DIR): set in an admin's shell, absent from the timer's environment, where every pass would
    then fail with "not trusted".

    SSL_CERT_FILE is kept only if the system's CAs and it alone trust the server: with SSL_CERT_DIR set
    too, the trust may have come from the directory, which cannot be kept, so that is a warning. It is
    kept as a copy beside the database: the file itself may be where the service cannot read it (the
    system unit has no /home and its own /tmp)."""
    given = [name for name in TRUST_VARIABLES if os.environ.get(name)]
    if mailbox.ca_file or not given or (mailbox.imap_security or "ssl") == "none":
        return mailbox.ca_file, None
    if imap.trusted_without_environment(mailbox, timeout) is not False:
        return None, None
    host = mailbox.imap_host
    cert_file = os.environ.get("SSL_CERT_FILE")
    if cert_file and Path(cert_file).is_file() and imap.trusted_without_environment(
            replace(mailbox, ca_file=cert_file), timeout):
        kept = _copy_ca(Path(cert_file), ca_dir / _file_name(mailbox.email))
        return str(kept), (f"the certificate of {host} is trusted only through SSL_CERT_FILE, which the timer does"
                           f" not have: a copy of {cert_file}, {kept}, is saved as this mailbox's --ca-file")
    return None, (f"the certificate of {host} is trusted only through {' and '.join(given)}, which the timer does"
                  " not have, so its passes will refuse it: give --ca-file with the CA's certificate (PEM), or"
                  " install the CA system-wide (update-ca-certificates)")


def _file_name(email: str) -> str:
    return re.sub(r"[^\w.@+-]", "_", email)


def _copy_ca(source: Path, stem: Path) -> Path:
    """`stem`-<digest>.pem, mode 0600, with the source's bytes: named by its content as well, so a second
    mailbox of that address with another CA never overwrites the first one's."""
    pem = source.read_bytes()
    target = stem.with_name(f"{stem.name}-{hashlib.sha256(pem).hexdigest()[:12]}.pem")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    os.replace(partial, target)
    return target


def unverified_notes(mailbox: Mailbox) -> list[str]:
    """What --no-verify leaves unknown that a pass started by the timer will find out."""
    given = [name for name in TRUST_VARIABLES if os.environ.get(name)]
    if mailbox.ca_file or not given or mailbox.kind in API_KINDS:
        return []
    return [f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set here but not for the timer, and the"
            " mailbox was not verified: if its server's certificate is trusted only through it, give --ca-file (PEM)"
            " so the passes trust it too"]


@dataclass(frozen=True)
class Saved:
    mailbox: Mailbox
    previous_main: int | None  # a mailbox of the same user that is no longer main
    notes: list[str] = field(default_factory=list)  # said to the admin on stderr: "Note: ..."


def add(
    store: Store, secrets: SecretStore, mailbox: Mailbox, password: str, *, verify_first: bool, timeout: float,
    allow_duplicate: bool = False,
) -> Saved:
    """Verify (unless told not to), then save the mailbox and its password together."""
    store.check_unique(mailbox, allow_duplicate)
    check_plaintext(mailbox)
    if not password:
        raise InputError("the password is empty")
    if verify_first:
        verified = verify(mailbox, password, timeout, ca_dir=_ca_dir(store))
        mailbox.folders, mailbox.ca_file, notes = verified.folders, verified.ca_file, verified.notes
    elif not mailbox.folders:
        mailbox.folders, notes = default_folders(mailbox), unverified_notes(mailbox)
    else:
        mailbox.folders, notes = merged_folders(mailbox.folders)
        notes += unverified_notes(mailbox)
    mailbox.secret_ref = uuid.uuid4().hex
    secrets.set(mailbox.secret_ref, password)
    try:
        previous_main = store.add_mailbox(mailbox, allow_duplicate)
    except BaseException:
        secrets.delete(mailbox.secret_ref)
        raise
    return Saved(mailbox, previous_main, notes)


def _ca_dir(store: Store) -> Path:
    """Where kept CA files go: beside the database, which the service reads."""
    return store.path.resolve().parent / "ca"


ACCOUNT_SETTINGS = ("kind", "email", "login_name", "imap_host", "imap_port")


def _account(mailbox: Mailbox) -> tuple[Any, ...]:
    return tuple(str(getattr(mailbox, name)).lower() for name in ACCOUNT_SETTINGS)


def edit(
    store: Store, secrets: SecretStore, mailbox_id: int, settings: dict[str, Any], *, verify_first: bool,
    timeout: float,
    sign_in: MicrosoftSignIn | None = None, google: GoogleSignIn | None = None, allow_duplicate: bool = False,
) -> Saved:
    """Change settings; verified again when anything that affects the connection changed.

    A change that makes it read the same account as another mailbox is refused as add-mailbox refuses it
    (unless allowed); a mailbox kept as a duplicate before stays editable.
    """
    old = store.mailbox(mailbox_id)
    mailbox = changed_mailbox(old, settings)
    check_plaintext(mailbox)
    allow_duplicate = allow_duplicate or _account(old) == _account(mailbox)
    store.check_unique(mailbox, allow_duplicate)
    reconnects = any(getattr(old, name) != getattr(mailbox, name) for name in CONNECTION_SETTINGS)
    notes: list[str] = []
    if verify_first and reconnects and mailbox.kind in GOOGLE_KINDS:
        assert google is not None, "Google mailboxes are verified with their Google sign-in"
        mailbox.folders = verify_google(mailbox, google, timeout).folders
    elif verify_first and reconnects and mailbox.kind in O365_KINDS:
        assert sign_in is not None, "Office 365 mailboxes are verified with their Microsoft sign-in"
        mailbox.folders = verify_o365(mailbox, sign_in, timeout).folders
    elif verify_first and reconnects:
        password = secrets.get(mailbox.secret_ref)
        if password is None:
            raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password {mailbox_id}'")
        verified = verify(mailbox, password, timeout, ca_dir=_ca_dir(store))
        mailbox.folders, mailbox.ca_file, notes = verified.folders, verified.ca_file, verified.notes
    elif mailbox.folders != old.folders and mailbox.kind not in API_KINDS:  # Graph's "Inbox" is no IMAP INBOX
        mailbox.folders, notes = merged_folders(mailbox.folders)
    return Saved(mailbox, store.update_mailbox(mailbox, allow_duplicate), notes)


def check_has_password(mailbox: Mailbox) -> None:
    """Office 365 and Google mailboxes sign in; asking for their password would only mislead."""
    if mailbox.kind in GOOGLE_KINDS:
        raise InputError(f"mailbox {mailbox.id} is a {mailbox.kind} mailbox: it has no password, it signs in with"
                         f" Google ('hanna-sync login {mailbox.id}')")
    if mailbox.kind in O365_KINDS:
        raise InputError(f"mailbox {mailbox.id} is an Office 365 mailbox: it has no password, it signs in with"
                         f" Microsoft ('hanna-sync login {mailbox.id}')")


def set_password(
    store: Store, secrets: SecretStore, mailbox_id: int, password: str, *, verify_first: bool, timeout: float
) -> Mailbox:
    mailbox = store.mailbox(mailbox_id)
    check_has_password(mailbox)
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


def folders(
    store: Store, secrets: SecretStore, mailbox_id: int, timeout: float, *, sign_in: MicrosoftSignIn | None = None,
    google: GoogleSignIn | None = None,
) -> list[FolderRow]:
    """The server's folders with message counts, marking those this mailbox scans."""
    mailbox = store.mailbox(mailbox_id)
    if mailbox.kind == "google-scan":
        assert google is not None, "Google mailboxes are read with their Google sign-in"
        return _gmail_labels(mailbox, google, timeout)
    if mailbox.kind == "google-client":
        assert google is not None, "Google mailboxes are read with their Google sign-in"
        session = imap.oauth_session(mailbox, google.token_source(mailbox), timeout)
    elif mailbox.kind in O365_KINDS:
        assert sign_in is not None, "Office 365 mailboxes are read with their Microsoft sign-in"
        if mailbox.kind == "o365-scan":
            return _graph_folders(mailbox, sign_in)
        from hanna_sync.remote.oauth import IMAP

        session = imap.oauth_session(mailbox, sign_in.token_source(mailbox, IMAP), timeout)
    else:
        password = secrets.get(mailbox.secret_ref)
        if password is None:
            raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password {mailbox_id}'")
        session = imap.session(mailbox, password, timeout)
    with session as client:
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


def _gmail_labels(mailbox: Mailbox, google: GoogleSignIn, timeout: float) -> list[FolderRow]:
    """A google-scan mailbox's labels (the Gmail API's list has no counts): system ones by their ids."""
    from hanna_sync.remote.gmail import SYSTEM_LABELS, GmailClient

    gmail = GmailClient(google.settings.gmail_url, google.token_source(mailbox), timeout)
    try:
        listing = gmail.labels()
    finally:
        gmail.close()
    chosen = {name.casefold() for name in mailbox.folders}
    return [FolderRow(label.id if label.id in SYSTEM_LABELS else label.name, None,
                      label.name.casefold() in chosen or label.id.casefold() in chosen, None)
            for label in sorted(listing, key=lambda label: (label.id not in SYSTEM_LABELS, label.name.casefold()))]


def _graph_folders(mailbox: Mailbox, sign_in: MicrosoftSignIn) -> list[FolderRow]:
    graph = sign_in.graph(mailbox)
    try:
        listing = graph.folders()
    finally:
        graph.close()
    chosen = {name.casefold() for name in mailbox.folders}
    return [FolderRow(f.path, f.total, f.path.casefold() in chosen, None) for f in listing]


def verify_o365(mailbox: Mailbox, sign_in: MicrosoftSignIn, timeout: float) -> Verified:
    """A token, and the chosen folders there (INBOX and Sent by default): the scanning stages of `hanna-sync
    test`, so a mailbox is refused with the cause and fix that command shows."""
    from hanna_sync import diagnose

    return _verified(diagnose.check_o365(mailbox, sign_in, diagnose.Options(timeout=timeout), scanning_only=True))


def verify_google(mailbox: Mailbox, sign_in: GoogleSignIn, timeout: float) -> Verified:
    """A token, then the Gmail API's labels (google-scan) or IMAP with XOAUTH2 and the chosen folders
    (google-client): the scanning stages of `hanna-sync test`."""
    from hanna_sync import diagnose

    return _verified(diagnose.check_google(mailbox, sign_in, diagnose.Options(timeout=timeout), scanning_only=True))


def _verified(report: Report) -> Verified:
    if report.failure is not None:
        raise report.failure.error()
    return Verified(folders=report.folders)


def new_signed_in(user: str, email: str, *, provider: str, kind: str, settings: dict[str, Any]) -> Mailbox:
    """A mailbox of a kind that signs in, whatever the address's domain (the company's own): an API kind
    (o365-scan, google-scan) takes no server settings; an IMAP one starts from its provider's servers, which
    --imap-host and the like may override."""
    normalised = normalise_email(email)
    if normalised is None:
        raise InputError(f"'{email}' is not an email address")
    mailbox = Mailbox(user=user, email=normalised, provider=provider, kind=kind)
    if kind not in API_KINDS:
        preset = PROVIDERS[provider]
        mailbox.imap_host, mailbox.imap_security = preset.imap_host, preset.imap_security
        mailbox.smtp_host, mailbox.smtp_security = preset.smtp_host, preset.smtp_security
    return completed(apply_settings(mailbox, settings))


def add_signed_in(
    store: Store, secrets: SecretStore, mailbox: Mailbox, *, sign_in: Callable[[], object] | None,
    verify: Callable[[], Verified] | None, allow_duplicate: bool = False,
) -> Saved:
    """Save a mailbox that signs in instead of having a password: `sign_in` first (None: nobody signs in,
    as an app-only or service-account mailbox), then `verify` (None: --no-verify, the default folders);
    nothing is kept when a step fails, not even the sign-in's tokens."""
    store.check_unique(mailbox, allow_duplicate)
    check_plaintext(mailbox)  # a token in clear is as good as a password to whoever reads it
    mailbox.secret_ref = uuid.uuid4().hex  # the slot of its kept tokens in the secrets store
    signed_in = False
    try:
        if sign_in is not None:
            sign_in()
            signed_in = True
        if verify is not None:
            mailbox.folders = verify().folders
        elif not mailbox.folders:
            mailbox.folders = default_folders(mailbox)
        previous_main = store.add_mailbox(mailbox, allow_duplicate)
    except BaseException:
        if signed_in:
            secrets.delete(mailbox.secret_ref)
        raise
    return Saved(mailbox, previous_main)
