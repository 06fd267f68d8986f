"""Server settings of the well-known mail providers (the seed's table), and ports by security.

Most staff use one of a handful of providers; typing `imap.gmail.com 993 SSL` by hand is where mistakes
start, so `--provider` (or the email's domain) fills these in and the admin only types what differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hanna_sync.models import Mailbox
from hanna_sync.remote import imap

SECURITY_MODES = ("ssl", "starttls", "none")
IMAP_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    imap_host: str | None
    imap_security: str
    smtp_host: str | None
    smtp_security: str
    sent_folder: str  # used when the server does not flag its Sent folder (SPECIAL-USE)
    domains: tuple[str, ...] = ()
    host_required: bool = False  # serveriai.lt: every customer has a server of their own

    @property
    def imap_port(self) -> int:
        return IMAP_PORTS[self.imap_security]

    @property
    def smtp_port(self) -> int:
        return SMTP_PORTS[self.smtp_security]


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("gmail", "Gmail", "imap.gmail.com", "ssl", "smtp.gmail.com", "ssl", "[Gmail]/Sent Mail",
                 ("gmail.com", "googlemail.com")),
        Provider("yahoo", "Yahoo", "imap.mail.yahoo.com", "ssl", "smtp.mail.yahoo.com", "ssl", "Sent",
                 ("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk")),
        Provider("outlook", "Outlook (Office 365)", "outlook.office365.com", "ssl", "smtp.office365.com", "starttls",
                 "Sent Items", ("outlook.com", "hotmail.com", "live.com", "msn.com")),
        Provider("serveriai", "Interneto vizija (serveriai.lt)", None, "ssl", None, "ssl", "Sent",
                 host_required=True),
        Provider("custom", "Other IMAP server", None, "ssl", None, "ssl", "Sent", host_required=True),
    )
}


GMAIL_LABELS = ("INBOX", "SENT")  # a google-scan mailbox's labels unless told otherwise: both sides


def guess_provider(email: str) -> str:
    """The preset for an address's domain; 'custom' when the domain is not a known provider's."""
    domain = email.rpartition("@")[2].lower()
    for provider in PROVIDERS.values():
        if domain in provider.domains:
            return provider.name
    return "custom"


def default_folders(mailbox: Mailbox, folders: list[imap.FolderInfo] | None = None) -> list[str]:
    """INBOX and the Sent folder: what a CRM needs to see both sides of a conversation. Never Gmail's
    All Mail (flagged \\All), which holds every letter, the archived and every label's too."""
    preset = PROVIDERS[mailbox.provider].sent_folder
    if mailbox.kind == "o365-scan":
        return ["Inbox", preset]  # Graph's display names; verification reads the mailbox's own (its language's)
    if mailbox.kind == "google-scan":
        return list(GMAIL_LABELS)
    sent = imap.sent_folder(folders, preset).name if folders is not None else preset
    return ["INBOX"] + ([sent] if sent else [])


def all_mail_note(folders: list[imap.FolderInfo], chosen: list[str]) -> str | None:
    """What add-mailbox says of a folder flagged \\All (Gmail's "[Gmail]/All Mail") left out by default:
    that it is everything at once, and how to choose it."""
    everything = next((f.name for f in folders if "\\All" in f.flags and f.selectable), None)
    if everything is None or everything in chosen:
        return None
    return (f"{everything!r} holds every letter once (all labels, archived ones too) and is not scanned by default;"
            f" to archive everything, choose it: --folder \"{everything}\" (with INBOX and the Sent folder or"
            " alone: a letter in several folders is downloaded once)")
