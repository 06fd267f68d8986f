"""`hanna-sync test`: try a mailbox's IMAP and SMTP servers stage by stage; say why it fails and what to do.

"Cannot connect to IMAP server" has a dozen causes, each with its own fix: a typo in the server name, a
firewall, implicit TLS chosen for a STARTTLS port or the reverse, an untrusted certificate, a Gmail
password where an app password is needed, SMTP AUTH switched off in Office 365... So every stage does one
thing (resolve, connect, shake hands, greet, log in, open the folders), is timed, and on failure names
the cause and the fix, keyed on what the server actually said. A protocol stops at its first failure:
the later stages need the earlier ones. add-mailbox's verification (`mailboxes.verify`) runs the IMAP
stages, so it refuses a mailbox with the same explanation.

Name resolution, the TCP connection, TLS and the certificate are handled in `network`, on sockets of our own; the
IMAP and SMTP conversations then go through the transports (`imap.client_on_socket`,
`smtp.session_on_socket`) on those sockets.

The package, top down: this module's entry points; `imap_stages`, `smtp_stages`, `office365` and `google` (each
protocol's own stages); `network` (the stages they share, up to the greeting); `run` (how stages are run
and recorded); `hints` (what servers say, and the fix); `report` (what comes out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hanna_sync.diagnose.google import GmailRun, GoogleImapRun, GoogleSmtpRun
from hanna_sync.diagnose.imap_stages import ImapRun
from hanna_sync.diagnose.office365 import GraphRun, OAuthImapRun, OAuthSmtpRun
from hanna_sync.diagnose.report import FAMILIES, Options, Report, Stage
from hanna_sync.diagnose.smtp_stages import SmtpRun
from hanna_sync.models import Mailbox

if TYPE_CHECKING:
    from hanna_sync.remote.google_auth import GoogleSignIn
    from hanna_sync.remote.oauth import MicrosoftSignIn

__all__ = ["FAMILIES", "Options", "Report", "Stage", "check", "check_google", "check_imap", "check_o365"]


def check(mailbox: Mailbox, password: str, options: Options) -> Report:
    """Every stage of IMAP, then of SMTP (skipped when the mailbox has no SMTP server)."""
    report = Report(mailbox)
    ImapRun(mailbox, password, options, report).run()
    SmtpRun(mailbox, password, options, report).run()
    return report


def check_imap(mailbox: Mailbox, password: str, options: Options) -> Report:
    """The IMAP stages alone: what add-mailbox's verification needs."""
    report = Report(mailbox)
    ImapRun(mailbox, password, options, report).run()
    return report


def check_o365(mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, scanning_only: bool = False) -> Report:
    """An Office 365 mailbox: per protocol a token, got as a scan gets it, and what it holds (decoded here, not
    verified), then the protocol's own stages with it: Graph's folders (o365-scan), or IMAP and SMTP with
    XOAUTH2 (o365-client). `scanning_only` leaves SMTP out: add-mailbox's verification."""
    report = Report(mailbox)
    if mailbox.kind == "o365-scan":
        GraphRun(mailbox, sign_in, options, report).run()
    else:
        OAuthImapRun(mailbox, sign_in, options, report).run()
        if not scanning_only:
            OAuthSmtpRun(mailbox, sign_in, options, report).run()
    return report


def check_google(mailbox: Mailbox, sign_in: GoogleSignIn, options: Options, scanning_only: bool = False) -> Report:
    """A Google mailbox: per protocol a token (service account or kept consent), then the Gmail API's labels
    (google-scan), or IMAP and SMTP with XOAUTH2 (google-client). `scanning_only` leaves SMTP out:
    add-mailbox's verification."""
    report = Report(mailbox)
    if mailbox.kind == "google-scan":
        GmailRun(mailbox, sign_in, options, report).run()
        return report
    GoogleImapRun(mailbox, sign_in, options, report).run()
    if not scanning_only:
        GoogleSmtpRun(mailbox, sign_in, options, report).run()
    return report
