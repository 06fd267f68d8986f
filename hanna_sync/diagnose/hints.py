"""What servers say, and what to do about it: the fixes keyed on a server's words, then on the provider.

Pure text, no connections: the largest part of the diagnosis, and the one a new provider's quirk extends.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from hanna_sync.errors import HannaError
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap
from hanna_sync.remote.oauth import SignInLost, TokenRefused

_GOOGLE_APP_PASSWORD = (
    "Google wants an app password instead of the account password: Google Account -> Security -> App passwords"
    " (https://myaccount.google.com/apppasswords) -> Other (custom name) \"hanna-sync\" -> Generate ->"
    " use the 16-letter password it shows as this mailbox's password; where a Workspace admin has app"
    " passwords off, add the mailbox with --kind google-client instead (OAuth2: 'hanna-sync setup-guide google')"
)
# Gmail's words when IMAP is off: for the whole Workspace domain or organisational unit (the admin's switch),
# or in a personal account's settings. Texts as Gmail sends them, from an IMAP prober's table of Gmail
# refusals (Mozilla's Firefox OS email app) and Google's admin help (support.google.com/a/answer/10547014).
_GOOGLE_IMAP_OFF_DOMAIN = (
    "the Workspace admin has IMAP off for this user: Google Admin console -> Apps -> Google Workspace -> Gmail ->"
    " End User Access -> POP and IMAP access -> Enable IMAP access for all users (if \"Restrict which mail clients\""
    " is chosen, allow any mail client: a service account cannot be listed there); it can take 24 hours"
)
_GOOGLE_IMAP_OFF_USER = (
    "IMAP is off in this Gmail account's settings: Gmail -> Settings -> See all settings -> Forwarding and"
    " POP/IMAP -> IMAP access: Enable IMAP -> Save Changes"
)
_YAHOO_APP_PASSWORD = (
    "Yahoo wants an app password for mail programs: Yahoo Account Info -> Account security ->"
    " Generate app password (Manage app passwords) -> \"hanna-sync\" -> Generate -> use that 16-letter password"
)
_OFFICE365_NO_PASSWORDS = (
    "Exchange Online no longer takes passwords for IMAP (basic authentication is off), even right ones:"
    " the mailbox needs OAuth2 sign-in: add it with --kind o365-client (IMAP with XOAUTH2) or o365-scan (Graph)"
)
OAUTH_ONLY = (
    "the server takes only OAuth2 tokens (XOAUTH2/OAUTHBEARER), no password: as with Office 365 or a Google"
    " Workspace with passwords off; for Office 365 add the mailbox with --kind o365-client or o365-scan"
)
_SECURITY_DEFAULTS = (
    "the tenant's security defaults block password logins from mail programs: an admin can turn them off"
    " (Microsoft Entra admin center -> Identity -> Overview -> Properties -> Manage security defaults),"
    " where Conditional Access policies protect the tenant instead; otherwise the mailbox needs OAuth2 sign-in"
)
_TOO_MANY_CONNECTIONS = (
    "the server limits simultaneous connections per account (or per address) and this one is over it:"
    " close other mail programs on it (phones, Outlook, another hanna-sync) or wait a few minutes;"
    " Gmail allows 15, Dovecot's mail_max_userip_connections is 10 by default"
)
_TOO_MANY_FAILURES = (
    "too many failed logins: the server blocks this account or address for a while; wait (often 15 minutes to"
    " an hour), check the password, and stop other programs that still try an old one"
)
_GOOGLE_WEB_LOGIN = (
    "Google blocked the sign-in as unusual: sign in to Gmail in a browser, confirm the activity at"
    " https://myaccount.google.com/notifications, then try again (or use an app password)"
)


def office365_smtp_auth(login: str) -> str:
    return (
        "SMTP AUTH is disabled for this mailbox or the whole tenant: turn on Authenticated SMTP in the Microsoft 365"
        " admin center -> Users -> Active users -> the user -> Mail -> Manage email apps -> Authenticated SMTP,"
        f" or in Exchange Online PowerShell: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false"
        " (tenant-wide: Set-TransportConfig -SmtpClientAuthenticationDisabled $false); changes can take an hour."
        " See https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission"
    )


def explain(text: str, mailbox: Mailbox, protocol: str) -> str | None:
    """The fix for a server reply we recognise, provider-specific texts first; None for the others."""
    login = mailbox.login_name
    option = f"--{protocol}"

    def says(pattern: str) -> bool:
        return re.search(pattern, text, re.IGNORECASE) is not None

    if says(r"Application-specific password required|\b5\.7\.9\b|InvalidSecondFactor"):
        return f"the account has 2-step verification on, so {_GOOGLE_APP_PASSWORD}"
    if says(r"IMAP access is disabled for your domain"):
        return _GOOGLE_IMAP_OFF_DOMAIN
    if says(r"not enabled for IMAP use"):
        return _GOOGLE_IMAP_OFF_USER
    if says(r"SmtpClientAuthentication is disabled"):
        return office365_smtp_auth(login)
    if says(r"security defaults"):
        return _SECURITY_DEFAULTS
    if says(r"\b5\.7\.30\b|Basic authentication is not supported"):
        return (
            "Exchange Online has basic authentication (passwords) off for SMTP in this tenant: an admin may allow it"
            f" for this user where Microsoft still permits it (an authentication policy with AllowBasicAuthSmtp,"
            f" and SMTP AUTH on: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false);"
            " otherwise the mailbox needs OAuth2 sign-in: --kind o365-client or o365-scan"
        )
    if says(r"User is authenticated but not connected"):
        return imap.APP_ONLY_HINT.format(login=login)
    if says(r"AUTHENTICATE failed"):
        return (
            "the OAuth2 token was refused (AUTHENTICATE XOAUTH2): the app registration needs the IMAP.AccessAsUser.All"
            " (IMAP) or SMTP.Send (SMTP) permission with admin consent and a token for this mailbox, and IMAP must be"
            " on for it: Microsoft 365 admin center -> Users -> Active users -> the user -> Mail -> Manage email apps"
            f" -> IMAP, or Set-CASMailbox -Identity {login} -ImapEnabled $true"
        )
    if says(r"too many (bad |failed |invalid )?(auth\w*|login\w*|log-?in) (attempts|failures)"):
        return _TOO_MANY_FAILURES
    if says(r"too many (simultaneous |concurrent )?connections|maximum number of connections|connection limit"):
        return _TOO_MANY_CONNECTIONS
    if says(r"WEBALERT|Web login required|log in via your web browser"):
        return _GOOGLE_WEB_LOGIN
    if says(r"STARTTLS|PRIVACYREQUIRED|Encryption required"):
        usual = "587" if protocol == "smtp" else "143"
        return f"the server wants TLS before the login: use {option}-security starttls (usually port {usual}) or ssl"
    if says(r"SendAsDenied|\b5\.7\.60\b"):
        return (f"this login may not send as {mailbox.email}: send from the mailbox's own address, or give the"
                " login Send As rights for it")
    if says(r"relay"):
        return "the server will not relay this: it wants a login that may send to outside addresses (log in first)"
    return None


def _provider_of(mailbox: Mailbox, host: str) -> str:
    """gmail, yahoo or outlook by preset or by server name (a Google Workspace domain is 'custom'), else ''."""
    host = host.lower()
    if mailbox.provider == "gmail" or host.endswith((".gmail.com", ".googlemail.com", ".google.com")):
        return "gmail"
    if mailbox.provider == "yahoo" or host.endswith(".yahoo.com"):
        return "yahoo"
    if mailbox.provider == "outlook" or host.endswith((".office365.com", ".outlook.com")):
        return "outlook"
    return ""



def login_hint(text: str, mailbox: Mailbox, *, protocol: str, host: str) -> str:
    """The fix for a refused password login, keyed on what the server said, then on the provider."""
    if known := explain(text, mailbox, protocol):
        return known
    login = mailbox.login_name
    if mailbox.username is None:
        hint = (f"check the password; the login name sent was the email address {login}: if the server"
                " expects another (e.g. the part before @), give it with --username")
    else:
        hint = f"check the password and the login name ({login}, from --username)"
    provider = _provider_of(mailbox, host)
    if provider == "gmail":
        hint += f"; with 2-step verification on, {_GOOGLE_APP_PASSWORD}"
    elif provider == "yahoo":
        hint += f"; {_YAHOO_APP_PASSWORD}"
    elif provider == "outlook" and protocol == "imap":
        hint += f"; {_OFFICE365_NO_PASSWORDS}"
    elif provider == "outlook":
        hint += f"; Office 365 also refuses a right password while {office365_smtp_auth(login)}"
    return hint


def how_chosen(mailbox: Mailbox, defaults: str) -> str:
    """Where the folders being checked come from: --folder, the defaults found now, or those found when the
    mailbox was saved (a list saved before hanna-sync recorded which is "as saved")."""
    if not mailbox.folders:
        return f"by default: {defaults}"
    if mailbox.folders_chosen:
        return "chosen with --folder"
    if mailbox.folders_chosen is None:
        return "as saved"
    return f"found by default when the mailbox was saved: {defaults}"


def renewal_refused(renew: Callable[[], object]) -> str | None:
    """Why a server refused a token that looked right, when the sign-in is gone since (a consent revoked:
    Exchange and Gmail refuse such a token with the words they use for a wrong one): a renewal says so.
    None when the renewal works, or the token endpoint cannot be reached (nothing learnt)."""
    try:
        renew()
    except (SignInLost, TokenRefused) as exc:
        fix = f"; {exc.fix}" if exc.fix else ""
        return f"the token is no longer honoured: renewing it fails ({exc.said}){fix}"
    except HannaError:
        pass
    return None

