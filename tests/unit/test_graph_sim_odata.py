"""The Graph simulator's OData pieces: Prefer, $filter, $select, paging tokens."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.graph.errors import GraphError
from sandbox.graph.odata import (
    encode_skiptoken,
    offset,
    page_size,
    parse_prefer,
    project,
    selection,
    wants_immutable_ids,
)
from sandbox.graph.odata_filter import compile_filter, first_property

DOC: dict[str, Any] = {
    "id": "x",
    "subject": "Faktura 2024",
    "receivedDateTime": "2024-03-01T10:00:00Z",
    "isRead": False,
    "from": {"emailAddress": {"name": "Kari", "address": "Kari@Firma.no"}},
    "toRecipients": [
        {"emailAddress": {"name": "Ola", "address": "ola@kunde.no"}},
        {"emailAddress": {"name": "Per", "address": "per@kunde.no"}},
    ],
}


def test_prefer_headers() -> None:
    prefer = parse_prefer(
        {"Prefer": 'IdType="ImmutableId", odata.maxpagesize=50, outlook.body-content-type="text"'}
    )
    assert prefer == {
        "idtype": "ImmutableId",
        "odata.maxpagesize": "50",
        "outlook.body-content-type": "text",
    }
    assert wants_immutable_ids(prefer)
    assert not wants_immutable_ids(parse_prefer({"prefer": 'IdType="RestId"'}))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("from/emailAddress/address eq 'kari@firma.no'", True),
        ("from/emailAddress/address eq 'kari@firma.no.evil'", False),
        ("From/EmailAddress/Address ne 'kari@firma.no'", False),
        ("receivedDateTime lt 2024-03-01T10:00:01Z", True),
        ("receivedDateTime le 2024-03-01T10:00:00Z", True),
        ("receivedDateTime gt 2024-03-01T11:00:00+01:00", False),
        ("receivedDateTime ge 2024-03-01T00:00:00Z and isRead eq false", True),
        ("isRead eq true or subject eq 'faktura 2024'", True),
        ("not (isRead eq false)", False),
        ("toRecipients/any(r: r/emailAddress/address eq 'per@kunde.no')", True),
        ("toRecipients/any(r:r/emailAddress/address eq 'kari@firma.no')", False),
        ("toRecipients/all(r: endswith(r/emailAddress/address, '@kunde.no'))", True),
        ("startswith(subject, 'fak')", True),
        ("contains(subject, '2024')", True),
        ("subject eq 'It''s'", False),
    ],
)
def test_filter(expression: str, expected: bool) -> None:
    assert compile_filter(expression)(DOC) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "subjekt eq 'x'",  # unknown property
        "receivedDateTime lt '2024-01-01'",  # a string for a date-time
        "subject eq",
        "subject eq 'x' and",
        "(subject eq 'x'",
        "'x'",
        "subject ~ 'x'",
    ],
)
def test_bad_filters_are_bad_requests(expression: str) -> None:
    with pytest.raises(GraphError) as raised:
        compile_filter(expression)(DOC)
    assert raised.value.status == 400


def test_first_property_of_a_filter() -> None:
    assert first_property("receivedDateTime ge 2024-01-01T00:00:00Z and isRead eq false") == (
        "receivedDateTime"
    )


def test_select_keeps_id_and_etag_and_refuses_unknown_names() -> None:
    chosen = selection({"$select": ["Subject,ISREAD"]}, ["id", "subject", "isRead"], "message")
    assert chosen == ["subject", "isRead"]
    assert project({"@odata.etag": "e", "id": "x", "subject": "s", "body": "b"}, ["subject"]) == {
        "@odata.etag": "e",
        "id": "x",
        "subject": "s",
    }
    with pytest.raises(GraphError):
        selection({"$select": ["nope"]}, ["id"], "message")


def test_paging_tokens_and_sizes() -> None:
    assert offset({"$skiptoken": [encode_skiptoken(30)]}) == 30
    assert offset({"$skip": ["5"]}) == 5
    assert page_size({}, {}) == 10
    assert page_size({"$top": ["1000"]}, {}) == 1000
    assert page_size({}, {"odata.maxpagesize": "3"}) == 3
    for bad in ({"$top": ["0"]}, {"$top": ["1001"]}, {"$top": ["ti"]}):
        with pytest.raises(GraphError):
            page_size(bad, {})
    with pytest.raises(GraphError):
        offset({"$skiptoken": ["not-a-token"]})
