"""The client-side re-check and the search queries, without the network."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.outlook import kql
from connectors.outlook.matching import PhoneForms, SubjectMatcher, phone_forms
from daemon.domain import ContactRecord, Phone, PhoneType, Subject
from sandbox.graph.kql import compile_search
from sandbox.graph.store import Address, Message

SUBJECT = Subject(
    emails=("Ola.Nordmann@Kunde.no",),
    phones=("22334455", "+46 70 123 45 67"),
    names=("Åse Bjørnstad",),
)
MATCHER = SubjectMatcher(SUBJECT)


@pytest.mark.parametrize(
    "text",
    [
        "Ring Åse Bjørnstad i dag",
        "ÅSE BJØRNSTAD ringte",
        "A\u030ase Bjørnstad",  # decomposed å
        "Åse\u00a0Bjørnstad",  # no-break space
        "Åse\n  Bjørnstad",
        "Bjørnstad, Åse",
        "Åse Bjørnstads nummer",  # genitive
        "Åse Bjørnstad's call",
        "tlf 22334455.",
        "22 33 44 55",
        "223 34 455",
        "2233 4455",
        "22-33-44-55",
        "+47 22334455",
        "+4722334455",
        "0047 22 33 44 55",
        "(+47) 22 33 44 55",
        "4722334455",
        "numrene 22334455 og 99887766",
        "070-123 45 67",
        "+46 70 123 45 67",
        "0046701234567",
        "skriv til ola.nordmann@kunde.no.",
        "<OLA.NORDMANN@KUNDE.NO>",
    ],
)
def test_texts_that_name_the_subject(text: str) -> None:
    assert MATCHER.text_matches(text)


@pytest.mark.parametrize(
    "text",
    [
        "Åse Bjørnstad-Lie",  # another surname
        "Anne-Åse Bjørnstad",  # another first name
        "Åse Bjørnstadsen",
        "Åse Bj. ringte",
        "Bjørnstad alene",
        "Henrik Ibsens gate",  # unrelated, see the street test below
        "223344556",
        "122334455",
        "22334455-6",
        "22.33.44.55.6",
        "2233445",
        "22 33 44 56",
        "ola.nordmann@kunde.no.evil.com",
        "kola.nordmann@kunde.no",
        "ola.nordmann@kunde.norge.no",
        "ola.nordmann@kunde-no.com",
    ],
)
def test_near_misses_do_not_match(text: str) -> None:
    assert not MATCHER.text_matches(text)


def test_a_street_named_after_someone_does_not_name_them() -> None:
    matcher = SubjectMatcher(Subject(names=("Henrik Ibsen",)))
    assert not matcher.text_matches("Kontoret i Henrik Ibsens gate 1")
    assert matcher.text_matches("Henrik Ibsens skuespill")
    assert matcher.text_matches("Henrik Ibsen")


def message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subject": "",
        "body": {"contentType": "text", "content": ""},
        "from": {"emailAddress": {"name": "Resepsjonen", "address": "post@we4you.no"}},
        "toRecipients": [],
        "ccRecipients": [],
    }
    return {**base, **fields}


def to(address: str, name: str = "") -> list[dict[str, Any]]:
    return [{"emailAddress": {"name": name, "address": address}}]


def test_messages_match_on_participants_subject_and_body() -> None:
    assert MATCHER.message_matches(message(toRecipients=to("OLA.nordmann@kunde.no")))
    assert MATCHER.message_matches(message(ccRecipients=to("x@y.no", "Bjørnstad, Åse")))
    assert MATCHER.message_matches(message(subject="Åse Bjørnstad ringte"))
    html = {"contentType": "html", "content": "<p>Tlf:&nbsp;22&nbsp;33&nbsp;44&nbsp;55</p>"}
    assert MATCHER.message_matches(message(body=html))
    assert not MATCHER.message_matches(message(toRecipients=to("ola.nordmann@kunde.no.evil.com")))
    assert not MATCHER.message_matches(
        message(subject="Åse Bjørnstad-Lie", body=html | {"content": ""})
    )


def test_contacts_match_on_whole_identifiers() -> None:
    def contact(**fields: Any) -> ContactRecord:
        return ContactRecord(system="outlook", external_id="1", **fields)

    assert MATCHER.contact_matches(contact(emails=("ola.nordmann@kunde.NO",)))
    assert MATCHER.contact_matches(contact(phones=(Phone(number="+47 22 33 44 55"),)))
    assert MATCHER.contact_matches(contact(given_name="åse", family_name="Bjørnstad"))
    assert MATCHER.contact_matches(contact(display_name="Åse  Bjørnstad"))
    assert not MATCHER.contact_matches(contact(display_name="Åse Bjørnstad-Lie"))
    assert not MATCHER.contact_matches(
        contact(phones=(Phone(number="223344556", type=PhoneType.WORK),))
    )


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        (Subject(names=("Åse",)), r"subject names\[0\]: a name of one word"),
        (Subject(phones=("22334455", "1234")), r"subject phones\[1\]: too few digits"),
        (Subject(emails=("ola",)), r"subject emails\[0\]: not an e-mail address"),
    ],
)
def test_vague_identifiers_are_refused_by_position(subject: Subject, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        SubjectMatcher(subject)
    assert "Åse" not in str(caught.value) and "1234" not in str(caught.value)


def test_phone_spellings_are_the_ways_norwegians_write_numbers() -> None:
    assert kql.phone_spellings(phone_forms("+47 22 33 44 55")) == [
        "22334455",
        "22 33 44 55",
        "223 34 455",
        "2233 4455",
        "+47 22334455",
        "+4722334455",
        "+47 22 33 44 55",
        "0047 22 33 44 55",
        "004722334455",
    ]
    assert kql.phone_spellings(phone_forms("+46 70 123 45 67")) == [
        "0701234567",
        "+46 701234567",
        "+46701234567",
        "0046701234567",
    ]


def test_queries_one_per_identifier_with_quoting() -> None:
    matcher = SubjectMatcher(Subject(emails=("ola@x.no",), names=('Åse "Bjørn" Lie',)))
    queries = kql.subject_queries(matcher.emails, matcher.phones, ('Åse "Bjørn" Lie',))
    assert queries == [
        'participants:"ola@x.no" OR "ola@x.no"',
        '"Åse Bjørn Lie" OR "Bjørn Lie Åse" OR "Lie Åse Bjørn" OR participants:"Åse Bjørn Lie" '
        'OR participants:"Bjørn Lie Åse" OR participants:"Lie Åse Bjørn"',
    ]
    assert kql.search_value('"22 33 44 55"') == '"\\"22 33 44 55\\""'
    assert kql.sender_filter("o'hara@x.no") == "from/emailAddress/address eq 'o''hara@x.no'"
    # An address is data: whatever it holds, it stays one quoted term.
    hostile = 'x" OR participants:* OR "y@x.no'
    assert kql.email_query(hostile) == [
        'participants:"x OR participants:* OR y@x.no" OR "x OR participants:* OR y@x.no"'
    ]


def sim_message(subject: str, body: str, sender: str = "post@we4you.no") -> Message:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    return Message(
        serial=1,
        immutable_id="i",
        regular_id="r",
        folder_id="f",
        subject=subject,
        body=body,
        sender=Address("", sender),
        to=[],
        cc=[],
        received=now,
        created=now,
        modified=now,
        conversation_id="c",
        internet_message_id="m",
    )


@pytest.mark.parametrize(
    "written",
    ["22334455", "22 33 44 55", "223 34 455", "+47 22334455", "+4722334455", "0047 22 33 44 55"],
)
def test_every_spelling_is_found_by_the_phone_query(written: str) -> None:
    """Recall: whatever way the number is written, the search (as Exchange tokenises
    it, here the simulator's KQL) returns the message, and the re-check keeps it."""
    [query] = kql.phone_query(phone_forms("22334455"))
    hit = compile_search(kql.search_value(query))
    found = sim_message("Beskjed", f"Ring tilbake på {written} i dag")
    assert hit(found)
    assert MATCHER.text_matches(found.body)


# -- surname first: particles and double surnames ---------------------------------------

SURNAMES = SubjectMatcher(
    Subject(names=("Ola van der Berg", "Kari Nordmann Hansen", "Maria de la Cruz"))
)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("Ring van der Berg, Ola i dag", 0),
        ("VAN DER BERG, OLA", 0),
        ("van der Berg Ola", 0),
        ("Berg, Ola van der", 0),  # the particles after the given name
        ("van der Berg,Ola", 0),
        ("Ola van der Berg", 0),
        ("Nordmann Hansen, Kari", 1),
        ("Nordmann Hansen Kari ringte", 1),
        ("Hansen, Kari Nordmann", 1),
        ("Kari Nordmann Hansens sak", 1),
        ("de la Cruz, Maria", 2),
        ("Cruz, Maria de la", 2),
    ],
)
def test_surname_first_with_particles_and_double_surnames(text: str, position: int) -> None:
    assert SURNAMES.text_matches(text) == (("name", position),)


