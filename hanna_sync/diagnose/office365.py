"""Office 365: per protocol a token, got as a scan gets it, and what it holds; then IMAP and SMTP with XOAUTH2
(o365-client) or Graph's folders (o365-scan)."""

from __future__ import annotations

import smtplib
from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from imapclient import IMAPClient

from hanna_sync.diagnose.hints import explain, how_chosen, office365_smtp_auth, renewal_refused
from hanna_sync.diagnose.imap_stages import ImapRun
from hanna_sync.diagnose.report import Options, Report
from hanna_sync.diagnose.run import Passed, Run, Server, StageFailed
from hanna_sync.diagnose.smtp_stages import SmtpRun
from hanna_sync.errors import AuthError, ConfigError, ExitCode, HannaError
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap
from hanna_sync.remote.graph import GraphClient
from hanna_sync.remote.oauth import GRAPH, IMAP, SMTP, Resource, SignInLost, Token, TokenRefused

if TYPE_CHECKING:
    from hanna_sync.remote.oauth import MicrosoftSignIn

class TokenStages(Run):
    """The stages an Office 365 protocol starts with: a token, got as a scan gets it, then what it holds."""

    resource: Resource
    sign_in: MicrosoftSignIn

    def __init__(self, mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, report: Report) -> None:
        super().__init__(mailbox, "", options, report)  # the protocol run beside this one in the class's bases
        self.sign_in = sign_in

    def stages(self) -> None:
        """The token stages first, then the protocol's own (IMAP or SMTP with XOAUTH2)."""
        self.token_stages()
        super().stages()

    def token_stages(self) -> None:
        token: Token = self.stage("token", self.token)
        self.password = token.value  # masked in every detail and trace line from here on
        self.stage("claims", lambda: self.claims(token))

    def token(self) -> Passed:
        try:
            token = self.sign_in.token(self.mailbox, self.resource)
        except (TokenRefused, SignInLost) as exc:
            raise StageFailed(exc.said, exc.fix) from None
        except ConfigError as exc:
            raise StageFailed(str(exc), exit_code=ExitCode.USAGE) from None
        except AuthError as exc:
            raise StageFailed(str(exc)) from None
        except HannaError as exc:  # the identity platform unreachable, the secrets store unreadable
            raise StageFailed(str(exc), exit_code=ExitCode.CONNECT) from None
        kind = "app-only" if token.app_only else "delegated"
        scope = self.resource.app_scope if token.app_only else self.resource.delegated_scope
        source = "from the token cache" if token.source == "cache" else "new from the identity platform"
        return Passed(f"{kind} token for {self.resource.name} ({scope}), {source}", token)

    def claims(self, token: Token) -> Passed:
        claims = token.claims
        if claims is None:
            return Passed("the token is not a JWT: its audience and permissions cannot be read here",
                           hint="personal Microsoft accounts get opaque tokens; work or school accounts are needed")
        problems = claims.problems(self.resource, token.app_only, self.mailbox.login_name)
        if problems:
            what, fix = problems[0]
            raise StageFailed(f"{what}; the token holds: {claims.describe()}", fix)
        return Passed(f"{claims.describe()} (decoded here, not verified)")

    def lost_sign_in(self) -> str | None:
        """Why the server refused a token that looked right, when it is a sign-in gone since (revoked: Exchange
        refuses such a token at once, with the words it uses for a missing permission): a renewal says so."""
        return renewal_refused(lambda: self.sign_in.token(self.mailbox, self.resource, fresh=True))


