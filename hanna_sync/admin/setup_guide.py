"""`hanna-sync setup-guide`: the exact steps to set hanna-sync up, printed by the tool itself.

`o365`: the portal and PowerShell steps to connect Office 365 mailboxes; `google`: the Google Cloud and
Workspace admin console steps for google-scan and google-client mailboxes. `systemd` and `config`: the
units, the config and the install steps, for the hanna-sync actually installed (a shipped unit file naming
/usr/local/bin, or a README naming a file a pip install does not carry, is true only on some machines).

Office 365 sign-in fails in a dozen ways that all trace back to a setting in a portal (a permission not
consented, public client flows off, IMAP off for the mailbox, a service principal never registered), so
the steps are printed by the tool itself, with the tenant and application ids filled in once configured.
"""

from __future__ import annotations

from hanna_sync.config import GoogleConfig, O365Config

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


_GOOGLE_GUIDE = """\
Google Workspace and Gmail mailboxes in hanna-sync
==================================================

hanna-sync reads Gmail through the Gmail API, or over IMAP (and the CRM sends over SMTP) with OAuth2 tokens,
through a Google Cloud project of YOUR organisation: it ships no client id of its own. The mailbox kinds:
  google-scan      the Gmail API, read-only: labels (INBOX and SENT by default), one letter stored once
                   however many labels it has; the token's scope is
                   https://www.googleapis.com/auth/gmail.readonly
  google-client    IMAP imap.gmail.com:993 and SMTP smtp.gmail.com:465 (ssl), with XOAUTH2; the token's
                   scope is https://mail.google.com/ (the only one Gmail's IMAP and SMTP take)
and two ways to sign in ([google] auth in the config):
  service-account  Google Workspace only: domain-wide delegation, granted once by an admin for the whole
                   domain; any staff mailbox is added without its person doing anything
  user             personal Gmail, or a Workspace without delegation: each mailbox's person allows access
                   once in a browser; the refresh token is kept, encrypted, in the secrets store
(Gmail with an app password stays the plain imap kind: add-mailbox --email x@gmail.com.)

1. The project (once)
   Google Cloud console (https://console.cloud.google.com) -> the project picker -> New project
     Name: hanna-sync -> Create, and select it
   APIs & Services -> Library -> Gmail API -> Enable
     (google-scan needs it; IMAP and SMTP with XOAUTH2 work without it, but the consent screen offers
     Gmail's scopes only once it is on)

2a. Service account with domain-wide delegation (auth = "service-account")
   IAM & Admin -> Service accounts -> Create service account -> Name: hanna-sync -> Create and continue ->
     no roles -> Done
   The account -> Keys -> Add key -> Create new key -> JSON -> Create: a file downloads. It acts as EVERY
   mailbox of the domain: keep it where only hanna-sync reads it, mode 0600 (hanna-sync refuses another):
     install -m 600 -o hanna-sync key.json {key_file}
   or hand it over as a systemd credential instead (and leave service_account_file out):
     LoadCredential=hanna-sync-google:/etc/credstore/hanna-sync-google.json   (in the unit's [Service])
   (If the console says key creation is disabled, the organisation policy
    iam.disableServiceAccountKeyCreation is on: an organisation admin can lift it for this project.)
   The account's Details -> Unique ID (the key's "client_id"): {sa_client_id}
   Google Admin console (https://admin.google.com), as a super administrator:
     Security -> Access and data control -> API controls -> Manage Domain Wide Delegation -> Add new
       Client ID:    {sa_client_id}
       OAuth scopes: https://www.googleapis.com/auth/gmail.readonly,https://mail.google.com/
       (gmail.readonly for google-scan, mail.google.com for google-client: grant the ones you use)
       -> Authorize  (it can take from minutes up to 24 hours to apply; before that the token endpoint
          answers unauthorized_client)
   Into the config (/etc/hanna-sync/config.toml):
     [google]
     auth = "service-account"
     service_account_file = "{key_file}"
   Then, per mailbox (nobody signs in):
     hanna-sync add-mailbox --kind google-scan --user jonas --email jonas@example.com
     (or --kind google-client for IMAP)

2b. Your own OAuth client (auth = "user")
   APIs & Services -> OAuth consent screen (Google Auth Platform) -> Get started:
     App name: hanna-sync, a support email; Audience: Internal (a Workspace: only its own accounts, no
     review by Google) or External (personal Gmail accounts); a contact email -> Create
   Data Access -> Add or remove scopes -> .../auth/gmail.readonly (google-scan) and/or https://mail.google.com/
     (google-client), openid and .../auth/userinfo.email -> Save
   An External app in "Testing": Audience -> Test users -> add each mailbox's address. Google ends a
   Testing app's consents after 7 days (`status` then says "needs re-authorisation"): publish the app
   (Audience -> Publish app) for lasting ones; both Gmail scopes are restricted scopes, so an
   External app in production needs Google's verification, an Internal one does not.
   Clients (or Credentials -> Create credentials -> OAuth client ID) -> Application type: Desktop app ->
     Name: hanna-sync -> Create (a Desktop client may redirect to any port of http://127.0.0.1, which the
     sign-in's listener uses)
   Into the config:
     [google]
     auth = "user"
     client_id = "{client_id}"
   The client secret (GOCSPX-...) goes into the secrets store, never the config:
     hanna-sync login --google-client-secret           (hidden prompt; checked with Google first)
   Then, per mailbox:
     hanna-sync add-mailbox --kind google-scan --user jonas --email jonas@example.com
     (or --kind google-client for IMAP)
   It prints a consent URL: open it in any browser, sign in AS THAT MAILBOX'S ACCOUNT (a token reads the
   mailbox of whoever allows it, so hanna-sync refuses another) and allow access. The browser is then sent
   to http://127.0.0.1:PORT/ on the machine hanna-sync runs on, where it listens. On a server without a
   browser, either
     --paste   copy the address the browser was sent to (its page does not load: that is expected) and
               paste it back; or
     --port 8765 with the port forwarded from your desktop: ssh -L 8765:127.0.0.1:8765 SERVER
   When a consent is revoked or expires (invalid_grant: the person removed hanna-sync at
   https://myaccount.google.com/permissions, a password change, 7 days in Testing, 6 months unused),
   `status` shows "needs re-authorisation" and the mailbox waits for: hanna-sync login ID

3. IMAP on (google-client only; google-scan does not use IMAP)
   Google Admin console -> Apps -> Google Workspace -> Gmail -> End User Access -> POP and IMAP access ->
   Enable IMAP access for all users (or for the archived mailboxes' organisational unit). With "Restrict
   which mail clients users can use" a service account cannot be allowed: choose "Allow any mail client"
   or use auth = "user" with this client's id on that list. ("[ALERT] IMAP access is disabled for your
   domain" means it is still off; changes can take 24 hours.) A personal Gmail account: Gmail's Settings ->
   Forwarding and POP/IMAP -> IMAP access, where Gmail still shows the switch ("[ALERT] Your account is not
   enabled for IMAP use" means it is off).

4. Check
   hanna-sync test ID       the token (got as a scan gets it), then the Gmail API's labels (google-scan),
                            or IMAP and SMTP with XOAUTH2 stage by stage (google-client), each failure with
                            its fix (delegation missing, consent revoked, Gmail API disabled, IMAP off)
   hanna-sync test --kind google-scan --email jonas@example.com
                            the same before the mailbox is saved (a consent kept in memory only)
   hanna-sync folders ID    the mailbox's labels (google-scan) or folders; choose others with --folder
"""


