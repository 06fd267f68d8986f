from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hanna_sync.cli import cli
from hanna_sync.config import Config
from hanna_sync.db.store import Store
from hanna_sync.demo import sample
from hanna_sync.errors import InputError
from hanna_sync.linking.directory import import_entities
from hanna_sync.mail.addresses import (
    is_listed,
    normalise_domain,
    normalise_email,
    registrable_domain,
)
from hanna_sync.models import Contact, Entity


@pytest.mark.parametrize("raw, expected", [
    ("  Jonas@Acme.LT ", "jonas@acme.lt"),
    ("<ona@acme.lt>", "ona@acme.lt"),
    ("info@žalgiris.lt", "info@xn--algiris-cxb.lt"),
    ("first.last+crm@Gmail.com", "first.last+crm@gmail.com"),
    ("acme.lt", None),
    ("a b@acme.lt", None),
    ("jonas@", None),
    ("jonas@localhost", None),
    ("", None),
])
def test_normalise_email(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Acme.LT.", "acme.lt"), ("ŽALGIRIS.lt", "xn--algiris-cxb.lt"), ("nodot", None), ("a@b.lt", None),
])
def test_normalise_domain(raw, expected):
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize("domain, expected", [
    ("mail.acme.co.uk", "acme.co.uk"), ("acme.lt", "acme.lt"), ("a.b.acme.lt", "acme.lt"),
    ("x.gov.lt", "x.gov.lt"),
])
def test_registrable_domain(domain, expected):
    assert registrable_domain(domain) == expected


def test_is_listed_with_globs_and_subdomains():
    assert is_listed("gmx.de", ("gmx.*",))
    assert is_listed("eu.gmx.net", ("gmx.*",))
    assert is_listed("mail.acme.lt", ("acme.lt",))
    assert not is_listed("notacme.lt", ("acme.lt",))


CSV = """id,name,email,domain,contacts,crm_owner
C1,Acme,Info@Acme.lt,acme.lt,"Jonas Jonaitis <jonas@acme.lt>; ona@acme.lt",x
C2,Beta,not-an-email,,,
,No id,a@b.lt,,,
C3,Gamma,sales@gamma.lt,@Gamma.LT,,
C4,Bad contact,d@delta.lt,,"fine@delta.lt; nonsense",
C1,Dup,dup@acme.lt,,,
"""


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "a.db")


