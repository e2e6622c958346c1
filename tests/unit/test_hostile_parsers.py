"""Each parser fed random and hostile documents (issue 10, item 5): what comes out is a
page-level ContractError (or a page cut short, read again), or records and per-record
rejections; never a RecursionError, a UnicodeError or a record the store cannot keep."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import hostile
from connectors.base import ContractError, HttpConnectorBase
from connectors.firestore import mapping
from connectors.firestore.mapping import from_document
from connectors.outlook import wire
from connectors.outlook.mapping import read_result
from connectors.zisson import json_api, xml_api
from daemon.domain import ContactRecord, Rejected

CHECKS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOSTILE_TEXT = [
    "\ud800",
    "Kari\udcff",
    "\x00",
    "\x1b[2J",
    "\x9b31m",
    "\x7f",
    "A" * 1500,
    "N" * 40_000,
    "",
    " ",
    "Åse Ødegård",
    "a\r\nb\tc",
    ".",
    "..",
    "a/b",
    "x?y",
    "#",
    "%2e%2e",
    "😀",
]
chars = st.characters() | st.integers(0xD800, 0xDFFF).map(chr) | st.integers(0, 0x9F).map(chr)
texts = st.lists(chars, max_size=12).map("".join) | st.sampled_from(HOSTILE_TEXT)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
DEPTHS = st.sampled_from([hostile.MAX_DEPTH, hostile.MAX_DEPTH + 1, 900, 5_000, 100_000])


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """The document cut short, or with random bytes spliced in, or as it is."""
    edit = draw(st.sampled_from(["none", "none", "cut", "bytes"]))
    if edit == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if edit == "bytes":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


def storable(text: str) -> None:
    text.encode("utf-8")  # raises for a lone surrogate


def url_id_problem(value: str) -> str | None:
    return hostile.id_problem(value, slash=True)


def assert_fit(
    items: Iterable[ContactRecord | Rejected],
    id_problem: Callable[[str], str | None] = url_id_problem,
) -> None:
    """Records hold only what passes the checks; rejections name a field and can be kept."""
    for item in items:
        if isinstance(item, Rejected):
            storable(item.raw)
            assert ":" in item.reason
            storable(item.reason)
            assert item.external_id is None or id_problem(item.external_id) is None
            continue
        assert isinstance(item, ContactRecord)
        assert id_problem(item.external_id) is None
        for name in ("given_name", "family_name", "display_name", "title", "department"):
            assert hostile.text_problem(getattr(item, name)) is None, name
        assert hostile.text_problem(item.notes, limit=hostile.MAX_NOTES_CHARS) is None
        for value in (*item.emails, *(p.number for p in item.phones)):
            assert hostile.text_problem(value) is None


def outcome(
    parse: Callable[[], Iterable[ContactRecord | Rejected]], *page_level: type[Exception]
) -> None:
    page_errors: tuple[type[Exception], ...] = (ContractError, *page_level)
    try:
        items = list(parse())
    except page_errors as exc:
        storable(str(exc))
        return
    assert_fit(items)


# --- Zisson JSON ---------------------------------------------------------------------

USER_KEYS = [
    "id",
    "guid",
    "type",
    "firstName",
    "lastName",
    "displayName",
    "title",
    "department",
    "emails",
    "phoneNumbers",
    "mobileNumber",
    "comments",
    "version",
]
user_values = (
    json_values
    | st.lists(texts, max_size=3)
    | st.lists(st.fixed_dictionaries({"number": texts, "type": texts | st.none()}), max_size=3)
)
users = st.dictionaries(st.sampled_from(USER_KEYS), user_values, max_size=8) | json_values


@st.composite
def zisson_pages(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(users, max_size=4))
    if draw(st.booleans()):
        payload: Any = {"items": items, "page": 1, "total": len(items), "next": None}
    else:
        payload = items
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        deep = f'{{"id": "deep", "comments": {nested(draw(DEPTHS))}}}'
        text = text.replace("[", "[" + deep + ("," if items else ""), 1)
    return mutate(draw, text.encode("utf-8", errors="surrogatepass"))


@CHECKS
@given(zisson_pages())
def test_zisson_json_pages(document: bytes) -> None:
    def parse() -> list[ContactRecord | Rejected]:
        page = json_api.parse_page(1, document)
        return [json_api.user_record(item) for item in page.items]

    outcome(parse, json_api._CutShort)


def test_a_deep_json_entry_is_rejected_naming_its_field_and_the_next_one_is_read() -> None:
    document = (
        '{"items": [{"id": "1", "comments": ' + nested(100_000) + '}, {"id": "2", "firstName":'
        ' "Åse"}], "total": 2, "next": null}'
    ).encode()
    first, second = (json_api.user_record(item) for item in json_api.parse_page(1, document).items)
    assert isinstance(first, Rejected) and first.external_id == "1"
    assert first.reason == f"comments: nested deeper than {hostile.MAX_DEPTH} levels"
    assert isinstance(second, ContactRecord) and second.given_name == "Åse"


def test_nesting_up_to_the_limit_is_kept_and_past_it_cut() -> None:
    assert hostile.loads(nested(hostile.MAX_DEPTH)) == json.loads(nested(hostile.MAX_DEPTH))
    cut = hostile.loads(nested(hostile.MAX_DEPTH + 1))
    for _ in range(hostile.MAX_DEPTH - 1):
        cut = cut[0]
    assert cut == [hostile.TOO_DEEP]
    deep = hostile.loads('{"a": ' + nested(100_000) + ', "b": "\\ud800"}')
    assert hostile.deep_field(deep) == "a" and deep["b"] == "\ud800"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"id": "1", "firstName": "Kari\ud800"}, "firstName: a lone surrogate"),
        ({"id": "1", "lastName": "\x1b[2J"}, "lastName: a control character"),
        ({"id": "1", "title": "\x85"}, "title: a control character"),
        ({"id": "1", "firstName": "K" * 1025}, "firstName: longer than 1024 characters"),
        ({"id": "1", "emails": ["a@b.no"] * 101}, "emails: more than 100 entries"),
        ({"id": "1", "phoneNumbers": [{"number": "\x00"}]}, "phoneNumbers[0].number: a control"),
        ({"id": ".."}, "id: a dot segment"),
        ({"id": "."}, "id: a dot segment"),
        ({"id": "a/b"}, "id: a character an id cannot hold"),
        ({"id": "7%2F"}, "id: a character an id cannot hold"),
    ],
)
def test_zisson_json_entry_rejections_name_the_field_never_the_value(
    entry: dict[str, Any], reason: str
) -> None:
    rejected = json_api.user_record(entry)
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith(reason)
    assert "Kari" not in rejected.reason and "a@b.no" not in rejected.reason
    storable(rejected.raw)


def test_zisson_json_notes_may_be_long_and_hold_line_breaks() -> None:
    record = json_api.user_record({"id": "1", "comments": "Linje 1\r\n\tLinje 2 " * 1000})
    assert isinstance(record, ContactRecord)


def test_a_byte_that_is_not_utf8_rejects_only_its_entry() -> None:
    document = b'[{"id": "1", "firstName": "Ol\xffa"}, {"id": "2", "firstName": "\xc3\x85se"}]'
    first, second = (json_api.user_record(item) for item in json_api.parse_page(1, document).items)
    assert isinstance(first, Rejected) and first.reason.startswith("firstName: ")
    assert isinstance(second, ContactRecord) and second.given_name == "Åse"


# --- Zisson XML ----------------------------------------------------------------------

ELEMENTS = ["ContactId", *xml_api.READ_ELEMENTS, "Address", "Editable", "Shoe"]


@st.composite
def xml_documents(draw: st.DrawFn) -> bytes:
    contacts = []
    for _ in range(draw(st.integers(0, 4))):
        fields = draw(st.lists(st.tuples(st.sampled_from(ELEMENTS), texts), max_size=6))
        inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
        if draw(st.booleans()):
            depth = draw(DEPTHS.filter(lambda d: d <= 5_000))  # 100,000: the integration test
            inner += "<Comments>" + "<a>" * depth + "</a>" * depth + "</Comments>"
        contacts.append(f"<Contact>{inner}</Contact>")
    head = draw(
        st.sampled_from(
            [
                '<?xml version="1.0" encoding="utf-8"?>',
                "",
                '<!DOCTYPE Contacts [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
            ]
        )
    )
    document = head + "<Contacts>" + "".join(contacts) + "</Contacts>"
    return mutate(draw, document.encode("utf-8", errors="surrogatepass"))


@CHECKS
@given(xml_documents())
def test_zisson_xml_documents(document: bytes) -> None:
    def parse() -> list[ContactRecord | Rejected]:
        entries = xml_api.parse_contacts(document)
        for _, raw in entries:
            storable(raw)
        return [item for item, _ in entries]

    outcome(parse, xml_api.CutShort)


def test_xml_entities_are_refused_not_expanded() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE Contacts [<!ENTITY a "ha">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Contacts><Contact><ContactId>1</ContactId><FirstName>&b;</FirstName></Contact>"
        b"</Contacts>"
    )
    with pytest.raises(ContractError, match="DTD, entities"):
        xml_api.parse_contacts(laughs)


def test_a_contact_hidden_below_the_depth_cut_refuses_the_page() -> None:
    depth = hostile.MAX_DEPTH + 5
    document = (
        "<Contacts>"
        + "<w>" * depth
        + "<Contact><ContactId>1</ContactId></Contact>"
        + "</w>" * depth
        + "</Contacts>"
    ).encode()
    with pytest.raises(ContractError, match="not directly under the root"):
        xml_api.parse_contacts(document)


# --- Outlook contacts ----------------------------------------------------------------

PROPS = [
    "id",
    "givenName",
    "surname",
    "displayName",
    "jobTitle",
    "department",
    "personalNotes",
    "mobilePhone",
    "businessPhones",
    "homePhones",
    "emailAddresses",
    "changeKey",
    "categories",
]
contact_values = (
    json_values
    | st.lists(texts, max_size=3)
    | st.lists(st.fixed_dictionaries({"address": texts | st.none(), "name": texts}), max_size=3)
)
contacts = st.dictionaries(st.sampled_from(PROPS), contact_values, max_size=9)


@st.composite
def graph_pages(draw: st.DrawFn) -> bytes:
    text = json.dumps({"value": draw(st.lists(contacts, max_size=4))}, ensure_ascii=True)
    if draw(st.booleans()):
        deep = f'{{"id": "AAMk-deep=", "surname": {nested(draw(DEPTHS))}}}'
        text = text.replace("[", "[" + deep + ",", 1)
    return mutate(draw, text.encode())


@CHECKS
@given(graph_pages())
def test_outlook_contact_pages(document: bytes) -> None:
    def parse() -> list[ContactRecord | Rejected]:
        body = wire.response_json(httpx.Response(200, content=document), "list contacts")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            return []
        result = read_result([c for c in value if isinstance(c, dict)], cursor=None)
        return [*result.records, *result.rejected]

    outcome(parse)


@pytest.mark.parametrize("bad", ["", ".", "..", "a?b", "a#b", "a%2Fb", "a b", "\x00", "\ud800"])
def test_an_outlook_id_that_would_change_the_url_is_refused(bad: str) -> None:
    if bad in ("", ".", "..", "\ud800"):
        with pytest.raises(ValueError, match="cannot go into a URL") as caught:
            wire.segment(bad)
        assert isinstance(caught.value, ContractError)
    else:  # percent-encoded, it stays one segment; read, such an id is rejected
        assert "/" not in wire.segment(bad) and "." not in wire.segment(bad)
    rejected = read_result([{"id": bad, "givenName": "Kari"}], cursor=None).rejected
    assert [r.reason.split(":")[0] for r in rejected] == ["id"]
    assert rejected[0].external_id is None


def test_an_outlook_immutable_id_with_slash_and_plus_is_a_segment() -> None:
    assert wire.segment("AAMkAD/+x==") == "AAMkAD%2F%2Bx%3D%3D"
    assert wire.segment("Kunder/Fjord AS") == "Kunder%2FFjord%20AS"  # a folder's name


# --- Firestore documents -------------------------------------------------------------

FIELDS = ["kind", "given_name", "family_name", "display_name", "title", "notes", "emails", "phones"]
document_values = (
    json_values
    | st.binary(max_size=4)
    | st.lists(st.fixed_dictionaries({"number": texts, "type": texts | st.none()}), max_size=3)
    | DEPTHS.filter(lambda d: d < 1_000).map(lambda d: json.loads(nested(d)))
)


# What Firestore takes as a document id: UTF-8, not empty, not '.' or '..', no '/'.
doc_ids = texts.filter(
    lambda t: t not in ("", ".", "..") and "/" not in t and hostile.storable(t) == t
)


@CHECKS
@given(
    doc_ids,
    st.dictionaries(st.sampled_from(FIELDS) | texts, document_values, max_size=6) | json_values,
)
def test_firestore_documents(doc_id: str, data: Any) -> None:
    assert_fit([from_document(doc_id, data, None)], mapping._id_problem)


# --- response size cap ---------------------------------------------------------------


def connector(handler: Callable[[httpx.Request], httpx.Response], cap: int) -> HttpConnectorBase:
    return HttpConnectorBase(
        base_url="http://zisson.test",
        transport=httpx.MockTransport(handler),
        max_response_bytes=cap,
    )


async def answer(handler: Callable[[httpx.Request], httpx.Response], cap: int) -> httpx.Response:
    client = connector(handler, cap)
    try:
        return await client.send(client.http.build_request("GET", "/"), what="GetContacts")
    finally:
        await client.aclose()


async def test_a_gzip_bomb_stops_at_the_cap_not_at_its_size() -> None:
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=9)  # 16 KiB on the wire

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        headers = {"Content-Encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(bomb))

    with pytest.raises(ContractError, match="cap of 1048576 bytes"):
        await answer(handler, 1024 * 1024)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
async def test_a_compressed_answer_within_the_cap_reads_as_sent(encoding: str) -> None:
    body = json.dumps({"items": [{"firstName": "Åse"}] * 1000}).encode()
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "identity": bytes,
    }
    compress = compressors[encoding]

    def handler(request: httpx.Request) -> httpx.Response:
        stream = httpx.ByteStream(compress(body))
        return httpx.Response(200, headers={"Content-Encoding": encoding}, stream=stream)

    response = await answer(handler, len(body))
    assert response.content == body


async def test_an_encoding_not_asked_for_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        stream = httpx.ByteStream(b"??")
        return httpx.Response(200, headers={"Content-Encoding": "br"}, stream=stream)

    with pytest.raises(ContractError, match="Content-Encoding 'br'"):
        await answer(handler, 1024 * 1024)