@pytest.mark.parametrize(
    "text",
    [
        "Berg, Ola",  # the particles are part of the surname
        "Ola Berg",
        "van der Bergen, Ola",
        "van der Berg-Lie, Ola",
        "Hansen, Kari",  # the double surname is whole or it is someone else
        "Nordmann-Hansen, Kari",
        "Kari Nordmann-Hansen",
        "Cruz, Maria",
        "de la Cruz, Mariann",
        "Bjørnstad-Lie, Åse",
    ],
)
def test_surname_first_near_misses(text: str) -> None:
    assert not SURNAMES.text_matches(text)
    assert not MATCHER.text_matches(text)


def test_a_subject_name_written_surname_first_is_read_given_names_first() -> None:
    matcher = SubjectMatcher(Subject(names=("van der Berg, Ola",)))
    assert matcher.names == ("Ola van der Berg",)
    assert matcher.text_matches("Ola van der Berg ringte")
    assert matcher.text_matches("van der Berg, Ola")
    assert kql.name_query(matcher.names[0])[0].startswith('"Ola van der Berg" OR ')


def test_surname_first_display_names_on_messages_and_contacts() -> None:
    msg = message(ccRecipients=to("kontor@annen.no", "van der Berg, Ola"))
    assert SURNAMES.message_matches(msg) == (("name", 0),)
    body = {"contentType": "text", "content": "Hilsen\nNordmann Hansen, Kari"}
    assert SURNAMES.message_matches(message(body=body)) == (("name", 1),)

    def contact(**fields: Any) -> ContactRecord:
        return ContactRecord(system="outlook", external_id="1", **fields)

    assert SURNAMES.contact_matches(contact(display_name="van der Berg ,  Ola")) == (("name", 0),)
    assert SURNAMES.contact_matches(contact(display_name="de la Cruz, Maria")) == (("name", 2),)
    assert SURNAMES.contact_matches(contact(given_name="Kari", family_name="Nordmann Hansen")) == (
        ("name", 1),
    )
    assert not SURNAMES.contact_matches(contact(display_name="Berg, Ola"))
    assert not SURNAMES.contact_matches(contact(display_name="Nordmann-Hansen, Kari"))