def google(settings: GoogleConfig | None) -> str:
    """The Google guide, with the configured client id, key file and the service account's id where known
    (read from the key when this user may read it)."""
    from contextlib import suppress

    from hanna_sync.errors import HannaError
    from hanna_sync.remote.google_auth import service_account_key

    key_file = str(settings.service_account_file) if settings and settings.service_account_file else \
        "/etc/hanna-sync/google-service-account.json"
    sa_client_id = "<the service account's Unique ID>"
    if settings and settings.auth == "service-account":
        with suppress(HannaError):  # not readable here (the service user's file), or not there yet: a placeholder
            sa_client_id = service_account_key(settings).client_id
    client_id = settings.client_id if settings and settings.client_id else "<CLIENT_ID>.apps.googleusercontent.com"
    return _GOOGLE_GUIDE.format(key_file=key_file, sa_client_id=sa_client_id, client_id=client_id)


# -- running it unattended: the systemd units and the config, for the hanna-sync actually installed ----------

def executable() -> str:
    """The running hanna-sync as a shell can type it: an absolute path, never a bare name a unit's or
    cron's PATH may not have (a venv's bin, /opt/...). Symlinks are kept: /usr/local/bin/hanna-sync
    stays valid across reinstalls where the venv it points at might not."""
    import os
    import shlex
    import shutil
    import sys
    from pathlib import Path

    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "hanna-sync":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return shlex.quote(os.path.abspath(found))
    beside = Path(sys.executable).parent / "hanna-sync"  # `python -m hanna_sync` in a venv
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(os.path.abspath(beside))
    found = shutil.which("hanna-sync")
    if found:
        return shlex.quote(os.path.abspath(found))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m hanna_sync"


