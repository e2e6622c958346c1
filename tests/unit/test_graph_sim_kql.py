"""The Graph simulator's $search (KQL) parser and word matching, without HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.graph.errors import GraphError
from sandbox.graph.kql import compile_search, words
from sandbox.graph.store import Address, Message


def message(
    *, subject: str = "", body: str = "", sender: Address, to: tuple[Address, ...] = ()
) -> Message:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return Message(
        serial=1,
        immutable_id="i",
        regular_id="r",
        folder_id="f",
        subject=subject,
        body=body,
        sender=sender,
        to=list(to),
        cc=[],
        received=now,
        created=now,
        modified=now,
        conversation_id="c",
        internet_message_id="<m>",
    )


KARI = message(
    subject="Beskjed fra sentralbordet",
    body="Åse ringte fra +47 22 33 44 55. Ring tilbake!",
    sender=Address("Kari Nordmann", "kari.nordmann@firma.no"),
    to=(Address("Ola Hansen", "ola@kunde.no"),),
)


def hit(query: str, target: Message = KARI) -> bool:
    return compile_search(query)(target)


def test_words_fold_case_and_keep_norwegian_letters() -> None:
    assert words("ÅSE ringte, +47 22-33") == ("åse", "ringte", "47", "22", "33")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"åse"', True),
        ('"Ås"', False),  # whole words only
        ('"\\"22 33 44 55\\""', True),
        ('"\\"22 33 44\\""', True),  # a shorter run of the same words
        ('"\\"33 22\\""', False),  # order matters in a phrase
        ('"22334455"', False),
        ('"body:\\"47 22 33 44 55\\""', True),
        ('"subject:sentralbordet"', True),
        ('"subject:åse"', False),
        ('"from:kari.nordmann@firma.no"', True),
        ('"from:ola@kunde.no"', False),
        ('"to:ola@kunde.no"', True),
        ('"participants:\\"Ola Hansen\\""', True),
        ('"participants:\\"Ola Hansen Jr\\""', False),
        ('"recipients:kari"', False),
        ('"ola"', False),  # bare words search from, subject and body only
        ('"kari AND åse"', True),
        ('"kari åse"', True),  # juxtaposition is AND
        ('"kari AND per"', False),
        ('"per OR åse"', True),
        ('"NOT per"', True),
        ('"kari NOT (åse OR per)"', False),
        ('"(from:per OR from:kari) AND body:tilbake"', True),
        ("åse", True),  # unquoted: tolerated
        ('"unknownprop:åse"', False),  # searched as the free text "unknownprop åse"
    ],
)
def test_matching(query: str, expected: bool) -> None:
    assert hit(query) is expected


@pytest.mark.parametrize("query", ['""', '"(kari"', '"kari)"', '"kari OR"'])
def test_syntax_errors_are_bad_requests(query: str) -> None:
    with pytest.raises(GraphError) as raised:
        compile_search(query)
    assert raised.value.status == 400
