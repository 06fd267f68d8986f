"""Deterministic, realistic mail for the benchmark: a CRM directory and the mailboxes of its staff.

A `World` is what one seed decides once: a directory of customers and leads (with contacts) and the
people who write to the company, a few thousand of them over a few hundred domains, free mail
included, split into those the directory knows (their address, or their company's domain) and
those it does not. `World.letter(index)` is one letter of a staff mailbox; the same seed, stream and
index always give the same bytes, so a 2,000-letter mailbox is the start of a 20,000-letter one, and
the "1% new letters" of a run are simply the next indices.

The letters look like a Lithuanian company's mail as a server stores it: Received and DKIM headers
on incoming mail, RFC 2047 subjects and names, text/plain + text/html bodies in utf-8,
windows-1257, iso-8859-13 or latin-1 (quoted-printable, 8bit or base64), about 9% with an
attachment of 8 KiB to 1 MiB, replies with In-Reply-To/References, a few without Message-ID, and a
newsletter folder. About 10% of the letters involve a customer or lead (`Letter.linked`).

Speed matters (20,000 letters in seconds), so letters are put together from bytes, not through
`email.message`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import html
import math
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

OWN_DOMAIN = "imone.lt"
STAFF_EMAIL = f"jonas@{OWN_DOMAIN}"
STAFF_NAME = "Jonas Kazlauskas"
INBOX, SENT, ARCHIVE, NEWS = "INBOX", "Išsiųsti", "Archyvas", "Naujienlaiškiai"
FOLDERS = (INBOX, SENT, ARCHIVE, NEWS)
FOLDER_WEIGHTS = (0.55, 0.25, 0.12, 0.08)
SMALL_FOLDERS = (INBOX, SENT)  # the folders of the many small mailboxes
SMALL_FOLDER_WEIGHTS = (0.7, 0.3)

# Shares of all letters. Newsletters have no attachments and never concern the directory, so the
# other letters have these at a correspondingly higher rate.
LINKED_SHARE = 0.10
ATTACHMENT_SHARE = 0.09
ATTACHMENT_MIN, ATTACHMENT_MAX = 8 * 1024, 1024 * 1024
NO_MESSAGE_ID_SHARE = 0.005
# Lithuanian correspondents' charsets; western European ones write latin-1 (utf-8 when their name needs it).
LT_CHARSETS = ("utf-8", "windows-1257", "iso-8859-13")
LT_CHARSET_WEIGHTS = (0.6, 0.25, 0.15)
FIRST_DATE = datetime(2024, 1, 2, 7, 0, tzinfo=timezone.utc)
LETTER_INTERVAL = timedelta(minutes=41)  # 20,000 letters span about a year and a half

FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "inbox.lt", "one.lt", "takas.lt",
             "zebra.lt", "gmx.de", "web.de", "mail.ru", "wp.pl", "inbox.lv", "icloud.com")
TLDS = ("lt", "lt", "lt", "lt", "com", "eu", "lv", "ee", "pl", "de", "co.uk", "fi", "se")
WORDS = ("baltic", "medis", "statyba", "ratas", "vilnius", "nemunas", "gintaras", "saule", "akmuo", "logistika",
         "prekyba", "sistemos", "technika", "agro", "energija", "baldai", "transport", "nordic", "amber", "vakaru",
         "rytu", "miestas", "namai", "stogas", "langai", "metalas", "plastika", "maistas", "pienas", "duona",
         "auto", "servisas", "data", "soft", "kodas", "tiltas", "uostas", "jura", "ezeras", "miskas")
COMPANY_FORMS = ("UAB", "AB", "MB", "IĮ", "Ltd", "GmbH", "SIA", "OÜ", "Sp. z o.o.")
LT_FIRST = ("Jonas", "Petras", "Antanas", "Tomas", "Mindaugas", "Darius", "Giedrius", "Žygimantas", "Rūta",
            "Ona", "Aušra", "Eglė", "Jurgita", "Laura", "Gintarė", "Vaida", "Šarūnas", "Česlovas", "Dalia",
            "Rasa", "Kęstutis", "Vytautas", "Algirdas", "Indrė", "Lina", "Žaneta", "Justė", "Simona")
LT_LAST = ("Kazlauskas", "Petrauskas", "Jankauskas", "Žukauskas", "Butkus", "Balčiūnas", "Vasiliauskas",
           "Paulauskienė", "Urbonaitė", "Navickienė", "Šimkus", "Stankevičius", "Ramanauskas", "Kavaliauskaitė",
           "Mockus", "Sakalauskas", "Lukošius", "Grigaliūnas", "Čepulis", "Juškevičiūtė", "Gudaitis")
INTL_FIRST = ("Anna", "Peter", "Maria", "Thomas", "Jürgen", "Sophie", "Marek", "Agnieszka", "Jānis", "Liis",
              "Erik", "Hannah", "Oliver", "Emma", "Lukas", "René", "Zoë", "Björn")
INTL_LAST = ("Müller", "Schmidt", "Nowak", "Kowalski", "Bērziņš", "Tamm", "Johansson", "Smith", "Brown", "Weber",
             "Fischer", "Lefèvre", "Hansen", "Virtanen", "Wójcik", "Ozoliņš")
LT_SUBJECTS = ("Užsakymas Nr. {n}", "Sąskaita faktūra {n}", "Dėl pasiūlymo", "Sutarties projektas",
               "Krovinio išsiuntimas", "Susitikimas ketvirtadienį", "Kainų sąrašas {y}", "Pretenzija dėl prekių",
               "Mokėjimo priminimas", "Darbų aktas Nr. {n}", "Atostogų grafikas", "Naujas užsakymas",
               "Techninė specifikacija", "Pristatymo terminai", "Klausimas dėl sąskaitos {n}")
INTL_SUBJECTS = ("Order no. {n}", "Invoice {n}", "Quotation request", "Draft contract", "Shipment update",
                 "Meeting on Thursday", "Price list {y}", "Complaint about delivery {n}", "Payment reminder",
                 "Technical specification", "Delivery schedule", "Lieferung {n} - Bestätigung")
NEWS_SUBJECTS = ("Savaitės naujienos", "Akcija: -20% visiems", "Renginių kalendorius", "Nauji produktai",
                 "Webinaras apie mokesčius", "Rinkos apžvalga {y}")
LT_SENTENCES = (
    "Laba diena, siunčiame jums atnaujintą pasiūlymą pagal vakarykštį pokalbį.",
    "Prašome patvirtinti užsakymo kiekius ir pristatymo adresą iki penktadienio.",
    "Sąskaitą faktūrą rasite priede, apmokėjimo terminas - 14 dienų.",
    "Krovinys išvyko šiandien ryte, numatomas pristatymas - ketvirtadienį.",
    "Dėl kainų pasikeitimo informuosime atskiru laišku.",
    "Ačiū už greitą atsakymą, viskas tinka.",
    "Ar galėtumėte atsiųsti techninę specifikaciją ir sertifikatus?",
    "Susitikimą siūlome perkelti į kitą savaitę, antradienį 10 val.",
    "Ąžuolinės lentos bus sandėlyje po dviejų savaičių, išskyrus 40 mm storio.",
    "Primename, kad sutarties priedas turi būti pasirašytas abiejų šalių.",
    "Gavome jūsų pretenziją, ją išnagrinėsime per penkias darbo dienas.",
    "Mūsų sandėlis šeštadieniais nedirba, prašome tai įvertinti planuojant pristatymą.",
    "Pridedame šių metų kainų sąrašą ir nuolaidų sąlygas nuolatiniams klientams.",
    "Jei turite klausimų, skambinkite bet kuriuo metu.",
)
INTL_SENTENCES = (
    "Good morning, please find the updated quotation attached as discussed yesterday.",
    "Could you confirm the quantities and the delivery address by Friday?",
    "The invoice is attached; payment is due within 14 days.",
    "The shipment left our warehouse this morning and should arrive on Thursday.",
    "Vielen Dank für Ihre schnelle Rückmeldung, das passt für uns.",
    "Wir bestätigen den Liefertermin und senden die Unterlagen nächste Woche.",
    "Pourriez-vous nous envoyer la fiche technique et les certificats ?",
    "We suggest moving the meeting to next Tuesday at 10 o'clock.",
    "The oak boards will be in stock in two weeks, except the 40 mm ones.",
    "Please note that the annex must be signed by both parties.",
    "We received your complaint and will answer within five working days.",
    "Our warehouse is closed on Saturdays; please plan deliveries accordingly.",
)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ATTACHMENTS = (("application/pdf", "Sąskaita_{n}.pdf"), ("application/pdf", "invoice-{n}.pdf"),
               ("image/jpeg", "IMG_{n}.jpg"), (XLSX, "kainorastis_{n}.xlsx"), ("application/zip", "brezinai-{n}.zip"))
MAILERS = ("Microsoft Outlook 16.0", "Mozilla Thunderbird 115.3.1", "Apple Mail (2.3731)", "Roundcube Webmail/1.6.5",
           "Gmail", "Microsoft Outlook 15.0")


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    lithuanian: bool = True

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass
class Entity:
    """A customer or lead row of the generated directory."""

    id: str
    name: str
    email: str
    domain: str = ""  # customers only: empty when the company has no domain of its own
    contacts: list[Person] = field(default_factory=list)


@dataclass(frozen=True)
class Letter:
    folder: str
    raw: bytes  # CRLF line ends, as IMAP serves it
    flags: str  # Maildir flags: S seen, R replied, F flagged
    date: datetime
    linked: bool  # written to involve a customer or lead of the directory


class World:
    """The directory and the correspondents one seed gives; `letter()` writes their mail."""

    def __init__(self, seed: int = 1, customers: int = 300, leads: int = 150, other_domains: int = 200,
                 other_people: int = 1500) -> None:
        self.seed = seed
        rng = random.Random(f"world/{seed}")
        self._domains: set[str] = set(FREE_MAIL) | {OWN_DOMAIN}
        self.customers: list[Entity] = []
        self.leads: list[Entity] = []
        # The people the directory knows, by how they match: exact address or customer domain.
        self.linked: list[Person] = []
        self.others: list[Person] = []  # not in the directory, on no customer's domain
        self.colleagues = [self._person(rng, OWN_DOMAIN, lithuanian=True) for _ in range(25)]

        for number in range(customers):
            domain = self._new_domain(rng)
            company = self._company(rng, domain)
            free = rng.random() < 0.1  # a sole trader writing from free mail: no domain rule
            if free:
                main = Person(company, f"{_local(company)}{number}@{rng.choice(FREE_MAIL)}")
            else:
                main = Person(company, f"{rng.choice(('info', 'office', 'pardavimai', 'sales'))}@{domain}")
            lithuanian = domain.endswith(".lt")
            contacts = [self._person(rng, domain if rng.random() < 0.8 else rng.choice(FREE_MAIL), lithuanian)
                        for _ in range(rng.randint(0, 3))]
            staff_on_domain = [] if free else [self._person(rng, domain, lithuanian) for _ in range(rng.randint(1, 4))]
            self.customers.append(Entity(f"C-{1001 + number}", company, main.email,
                                         "" if free or rng.random() < 0.3 else domain, contacts))
            self.linked += [main, *contacts, *staff_on_domain]
        for number in range(leads):
            domain = self._new_domain(rng)
            lithuanian = domain.endswith(".lt")
            main = Person(self._company(rng, domain), f"{rng.choice(('info', 'pirkimai', 'hello'))}@{domain}")
            contacts = [self._person(rng, domain, lithuanian) for _ in range(rng.randint(0, 2))]
            self.leads.append(Entity(f"L-{2001 + number}", main.name, main.email, "", contacts))
            self.linked += [main, *contacts]

        known = {p.email for p in self.linked}
        other_domains_list = [self._new_domain(rng) for _ in range(other_domains)] + list(FREE_MAIL) * 10
        while len(self.others) < other_people:
            domain = rng.choice(other_domains_list)
            person = self._person(rng, domain, domain.endswith(".lt") or rng.random() < 0.75)
            if person.email not in known:  # a free-mail namesake of a contact would link
                self.others.append(person)
        self.senders_of_news = [Person(self._company(rng, d), f"naujienos@{d}") for d in other_domains_list[:40]]
        # One 1 MiB+ block of random bytes that attachments are cut from: incompressible, and cheap.
        self._noise = random.Random(f"noise/{seed}").randbytes(ATTACHMENT_MAX + 4096)

    # -- the directory ----------------------------------------------------------------------------

    def write_directory(self, customers_csv: Path, leads_csv: Path) -> None:
        """The directory as CRM export files for `hanna-sync import customers|leads`."""
        for path, entities, columns in ((customers_csv, self.customers, ("id", "name", "email", "domain", "contacts")),
                                        (leads_csv, self.leads, ("id", "name", "email", "contacts"))):
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                for e in entities:
                    contacts = "; ".join(f"{c.name} <{c.email}>" for c in e.contacts)
                    writer.writerow([e.id, e.name, e.email] + ([e.domain] if "domain" in columns else []) + [contacts])

    # -- letters ----------------------------------------------------------------------------------

    def mailbox(self, count: int, start: int = 0, stream: str = "main", staff: Person | None = None,
                small: bool = False) -> Iterator[Letter]:
        """Letters start .. start+count-1 of one mailbox (stream); `small` uses INBOX and Išsiųsti only."""
        for index in range(start, start + count):
            yield self.letter(index, stream, staff, small)

    def letter(self, index: int, stream: str = "main", staff: Person | None = None, small: bool = False) -> Letter:
        rng = random.Random(f"{self.seed}/{stream}/{index}")
        staff = staff or Person(STAFF_NAME, STAFF_EMAIL)
        folders, weights = (SMALL_FOLDERS, SMALL_FOLDER_WEIGHTS) if small else (FOLDERS, FOLDER_WEIGHTS)
        folder = rng.choices(folders, weights)[0]
        date = FIRST_DATE + index * LETTER_INTERVAL + timedelta(seconds=rng.randrange(-1200, 1200))
        if folder == NEWS:
            return self._newsletter(rng, index, staff, date)
        not_news = 1 - FOLDER_WEIGHTS[FOLDERS.index(NEWS)]
        linked = rng.random() < LINKED_SHARE / not_news
        them = rng.choice(self.linked if linked else self.others)
        cc = []
        if rng.random() < 0.15:
            cc.append(rng.choice(self.colleagues))
        if rng.random() < 0.08:
            cc.append(rng.choice(self.others))
        if folder == SENT:
            sender, to = staff, [them]
            flags = "S"
        else:
            sender, to = them, [staff]
            flags = rng.choices(("S", "", "RS", "FS"), (0.75, 0.12, 0.1, 0.03))[0]
        lithuanian = them.lithuanian
        if lithuanian:
            charset = rng.choices(LT_CHARSETS, LT_CHARSET_WEIGHTS)[0]
        else:
            charset = "iso-8859-1" if _fits(sender.name, "iso-8859-1") else "utf-8"
        subject = rng.choice(LT_SUBJECTS if lithuanian else INTL_SUBJECTS).format(n=rng.randint(100, 99999),
                                                                                  y=date.year)
        headers = []
        reply_to_index = index - rng.randint(1, 50) if index > 50 and rng.random() < 0.3 else None
        if reply_to_index is not None:
            subject = ("Re: " if lithuanian or rng.random() < 0.5 else "AW: ") + subject
            parent = _message_id(self.seed, stream, reply_to_index)
            headers += [f"In-Reply-To: {parent}", f"References: {parent}"]
        if folder != SENT:
            headers = _received(rng, sender.domain, staff.email, date) + headers
        if rng.random() >= NO_MESSAGE_ID_SHARE:
            headers.append(f"Message-ID: {_message_id(self.seed, stream, index)}")
        headers += [
            f"From: {_address(sender, charset)}",
            f"To: {', '.join(_address(p, charset) for p in to)}",
            *([f"Cc: {', '.join(_address(p, charset) for p in cc)}"] if cc else []),
            f"Subject: {_encode_words(subject, charset)}",
            f"Date: {_rfc5322(date)}",
            f"X-Mailer: {rng.choice(MAILERS)}",
        ]
        sentences = LT_SENTENCES if lithuanian else INTL_SENTENCES
        paragraphs = [" ".join(rng.choices(sentences, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 8))]
        text = f"{'Laba diena' if lithuanian else 'Hello'},\r\n\r\n" + "\r\n\r\n".join(paragraphs) + \
            f"\r\n\r\n--\r\n{sender.name}\r\n{sender.email}\r\n"
        if rng.random() < 0.8:
            body = _alternative(rng, text, charset, f"alt-{index}")
        else:
            body = _text_part(rng, text, charset)
        if rng.random() < ATTACHMENT_SHARE / not_news:
            body = self._with_attachment(rng, body, f"mix-{index}")
        raw = "\r\n".join(headers).encode("ascii") + b"\r\nMIME-Version: 1.0\r\n" + body
        return Letter(folder, raw, flags, date, linked)

    def _newsletter(self, rng: random.Random, index: int, staff: Person, date: datetime) -> Letter:
        sender = rng.choice(self.senders_of_news)
        subject = rng.choice(NEWS_SUBJECTS).format(y=date.year)
        list_id = f"<news.{sender.domain}>"
        headers = _received(rng, sender.domain, staff.email, date) + [
            f"Message-ID: {_message_id(self.seed, 'news', index)}",
            f"From: {_address(sender, 'utf-8')}",
            f"To: {staff.email}",
            f"Subject: {_encode_words(subject, 'utf-8')}",
            f"Date: {_rfc5322(date)}",
            f"List-Id: {_encode_words(sender.name, 'utf-8')} {list_id}",
            f"List-Unsubscribe: <https://{sender.domain}/unsubscribe?u={index}>",
            "Precedence: bulk",
        ]
        items = [" ".join(rng.choices(LT_SENTENCES, k=3)) for _ in range(rng.randint(4, 12))]
        text = "\r\n\r\n".join(items) + "\r\n"
        body = _alternative(rng, text, "utf-8", f"news-{index}", rich=True)
        raw = "\r\n".join(headers).encode("ascii") + b"\r\nMIME-Version: 1.0\r\n" + body
        return Letter(NEWS, raw, rng.choice(("S", "")), date, linked=False)

    def _with_attachment(self, rng: random.Random, body: bytes, boundary: str) -> bytes:
        content_type, name = rng.choice(ATTACHMENTS)
        name = name.format(n=rng.randint(1, 9999))
        size = int(math.exp(rng.uniform(math.log(ATTACHMENT_MIN), math.log(ATTACHMENT_MAX))))
        offset = rng.randrange(len(self._noise) - size)
        data = base64.encodebytes(self._noise[offset:offset + size]).replace(b"\n", b"\r\n")
        filename = f'filename="{name}"' if name.isascii() else f"filename*=utf-8''{_percent(name)}"
        part = (f"Content-Type: {content_type}; name=\"{_encode_words(name, 'utf-8')}\"\r\n"
                f"Content-Disposition: attachment; {filename}\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n").encode("ascii") + data
        return _multipart("mixed", boundary, [body, part])

    # -- people and companies ---------------------------------------------------------------------

    def _new_domain(self, rng: random.Random) -> str:
        while True:
            words = rng.sample(WORDS, rng.choice((1, 2, 2)))
            domain = "-".join(words) if rng.random() < 0.2 else "".join(words)
            domain += "." + rng.choice(TLDS)
            if domain not in self._domains:
                self._domains.add(domain)
                return domain

    def _company(self, rng: random.Random, domain: str) -> str:
        name = domain.split(".")[0].replace("-", " ").title()
        form = rng.choice(COMPANY_FORMS[:4] if domain.endswith(".lt") else COMPANY_FORMS[4:])
        return f"{form} {name}" if form in ("UAB", "AB", "MB", "IĮ") else f"{name} {form}"

    def _person(self, rng: random.Random, domain: str, lithuanian: bool) -> Person:
        first, last = (rng.choice(LT_FIRST), rng.choice(LT_LAST)) if lithuanian else \
            (rng.choice(INTL_FIRST), rng.choice(INTL_LAST))
        style = rng.randrange(3)
        local = (f"{first}.{last}", f"{first[0]}{last}", first)[style]
        if domain in FREE_MAIL:
            local += str(rng.randint(1, 999))
        return Person(f"{first} {last}", f"{_local(local)}@{domain}", lithuanian)


# -- MIME pieces -----------------------------------------------------------------------------------


def _local(text: str) -> str:
    """An address's local part from a name: "Žygimantas.Balčiūnas" -> "zygimantas.balciunas"."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in plain.lower() if c.isalnum() or c in ".-")


