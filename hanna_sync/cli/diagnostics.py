"""`hanna-sync test`: try a mailbox's servers stage by stage, saved or not, and say why it fails."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

import click

from hanna_sync.cli.google import consent_from_options, google_mailbox_from_options
from hanna_sync.cli.mailboxes import (
    consent_options,
    mailbox_from_options,
    mailbox_settings_options,
    o365_mailbox_from_options,
    provider_option,
    settings_from,
    show_sign_in,
    without_options,
)
from hanna_sync.cli.options import json_option, read_password
from hanna_sync.cli.render import console, console_err, emit_json, stage_line, stage_table
from hanna_sync.errors import AuthError, ExitCode, InputError
from hanna_sync.models import GOOGLE_KINDS

if TYPE_CHECKING:
    from hanna_sync.cli import App
    from hanna_sync.models import Mailbox
    from hanna_sync.remote.google_auth import GoogleSignIn
    from hanna_sync.remote.oauth import MicrosoftSignIn


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


@click.command("test")
@click.argument("mailbox_id", metavar="[MAILBOX]", type=int, required=False)
@click.option("--email", help="Try a mailbox before saving it: its address, with the options add-mailbox takes.")
@provider_option
@click.option("--kind", type=click.Choice(["imap", "o365-scan", "o365-client", "google-scan", "google-client"]),
              help="With --email: the kind of mailbox to try (default imap); Office 365 and Google kinds sign in"
                   " first.")
@without_options("no_verify", "main", "scan_active", "sync_customers", "sync_leads")
@mailbox_settings_options
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Give up on a silent server after this long (default: network.timeout).")
@click.option("--insecure", is_flag=True,
              help="Go on past an untrusted certificate, for this test only; the tls stage still fails.")
@click.option("--send-to", metavar="ADDRESS", help="Also send a real test message to ADDRESS (never done otherwise).")
@click.option("--trace", is_flag=True, help="Show the protocol exchange on stderr, passwords and tokens masked.")
@consent_options
@json_option
@click.pass_obj
def test_command(app: App, *, mailbox_id: int | None, email: str | None, provider: str | None, kind: str | None,
                 password_stdin: bool, timeout: float | None, insecure: bool, send_to: str | None,
                 trace: bool, paste: bool, port: int | None, as_json: bool, **options: Any) -> None:
    """Test a mailbox's IMAP and SMTP servers stage by stage: why it fails, and what to do.

    MAILBOX is a saved mailbox's ID: its stored password is used (--password-stdin tries another),
    and settings given here override its own for this test only. Without MAILBOX, give --email and
    the options add-mailbox takes, to try a mailbox before saving it. Nothing is saved either way.

    Stages, in order; a protocol stops at its first failure. IMAP: charset, dns, tcp, tls, greeting,
    capabilities, auth, folders, and folder for each one (opened read-only with EXAMINE). SMTP:
    charset, dns, tcp, tls, greeting, ehlo, auth, send (only with --send-to). With starttls the tls
    stage comes after the greeting. SMTP is "not configured" when the mailbox has none (--no-smtp).

    Office 365 mailboxes start each protocol with token (got as a scan gets it: from the token cache,
    renewed, or app-only) and claims (its audience, permissions and user, decoded here and compared
    with what the mailbox needs); then o365-client goes on with IMAP and SMTP using XOAUTH2, and
    o365-scan with Graph's folders and folder stages. token and claims failures exit 16. To try one
    before saving it, give --kind o365-scan or o365-client with --email: with delegated sign-in it
    shows a code to sign in with first, and keeps the tokens in memory only.

    Google mailboxes start each protocol with token (from the service account's domain-wide
    delegation, or from the kept consent, renewed when due); then google-client goes on with IMAP and
    SMTP using XOAUTH2, and google-scan with the Gmail API's labels (the chosen ones must exist). Google's
    refusals are explained: delegation missing (unauthorized_client, with the client id and scope to
    add), consent revoked or expired (invalid_grant: 'hanna-sync login ID'), IMAP off for the domain or
    the account, a key file readable by others (exit 2). Tried before saving (--kind google-scan or
    google-client with --email) with auth = "user", the consent comes first (--paste and --port as for
    login).

    \b
    Exit codes, by the first failed stage (IMAP before SMTP):
      0 all passed    10 dns, tcp    12 tls    14 greeting, capabilities, ehlo
      16 auth, token    18 folders, labels    20 send    22 charset    2 usage error    3 no such MAILBOX
    Examples:
      hanna-sync test 3
      hanna-sync test 3 --imap-security starttls --imap-port 143 --trace
      echo "$PASSWORD" | hanna-sync test --email ona@imone.lt --provider serveriai \\
          --imap-host imone.serveriai.lt --password-stdin --json
      hanna-sync test 3 --send-to me@example.com      # also sends a real test message
      hanna-sync test --kind o365-client --email jonas@imone.lt   # Office 365, not saved yet
      hanna-sync test --kind google-client --email ona@imone.lt   # Google, not saved yet
    """
    from hanna_sync import diagnose
    from hanna_sync.mail.addresses import normalise_email

    if send_to and normalise_email(send_to) is None:
        raise InputError(f"--send-to '{send_to}' is not an email address")
    mailbox, password, sign_in = _mailbox_to_test(app, mailbox_id=mailbox_id, email=email, provider=provider, kind=kind,
                                                  password_stdin=password_stdin, options=options)
    if (paste or port) and not (mailbox_id is None and mailbox.kind in GOOGLE_KINDS):
        raise InputError("--paste and --port are for trying a Google mailbox before it is saved")
    if password == "":
        raise InputError("the password is empty")
    if send_to and mailbox.kind in ("o365-scan", "google-scan"):
        raise InputError(f"--send-to needs SMTP: an {mailbox.kind} mailbox is only read, through"
                         f" {'Microsoft Graph' if mailbox.kind == 'o365-scan' else 'the Gmail API'}")
    if send_to and not mailbox.smtp_host:
        raise InputError("--send-to needs an SMTP server: give --smtp-host")
    if mailbox_id is None and sign_in is not None and mailbox.kind in GOOGLE_KINDS:
        google = cast("GoogleSignIn", sign_in)
        try:
            if not google.service_account:  # a token reads the mailbox of whoever consents
                google.sign_in(mailbox, consent_from_options(paste=paste, port=port))
        except AuthError as exc:
            exc.exit_code = ExitCode.AUTH  # test's code for a refused sign-in, as for a failed token stage
            raise
    elif mailbox_id is None and sign_in is not None and not cast("MicrosoftSignIn", sign_in).app_only:
        try:
            cast("MicrosoftSignIn", sign_in).sign_in(mailbox, show_sign_in)  # a token reads the signer's mailbox
        except AuthError as exc:
            exc.exit_code = ExitCode.AUTH  # test's code for a refused sign-in, as for a failed token stage
            raise

    terminal = stdout_is_terminal() and not as_json
    # On a terminal a spinner shows progress while a silent server is waited for, and the table comes
    # at the end; elsewhere each stage is a line as soon as it is done.
    spinner = console_err().status("Testing...") if terminal and not trace else None

    def show(stage: diagnose.Stage) -> None:
        if spinner is not None:
            spinner.update(f"Testing {mailbox.email}: {stage.protocol.upper()} {stage.stage}"
                           f" {'ok' if stage.ok else 'FAILED'}, going on...")
        elif not terminal and not as_json:
            click.echo(stage_line(stage))

    settings = diagnose.Options(timeout=timeout or app.timeout, insecure=insecure, send_to=send_to,
                                trace=(lambda line: click.echo(line, err=True)) if trace else None, on_stage=show)
    with spinner or nullcontext():
        if sign_in is not None and mailbox.kind in GOOGLE_KINDS:
            report = diagnose.check_google(mailbox, cast("GoogleSignIn", sign_in), settings)
        elif sign_in is not None:
            report = diagnose.check_o365(mailbox, cast("MicrosoftSignIn", sign_in), settings)
        else:
            assert password is not None  # _mailbox_to_test gives an IMAP mailbox a password or raises
            report = diagnose.check(mailbox, password, settings)
    if as_json:
        emit_json(report.as_dict())
    elif terminal:
        console().print(stage_table(report))
        click.echo(report.summary())
    else:
        click.echo(report.summary())
    if report.exit_code:
        sys.exit(report.exit_code)


def _mailbox_to_test(app: App, *, mailbox_id: int | None, email: str | None, provider: str | None,
                     kind: str | None, password_stdin: bool,
                     options: dict[str, Any]) -> tuple[Mailbox, str | None, MicrosoftSignIn | GoogleSignIn | None]:
    """The mailbox to try, a saved one or one described by the options, with its password, or the sign-in
    its tokens come from (Office 365, Google)."""
    from hanna_sync.admin import mailboxes

    sign_in: MicrosoftSignIn | GoogleSignIn | None = None
    password: str | None
    if mailbox_id is None and kind in GOOGLE_KINDS:
        mailbox = google_mailbox_from_options(user=None, email=email, provider=provider, kind=kind,
                                              password_stdin=password_stdin, settings=settings_from(options))
        sign_in = app.google.unsaved()  # its consent is kept in memory only: testing saves nothing
        password = None
    elif mailbox_id is None and kind not in (None, "imap"):
        mailbox = o365_mailbox_from_options(user=None, email=email, provider=provider, kind=kind,
                                            password_stdin=password_stdin, options=options)
        sign_in = app.sign_in.unsaved()  # its tokens are kept in memory only: testing saves nothing
        password = None
    elif mailbox_id is None:
        mailbox = mailbox_from_options(None, email, provider, options)
        password = read_password(password_stdin, f"Password for {mailbox.login_name}")
    else:
        if email or provider:
            raise InputError("--email and --provider are for a mailbox not saved yet: leave out MAILBOX to try one")
        if kind:
            raise InputError(f"--kind is for a mailbox not saved yet: mailbox {mailbox_id} keeps its own kind;"
                             " leave out MAILBOX to try another")
        saved = app.store.mailbox(mailbox_id)
        mailbox = mailboxes.changed_mailbox(saved, settings_from(options))
        if saved.kind != "imap":
            sign_in = app.google if saved.kind in GOOGLE_KINDS else app.sign_in
            if password_stdin:
                raise InputError(f"mailbox {mailbox_id} is a {saved.kind} mailbox: it has no password, its tokens"
                                 " come from its sign-in")
            password = None
        else:
            password = read_password(True) if password_stdin else app.secrets.get(saved.secret_ref)
            if password is None:
                raise InputError(f"mailbox {mailbox_id} has no password stored; run 'hanna-sync set-password"
                                 f" {mailbox_id}', or give one with --password-stdin")
    return mailbox, password, sign_in


COMMANDS = (test_command,)