class OAuthImapRun(TokenStages, ImapRun):
    """IMAP as an o365-client scan uses it: AUTHENTICATE XOAUTH2 with a token for IMAP."""

    resource = IMAP

    def capabilities(self, client: IMAPClient) -> Passed:
        return self.xoauth2_capabilities(client, fix="an o365-client mailbox logs in to Exchange Online"
                                                     " (outlook.office365.com): check --imap-host")

    def authenticate(self, client: IMAPClient, login: str) -> bytes:
        lines = client.oauth2_login(login, self.password)  # the reply's lines
        client.noop()  # an app-only token without rights on the mailbox is accepted, then every command is BAD
        return b" ".join(lines)

    def auth_hint(self, text: str) -> str:
        return (self.lost_sign_in() or explain(text, self.mailbox, self.protocol)
                or imap.XOAUTH2_HINT.format(login=self.mailbox.login_name))


class OAuthSmtpRun(TokenStages, SmtpRun):
    """SMTP as the CRM sends with an o365-client mailbox: AUTH XOAUTH2 with a fresh token for SMTP."""

    resource = SMTP

    def authenticate(self, session: smtplib.SMTP, login: str) -> tuple[int, bytes]:
        return self.xoauth2(session, login, fix="an o365-client mailbox sends through Exchange Online"
                                                " (smtp.office365.com, port 587 starttls): check --smtp-host")

    def auth_hint(self, text: str) -> str:
        login = self.mailbox.login_name
        return self.lost_sign_in() or explain(text, self.mailbox, self.protocol) or (
            "the token was refused: it needs SMTP.Send (delegated) or SMTP.SendAsApp with the Exchange service"
            f" principal (app-only), and Authenticated SMTP must be on: {office365_smtp_auth(login)}"
        )


class GraphRun(TokenStages):
    """Microsoft Graph as an o365-scan scan uses it: a token for Graph, the mailbox's folders, the chosen ones."""

    protocol = "graph"
    resource = GRAPH

    def __init__(self, mailbox: Mailbox, sign_in: MicrosoftSignIn, options: Options, report: Report) -> None:
        self.mailbox, self.password, self.options, self.report = mailbox, "", options, report
        self.sign_in = sign_in
        host = urlsplit(sign_in.settings.graph_url).hostname or sign_in.settings.graph_url
        self.server = Server("graph", host, 443, "ssl", None, options.timeout)
        self.addresses, self.address = [], None
        self.resources = ExitStack()

    def stages(self) -> None:
        self.token_stages()
        graph = self.sign_in.graph(self.mailbox)
        self.resources.callback(graph.close)
        chosen = self.stage("folders", lambda: self.folders(graph))
        for path, total, unread in chosen:
            self.stage("folder", partial(_counted, path, total, unread))
        self.report.folders = [path for path, _, _ in chosen]

    def folders(self, graph: GraphClient) -> Passed:
        try:
            listing = graph.folders()
            how = how_chosen(self.mailbox, "Inbox and Sent Items")
            if self.mailbox.folders:
                chosen = list(self.mailbox.folders)
            else:
                chosen = [graph.well_known("inbox").path, graph.well_known("sentitems").path]
        except HannaError as exc:  # Graph's answer, or the renewed token a 401 asked for
            family = ExitCode.AUTH if isinstance(exc, AuthError) else ExitCode.CONNECT
            raise StageFailed(str(exc), exit_code=family) from None
        by_path = {f.path.casefold(): f for f in listing}
        names = sorted(f.path for f in listing)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        missing = [path for path in chosen if path.casefold() not in by_path]
        if missing:
            raise StageFailed(f"the mailbox has no folder {', '.join(repr(m) for m in missing)}",
                               f"choose folders it has with --folder, by their path as shown (it has: {shown});"
                               " 'hanna-sync folders ID' lists them with counts")
        found = [(path, by_path[path.casefold()].total, by_path[path.casefold()].unread) for path in chosen]
        return Passed(f"{len(listing)} folder{'' if len(listing) == 1 else 's'}; checking {', '.join(chosen)} ({how})",
                       found)


def _counted(path: str, total: int, unread: int) -> Passed:
    """A Graph folder's stage: its counts came with the listing, so nothing more is asked."""
    return Passed(f"{path}: {total} message{'' if total == 1 else 's'}, {unread} unread")