def _message_id(seed: int, stream: str, index: int) -> str:
    host = ("mail.gmail.com", "eurprd04.prod.outlook.com", "imone.lt", "mx.inbox.lt", "smtp.serveriai.lt")[index % 5]
    return f"<{index:07d}.{stream}.{seed:x}@{host}>"


def _rfc5322(date: datetime) -> str:
    local = date.astimezone(timezone(timedelta(hours=2)))
    return local.strftime("%a, %d %b %Y %H:%M:%S +0200")


def _received(rng: random.Random, domain: str, to: str, date: datetime) -> list[str]:
    """What the company's mail server adds to an incoming letter."""
    ip = f"{rng.randint(5, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    when = _rfc5322(date + timedelta(seconds=rng.randint(1, 30)))
    signature = base64.b64encode(rng.randbytes(256)).decode()
    return [
        f"Return-Path: <bounce@{domain}>",
        f"Delivered-To: {to}",
        (f"Received: from mx.{domain} (mx.{domain} [{ip}])\r\n\tby mail.{OWN_DOMAIN} (Postfix) with ESMTPS id "
         f"{rng.randbytes(5).hex().upper()}\r\n\tfor <{to}>; {when}"),
        f"Received: from [10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}] by mx.{domain} with ESMTPSA; {when}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail;\r\n\t"
        f"h=from:to:subject:date:message-id; bh={base64.b64encode(rng.randbytes(32)).decode()};\r\n\tb="
        + "\r\n\t ".join(signature[i:i + 72] for i in range(0, len(signature), 72)),
    ]


