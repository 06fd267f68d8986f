"""Office 365 mailboxes (o365-scan on Microsoft Graph, o365-client on IMAP and SMTP with XOAUTH2): made,
signed in, verified and saved as one step, like a password mailbox in mailboxes.py, with a Microsoft
sign-in instead of a password."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hanna_sync.admin.mailboxes import (
    O365_KINDS,
    Saved,
    add_signed_in,
    new_signed_in,
    verify_o365,
)
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError
from hanna_sync.models import Mailbox

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore
    from hanna_sync.remote.oauth import MicrosoftSignIn


def new_mailbox(user: str, email: str, kind: str, settings: dict[str, Any]) -> Mailbox:
    """An Office 365 mailbox: o365-client on Exchange Online's IMAP and SMTP (the outlook preset, which
    --imap-host and the like may override), o365-scan on Microsoft Graph, which needs no server settings."""
    return new_signed_in(user, email, provider="outlook", kind=kind, settings=settings)


def add(
    store: Store, secrets: SecretStore, sign_in: MicrosoftSignIn, mailbox: Mailbox, *, verify_first: bool,
    timeout: float, show: Callable[[str], None], allow_duplicate: bool = False,
) -> Saved:
    """Sign in (delegated), check the token and the folders, then save; nothing is kept when a step fails.

    Without verification a delegated mailbox is saved unsigned: `hanna-sync login ID` signs it in later.
    """
    return add_signed_in(
        store, secrets, mailbox, allow_duplicate=allow_duplicate,
        sign_in=(lambda: sign_in.sign_in(mailbox, show)) if verify_first and not sign_in.app_only else None,
        verify=(lambda: verify_o365(mailbox, sign_in, timeout)) if verify_first else None)


def login(store: Store, sign_in: MicrosoftSignIn, mailbox_id: int, show: Callable[[str], None]) -> Mailbox:
    """Sign a mailbox in again (delegated), or check the app's tokens for it (app-only); either way a token for
    everything the kind uses is got, and the mailbox leaves its back-off and is scanned at the next pass."""
    from hanna_sync.remote.oauth import RESOURCES

    mailbox = store.mailbox(mailbox_id)
    if mailbox.kind not in O365_KINDS:
        raise InputError(f"mailbox {mailbox_id} is an IMAP mailbox: it logs in with its password"
                         f" ('hanna-sync set-password {mailbox_id}')")
    if not sign_in.app_only:
        sign_in.sign_in(mailbox, show)
    for resource in RESOURCES[mailbox.kind]:
        sign_in.token(mailbox, resource)
    with store.transaction():
        store.clear_reauth(mailbox_id)
    return mailbox
