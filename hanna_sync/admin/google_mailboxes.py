"""Google mailboxes (google-scan: the Gmail API; google-client: Gmail's IMAP and SMTP with XOAUTH2): made,
given consent or checked against the service account's delegation, verified and saved as one step, like a
password mailbox in mailboxes.py, with a Google sign-in instead of a password."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hanna_sync.admin.mailboxes import Saved, add_signed_in, new_signed_in, verify_google
from hanna_sync.db.store import Store
from hanna_sync.errors import InputError
from hanna_sync.models import GOOGLE_KINDS, Mailbox

if TYPE_CHECKING:
    from hanna_sync.credentials import SecretStore
    from hanna_sync.remote.google_auth import Consent, GoogleSignIn


def new_mailbox(user: str, email: str, settings: dict[str, Any], kind: str = "google-client") -> Mailbox:
    """A Google mailbox, whatever the address's domain (a Workspace domain is the company's own): google-scan
    reads labels through the Gmail API and takes no server settings; google-client is Gmail's IMAP and SMTP
    (the gmail preset, which --imap-host and the like may override)."""
    return new_signed_in(user, email, provider="gmail", kind=kind, settings=settings)


def add(
    store: Store, secrets: SecretStore, sign_in: GoogleSignIn, mailbox: Mailbox, *, verify_first: bool,
    timeout: float, consent: Consent, allow_duplicate: bool = False,
) -> Saved:
    """Consent (auth = "user"), check the token and the folders (IMAP's, or the Gmail API's labels), then save;
    nothing is kept when a step fails.

    Without verification a user-auth mailbox is saved without consent: `hanna-sync login ID` gets it later.
    """
    sign_in.check_settings()
    return add_signed_in(
        store, secrets, mailbox, allow_duplicate=allow_duplicate,
        sign_in=(lambda: sign_in.sign_in(mailbox, consent)) if verify_first and not sign_in.service_account else None,
        verify=(lambda: verify_google(mailbox, sign_in, timeout)) if verify_first else None)


def login(store: Store, sign_in: GoogleSignIn, mailbox_id: int, consent: Consent) -> Mailbox:
    """Consent again (auth = "user"), or check the delegation (service account); a token is got either way,
    and the mailbox leaves its back-off and is scanned at the next pass."""
    mailbox = store.mailbox(mailbox_id)
    if mailbox.kind not in GOOGLE_KINDS:
        raise InputError(f"mailbox {mailbox_id} is not a Google mailbox: 'hanna-sync login {mailbox_id}' without"
                         " Google options signs it in")
    if not sign_in.service_account:
        sign_in.sign_in(mailbox, consent)
    sign_in.token(mailbox)
    with store.transaction():
        store.clear_reauth(mailbox_id)
    return mailbox