def example_config() -> str:
    """config.example.toml as shipped inside the package (a pip install has no checkout to look in)."""
    from importlib.resources import files

    return files("hanna_sync").joinpath("config.example.toml").read_text(encoding="utf-8")


SYSTEM_CONFIG = "/etc/hanna-sync/config.toml"

# The sandboxing both system units share: a pass and the web server need their sockets and state directory only.
_HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
"""

_SYSTEM_SERVICE = """\
# One hanna-sync scan pass, run by hanna-sync.timer every 10 minutes.
# Written by `hanna-sync setup-guide systemd --unit service`; `hanna-sync setup-guide systemd` shows the steps.
[Unit]
Description=hanna-sync scan pass: archive staff mail linked to CRM customers and leads
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
User=hanna-sync
Group=hanna-sync
# The config is named, so a missing one is an error in the journal, not a pass over another database.
# It puts the database and the secrets store in /var/lib/hanna-sync, as for `sudo -u hanna-sync hanna-sync ...`
# (and the key in /etc/hanna-sync when `hanna-sync setup-service` wrote it).
ExecStart={exe} --config {config} run
StateDirectory=hanna-sync
StateDirectoryMode=0700
# The pass stops starting new batches after scan.time_budget_minutes (8); this is only a backstop.
TimeoutStartSec=15min
Nice=5
IOSchedulingClass=best-effort
IOSchedulingPriority=6
UMask=0077

# Hardening: a mail fetcher needs the network, its state directory and nothing else.
""" + _HARDENING

_USER_SERVICE = """\
# hanna-sync for one user without root: `systemctl --user`. Steps: `hanna-sync setup-guide systemd --user`.
[Unit]
Description=hanna-sync scan pass (user unit)

[Service]
Type=oneshot
# Nothing set here on purpose: the pass finds the config and the database exactly as your shell does
# (~/.config/hanna-sync/config.toml; ~/.local/share/hanna-sync/hanna-sync.db unless the config names one).
ExecStart={exe} run
TimeoutStartSec=15min
Nice=5
UMask=0077
NoNewPrivileges=yes
"""

_SYSTEM_WEB = """\
# `hanna-sync serve`: the read-only web view and JSON API on 127.0.0.1:8025, behind a reverse proxy with TLS.
# Written by `hanna-sync setup-guide systemd --unit web`; `hanna-sync setup-guide systemd` shows the steps.
[Unit]
Description=hanna-sync web view and JSON API (read-only, loopback)
After=network.target

[Service]
Type=simple
User=hanna-sync
Group=hanna-sync
ExecStart={exe} --config {config} serve --host 127.0.0.1 --port 8025 --trusted-proxy 127.0.0.1
Restart=on-failure
RestartSec=5s
# Writable, as for the pass: every answer is read through a query_only connection, which still needs the
# database's -wal and -shm files beside it, and the server writes two things: the tokens table at start
# (a migration) and a token's last_used_at (at most once a minute). Nothing else is written.
StateDirectory=hanna-sync
StateDirectoryMode=0700
# The mailbox passwords are the pass's, never the server's (hidden when they exist at start): the key where
# setup-service puts it, and the store and key where older installs have them.
InaccessiblePaths=-/etc/hanna-sync/secrets.key -/var/lib/hanna-sync/secrets.key -/var/lib/hanna-sync/secrets.enc
UMask=0077