def _encode_words(text: str, charset: str) -> str:
    """RFC 2047 B-encoded words of at most ~45 bytes each, folded; ASCII text as it is.

    Text the letter's charset cannot hold (a Latvian name in a latin-1 letter) goes as UTF-8.
    """
    if text.isascii():
        return text
    if not _fits(text, charset):
        charset = "utf-8"
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode(charset)) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(f"=?{charset}?B?{base64.b64encode(w.encode(charset)).decode()}?=" for w in words)


def _fits(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _address(person: Person, charset: str) -> str:
    if person.name.isascii():
        return f'"{person.name}" <{person.email}>'
    return f"{_encode_words(person.name, charset)} <{person.email}>"


def _percent(text: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() or c in "._-" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text)


def _text_part(rng: random.Random, text: str, charset: str, subtype: str = "plain") -> bytes:
    data = text.encode(charset, "replace")
    encoding = rng.choices(("quoted-printable", "8bit", "base64"), (0.6, 0.25, 0.15))[0]
    if encoding == "quoted-printable":
        data = binascii.b2a_qp(data)
    elif encoding == "base64":
        data = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (f"Content-Type: text/{subtype}; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode("ascii") + data


def _alternative(rng: random.Random, text: str, charset: str, boundary: str, rich: bool = False) -> bytes:
    paragraphs = "".join(f"<p>{html.escape(p).replace(chr(13) + chr(10), '<br>')}</p>\r\n"
                         for p in text.split("\r\n\r\n"))
    style = "<style>body{font-family:Arial,sans-serif}td{padding:8px}</style>" if rich else ""
    markup = (f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={charset}">{style}'
              f"</head>\r\n<body>\r\n{paragraphs}</body></html>\r\n")
    return _multipart("alternative", boundary, [_text_part(rng, text, charset),
                                                  _text_part(rng, markup, charset, "html")])


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    b = boundary.encode("ascii")
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode("ascii")]
    for part in parts:
        out += [b"--", b, b"\r\n", part, b"" if part.endswith(b"\r\n") else b"\r\n"]
    out += [b"--", b, b"--\r\n"]
    return b"".join(out)
