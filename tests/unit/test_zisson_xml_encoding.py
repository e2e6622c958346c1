"""How a GetContacts document's bytes become text (issue 13, item 9), without a network."""

from __future__ import annotations

import codecs

import pytest

from connectors.zisson import xml_api
from daemon.domain import ContactRecord, Rejected

NAMES = "Åse Æsa Øyvind æøå ÆØÅ"
CP1252 = "€ “ ” ‘ ’ – — …"


def document(first: str, *, declaration: str | None = None, more: str = "") -> str:
    head = "" if declaration is None else f'<?xml version="1.0" encoding="{declaration}"?>'
    return (
        f"{head}<Contacts><Contact><ContactId>1</ContactId><FirstName>{first}</FirstName>"
        f"</Contact>{more}</Contacts>"
    )


def first_name(data: bytes, content_type: str | None = None) -> str:
    ((record, _raw),) = xml_api.parse_contacts(data, content_type=content_type)
    assert isinstance(record, ContactRecord)
    return record.given_name


def test_utf8_with_charset() -> None:
    data = document(NAMES + CP1252).encode("utf-8")
    assert first_name(data, "application/xml; charset=utf-8") == NAMES + CP1252


def test_latin1_with_charset_and_no_declaration() -> None:
    data = document(NAMES).encode("latin-1")
    assert first_name(data, "application/xml; charset=ISO-8859-1") == NAMES


@pytest.mark.parametrize("content_type", [None, "application/xml", "text/xml"])
def test_latin1_with_neither_charset_nor_declaration_falls_back(content_type: str | None) -> None:
    assert first_name(document(NAMES).encode("latin-1"), content_type) == NAMES


def test_undeclared_valid_utf8_stays_utf8() -> None:
    assert first_name(document(NAMES + CP1252).encode("utf-8")) == NAMES + CP1252


@pytest.mark.parametrize(
    ("content_type", "declaration"),
    [
        ("application/xml; charset=ISO-8859-1", None),
        ('application/xml; charset="iso-8859-1"', None),
        ("application/xml; charset=latin1", None),
        ("application/xml; charset=US-ASCII", None),
        (None, "ISO-8859-1"),
        (None, "latin1"),
    ],
)
def test_windows_1252_bytes_declared_latin1_are_not_control_characters(
    content_type: str | None, declaration: str | None
) -> None:
    data = document(NAMES + CP1252, declaration=declaration).encode("cp1252")
    name = first_name(data, content_type)
    assert name == NAMES + CP1252
    assert not any("\x80" <= char <= "\x9f" for char in name)


@pytest.mark.parametrize(
    ("encoding", "charset", "declaration"),
    [
        ("utf-8", "utf-8", "ISO-8859-1"),
        ("latin-1", "ISO-8859-1", "utf-8"),
        ("cp1252", "windows-1252", "UTF-8"),
    ],
)
def test_http_charset_wins_over_the_declaration(
    encoding: str, charset: str, declaration: str
) -> None:
    data = document(NAMES, declaration=declaration).encode(encoding)
    assert first_name(data, f"application/xml; charset={charset}") == NAMES


def test_order_of_the_sources() -> None:
    latin = document("x", declaration="ISO-8859-1").encode()
    assert xml_api.document_encoding(latin, "application/xml; charset=utf-8") == "utf-8"
    assert xml_api.document_encoding(latin, "application/xml") == "cp1252"
    # A label Python does not know is passed over for the next source.
    assert xml_api.document_encoding(latin, "application/xml; charset=x-nonsense") == "cp1252"
    # A byte order mark says more than anything written in the document or header.
    bom = codecs.BOM_UTF8 + latin
    assert xml_api.document_encoding(bom, "application/xml; charset=ISO-8859-1") == "utf-8"
    assert first_name(bom, "application/xml; charset=ISO-8859-1") == "x"


def test_a_utf16_declaration_in_ascii_bytes_is_passed_over() -> None:
    data = document(NAMES, declaration="UTF-16").encode("utf-8")
    assert xml_api.document_encoding(data, None) == "utf-8"
    assert first_name(data) == NAMES


def test_utf16_with_a_bom() -> None:
    data = document(NAMES, declaration="UTF-16").encode("utf-16")
    assert first_name(data, "application/xml") == NAMES


def test_one_bad_byte_rejects_its_contact_and_the_rest_is_read() -> None:
    more = (
        "<Contact><ContactId>2</ContactId><LastName>Bj\udcf8rn</LastName></Contact>"
        "<Contact><ContactId>3</ContactId><FirstName>Ærlig</FirstName></Contact>"
    )
    data = document(NAMES, more=more).encode("utf-8", errors="surrogateescape")
    entries = xml_api.parse_contacts(data, content_type="application/xml; charset=utf-8")
    (first, _), (bad, bad_raw), (third, _) = entries
    assert isinstance(first, ContactRecord) and first.given_name == NAMES
    assert isinstance(third, ContactRecord) and third.given_name == "Ærlig"
    assert isinstance(bad, Rejected)
    assert (bad.external_id, bad.reason) == ("2", "LastName: bytes that are not utf-8")
    assert bad_raw == bad.raw
    assert bad.raw == "<Contact><ContactId>2</ContactId><LastName>Bj\ufffdrn</LastName></Contact>"


def test_a_byte_windows_1252_has_no_character_for_rejects_its_contact() -> None:
    more = "<Contact><ContactId>\udc81</ContactId></Contact>"
    data = document(CP1252, declaration="ISO-8859-1", more=more).encode(
        "cp1252", errors="surrogateescape"
    )
    (good, _), (bad, _) = xml_api.parse_contacts(data)
    assert isinstance(good, ContactRecord) and good.given_name == CP1252
    assert isinstance(bad, Rejected)
    assert (bad.external_id, bad.reason) == (None, "ContactId: bytes that are not windows-1252")


def test_the_marker_never_collides_with_what_the_document_holds() -> None:
    # The document holds the first marker itself and references the second one.
    held = "\U0010fffd &#x10FFFC; &#1114107;"
    more = "<Contact><ContactId>2</ContactId><FirstName>\udcff</FirstName></Contact>"
    data = document(held, more=more).encode("utf-8", errors="surrogateescape")
    (good, _), (bad, _) = xml_api.parse_contacts(data, content_type="text/xml; charset=utf-8")
    assert isinstance(good, ContactRecord)
    assert good.given_name == "\U0010fffd \U0010fffc \U0010fffb"
    assert isinstance(bad, Rejected) and bad.reason == "FirstName: bytes that are not utf-8"


def test_a_document_cut_inside_a_character_is_still_cut_short() -> None:
    data = document(NAMES).encode("utf-8")
    cut = data[: data.index("Æ".encode()) + 1]
    with pytest.raises(xml_api.CutShort):
        xml_api.parse_contacts(cut, content_type="application/xml; charset=utf-8")