def test_a_name_does_not_run_from_one_field_into_the_next() -> None:
    matcher = SubjectMatcher(Subject(names=("Ola Hansen",)))
    split = message(subject="Til Ola", body={"contentType": "text", "content": "Hansen AS"})
    assert not matcher.message_matches(split)
    names = message(toRecipients=to("a@x.no", "Per Ola") + to("b@x.no", "Hansen Kari"))
    assert not matcher.message_matches(names)


def test_the_name_query_holds_every_surname_first_form() -> None:
    [query] = kql.name_query("Ola van der Berg")
    phrases = [
        '"Ola van der Berg"',
        '"van der Berg Ola"',
        '"der Berg Ola van"',
        '"Berg Ola van der"',
    ]
    assert query == " OR ".join(phrases + [f"participants:{p}" for p in phrases])
    [query] = kql.name_query("Kari Nordmann Hansen")
    assert '"Nordmann Hansen Kari"' in query and 'participants:"Hansen Kari Nordmann"' in query
    [query] = kql.name_query("Maria de la Cruz")
    assert '"de la Cruz Maria"' in query and 'participants:"de la Cruz Maria"' in query


def test_a_name_of_many_words_gets_several_queries_each_within_the_limit() -> None:
    name = " ".join(f"Navnesen{i:02d}" for i in range(14))
    queries = kql.name_query(name)
    assert len(queries) > 1
    assert all(len(q) <= kql.MAX_QUERY_CHARS for q in queries)
    terms = {t for q in queries for t in q.split(" OR ")}
    assert len(terms) == 2 * 14  # every form, bare and as participants, none lost


@pytest.mark.parametrize(
    ("written", "where"),
    [
        ("van der Berg, Ola", "to"),
        ("van der Berg, Ola", "body"),
        ("Berg, Ola van der", "body"),
        ("Nordmann Hansen, Kari", "to"),
        ("Nordmann Hansen, Kari", "body"),
        ("de la Cruz, Maria", "to"),
        ("de la Cruz, Maria", "body"),
    ],
)
def test_every_surname_first_form_is_found_by_the_name_query(written: str, where: str) -> None:
    """Recall: the search (the simulator's KQL, on words as Exchange's index) returns
    the message, and the re-check keeps it."""
    found = sim_message("Beskjed", f"Hilsen {written}" if where == "body" else "Hei")
    if where == "to":
        found.to.append(Address(written, "x@annen.no"))
    hits = [
        compile_search(kql.search_value(q))(found)
        for n in SURNAMES.names
        for q in kql.name_query(n)
    ]
    assert any(hits)
    rendered = message(
        subject=found.subject,
        body={"contentType": "text", "content": found.body},
        toRecipients=[{"emailAddress": {"name": a.name, "address": a.address}} for a in found.to],
    )
    assert SURNAMES.message_matches(rendered)


