"""Built-in sample data: a small CRM directory and the letters of one staff mailbox.

Used by `hanna-sync demo` (the README's first command) and by the tests, so what a new sysadmin sees
in the demo is exactly what the test suite checks.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from hanna_sync.models import Contact, Entity

STAFF = "jonas@imone.lt"
OWN_DOMAINS = ("imone.lt",)

CUSTOMERS = [
    Entity("C-1001", "UAB Ąžuolas", "info@azuolas.lt", "azuolas.lt",
           [Contact("ruta@azuolas.lt", "Rūta Petraitienė"), Contact("mindaugas.k@gmail.com", "Mindaugas K.")]),
    Entity("C-1002", "Baltic Freight Ltd", "office@balticfreight.co.uk", None, [Contact("anna@partners.eu", "Anna")]),
    Entity("C-1003", "Šviesa, MB", "sviesa@inbox.lt", None, []),
]
# Imported by the demo after its first pass: the shop's "Akcija!" letter, skipped then, is fetched by
# the next pass (a customer added today finds last month's letters).
LATE_CUSTOMER = Entity("C-1004", "Parduotuvė, UAB", None, "shop.example", [])
LEADS = [
    Entity("L-2001", "Naujas Klientas", "pirkimai@naujas.lt", None, [Contact("vadovas@naujas.lt", "Vadovas")]),
]


def letter(
    sender: str,
    to: str | list[str],
    subject: str,
    body: str,
    *,
    cc: list[str] | None = None,
    message_id: str | None = None,
    date: datetime | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    html: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    """A letter as a mail client would send it (UTF-8, optional HTML part and attachment)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc))
    if message_id is not None:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    chain = references or ([in_reply_to] if in_reply_to else [])  # the whole chain, or just the parent
    if chain:
        msg["References"] = " ".join(chain)
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    # Boundaries derived from the content: the same letter built twice is the same bytes.
    seed = hashlib.sha256(f"{sender}{to}{subject}{message_id}{date}".encode()).hexdigest()[:24]
    for n, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"=_{seed}_{n}")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # as on the wire


def mailbox_letters() -> list[tuple[str, bytes, str]]:
    """(folder, raw letter, maildir flags) of the sample staff mailbox: some concern the directory, some not."""
    day = datetime(2025, 3, 3, 8, 30, tzinfo=timezone.utc)
    out = [
        ("INBOX", letter("Rūta Petraitienė <ruta@azuolas.lt>", STAFF, "Užsakymas Nr. 17: ąžuolinės lentos",
                         "Laba diena,\n\nprašome pateikti pasiūlymą 40 m³ lentų.\n\nRūta",
                         message_id="<order-17@azuolas.lt>", date=day), "S"),
        ("INBOX", letter("Info <info@azuolas.lt>", STAFF, "Sąskaita faktūra 2025-03",
                         "Sąskaita prisegta.", message_id="<invoice-3@azuolas.lt>", date=day + timedelta(days=1),
                         attachment=("sąskaita.pdf", b"%PDF-1.4 sample")), ""),
        ("INBOX", letter("Petras <petras@sandelis.azuolas.lt>", STAFF, "Krovinys išvyko",
                         "Krovinys išvyko šiandien.", message_id="<cargo@azuolas.lt>",
                         date=day + timedelta(days=2)), "F"),
        ("INBOX", letter("Mindaugas <mindaugas.k@gmail.com>", STAFF, "Re: kaina",
                         "Tinka, tvirtinu.", message_id="<ok@gmail.com>", date=day + timedelta(days=3)), "S"),
        ("INBOX", letter("Anna <anna@partners.eu>", [STAFF, "ops@balticfreight.co.uk"], "Freight schedule",
                         "Schedule attached.", message_id="<sched@partners.eu>", date=day + timedelta(days=4),
                         html="<p>Schedule <b>attached</b>.</p>"), ""),
        ("INBOX", letter("Vadovas <vadovas@naujas.lt>", STAFF, "Domina jūsų paslaugos",
                         "Norėtume susitikti.", message_id="<meet@naujas.lt>", date=day + timedelta(days=5)), "S"),
        ("INBOX", letter("Newsletter <news@shop.example>", STAFF, "Akcija!", "Nuolaidos visiems.",
                         message_id="<promo@shop.example>", date=day + timedelta(days=5)), ""),
        ("INBOX", letter("Draugas <draugas@gmail.com>", STAFF, "Šeštadienį?", "Einam į krepšinį?",
                         message_id="<private@gmail.com>", date=day + timedelta(days=6)), "S"),
        ("INBOX", letter("Kolegė <ona@imone.lt>", STAFF, "Pietūs", "12 val.?",
                         message_id="<lunch@imone.lt>", date=day + timedelta(days=6)), ""),
        ("Išsiųsti", letter(STAFF, "Rūta <ruta@azuolas.lt>", "Re: Užsakymas Nr. 17: ąžuolinės lentos",
                            "Pasiūlymą rasite priede.", message_id="<reply-17@imone.lt>",
                            date=day + timedelta(hours=5), in_reply_to="<order-17@azuolas.lt>"), "S"),
        ("Išsiųsti", letter(STAFF, "sviesa@inbox.lt", "Sutartis", "Siunčiu sutartį.",
                            message_id="<contract@imone.lt>", date=day + timedelta(days=7)), "S"),
    ]
    return out