# Hardening: a loopback HTTP server needs its socket, the database and nothing else.
# The proxy in front runs on this host; a proxy elsewhere needs --host and IPAddressAllow widened.
IPAddressDeny=any
IPAddressAllow=localhost
""" + _HARDENING + """
[Install]
WantedBy=multi-user.target
"""

_USER_WEB = """\
# `hanna-sync serve` for one user without root: `systemctl --user`. Steps: `hanna-sync setup-guide systemd --user`.
[Unit]
Description=hanna-sync web view and JSON API (user unit, loopback)

[Service]
Type=simple
# The config and the database as your shell finds them, as for the pass (see hanna-sync.service).
ExecStart={exe} serve --host 127.0.0.1 --port 8025
Restart=on-failure
RestartSec=5s
UMask=0077
NoNewPrivileges=yes

[Install]
WantedBy=default.target
"""

_TIMER = """\
# Runs hanna-sync.service every 10 minutes; a pass missed while the machine was off runs at boot.
[Unit]
Description=Run a hanna-sync scan pass every 10 minutes

[Timer]
OnCalendar=*:0/10
Persistent=true
RandomizedDelaySec=45
AccuracySec=15s

[Install]
WantedBy=timers.target
"""

_SYSTEM_STEPS = """\
hanna-sync under systemd (system-wide)
======================================

The units run this hanna-sync: {exe}
Install it where it stays and every user may run it (the Debian package does; or a venv under /opt:
`python3 -m venv /opt/hanna-sync && /opt/hanna-sync/bin/pip install ...`; or pipx for all users:
`sudo PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install ...`), and run these steps with that one,
so the paths below are the installed ones.

One command does steps 1 and 3, and is safe to run again (it never overwrites what exists; it prints what it
did, kept and left):
     sudo {exe} setup-service
then add the mailboxes (step 2) and run it once more: it enables the timer once a mailbox exists.
What it does, by hand:

1. A user to run it and its state directory; the config, with the database in /var/lib/hanna-sync and the
   secrets key in /etc/hanna-sync (apart from the database: a copy of /var/lib/hanna-sync is then no copy
   of the passwords); the key, made once:
     sudo useradd --system --user-group --home-dir /var/lib/hanna-sync --no-create-home \\
         --shell /usr/sbin/nologin hanna-sync
     sudo install -d -o hanna-sync -g hanna-sync -m 0700 /var/lib/hanna-sync
     sudo install -d -o root -g hanna-sync -m 0750 /etc/hanna-sync
     {exe} setup-guide config | sudo tee {config} >/dev/null
     sudo chown root:hanna-sync {config} && sudo chmod 0640 {config}
   in it: database = "/var/lib/hanna-sync/hanna-sync.db" and, under [secrets],
   key_file = "/etc/hanna-sync/secrets.key"; then the key (set -C: never over an existing one):
     sudo sh -c 'umask 077; set -C; head -c 32 /dev/urandom | base64 > /etc/hanna-sync/secrets.key'
     sudo chown hanna-sync:hanna-sync /etc/hanna-sync/secrets.key
   Back the key up, apart from the database's backups: without it the stored passwords cannot be read.

2. The directory and the mailboxes, as the service user: the same config, so the same database as the timer
     sudo -u hanna-sync {exe} import customers - --format csv < customers.csv   (your shell reads the file)
     sudo -u hanna-sync {exe} add-mailbox --user jonas --email jonas@example.com ...

