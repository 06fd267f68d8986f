"""IMAP's own stages after the greeting: STARTTLS, capabilities, the login, the folders, each one opened read-only."""

from __future__ import annotations

import re
import socket
import ssl
from contextlib import suppress
from functools import partial

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync.diagnose.hints import OAUTH_ONLY, explain, how_chosen
from hanna_sync.diagnose.network import NetworkRun
from hanna_sync.diagnose.run import Passed, StageFailed, close_quietly
from hanna_sync.errors import ExitCode
from hanna_sync.remote import imap, overload
from hanna_sync.remote.providers import PROVIDERS, all_mail_note, default_folders

BUSY_HINT = ("not a password problem: the server is short of connections or capacity right now; try again later"
             " (a pass tries such a mailbox again later and uses fewer connections to that server)")


class ImapRun(NetworkRun):
    protocol = "imap"

    def stages(self) -> None:
        client = self.open_session(lambda client: "STARTTLS" in capabilities_of(client))
        self.stage("capabilities", lambda: self.capabilities(client))
        self.stage("auth", lambda: self.login(client))
        folders = self.stage("folders", lambda: self.folders(client))
        for name in folders:
            self.stage("folder", partial(self.examine, client, name))
        self.report.folders = folders
        with suppress(Exception):
            client.logout()

    def greeting(self, sock: socket.socket) -> Passed:
        assert self.server is not None
        s = self.server
        if not isinstance(sock, ssl.SSLSocket):
            self.await_greeting(sock)
        try:
            client = imap.client_on_socket(sock, s.host, s.port, s.timeout, trace=self.trace)
        except TimeoutError:
            raise StageFailed(f"{s.where} sent no greeting (or no CAPABILITY reply) within {s.timeout:g} s",
                              f"an overloaded server, or not an IMAP port: check {s.option}-port"
                              f" ({s.usual_ports})") from None
        except IMAPClientError as exc:
            text = self.said(imap.server_text(exc))
            if "EOF" in text:
                raise StageFailed(f"{s.where} closed the connection without a greeting",
                                   "the server may refuse this machine's address (a blocklist, or fail2ban after"
                                   " failed logins); its log says why") from None
            unexpected = re.fullmatch(r"unexpected response: b?(['\"])(.*)\1", text)
            raise StageFailed(*self.refused_session(unexpected.group(2) if unexpected else text)) from None
        self.resources.callback(close_quietly, client)
        return Passed(self.banner(client.welcome), client)

    def starttls(self, client: IMAPClient) -> Passed:
        assert self.server is not None
        s = self.server
        capabilities = capabilities_of(client)
        if "STARTTLS" not in capabilities:
            raise StageFailed(f"{s.host} does not offer STARTTLS (it offers: {' '.join(sorted(capabilities))})",
                               "use --imap-security ssl (usually port 993) if the server has it;"
                               " none would send the password unencrypted")

        def attempt(context: ssl.SSLContext, again: bool) -> tuple[IMAPClient, ssl.SSLSocket]:
            session = client
            if again:
                session = imap.client_on_socket(self.reconnect(), s.host, s.port, s.timeout, trace=self.trace)
                self.resources.callback(close_quietly, session)
            try:
                session.starttls(context)
            except IMAPClientError as exc:
                raise StageFailed(f"{s.host} refused STARTTLS ({self.said(imap.server_text(exc))})",
                                   "the server's TLS setup is broken; ask its admin, or use ssl on port 993") from None
            return session, session.socket()

        return self.secure(attempt)

    def xoauth2_capabilities(self, client: IMAPClient, *, fix: str) -> Passed:
        """The capabilities stage of a kind that logs in with a token: XOAUTH2 must be offered (`fix` says
        which server the kind's IMAP is); Gmail's extension is named when it is there."""
        assert self.server is not None
        capabilities = capabilities_of(client)
        mechanisms = sorted(c[5:] for c in capabilities if c.startswith("AUTH="))
        if "XOAUTH2" not in mechanisms:
            raise StageFailed(f"{self.server.host} does not offer XOAUTH2 (AUTH {' '.join(mechanisms) or 'none'})", fix)
        extensions = " X-GM-EXT-1" if "X-GM-EXT-1" in capabilities else ""
        return Passed(f"AUTH {' '.join(mechanisms)}{extensions}", capabilities)

    def capabilities(self, client: IMAPClient) -> Passed:
        """What the server offers before the login: how to log in (the extensions come after it)."""
        assert self.server is not None
        capabilities = capabilities_of(client)
        mechanisms = sorted(c[5:] for c in capabilities if c.startswith("AUTH="))
        versions = " ".join(sorted(c for c in capabilities if c.startswith("IMAP4")))
        detail = f"{versions}, AUTH {' '.join(mechanisms) or '(none listed)'}"
        if "LOGINDISABLED" in capabilities:
            if self.server.security == "none":
                raise StageFailed(f"{self.server.host} refuses LOGIN without TLS (LOGINDISABLED); {detail}",
                                   "use --imap-security starttls (usually port 143) or ssl (usually port 993)",
                                   exit_code=ExitCode.TLS)
            raise StageFailed(f"{self.server.host} does not take LOGIN even over TLS (LOGINDISABLED); {detail}",
                               OAUTH_ONLY if set(mechanisms) <= {"XOAUTH2", "OAUTHBEARER"}
                               else "ask the mail admin to allow password logins for IMAP")
        return Passed(detail, capabilities)

    def login(self, client: IMAPClient) -> Passed:
        assert self.server is not None
        login = self.mailbox.login_name
        try:
            reply = self.authenticate(client, login)
        except IMAPClientError as exc:  # LoginError, or BAD
            text = self.said(imap.server_text(exc)) or "no reason given"
            if overload.is_overload(text):  # a busy server is never a wrong password (nor exit 16)
                specific = explain(text, self.mailbox, "imap")  # e.g. this account's many connections: close some
                raise StageFailed(f"{self.server.host} is busy: it did not log {login} in ({text})",
                                  f"{BUSY_HINT}; {specific}" if specific else BUSY_HINT,
                                  exit_code=ExitCode.SERVER) from None
            raise StageFailed(f"{self.server.host} refused the login for {login} ({text})",
                              self.auth_hint(text)) from None
        # Servers list their extensions in full only now (Dovecot); a scan uses these.
        capabilities = capabilities_of(client)
        features = ", ".join(f"{name} {'yes' if name in capabilities else 'no'}"
                             for name in ("IDLE", "CONDSTORE", "QRESYNC"))
        return Passed(f"logged in as {login} ({self.banner(reply)}); {features}")

    def authenticate(self, client: IMAPClient, login: str) -> bytes:
        return imap.authenticate(client, login, self.password)

    def folders(self, client: IMAPClient) -> Passed:
        assert self.server is not None
        infos = imap.list_folders(client)
        names = sorted(f.name for f in infos if f.selectable)
        listing = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        notes: list[str] = []
        if self.mailbox.folders:
            resolved = imap.resolved_folders(list(self.mailbox.folders), infos)
            if resolved.missing:
                near = [f"{name!r} differs from the server's {', '.join(repr(n) for n in resolved.near[name])}"
                        " in case or accents" for name in resolved.missing if resolved.near[name]]
                raise StageFailed(
                    f"{self.server.host} has no folder {', '.join(repr(m) for m in resolved.missing)}"
                    + (f" ({'; '.join(near)})" if near else ""),
                    f"choose folders it has with --folder, named as shown (the server has: {listing});"
                    " 'hanna-sync folders ID' lists them with counts",
                )
            chosen, notes = resolved.names, resolved.notes
        else:
            chosen = default_folders(self.mailbox, infos)
            notes += [note] if (note := all_mail_note(infos, chosen)) else []
        how = how_chosen(self.mailbox, "INBOX and the Sent folder")
        if not self.mailbox.folders or (self.mailbox.folders_chosen is False and len(chosen) == 1):
            sent = imap.sent_folder(infos, PROVIDERS[self.mailbox.provider].sent_folder)
            if self.mailbox.folders:  # a saved mailbox whose default found no Sent folder then
                notes.append(self._sent_now(sent, listing))
            elif sent.name and not sent.flagged:
                how += f"; {sent.name} by its name"
                notes.append(f"{sent.name!r} is taken for the Sent folder by its name (no folder is flagged \\Sent):"
                             f" if the sent letters are elsewhere, choose the folders with --folder (the server has:"
                             f" {listing})")
            elif not sent.name:
                notes.append(self._no_sent(sent, listing))
        return Passed(f"{len(infos)} folder{'' if len(infos) == 1 else 's'}; checking {', '.join(chosen)} ({how})",
                       chosen, "; ".join(notes) or None)

    def _no_sent(self, sent: imap.SentFolder, listing: str) -> str:
        if sent.candidates:
            why = (f"none flagged \\Sent, and {len(sent.candidates)} have a Sent folder's name:"
                   f" {', '.join(sent.candidates)}")
        else:
            why = "none flagged \\Sent, none with a Sent folder's name such as 'Sent', 'Sent Items' or 'Išsiųsti'"
        return (f"no Sent folder found ({why}): add yours with --folder so sent letters are archived too"
                f" (the server has: {listing})")

    def _sent_now(self, sent: imap.SentFolder, listing: str) -> str:
        """For a saved mailbox scanning INBOX only by default: whether the server has a Sent folder now."""
        which = self.mailbox.id if self.mailbox.id is not None else "ID"
        if sent.name:
            return (f"no Sent folder was found when the mailbox was saved, and {sent.name!r} is one now: add it"
                    f" with 'hanna-sync edit-mailbox {which} --folder INBOX --folder \"{sent.name}\"'")
        return self._no_sent(sent, listing).replace("add yours with --folder",
                                                    f"add yours with 'hanna-sync edit-mailbox {which} --folder ...'")

    def examine(self, client: IMAPClient, name: str) -> Passed:
        try:
            status = client.select_folder(name, readonly=True)
        except IMAPClientError as exc:
            raise StageFailed(f"cannot open {name!r} read-only: {self.said(imap.server_text(exc))}",
                               "the folder may have been renamed or deleted, or this login may not read it;"
                               " 'hanna-sync folders ID' lists what it can read") from None
        count = status.get(b"EXISTS", "?")
        parts = [f"{name}: {count} message{'' if count == 1 else 's'}",
                 f"UIDVALIDITY {status.get(b'UIDVALIDITY', '?')}", f"UIDNEXT {status.get(b'UIDNEXT', '?')}"]
        if b"HIGHESTMODSEQ" in status:
            parts.append(f"HIGHESTMODSEQ {status[b'HIGHESTMODSEQ']}")
        if b"READ-ONLY" in status:
            return Passed(", ".join(parts) + ", opened read-only (EXAMINE)")
        return Passed(", ".join(parts) + ", opened with EXAMINE",
                      hint="the server did not confirm [READ-ONLY]; scans read with BODY.PEEK, so no flag changes"
                           " anyway")


def capabilities_of(client: IMAPClient) -> set[str]:
    return {c.decode("ascii", "replace").upper() if isinstance(c, bytes) else str(c).upper()
            for c in client.capabilities()}


