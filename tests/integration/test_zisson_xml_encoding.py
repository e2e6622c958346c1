"""GetContacts in legacy encodings (issue 13, item 9): the HTTP charset first, then the
XML declaration, then UTF-8 or the windows-1252 fallback; a bad byte rejects one entry."""

from __future__ import annotations

import httpx
import pytest

from daemon.domain import ContactRecord
from tests.fixtures.zisson import ZissonBound

NORWEGIAN = {"firstName": "Åse Æsa Øyvind", "lastName": "Bækkelund-Strøm", "title": "æøå ÆØÅ"}
CP1252 = {"firstName": "Pris € 10", "lastName": "“Sitert” – ‘enkelt’", "title": "Salg…"}


def _names(record: ContactRecord) -> tuple[str, str, str]:
    return record.given_name, record.family_name, record.title


async def _read_one(bound: ZissonBound, user: dict[str, str]) -> ContactRecord:
    user_id = bound.seed(user)
    result = await bound.connector.read(bound.customer)
    assert result.rejected == ()
    (record,) = result.records
    assert record.external_id == user_id
    return record


def _expected(user: dict[str, str]) -> tuple[str, str, str]:
    return user["firstName"], user["lastName"], user["title"]


async def test_utf8_with_charset_and_no_declaration_round_trips(zisson_xml: ZissonBound) -> None:
    zisson_xml.sim.set_xml_encoding(zisson_xml.guid, "utf-8", charset="utf-8", declaration=None)
    record = await _read_one(zisson_xml, {**NORWEGIAN, "comments": "€ “ ” –"})
    assert _names(record) == _expected(NORWEGIAN)
    assert record.notes == "€ “ ” –"


async def test_utf8_with_one_bad_byte_rejects_that_entry_and_reads_the_rest(
    zisson_xml: ZissonBound,
) -> None:
    zisson_xml.sim.set_xml_encoding(zisson_xml.guid, "utf-8", charset="utf-8")
    good = zisson_xml.seed(NORWEGIAN)
    # "Bj\xf8rn" in Latin-1 inside a UTF-8 answer: the byte 0xF8 is not UTF-8.
    zisson_xml.sim.put_raw(
        zisson_xml.guid,
        "<Contact><ContactId>raw-1</ContactId><FirstName>Bj\udcf8rn</FirstName></Contact>",
    )

    result = await zisson_xml.connector.read(zisson_xml.customer)

    (record,) = result.records
    assert (record.external_id, _names(record)) == (good, _expected(NORWEGIAN))
    (rejected,) = result.rejected
    assert rejected.external_id == "raw-1"
    assert rejected.reason == "FirstName: bytes that are not utf-8"
    assert "Bj\ufffdrn" in rejected.raw


@pytest.mark.parametrize("label", ["ISO-8859-1", "iso-8859-1", "latin1"])
async def test_latin1_with_charset_and_no_declaration(zisson_xml: ZissonBound, label: str) -> None:
    zisson_xml.sim.set_xml_encoding(zisson_xml.guid, "iso-8859-1", charset=label, declaration=None)
    record = await _read_one(zisson_xml, NORWEGIAN)
    assert _names(record) == _expected(NORWEGIAN)


async def test_latin1_with_neither_charset_nor_declaration_falls_back_to_windows_1252(
    zisson_xml: ZissonBound,
) -> None:
    zisson_xml.sim.set_xml_encoding(zisson_xml.guid, "iso-8859-1", charset=None, declaration=None)
    record = await _read_one(zisson_xml, NORWEGIAN)
    assert _names(record) == _expected(NORWEGIAN)


async def test_undeclared_windows_1252_falls_back_to_windows_1252(
    zisson_xml: ZissonBound,
) -> None:
    zisson_xml.sim.set_xml_encoding(zisson_xml.guid, "windows-1252", charset=None, declaration=None)
    record = await _read_one(zisson_xml, {**CP1252, "comments": "æøå ÆØÅ"})
    assert _names(record) == _expected(CP1252)
    assert record.notes == "æøå ÆØÅ"


@pytest.mark.parametrize(
    ("charset", "declaration"),
    [("ISO-8859-1", None), (None, "ISO-8859-1"), ("ISO-8859-1", "ISO-8859-1")],
    ids=["http-charset", "xml-declaration", "both"],
)
async def test_windows_1252_declared_iso_8859_1_reads_as_windows_1252(
    zisson_xml: ZissonBound, charset: str | None, declaration: str | None
) -> None:
    zisson_xml.sim.set_xml_encoding(
        zisson_xml.guid, "windows-1252", charset=charset, declaration=declaration
    )
    record = await _read_one(zisson_xml, {**CP1252, "comments": "æøå ÆØÅ"})
    assert _names(record) == _expected(CP1252)
    assert record.notes == "æøå ÆØÅ"
    assert not any("\x80" <= char <= "\x9f" for char in "".join(_names(record)))


@pytest.mark.parametrize(
    ("encoding", "charset", "declaration"),
    [
        ("utf-8", "utf-8", "ISO-8859-1"),
        ("iso-8859-1", "ISO-8859-1", "utf-8"),
        ("windows-1252", "windows-1252", "utf-8"),
    ],
)
async def test_http_charset_wins_over_a_disagreeing_declaration(
    zisson_xml: ZissonBound, encoding: str, charset: str, declaration: str
) -> None:
    zisson_xml.sim.set_xml_encoding(
        zisson_xml.guid, encoding, charset=charset, declaration=declaration
    )
    record = await _read_one(zisson_xml, NORWEGIAN)
    assert _names(record) == _expected(NORWEGIAN)


async def test_the_encoding_knob_over_sim_http(zisson_xml: ZissonBound) -> None:
    zisson_xml.seed(NORWEGIAN)
    base = zisson_xml.sim.url
    route = f"{base}/_sim/accounts/{zisson_xml.guid}/listing/encoding"
    async with httpx.AsyncClient() as client:
        refused = await client.post(route, json={"encoding": "no-such-codec"})
        assert refused.status_code == 400
        body = {"encoding": "windows-1252", "charset": None, "declaration": "ISO-8859-1"}
        assert (await client.post(route, json=body)).status_code == 204
        state = (await client.get(f"{base}/_sim/state")).json()
        assert state["faults"]["xml_encodings"][zisson_xml.guid] == body
        answer = await client.get(
            f"{base}/api/simple/GetContacts",
            auth=(zisson_xml.username, zisson_xml.password),
        )
    assert answer.headers["Content-Type"] == "application/xml"
    assert answer.content.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<Contacts>')
    assert "Bækkelund-Strøm".encode("cp1252") in answer.content
    result = await zisson_xml.connector.read(zisson_xml.customer)
    (record,) = result.records
    assert _names(record) == _expected(NORWEGIAN)