3. The units (the Debian package has them in /usr/lib/systemd/system already), and the timer once a
   mailbox exists (before that every pass fails: no mailbox configured):
     {exe} setup-guide systemd --unit service | sudo tee /etc/systemd/system/hanna-sync.service >/dev/null
     {exe} setup-guide systemd --unit timer | sudo tee /etc/systemd/system/hanna-sync.timer >/dev/null
     {exe} setup-guide systemd --unit web | sudo tee /etc/systemd/system/hanna-sync-web.service >/dev/null
     sudo systemctl daemon-reload && sudo systemctl enable --now hanna-sync.timer

4. Check:
     systemctl list-timers hanna-sync.timer      when the next pass runs, when the last one did
     journalctl -u hanna-sync -p warning         errors and warnings only; one summary line per pass
     sudo -u hanna-sync {exe} status

5. The web view and JSON API (optional; read-only, on 127.0.0.1:8025 for a reverse proxy with TLS; the unit
   is written in step 3, never enabled by setup-service):
     sudo systemctl enable --now hanna-sync-web.service
     sudo -u hanna-sync {exe} token create crm       prints the token once; --admin for the status page
     journalctl -u hanna-sync-web                    the address it serves, refused requests

Without systemd, a line in the hanna-sync user's crontab (`sudo crontab -u hanna-sync -e`); cron's PATH
does not have hanna-sync, so the path is absolute:
     */10 * * * * {exe} --config {config} -q run
"""

_USER_STEPS = """\
hanna-sync under systemd, for one user (no root)
================================================

The units run this hanna-sync: {exe}
(run these steps with the hanna-sync that stays installed, so the path below is the right one).

One command does steps 1 and 3, and is safe to run again (it never overwrites what exists):
     {exe} setup-service --user
then add the mailboxes (step 2) and run it once more: it enables the timer once a mailbox exists.
What it does, by hand:

1. The config (every key optional; the database is ~/.local/share/hanna-sync/hanna-sync.db unless it names
   another; the timer uses the same one), and the database's directory, private:
     mkdir -p ~/.config/hanna-sync && {exe} setup-guide config > ~/.config/hanna-sync/config.toml
     mkdir -p -m 0700 ~/.local/share/hanna-sync
   The first password saved makes the secrets key beside the database (secrets.key): back it up.

2. Mailboxes and the directory, at your shell as usual:
     {exe} import customers customers.csv
     {exe} add-mailbox --email you@example.com ...

3. The units, and the timer once a mailbox exists:
     mkdir -p ~/.config/systemd/user
     {exe} setup-guide systemd --user --unit service > ~/.config/systemd/user/hanna-sync.service
     {exe} setup-guide systemd --user --unit timer > ~/.config/systemd/user/hanna-sync.timer
     {exe} setup-guide systemd --user --unit web > ~/.config/systemd/user/hanna-sync-web.service
     systemctl --user daemon-reload && systemctl --user enable --now hanna-sync.timer
     loginctl enable-linger "$USER"              so it runs while you are logged out

4. Check:
     systemctl --user list-timers hanna-sync.timer
     journalctl --user -u hanna-sync -p warning
     {exe} status

5. The web view and JSON API (optional; read-only, on 127.0.0.1:8025):
     systemctl --user enable --now hanna-sync-web.service
     {exe} token create me                       prints the token once

Without systemd, a line in your crontab (`crontab -e`); cron's PATH does not have hanna-sync:
     */10 * * * * {exe} -q run
"""


# Where the README's install steps put hanna-sync: the units in the checkout's systemd/ name it.
README_EXECUTABLE = "/opt/hanna-sync/bin/hanna-sync"


def systemd_unit(name: str, user: bool, exe: str | None = None) -> str:
    """A unit file ("service", "timer" or "web") that runs the hanna-sync this is (or `exe`), by its
    absolute path."""
    if name == "timer":
        return _TIMER
    system, user_unit = (_SYSTEM_WEB, _USER_WEB) if name == "web" else (_SYSTEM_SERVICE, _USER_SERVICE)
    return (user_unit if user else system).format(exe=exe or executable(), config=SYSTEM_CONFIG)


def systemd_steps(user: bool) -> str:
    """The install steps, with this hanna-sync's path in every command."""
    return (_USER_STEPS if user else _SYSTEM_STEPS).format(exe=executable(), config=SYSTEM_CONFIG)
