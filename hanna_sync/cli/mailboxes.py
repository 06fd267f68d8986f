"""Mailbox commands: add, edit, set-password, remove, list, folders, and login for Office 365 and Google.

The mailbox options are declared once here, as `test` (in `diagnostics`) takes the same ones to try a
mailbox before it is saved.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from hanna_sync.cli.options import check_user, interactive, json_option, read_password
from hanna_sync.cli.render import emit_json, table
from hanna_sync.errors import InputError
from hanna_sync.models import GOOGLE_KINDS

if TYPE_CHECKING:
    from hanna_sync.admin.mailboxes import Saved
    from hanna_sync.cli import App
    from hanna_sync.models import Mailbox
    from hanna_sync.remote.google_auth import Consent


def mailbox_settings_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The settings add-mailbox, edit-mailbox and test share."""
    security = click.Choice(["ssl", "starttls", "none"])
    options = [
        click.option("--username", help="Login name, only when it differs from the email."),
        click.option("--imap-host", help="IMAP server name."),
        click.option("--imap-port", type=click.IntRange(1, 65535), help="IMAP port (993 with ssl, 143 otherwise)."),
        click.option("--imap-security", type=security, help="ssl (implicit TLS), starttls or none."),
        click.option("--imap-charset",
                     help="Charset for letters that declare none or a wrong one (e.g. windows-1257)."),
        click.option("--smtp-host", help="SMTP server name."),
        click.option("--smtp-port", type=click.IntRange(1, 65535),
                     help="SMTP port (465 with ssl, 587 starttls, 25 none)."),
        click.option("--smtp-security", type=security, help="ssl, starttls or none."),
        click.option("--smtp-charset", help="Charset used when sending."),
        click.option("--no-smtp", is_flag=True, default=None,
                     help="No SMTP server: the mailbox is only read"
                          " (edit-mailbox: drop it; --smtp-host adds one again)."),
        click.option("--folder", "folders", multiple=True, metavar="NAME",
                     help="Folder to scan; repeat for several (default: INBOX and the Sent folder)."),
        click.option("--scan-active/--no-scan-active", default=None, help="Scan this mailbox every pass (default on)."),
        click.option("--sync-customers/--no-sync-customers", default=None,
                     help="Link letters to Customers (default on)."),
        click.option("--sync-leads/--no-sync-leads", default=None, help="Link letters to Leads (default on)."),
        click.option("--main/--no-main", default=None, help="The user's main mailbox (at most one per user)."),
        click.option("--ca-file", type=click.Path(dir_okay=False),
                     help="Trust this CA (PEM) for the mailbox's servers."),
        click.option("--allow-plaintext/--no-allow-plaintext", default=None,
                     help="Let security none send the password unencrypted"
                          " (refused otherwise; trusted networks only)."),
        click.option("--no-verify", is_flag=True, help="Save without logging in first."),
        click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def provider_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--provider, shared by add-mailbox and test (a mailbox can be tried before it is saved)."""
    return click.option(
        "--provider", type=click.Choice(["gmail", "yahoo", "outlook", "serveriai", "custom"]),
        help="Preset of the IMAP and SMTP servers, ports and security (the options below override it);"
             " guessed from the email's domain when not given.",
    )(f)


def without_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Drop shared options that mean nothing to one command, so that its --help lists only what works
    there and giving one is "No such option" rather than silently ignored."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        # click's option decorators keep their params on the function, an attribute no stub declares.
        f.__click_params__ = [p for p in f.__click_params__ if p.name not in names]  # type: ignore[attr-defined]
        return f

    return decorate


def settings_from(options: dict[str, Any]) -> dict[str, Any]:
    from hanna_sync.admin.mailboxes import SETTINGS

    return {key: options[key] for key in SETTINGS if key in options}


def mailbox_from_options(user: str | None, email: str | None, provider: str | None,
                         options: dict[str, Any]) -> Mailbox:
    """A new, unsaved mailbox from add-mailbox's options, asking for the email and server on a terminal."""
    from hanna_sync.admin import mailboxes

    if not email:
        if not interactive():
            raise InputError("--email is required")
        email = click.prompt("Email")
    preset = mailboxes.provider_for(email, provider)
    if preset.host_required and not options["imap_host"]:
        if not interactive():
            raise InputError(f"the {preset.label} preset needs the server name: give --imap-host")
        options["imap_host"] = click.prompt("IMAP server")
    return mailboxes.new_mailbox(user or getpass.getuser(), email, provider, settings_from(options))


def server_of(m: Mailbox) -> str:
    """Where a mailbox is read: its IMAP server (with XOAUTH2 for o365-client, google-client), Microsoft Graph or
    the Gmail API."""
    if m.kind == "o365-scan":
        return "Microsoft Graph"
    if m.kind == "google-scan":
        return "Gmail API"
    xoauth2 = m.kind in ("o365-client", "google-client")
    return f"{m.imap_host}:{m.imap_port} {m.imap_security}" + (" XOAUTH2" if xoauth2 else "")


def consent_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--paste and --port: how a Google consent in a browser comes back (add-mailbox, login)."""
    f = click.option("--port", type=click.IntRange(1, 65535),
                     help="Google: the loopback listener's port, for an SSH port-forward (default: any free one).")(f)
    return click.option("--paste", is_flag=True,
                        help="Google, on a server without a browser: paste back the address the browser was sent"
                             " to after allowing access.")(f)


def allow_duplicate_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--allow-duplicate, for add-mailbox and edit-mailbox."""
    return click.option(
        "--allow-duplicate", is_flag=True,
        help="Keep a second mailbox for an account another one already reads (its letters are scanned twice).",
    )(f)


def print_mailbox_saved(verb: str, saved: Saved, as_json: bool) -> None:
    for note in saved.notes:  # on stderr, so --json output stays one object
        click.echo(f"Note: {note}", err=True)
    if as_json:
        emit_json(saved.mailbox.public())
        return
    m = saved.mailbox
    click.echo(f"{verb} mailbox {m.id}: {m.email} for {m.user} ({server_of(m)}), folders: {', '.join(m.folders)}")
    if saved.previous_main:
        click.echo(f"Mailbox {saved.previous_main} is no longer {m.user}'s main mailbox.")


@click.command("add-mailbox")
@click.option("--user", help="Staff member's login the mailbox belongs to (default: your login name).")
@click.option("--email", help="The mailbox's email address (asked for on a terminal).")
@provider_option
@click.option("--kind", type=click.Choice(["imap", "o365-scan", "o365-client", "google-scan", "google-client"]),
              default="imap", show_default=True,
              help="imap (a password), o365-scan (Microsoft Graph), google-scan (the Gmail API), o365-client or"
                   " google-client (IMAP and SMTP with XOAUTH2); see 'hanna-sync setup-guide o365' and"
                   " 'setup-guide google'.")
@mailbox_settings_options
@consent_options
@allow_duplicate_option
@json_option
@click.pass_obj
def add_mailbox(app: App, *, user: str | None, email: str | None, provider: str | None, kind: str,
                no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool, paste: bool,
                port: int | None, **options: Any) -> None:
    """Connect a mailbox for a staff member.

    The connection is tested (login, and the folders exist) before anything is saved. The password
    is asked for with a hidden prompt, or read from stdin with --password-stdin; it goes to the
    secrets store, never to the config or the database.

    \b
    Examples:
      hanna-sync add-mailbox --user jonas --email jonas@gmail.com          # Gmail preset
      echo "$APP_PASSWORD" | hanna-sync add-mailbox --user ona \\
          --email ona@imone.lt --provider serveriai --imap-host imone.serveriai.lt --password-stdin
      hanna-sync add-mailbox --email me@example.com --imap-host mail.example.com \\
          --imap-security starttls --folder INBOX --folder Sent --folder "Išsiųsti"
      hanna-sync add-mailbox --kind o365-scan --user jonas --email jonas@imone.lt   # signs in with a code
      hanna-sync add-mailbox --kind google-scan --user ona --email ona@imone.lt
      hanna-sync add-mailbox --kind google-client --user ona --email ona@imone.lt --paste

    A google-scan mailbox reads Gmail's labels through the Gmail API (read-only; INBOX and SENT unless
    --folder names labels), a google-client mailbox Gmail over IMAP with XOAUTH2 ([google] in the
    config): with a service account nobody signs in; with auth = "user" its person allows access in a
    browser first (--paste and --port as for 'hanna-sync login').

    Without --folder, INBOX and the Sent folder are scanned (flagged \\Sent, else the one with a usual
    Sent name); a note says which, or that none was found.
    """
    from hanna_sync.admin import mailboxes
    from hanna_sync.cli.google import consent_from_options

    if kind not in GOOGLE_KINDS and (paste or port):
        raise InputError("--paste and --port are for --kind google-scan and google-client (a consent in a browser)")
    if kind in GOOGLE_KINDS:
        add_google_mailbox(app, user=user, email=email, provider=provider, kind=kind, no_verify=no_verify,
                           password_stdin=password_stdin, allow_duplicate=allow_duplicate, as_json=as_json,
                           consent=consent_from_options(paste=paste, port=port), options=options)
        return
    if kind != "imap":
        add_o365_mailbox(app, user=user, email=email, provider=provider, kind=kind, no_verify=no_verify,
                         password_stdin=password_stdin, allow_duplicate=allow_duplicate, as_json=as_json,
                         options=options)
        return
    mailbox = mailbox_from_options(user, email, provider, options)
    mailbox.kind = kind
    app.store.check_unique(mailbox, allow_duplicate)
    password = read_password(password_stdin, f"Password for {mailbox.login_name}")
    saved = mailboxes.add(app.store, app.secrets, mailbox, password, verify_first=not no_verify, timeout=app.timeout,
                          allow_duplicate=allow_duplicate)
    print_mailbox_saved("Added", saved, as_json)


@click.command("edit-mailbox")
@click.argument("mailbox_id", metavar="ID", type=int)
@mailbox_settings_options
@allow_duplicate_option
@json_option
@click.pass_obj
def edit_mailbox(app: App, *, mailbox_id: int, no_verify: bool, password_stdin: bool, allow_duplicate: bool,
                 as_json: bool, **options: Any) -> None:
    """Change a mailbox's settings; only the options given change.

    --folder replaces the list of folders. When a connection setting changes, the mailbox is
    verified again with its stored password (skip with --no-verify). To change the password use
    set-password.

    \b
    Example:
      hanna-sync edit-mailbox 3 --folder INBOX --folder "Išsiųsti" --no-sync-leads
    """
    from hanna_sync.admin import mailboxes

    if password_stdin:
        raise InputError("edit-mailbox does not change the password: use 'hanna-sync set-password ID'")
    google = app.google if app.store.mailbox(mailbox_id).kind in GOOGLE_KINDS else None
    saved = mailboxes.edit(app.store, app.secrets, mailbox_id, settings_from(options), verify_first=not no_verify,
                           timeout=app.timeout, sign_in=app.sign_in, google=google, allow_duplicate=allow_duplicate)
    print_mailbox_saved("Updated", saved, as_json)


@click.command("set-password")
@click.argument("mailbox_id", metavar="ID", type=int)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--no-verify", is_flag=True, help="Store it without trying to log in.")
@click.pass_obj
def set_password(app: App, mailbox_id: int, password_stdin: bool, no_verify: bool) -> None:
    """Replace a mailbox's password (after checking that it logs in).

    \b
    Example:
      hanna-sync set-password 3                 # asks with a hidden prompt
      pass show mail/ona | hanna-sync set-password 3 --password-stdin
    """
    from hanna_sync.admin import mailboxes

    mailbox = app.store.mailbox(mailbox_id)
    mailboxes.check_has_password(mailbox)
    password = read_password(password_stdin, f"New password for {mailbox.login_name}")
    mailboxes.set_password(app.store, app.secrets, mailbox_id, password, verify_first=not no_verify,
                           timeout=app.timeout)
    click.echo(f"Password of mailbox {mailbox_id} ({mailbox.email}) updated.")


@click.command("remove-mailbox")
@click.argument("mailbox_id", metavar="ID", type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove_mailbox(app: App, mailbox_id: int, yes: bool) -> None:
    """Remove a mailbox and its stored password. Letters archived from it stay in the archive."""
    from hanna_sync.admin import mailboxes

    mailbox = app.store.mailbox(mailbox_id)
    if not yes:
        if not interactive():
            raise InputError("give --yes to remove a mailbox without a terminal to confirm on")
        click.confirm(f"Remove mailbox {mailbox_id} ({mailbox.email} of {mailbox.user})?", abort=True)
    mailboxes.remove(app.store, app.secrets, mailbox_id)
    click.echo(f"Removed mailbox {mailbox_id} ({mailbox.email}); its archived letters stay.")


@click.command("list-mailboxes")
@click.option("--user", help="Only this staff member's mailboxes.")
@json_option
@click.pass_obj
def list_mailboxes(app: App, user: str | None, as_json: bool) -> None:
    """List mailboxes with their settings and last outcome (never their passwords)."""
    check_user(app, user)
    boxes = app.store.mailboxes(user)
    if as_json:
        emit_json([m.public() for m in boxes])
        return
    if not boxes:
        click.echo("No mailboxes yet: add one with 'hanna-sync add-mailbox'.")
        return

    def flags(m: Mailbox) -> str:
        marks = [("main", m.main), ("scan", m.scan_active), ("customers", m.sync_customers), ("leads", m.sync_leads)]
        return " ".join(name for name, on in marks if on) or "-"

    table(None, ["ID", "User", "Email", "IMAP", "Folders", "Flags", "Last error"], [
        [m.id, m.user, m.email, server_of(m), ", ".join(m.folders), flags(m),
         m.last_error]
        for m in boxes
    ], below=("Last error",))


@click.command("folders")
@click.argument("mailbox_id", metavar="ID", type=int)
@json_option
@click.pass_obj
def folders(app: App, mailbox_id: int, as_json: bool) -> None:
    """List the server's folders with message counts; * marks those scanned.

    Use the names shown here with --folder (non-ASCII names such as "Išsiųsti" as they are shown).
    """
    from hanna_sync.admin import mailboxes

    google = app.google if app.store.mailbox(mailbox_id).kind in GOOGLE_KINDS else None
    rows = mailboxes.folders(app.store, app.secrets, mailbox_id, timeout=app.timeout, sign_in=app.sign_in,
                             google=google)
    if as_json:
        emit_json([{"id": r.name, **asdict(r)} for r in rows])
        return
    table(None, ["", "Folder", "Messages", "Special use"],
          [["*" if r.selected else "", r.name, r.messages, r.special] for r in rows])



# -- Office 365 -------------------------------------------------------------------------------------

def show_sign_in(message: str) -> None:
    """MSAL's device-code instructions (the URL and the code), on stderr so that --json output stays clean."""
    click.echo(message, err=True)
    click.echo("Waiting for the sign-in...", err=True)


def o365_mailbox_from_options(*, user: str | None, email: str | None, provider: str | None, kind: str,
                              password_stdin: bool, options: dict[str, Any]) -> Mailbox:
    """A new, unsaved Office 365 mailbox from add-mailbox's (or test's) options: no password, no provider."""

    if password_stdin:
        raise InputError(f"a {kind} mailbox has no password: it signs in with Microsoft")
    if provider:
        raise InputError(f"--provider is for IMAP mailboxes: a {kind} mailbox is on Exchange Online")
    if not email:
        if not interactive():
            raise InputError("--email is required")
        email = click.prompt("Email")
    from hanna_sync.admin import o365_mailboxes
    return o365_mailboxes.new_mailbox(user or getpass.getuser(), email, kind, settings_from(options))


def add_o365_mailbox(app: App, *, user: str | None, email: str | None, provider: str | None, kind: str,
                     no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool,
                     options: dict[str, Any]) -> None:
    """add-mailbox for the Office 365 kinds: no password; the device-code sign-in runs unless --no-verify."""

    mailbox = o365_mailbox_from_options(user=user, email=email, provider=provider, kind=kind,
                                        password_stdin=password_stdin, options=options)
    from hanna_sync.admin import o365_mailboxes
    saved = o365_mailboxes.add(app.store, app.secrets, app.sign_in, mailbox, verify_first=not no_verify,
                               timeout=app.timeout, show=show_sign_in, allow_duplicate=allow_duplicate)
    print_mailbox_saved("Added", saved, as_json)
    if no_verify and not app.sign_in.app_only:
        click.echo(f"Not signed in yet: run 'hanna-sync login {saved.mailbox.id}'.", err=True)


def add_google_mailbox(app: App, *, user: str | None, email: str | None, provider: str | None, kind: str,
                       no_verify: bool, password_stdin: bool, allow_duplicate: bool, as_json: bool, consent: Consent,
                       options: dict[str, Any]) -> None:
    """add-mailbox --kind google-scan or google-client: no password; the consent (auth = "user") runs unless
    --no-verify."""
    from hanna_sync.cli.google import google_mailbox_from_options

    mailbox = google_mailbox_from_options(user=user, email=email, provider=provider, kind=kind,
                                          password_stdin=password_stdin, settings=settings_from(options))
    from hanna_sync.admin import google_mailboxes
    saved = google_mailboxes.add(app.store, app.secrets, app.google, mailbox, verify_first=not no_verify,
                                 timeout=app.timeout, consent=consent, allow_duplicate=allow_duplicate)
    print_mailbox_saved("Added", saved, as_json)
    if no_verify and not app.google.service_account:
        click.echo(f"Not signed in yet: run 'hanna-sync login {saved.mailbox.id}'.", err=True)


@click.command("login")
@click.argument("mailbox_id", metavar="[MAILBOX]", type=int, required=False)
@click.option("--client-secret", is_flag=True,
              help='Store the app registration\'s client secret (auth = "app"), once it has got a token.')
@click.option("--google-client-secret", is_flag=True,
              help='Store the Google OAuth client\'s secret ([google] auth = "user"), once Google accepts it.')
@click.option("--secret-stdin", is_flag=True,
              help="With --client-secret or --google-client-secret: read it from the first line of stdin.")
@consent_options
@click.pass_obj
def login(app: App, mailbox_id: int | None, *, client_secret: bool, google_client_secret: bool, secret_stdin: bool,
          paste: bool, port: int | None) -> None:
    """Sign an Office 365 or Google mailbox in again, or store a client secret.

    With [o365] auth = "delegated" (the default) MAILBOX signs in with a device code: open the URL
    printed, enter the code and sign in as the mailbox's own user (MFA as usual). The tokens are kept,
    encrypted, in the secrets store and renewed silently by every pass; run this again when status says
    "needs re-authorisation". With auth = "app" it checks that the app gets the mailbox's tokens. Either
    way the mailbox leaves its back-off, and the next pass scans it.

    A Google mailbox (google-scan, google-client) with [google] auth = "user" prints a consent URL:
    open it, sign in as the mailbox's own account and allow access; the browser is then sent to a
    listener on 127.0.0.1 on this machine. On a server without a browser give --paste and paste back
    the address the browser was sent to (the page does not load there; its address bar holds the
    code), or forward the listener's port (ssh -L 8765:127.0.0.1:8765 SERVER, then --port 8765). The
    refresh token is kept, encrypted, in the secrets store. With auth = "service-account" it checks
    the domain-wide delegation instead.

    \b
    Examples:
      hanna-sync login 3
      hanna-sync login 4 --paste                          # Google, on a headless server
      hanna-sync login --client-secret                   # asks with a hidden prompt
      printf '%s\\n' "$SECRET" | hanna-sync login --client-secret --secret-stdin
      printf '%s\\n' "$SECRET" | hanna-sync login --google-client-secret --secret-stdin
    """

    if (client_secret or google_client_secret) == (mailbox_id is not None) or (client_secret and google_client_secret):
        raise InputError("give a MAILBOX to sign in, or --client-secret (Office 365) or --google-client-secret"
                         " to store a client secret")
    if secret_stdin and not (client_secret or google_client_secret):
        raise InputError("--secret-stdin goes with --client-secret or --google-client-secret")
    if (paste or port) and mailbox_id is None:
        raise InputError("--paste and --port go with a Google MAILBOX (google-scan, google-client)")
    if google_client_secret:
        app.google.store_client_secret(_client_secret(secret_stdin, "Client secret (GOCSPX-...)"))
        click.echo("Google client secret checked (Google accepts it) and stored in the secrets store.")
        return
    if client_secret:
        app.sign_in.store_client_secret(_client_secret(secret_stdin, "Client secret (its Value)"))
        click.echo("Client secret checked (it gets a token) and stored in the secrets store.")
        return
    assert mailbox_id is not None
    if app.store.mailbox(mailbox_id).kind in GOOGLE_KINDS:
        from hanna_sync.cli.google import consent_from_options

        consent = consent_from_options(paste=paste, port=port)
        from hanna_sync.admin import google_mailboxes
        mailbox = google_mailboxes.login(app.store, app.google, mailbox_id, consent)
        how = ": the service account gets its tokens" if app.google.service_account else " is signed in"
        click.echo(f"Mailbox {mailbox.id} ({mailbox.email}){how}; the next pass scans it.")
        return
    if paste or port:
        raise InputError(f"--paste and --port are for Google mailboxes; mailbox {mailbox_id} is not one")
    from hanna_sync.admin import o365_mailboxes
    mailbox = o365_mailboxes.login(app.store, app.sign_in, mailbox_id, show_sign_in)
    how = ": the app gets its tokens (app-only)" if app.sign_in.app_only else " is signed in"
    click.echo(f"Mailbox {mailbox.id} ({mailbox.email}){how}; the next pass scans it.")


def _client_secret(from_stdin: bool, prompt: str) -> str:
    """A client secret from stdin's first line, or a hidden prompt on a terminal; never from argv."""
    if from_stdin:
        return read_password(True)
    if interactive():
        return str(click.prompt(prompt, hide_input=True))
    raise InputError("no client secret given: pipe it with --secret-stdin, or run on a terminal to be asked")


COMMANDS = (add_mailbox, edit_mailbox, set_password, remove_mailbox, list_mailboxes, folders, login)