# -- extensions ----------------------------------------------------------------------------

EXTENSION = SubjectMatcher(Subject(phones=("+4722334455;ext=12",)))
SWITCHBOARD = SubjectMatcher(Subject(phones=("+4722334455",)))


def test_an_extension_is_not_part_of_the_main_number() -> None:
    forms = phone_forms("+4722334455;ext=12")
    assert (forms.country_code, forms.significant, forms.national, forms.extension) == (
        "47",
        "22334455",
        "22334455",
        "12",
    )
    assert phone_forms("22 33 44 55 ext. 12") == forms
    assert phone_forms("22334455") == PhoneForms("47", "22334455", "22334455")


@pytest.mark.parametrize(
    "text",
    [
        "22 33 44 55 x12",
        "22334455 X 12",
        "22334455 ext. 12",
        "22334455, ext 12",
        "+47 22334455 innvalg 12",
        "22334455 linje 12",
        "22334455 tast 12",
        "22334455#12",
        "0047 22 33 44 55 #12",
        "+4722334455;ext=12",
    ],
)
def test_a_number_with_an_extension_matches_only_with_that_extension(text: str) -> None:
    assert EXTENSION.text_matches(text) == (("phone", 0),)
    assert not SWITCHBOARD.text_matches(text)  # that is another line


@pytest.mark.parametrize(
    "text",
    [
        "22334455",  # the switchboard itself
        "Ring 22 33 44 55 i dag",
        "22334455 x123",
        "22334455 x1",
        "22334455 x13",
        "22334455\n#12 saker",  # the next line is not an extension
        "22334456 x12",
        "122334455 x12",
    ],
)
def test_an_extension_near_miss_does_not_match(text: str) -> None:
    assert not EXTENSION.text_matches(text)


def test_a_contacts_extension_must_agree() -> None:
    def contact(number: str) -> ContactRecord:
        return ContactRecord(system="outlook", external_id="1", phones=(Phone(number=number),))

    assert EXTENSION.contact_matches(contact("22 33 44 55 x12")) == (("phone", 0),)
    assert not EXTENSION.contact_matches(contact("22 33 44 55"))
    assert not EXTENSION.contact_matches(contact("22 33 44 55 x13"))
    assert not SWITCHBOARD.contact_matches(contact("22 33 44 55 x12"))
    assert SWITCHBOARD.contact_matches(contact("+47 22 33 44 55"))


def test_the_extension_query_looks_for_the_main_number() -> None:
    [query] = kql.phone_query(phone_forms("+4722334455;ext=12"))
    assert '"22 33 44 55"' in query and '"22334455x12"' in query
    assert "2233445512" not in query
    hit = compile_search(kql.search_value(query))
    for written in ("22 33 44 55 x12", "22334455 innvalg 12", "22334455x12", "22334455#12"):
        found = sim_message("Beskjed", f"Ring {written}")
        assert hit(found), written
        assert EXTENSION.text_matches(found.body), written


# -- what matched ------------------------------------------------------------------------


def test_a_message_reports_which_identifiers_it_holds_by_position() -> None:
    matcher = SubjectMatcher(
        Subject(
            emails=("ola@x.no", "ola.privat@y.no", "OLA@X.NO"),
            phones=("99887766", "+4722334455;ext=12"),
            names=("Ola Hansen", "Ola van der Berg"),
        )
    )
    held = message(
        subject="Ola van der Berg",
        body={"contentType": "text", "content": "Ring 22334455 x12 eller skriv til ola@x.no"},
        ccRecipients=to("OLA.privat@y.no"),
    )
    assert matcher.message_matches(held) == (
        ("email", 0),
        ("email", 1),
        ("email", 2),
        ("phone", 1),
        ("name", 1),
    )
    assert matcher.emails == ("ola@x.no", "ola.privat@y.no")  # searched once
    assert matcher.message_matches(message()) == ()
    record = ContactRecord(
        system="outlook",
        external_id="1",
        display_name="Hansen, Ola",
        phones=(Phone(number="998 87 766"),),
    )
    assert matcher.contact_matches(record) == (("phone", 0), ("name", 0))
