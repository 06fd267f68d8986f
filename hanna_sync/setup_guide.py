"""`hanna-sync setup-guide o365`: the exact portal and PowerShell steps to connect Office 365 mailboxes.

Office 365 sign-in fails in a dozen ways that all trace back to a setting in a portal (a permission not
consented, public client flows off, IMAP off for the mailbox, a service principal never registered), so
the steps are printed by the tool itself, with the tenant and application ids filled in once configured.
"""

from __future__ import annotations

from hanna_sync.config import O365Config

_GUIDE = """\
Office 365 mailboxes in hanna-sync
==================================

Basic authentication (passwords) is off in Exchange Online, so hanna-sync signs in with OAuth2 through an
app registration of YOUR organisation: it ships no client id of its own (borrowed ones get disabled,
AADSTS7000112). Two mailbox kinds:
  o365-scan    reads the mailbox through Microsoft Graph (scanning only)
  o365-client  IMAP outlook.office365.com:993 and SMTP smtp.office365.com:587 (STARTTLS), with XOAUTH2;
               the CRM sends with it
and two ways to sign in ([o365] auth in the config):
  delegated    each mailbox signs in once, with a code, as its own user (MFA works); the default
  app          client credentials: an admin consents once for all mailboxes; no per-mailbox sign-in

What hanna-sync asks for (a token serves one resource, so Graph and Outlook tokens are asked for apart):
               delegated                                          app-only (permission in the token)
  o365-scan    https://graph.microsoft.com/Mail.Read              https://graph.microsoft.com/.default (Mail.Read)
  o365-client  https://outlook.office.com/IMAP.AccessAsUser.All   https://outlook.office365.com/.default
               https://outlook.office.com/SMTP.Send               (IMAP.AccessAsApp, SMTP.SendAsApp)
  Every delegated sign-in also asks for offline_access (the refresh token that keeps the mailbox signed
  in), openid and profile (who signed in).

1. Register the app (once)
   Microsoft Entra admin center (https://entra.microsoft.com), as a Global or Application Administrator:
   Identity -> Applications -> App registrations (or search "App registrations") -> New registration
     Name: hanna-sync
     Supported account types: Accounts in this organizational directory only (Single tenant)
     Redirect URI: leave empty -> Register
   From the app's Overview page, into the config (/etc/hanna-sync/config.toml):
     [o365]
     tenant_id = "{tenant_id}"  # Directory (tenant) ID
     client_id = "{client_id}"  # Application (client) ID
     auth = "delegated"  # or "app" (2b)

2a. Delegated sign-in (auth = "delegated", the default)
   Authentication -> Advanced settings -> Allow public client flows: Yes -> Save
     (the device-code sign-in needs it; without it: AADSTS7000218)
   API permissions -> Add a permission -> Microsoft Graph -> Delegated permissions:
     o365-scan:   Mail.Read
     o365-client: IMAP.AccessAsUser.All and SMTP.Send (Exchange Online's, listed under Microsoft Graph)
     both:        offline_access, openid and profile (under OpenId permissions)
   API permissions -> Grant admin consent for <your organisation> -> Yes
     (without it a user who may not consent sees "Need admin approval": AADSTS65001 or AADSTS90094)
   Then, per mailbox:
     hanna-sync add-mailbox --kind o365-scan --user jonas --email jonas@example.com
   It prints a URL (https://microsoft.com/devicelogin) and a code: open the URL in any browser, enter the
   code and sign in AS THAT MAILBOX'S USER (a token reads the mailbox of whoever signs in, so hanna-sync
   refuses another account). The tokens are kept, encrypted, in the secrets store and renewed silently.
   When a sign-in is revoked or expires (password reset, 90 days unused: AADSTS700082), `status` shows
   "needs re-authorisation" and the mailbox waits for: hanna-sync login ID

2b. App-only sign-in (auth = "app")
   A credential for the app, one of:
     Certificates & secrets -> Client secrets -> New client secret -> copy its Value (shown once), then
       hanna-sync login --client-secret        (hidden prompt; kept in the encrypted secrets store)
     or a certificate:
       openssl req -x509 -newkey rsa:2048 -nodes -days 730 -subj "/CN=hanna-sync" \\
           -keyout o365-app.key -out o365-app.crt
       cat o365-app.key o365-app.crt > /etc/hanna-sync/o365-app.pem   (chmod 600, owned by hanna-sync)
       Certificates & secrets -> Certificates -> Upload certificate: o365-app.crt; then in the config:
       certificate_file = "/etc/hanna-sync/o365-app.pem" and certificate_thumbprint = "<its Thumbprint>"
   API permissions -> Add a permission -> Application permissions:
     o365-scan:   Microsoft Graph -> Mail.Read
     o365-client: APIs my organization uses -> Office 365 Exchange Online -> IMAP.AccessAsApp
                  and SMTP.SendAsApp (for the CRM's sending)
   API permissions -> Grant admin consent for <your organisation> -> Yes
   In Exchange Online PowerShell (Install-Module ExchangeOnlineManagement; Connect-ExchangeOnline):
   o365-scan: Mail.Read as an application reads EVERY mailbox of the tenant; limit it to the archived ones:
     New-DistributionGroup -Name "hanna-sync mailboxes" -Type Security -Members jonas@example.com
     New-ApplicationAccessPolicy -AppId {client_id} -PolicyScopeGroupId "hanna-sync mailboxes" `
         -AccessRight RestrictAccess -Description "hanna-sync"
   o365-client: Exchange lets the app into no mailbox until its service principal is registered there
   and given each mailbox (else IMAP says "User is authenticated but not connected", SMTP 535 5.7.3).
   The Object ID is the ENTERPRISE application's (Enterprise applications -> hanna-sync -> Object ID),
   not the one on the app registration's Overview page:
     New-ServicePrincipal -AppId {client_id} -ObjectId <ENTERPRISE_APP_OBJECT_ID> -DisplayName "hanna-sync"
     Get-ServicePrincipal | Format-List DisplayName,AppId,ObjectId     (the service principal's id)
     Add-MailboxPermission -Identity jonas@example.com -User <SERVICE_PRINCIPAL_ID> -AccessRights FullAccess
       (once per mailbox; it covers reading over IMAP and sending as the mailbox's own address over SMTP)
   Then, per mailbox (no sign-in of its own):
     hanna-sync add-mailbox --kind o365-client --user jonas --email jonas@example.com

3. Exchange settings for o365-client mailboxes (both ways of signing in)
   IMAP on for the mailbox: Microsoft 365 admin center -> Users -> Active users -> the user -> Mail ->
   Manage email apps -> IMAP, or:
     Set-CASMailbox -Identity jonas@example.com -ImapEnabled $true
   Authenticated SMTP (for the CRM's sending), same page -> Authenticated SMTP, or:
     Set-CASMailbox -Identity jonas@example.com -SmtpClientAuthenticationDisabled $false
     ("535 5.7.139 ... SmtpClientAuthentication is disabled" means it is still off for the mailbox or the
     tenant: Get-TransportConfig | Format-List SmtpClientAuthenticationDisabled)
   Changes can take an hour to reach every server.

4. Check
   hanna-sync test ID       the token (got as a scan gets it), what it holds (audience, permissions, user),
                            then Graph's folders, or IMAP and SMTP stage by stage, each failure with its fix
   hanna-sync test --kind o365-client --email jonas@example.com
                            the same before the mailbox is saved (tokens kept in memory only)
   hanna-sync folders ID    the mailbox's folders; choose others with: edit-mailbox ID --folder "Inbox/Projektai"
"""


def office365(settings: O365Config | None) -> str:
    """The guide, with the configured tenant and client ids where they are known."""
    tenant_id = settings.tenant_id if settings and settings.tenant_id else "<Directory (tenant) ID>"
    client_id = settings.client_id if settings and settings.client_id else "<APP_ID>"
    return _GUIDE.format(tenant_id=tenant_id, client_id=client_id)