def test_csv_import_reports_bad_rows_by_line_and_imports_the_rest(store, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(CSV, encoding="utf-8")
    result = import_entities(store, "customer", path)
    assert (result.added, result.updated, result.unchanged) == (2, 0, 0)
    assert [(e.line, e.message) for e in result.rejected] == [
        (3, "'not-an-email' is not an email address"),
        (4, "'id' is missing (the CRM's id of the record is required)"),
        (6, "contact 'nonsense' is not an email address (use 'Name <email>' or 'email')"),
        (7, "id C1 already given on line 2"),
    ]
    assert result.ignored_columns == ["crm_owner"]
    acme = store.entity("customer", "C1")
    assert acme.email == "info@acme.lt"
    assert acme.domain == "acme.lt"
    assert acme.contacts == [Contact("jonas@acme.lt", "Jonas Jonaitis"), Contact("ona@acme.lt", None)]
    assert store.entity("customer", "C3").domain == "gamma.lt"


def test_reimport_counts_updates_and_unchanged(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email\nC1,Acme,a@acme.lt\nC2,Beta,b@beta.lt\n")
    import_entities(store, "customer", path)
    path.write_text("id,name,email\nC1,Acme UAB,a@acme.lt\nC2,Beta,b@beta.lt\nC3,New,n@new.lt\n")
    result = import_entities(store, "customer", path)
    assert (result.added, result.updated, result.unchanged) == (1, 1, 1)


def test_file_without_contacts_column_keeps_stored_contacts(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,email,contacts\nC1,a@acme.lt,x@acme.lt\n")
    import_entities(store, "customer", path)
    path.write_text("id,email\nC1,new@acme.lt\n")
    import_entities(store, "customer", path)
    assert store.entity("customer", "C1").contacts == [Contact("x@acme.lt")]


def test_semicolon_csv_from_a_european_excel(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffid;name;email;contacts\nC1;Ąžuolas;a@acme.lt;\"x@acme.lt;y@acme.lt\"\n".encode())
    result = import_entities(store, "customer", path)
    assert result.added == 1 and not result.rejected
    assert store.entity("customer", "C1").name == "Ąžuolas"
    assert len(store.entity("customer", "C1").contacts) == 2


def test_json_leads_with_contact_lists(store, tmp_path):
    path = tmp_path / "leads.json"
    path.write_text(json.dumps([
        {"id": 7, "name": "Lead", "email": "l@lead.lt", "contacts": ["Petras <p@lead.lt>", "q@lead.lt"]},
        {"id": "8", "email": ["not", "text"]},
        "not an object",
    ]))
    result = import_entities(store, "lead", path)
    assert result.added == 1
    assert [(e.line, e.message) for e in result.rejected] == [
        (2, "'email' must be text, not list"), (3, "not an object")]
    lead = store.entity("lead", "7")
    assert lead.contacts == [Contact("p@lead.lt", "Petras"), Contact("q@lead.lt")]


def test_conflicting_addresses_and_domains_are_reported(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,email,domain,contacts\nC1,a@acme.lt,acme.lt,shared@x.lt\nC2,b@acme2.lt,acme.lt,shared@x.lt\n")
    result = import_entities(store, "customer", path)
    assert result.conflicts == [
        "shared@x.lt belongs to customers C1, C2",
        "domain acme.lt is claimed by customers C1, C2: it links to neither",
    ]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"id,name\n\xff\xfe\xfa,x\n", r"is not UTF-8 \(line 2\)"),
])
def test_unreadable_files_are_one_clear_error(store, tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        import_entities(store, "customer", path)
    assert store.db["customers"].count == 0


def test_bad_json_and_unknown_format(store, tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[{]")
    with pytest.raises(InputError, match="not valid JSON"):
        import_entities(store, "customer", path)
    with pytest.raises(InputError, match="--format"):
        import_entities(store, "customer", tmp_path / "c.txt")


def dump(store: Store) -> str:
    return "\n".join(store.db.conn.iterdump())


@pytest.mark.parametrize("content, message", [
    # The file: the quote runs to the end, and would make one customer of the whole file.
    ('id,name,email\nC-Q1,"Acme,acme@x.lt\nC-Q2,Beta,beta@y.lt\n',
     r"c\.csv, line 2: the quote opened in column 'name' never closes \(it runs to the end of the file\)"),
    ('id,name,email\nC-Q0,Zeta,z@z.lt\nC-Q1,Acme,"acme@x.lt',
     r"line 3: the quote opened in column 'email' never closes"),
    # A second stray quote closes the first: the row it makes has the wrong number of fields.
    ('id,name,email\nC-Q1,"Acme,acme@x.lt\nC-Q2,Beta,beta@y.lt"\nC-Q3,Gamma,g@g.lt\n',
     r"line 2: the quote opened in column 'name' runs on to line 3 and leaves 2 fields where the header has 3"),
    # Closed by a later field's opening quote, the row has the header's 3 fields: strict csv stops at the text after it.
    ('id,name,email\nC-26,"Acme,acme@x.lt\nC-27,Beta,beta@y.lt\nC-28,"Gamma",g@g.lt\n',
     r"line 2: the quote opened in column 'name' runs on to line 4, where text follows its closing quote"),
    # Closed at the end of a field, with the header's number of fields: no id, email or domain holds a line break.
    ('id,name,email\nC-Q1,Acme,"acme@x.lt\nC-Q2,Beta,beta@y.lt"\nC-Q3,Gamma,g@g.lt\n',
     r"line 2: the quote opened in column 'email' runs on to line 3, and an id, email or domain has no line break"),
    ('id;name;email\n"C-Q1;Acme;acme@x.lt\nC-Q2";Beta;beta@y.lt\n',
     r"line 2: the quote opened in column 'id' runs on"),
    ('id,domain,name\nC-Q1,"acme.lt,Acme\nC-Q2,beta.lt",Beta\n',
     r"line 2: the quote opened in column 'domain' runs on"),
])
def test_a_stray_quote_stops_the_import_at_the_line_it_opened_and_writes_nothing(store, tmp_path, content, message):
    store.save_entity("customer", sample.CUSTOMERS[0], replace_contacts=True)
    before = dump(store)
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        import_entities(store, "customer", path)
    assert dump(store) == before


def test_a_quoted_field_with_a_line_break_that_closes_is_fine(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,name,email\r\nC1,"Acme\r\n(the old one)",a@acme.lt\r\nC2,Beta,b@beta.lt\r\nC3,Short\r\n')
    result = import_entities(store, "customer", path)
    assert result.added == 2
    assert store.entity("customer", "C1").name == "Acme\r\n(the old one)"
    # A one-line row with too few fields is that row's error, named by its line; the others import.
    assert [(e.line, e.message) for e in result.rejected] == [(5, "2 fields: fewer than the header's 3 columns")]


def test_text_after_a_closing_quote_on_one_line_is_that_rows_error(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,name,email\nC1,"Acme" UAB,a@acme.lt\nC2,Beta,b@beta.lt\n')
    result = import_entities(store, "customer", path)
    assert result.added == 1
    assert [(e.line, e.message) for e in result.rejected] == [
        (2, "text after the closing quote in column 'name': quote the whole field, doubling the quotes in it (\"\")")]


LONG = "x" * (128 * 1024 + 1)


@pytest.mark.parametrize("content, message", [
    (f"id,name,email\nC1,Acme,a@acme.lt\nC2,{LONG},b@beta.lt\n",
     r"c\.csv, line 3, column 'name': a field longer than 131,072 characters, the limit"),
    ('id,name,email\nC1,Acme,"' + "a\n" * 70_000 + '",x\n',
     r"c\.csv, line 2: the quote opened in column 'email' runs on for more than 131,072 characters \(to line"),
])
def test_a_field_over_the_limit_is_one_line_naming_line_and_column(store, tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        import_entities(store, "customer", path)
    assert store.db["customers"].count == 0


def test_a_field_at_the_limit_is_read(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(f"id,name,email\nC1,Acme,a@acme.lt\nC2,{LONG[1:]},b@beta.lt\n")
    assert import_entities(store, "customer", path).added == 2
    assert len(store.entity("customer", "C2").name) == 128 * 1024


def test_a_column_spelled_otherwise_is_read_as_the_known_one(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("ID,Name,E-mail,E_Mail_Note,Domain \nC1,Acme,A@Acme.lt,x,acme.lt\n")
    result = import_entities(store, "customer", path)
    assert result.added == 1 and not result.rejected and result.ignored_columns == ["E_Mail_Note"]
    assert store.entity("customer", "C1") == Entity("C1", "Acme", "a@acme.lt", "acme.lt", [])
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"Id": "L1", "E-Mail": "l@lead.lt", "Contacts": ["q@lead.lt"]}]))
    assert import_entities(store, "lead", path).added == 1
    assert store.entity("lead", "L1") == Entity("L1", None, "l@lead.lt", None, [Contact("q@lead.lt")])


@pytest.mark.parametrize("fmt, content, message", [
    ("csv", "id,name,Email address\nC1,Acme,a@acme.lt\n", "column 'Email address' is not one hanna-sync reads"
     " (did you mean 'email'?): rename it, or remove it to import without it"),
    ("csv", "id;name;mail\nC1;Acme;a@acme.lt\n", "column 'mail' is not one hanna-sync reads (did you mean 'email'?)"),
    ("csv", "customer_id,email\nC1,a@acme.lt\n",
     "column 'customer_id' is not one hanna-sync reads (did you mean 'id'?)"),
    ("csv", "id,email,Contact persons\nC1,a@acme.lt,b@acme.lt\n", "(did you mean 'contacts'?)"),
    ("csv", "id,email,E-mail\nC1,a@acme.lt,b@acme.lt\n", "columns 'email' and 'E-mail' both mean 'email': keep one"),
    ("csv", "id,email,email\nC1,a@acme.lt,b@acme.lt\n", "column 'email' is there twice: keep one"),
    ("json", json.dumps([{"id": "C1", "name": "Acme", "Emails": "a@acme.lt"}]), "column 'Emails' is not one"
     " hanna-sync reads (did you mean 'email'?)"),
])
def test_a_column_that_only_looks_like_a_known_one_is_refused_with_a_did_you_mean(
        store, tmp_path, fmt, content, message):
    store.save_entity("customer", sample.CUSTOMERS[0], replace_contacts=True)
    before = dump(store)
    path = tmp_path / f"c.{fmt}"
    path.write_text(content)
    with pytest.raises(InputError) as error:
        import_entities(store, "customer", path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert dump(store) == before


def test_a_column_named_with_a_known_word_is_refused_when_its_values_look_like_that_columns(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email,Contact emails\nC1,Acme,a@acme.lt,a@x.lt\n")
    with pytest.raises(InputError, match=r"column 'Contact emails' is not one hanna-sync reads \(did you mean"
                                         r" 'contacts'\?\)"):
        import_entities(store, "customer", path)
    path.write_text("id,name,email,Email domain\nC1,Acme,a@acme.lt,acme.lt\n")
    with pytest.raises(InputError, match=r"column 'Email domain' .* \(did you mean 'domain'\?\)"):
        import_entities(store, "customer", path)


@pytest.mark.parametrize("content, ignored", [
    ("id,name,email,Last contact,Contact phone\nC1,Acme,a@acme.lt,2024-05-01,+370 600 00000\n",
     ["Last contact", "Contact phone"]),
    ("id,name,email,domain,Phone,Contact person\nC1,Acme,a@acme.lt,acme.lt,+370 600 00000,Jonas Jonaitis\n",
     ["Phone", "Contact person"]),
    ("id,email,First name,Last name\nC1,a@acme.lt,Jonas,Jonaitis\n", ["First name", "Last name"]),
    # Excel's empty trailing columns: no columns at all.
    ("id,name,email,,\nC1,Acme,a@acme.lt,,\n", []),
    ("id;name;email;;;\r\nC1;Acme;a@acme.lt;;; \r\n", []),
])
def test_an_ordinary_crm_export_imports_with_its_other_columns_ignored(tmp_path, content, ignored):
    path = tmp_path / "c.csv"
    path.write_text(content)
    (tmp_path / "config.toml").write_text(f'database = "{tmp_path / "hs.db"}"\n')
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "config.toml"), "import", "customers", str(path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1 and json.loads(result.stdout)["ignored_columns"] == ignored


def test_an_unnamed_column_with_values_is_still_a_column_and_named_as_ignored(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email,,\nC1,Acme,a@acme.lt,x,\n")
    result = import_entities(store, "customer", path)
    assert result.added == 1 and result.ignored_columns == [""]


def test_an_unknown_column_is_ignored_when_the_file_has_the_one_it_looks_like(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email,email 2,first_name\nC1,Acme,a@acme.lt,b@acme.lt,Jonas\n")
    result = import_entities(store, "customer", path)
    assert result.added == 1 and result.ignored_columns == ["email 2", "first_name"]


def test_a_row_needs_an_address_to_link_by(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email,domain,contacts\nC1,Acme,,,\nC2,Beta,,beta.lt,\nC3,Gamma,,,g@gamma.lt\n"
                    "C4,Delta,d@delta.lt,,\n")
    result = import_entities(store, "customer", path)
    assert result.added == 3
    assert [(e.line, e.message) for e in result.rejected] == [
        (2, "no address to link letters by: give an email, a domain or a contact")]
    assert store.entity("customer", "C1") is None
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"id": "L1", "name": "Lead", "domain": "lead.lt"},
                                {"id": "L2", "contacts": ["p@x.lt"]}]))
    result = import_entities(store, "lead", path)
    assert result.added == 1 and result.ignored_columns == ["domain"]
    assert [(e.line, e.message) for e in result.rejected] == [
        (1, "no address to link letters by: give an email or a contact")]


def test_a_column_the_file_lacks_keeps_the_stored_values(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,email,domain,contacts\nC1,Acme,a@acme.lt,acme.lt,x@acme.lt\n")
    import_entities(store, "customer", path)
    path.write_text("id,name\nC1,Acme UAB\n")  # a rename: the addresses stay, so the row has one to link by
    result = import_entities(store, "customer", path)
    assert (result.updated, result.rejected) == (1, [])
    assert store.entity("customer", "C1") == Entity("C1", "Acme UAB", "a@acme.lt", "acme.lt", [Contact("x@acme.lt")])
    path.write_text("id,name,email,domain\nC1,Acme UAB,,\n")  # an empty field does clear it
    assert import_entities(store, "customer", path).updated == 1
    assert store.entity("customer", "C1") == Entity("C1", "Acme UAB", None, None, [Contact("x@acme.lt")])


def test_a_free_mail_domain_is_not_a_customers_domain(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,email,domain\nC1,a@acme.lt,Gmail.com\nC2,b@beta.lt,eu.gmx.net\nC3,c@firma.lt,firma.lt\n"
                    "C4,jonas@gmail.com,\n")
    config = Config(database=store.path, free_mail_domains=("firma.lt",))
    result = import_entities(store, "customer", path, config=config)
    assert [(e.line, e.message) for e in result.rejected] == [
        (line, f"domain {domain} is free mail: it says nothing about which company writes (leave the domain empty;"
               " the customer's own addresses still link)")
        for line, domain in ((2, "gmail.com"), (3, "eu.gmx.net"), (4, "firma.lt"))]
    assert result.added == 1 and store.entity("customer", "C4").email == "jonas@gmail.com"
