"""Google: per protocol a token, got as a scan gets it (service account or kept consent), then IMAP and SMTP
with XOAUTH2 (google-client) or the Gmail API's labels (google-scan), Google's refusals mapped to causes and
fixes."""

from __future__ import annotations

import re
import smtplib
from contextlib import ExitStack
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from imapclient import IMAPClient

from hanna_sync.diagnose.hints import explain, how_chosen, renewal_refused
from hanna_sync.diagnose.imap_stages import ImapRun
from hanna_sync.diagnose.report import Options, Report
from hanna_sync.diagnose.run import Passed, Run, Server, StageFailed
from hanna_sync.diagnose.smtp_stages import SmtpRun
from hanna_sync.errors import AuthError, ConfigError, ExitCode, HannaError
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap
from hanna_sync.remote.gmail import SYSTEM_LABELS, GmailClient
from hanna_sync.remote.google_auth import GoogleToken
from hanna_sync.remote.oauth import SignInLost, TokenRefused
from hanna_sync.remote.providers import GMAIL_LABELS

if TYPE_CHECKING:
    from hanna_sync.remote.google_auth import GoogleSignIn

# Gmail's IMAP says "Invalid credentials" for a token it does not take, after an error challenge (base64 of
# {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}; google/gmail-oauth2-tools#78), and
# SMTP "535-5.7.8 Username and Password not accepted" (PHPMailer/PHPMailer#2693, jstedfast/MailKit#1329).
_TOKEN_REFUSED = re.compile(r"Invalid credentials|AUTHENTICATIONFAILED|5\.7\.8|Username and Password not accepted")
_SMTP_HINT = (
    "Gmail's SMTP refused the token: it takes only tokens for https://mail.google.com/ (delegated to the service"
    " account, or consented by the mailbox's person), for this very address"
)


class GoogleTokenStages(Run):
    """The stage a Google protocol starts with: a token, got as a scan gets it."""

    sign_in: GoogleSignIn

    def __init__(self, mailbox: Mailbox, sign_in: GoogleSignIn, options: Options, report: Report) -> None:
        super().__init__(mailbox, "", options, report)  # the protocol run beside this one in the class's bases
        self.sign_in = sign_in

    def stages(self) -> None:
        """The token stage first, then the protocol's own (IMAP or SMTP with XOAUTH2)."""
        token: GoogleToken = self.stage("token", self.token)
        self.password = token.value  # masked in every detail and trace line from here on
        super().stages()

    def token(self) -> Passed:
        try:
            token = self.sign_in.token(self.mailbox)
        except (TokenRefused, SignInLost) as exc:
            raise StageFailed(exc.said, exc.fix) from None
        except ConfigError as exc:  # no [google], a key file of the wrong mode or shape
            raise StageFailed(str(exc), exit_code=ExitCode.USAGE) from None
        except AuthError as exc:
            raise StageFailed(str(exc)) from None
        except HannaError as exc:  # the token endpoint unreachable, the secrets store unreadable
            raise StageFailed(str(exc), exit_code=ExitCode.CONNECT) from None
        if token.service_account:
            how = f"service account {self.sign_in.key().client_email} acting as {self.mailbox.login_name}"
        else:
            how = f"the consent of {self.mailbox.login_name}"
        source = "kept from before" if token.source == "cache" else "new from Google's token endpoint"
        return Passed(f"token for {token.scope} ({how}), {source}", token)

    def lost_sign_in(self) -> str | None:
        """Why Gmail refused a token it should take, when it is a consent revoked since (Gmail refuses such a
        token with the words it uses for a wrong one): a renewal says so."""
        return renewal_refused(lambda: self.sign_in.token(self.mailbox, fresh=True))


class GoogleImapRun(GoogleTokenStages, ImapRun):
    """IMAP as a google-client scan uses it: AUTHENTICATE XOAUTH2 with a token for https://mail.google.com/."""

    def capabilities(self, client: IMAPClient) -> Passed:
        return self.xoauth2_capabilities(
            client, fix="a google-client mailbox logs in to Gmail (imap.gmail.com:993): check --imap-host")

    def authenticate(self, client: IMAPClient, login: str) -> bytes:
        return b" ".join(client.oauth2_login(login, self.password))

    def auth_hint(self, text: str) -> str:
        if _TOKEN_REFUSED.search(text):
            return self.lost_sign_in() or imap.GOOGLE_XOAUTH2_HINT
        return explain(text, self.mailbox, self.protocol) or imap.GOOGLE_XOAUTH2_HINT


class GoogleSmtpRun(GoogleTokenStages, SmtpRun):
    """SMTP as the CRM sends with a google-client mailbox: AUTH XOAUTH2 with the same token."""

    def authenticate(self, session: smtplib.SMTP, login: str) -> tuple[int, bytes]:
        return self.xoauth2(session, login, fix="a google-client mailbox sends through Gmail (smtp.gmail.com, port"
                                                " 465 ssl): check --smtp-host")

    def auth_hint(self, text: str) -> str:
        if _TOKEN_REFUSED.search(text):
            return self.lost_sign_in() or _SMTP_HINT
        return explain(text, self.mailbox, self.protocol) or _SMTP_HINT



class GmailRun(GoogleTokenStages):
    """The Gmail API as a google-scan scan uses it: a token for gmail.readonly, the labels, the chosen ones."""

    protocol = "gmail"

    def __init__(self, mailbox: Mailbox, sign_in: GoogleSignIn, options: Options, report: Report) -> None:
        self.mailbox, self.password, self.options, self.report = mailbox, "", options, report
        self.sign_in = sign_in
        url = sign_in.settings.gmail_url
        self.server = Server("gmail", urlsplit(url).hostname or url, 443, "ssl", None, options.timeout)
        self.addresses, self.address = [], None
        self.resources = ExitStack()

    def stages(self) -> None:
        token: GoogleToken = self.stage("token", self.token)
        self.password = token.value  # masked in every detail and trace line from here on
        gmail = GmailClient(self.sign_in.settings.gmail_url, self.sign_in.token_source(self.mailbox),
                            self.options.timeout)
        self.resources.callback(gmail.close)
        chosen = self.stage("labels", lambda: self.labels(gmail))
        self.report.folders = chosen

    def labels(self, gmail: GmailClient) -> Passed:
        try:
            listing = gmail.labels()
        except HannaError as exc:  # Gmail's answer (API not enabled, scope missing), or the renewal a 401 asked for
            family = ExitCode.AUTH if isinstance(exc, AuthError) else ExitCode.CONNECT
            raise StageFailed(str(exc), exit_code=family) from None
        chosen = list(self.mailbox.folders) or list(GMAIL_LABELS)
        by_name = {key.casefold(): label for label in listing for key in (label.name, label.id)}
        names = sorted(label.name for label in listing if label.id.startswith("Label_")) or ["none"]
        missing = [name for name in chosen if name.casefold() not in by_name]
        if missing:
            raise StageFailed(f"the mailbox has no label {', '.join(repr(m) for m in missing)}",
                              f"choose labels it has with --folder: INBOX, SENT, or one of its own"
                              f" ({', '.join(names[:12])})")
        how = how_chosen(self.mailbox, "INBOX and SENT")
        return Passed(f"{len(listing)} label{'' if len(listing) == 1 else 's'}; reading {', '.join(chosen)} ({how})",
                      [name.upper() if name.upper() in SYSTEM_LABELS else by_name[name.casefold()].name
                       for name in chosen])
