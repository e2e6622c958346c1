"""The client-side re-check and the search queries, without the network."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.outlook import kql
from connectors.outlook.matching import SubjectMatcher, phone_forms
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
    assert MATCHER.matches_text(text)


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
    assert not MATCHER.matches_text(text)


def test_a_street_named_after_someone_does_not_name_them() -> None:
    matcher = SubjectMatcher(Subject(names=("Henrik Ibsen",)))
    assert not matcher.matches_text("Kontoret i Henrik Ibsens gate 1")
    assert matcher.matches_text("Henrik Ibsens skuespill")
    assert matcher.matches_text("Henrik Ibsen")


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
    assert MATCHER.matches_message(message(toRecipients=to("OLA.nordmann@kunde.no")))
    assert MATCHER.matches_message(message(ccRecipients=to("x@y.no", "Bjørnstad, Åse")))
    assert MATCHER.matches_message(message(subject="Åse Bjørnstad ringte"))
    html = {"contentType": "html", "content": "<p>Tlf:&nbsp;22&nbsp;33&nbsp;44&nbsp;55</p>"}
    assert MATCHER.matches_message(message(body=html))
    assert not MATCHER.matches_message(message(toRecipients=to("ola.nordmann@kunde.no.evil.com")))
    assert not MATCHER.matches_message(
        message(subject="Åse Bjørnstad-Lie", body=html | {"content": ""})
    )


def test_contacts_match_on_whole_identifiers() -> None:
    def contact(**fields: Any) -> ContactRecord:
        return ContactRecord(system="outlook", external_id="1", **fields)

    assert MATCHER.matches_contact(contact(emails=("ola.nordmann@kunde.NO",)))
    assert MATCHER.matches_contact(contact(phones=(Phone(number="+47 22 33 44 55"),)))
    assert MATCHER.matches_contact(contact(given_name="åse", family_name="Bjørnstad"))
    assert MATCHER.matches_contact(contact(display_name="Åse  Bjørnstad"))
    assert not MATCHER.matches_contact(contact(display_name="Åse Bjørnstad-Lie"))
    assert not MATCHER.matches_contact(
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
        'participants:ola@x.no OR "ola@x.no"',
        '"Åse Bjørn Lie" OR "Lie Åse Bjørn" OR participants:"Åse Bjørn Lie" '
        'OR participants:"Lie Åse Bjørn"',
    ]
    assert kql.search_value('"22 33 44 55"') == '"\\"22 33 44 55\\""'
    assert kql.sender_filter("o'hara@x.no") == "from/emailAddress/address eq 'o''hara@x.no'"


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
    query = kql.phone_query(phone_forms("22334455"))
    hit = compile_search(kql.search_value(query))
    found = sim_message("Beskjed", f"Ring tilbake på {written} i dag")
    assert hit(found)
    assert MATCHER.matches_text(found.body)
