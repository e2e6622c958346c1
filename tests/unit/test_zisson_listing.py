"""The JSON listing's consistency checks against an in-memory Zisson whose directory
moves between page requests (no network: every request order can be played)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import RetriableError
from connectors.zisson import json_api

Change = tuple[Literal["delete", "create", "move"], int, int]


@dataclass
class Directory:
    """An offset-paged listing; `changes[k]` happen right after request k is served."""

    ids: list[str]
    changes: Mapping[int, list[Change]] = field(default_factory=dict)
    delays: list[int] = field(default_factory=list)  # event-loop turns before request k
    ever: set[str] = field(init=False)
    deleted: set[str] = field(default_factory=set)
    requests: int = 0
    applied: int = 0
    created: int = 0

    def __post_init__(self) -> None:
        self.ever = set(self.ids)

    def page(self, number: int, size: int) -> dict[str, Any]:
        items = self.ids[(number - 1) * size : number * size]
        more = number * size < len(self.ids)
        return {
            "items": [{"id": user_id, "firstName": "Åse"} for user_id in items],
            "page": number,
            "pageSize": size,
            "total": len(self.ids),
            "next": number + 1 if more else None,
        }

    def change(self, how: str, a: int, b: int) -> None:
        self.applied += 1
        if how == "create":
            self.created += 1
            new = f"new-{self.created}"
            self.ever.add(new)
            self.ids.insert(a % (len(self.ids) + 1), new)
        elif self.ids and how == "delete":
            self.deleted.add(self.ids.pop(a % len(self.ids)))
        elif self.ids:
            moved = self.ids.pop(a % len(self.ids))
            self.ids.insert(b % (len(self.ids) + 1), moved)


class FakeSession:
    """A `Session` serving `Directory` pages, or fixed payloads in turn."""

    account = "json:test"

    def __init__(
        self, directory: Directory | None = None, answers: list[Any] | None = None
    ) -> None:
        self.directory = directory
        self.answers = answers or []
        self.calls = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        assert method == "GET" and path == json_api.USERS_PATH and params is not None
        index = self.calls
        self.calls += 1
        if self.directory is None:
            payload = self.answers[min(index, len(self.answers) - 1)]
        else:
            directory = self.directory
            for _ in range(directory.delays[index] if index < len(directory.delays) else 0):
                await asyncio.sleep(0)  # lets other pages' requests be served first
            served = directory.requests
            directory.requests += 1
            payload = directory.page(int(params["page"]), int(params["pageSize"]))
            for change in directory.changes.get(served, []):
                directory.change(*change)
        return httpx.Response(200, content=json.dumps(payload).encode())


def read(session: FakeSession, page_size: int) -> list[Any]:
    return asyncio.run(json_api.list_entries(session, page_size=page_size))


changes = st.lists(
    st.tuples(
        st.integers(0, 24),
        st.tuples(
            st.sampled_from(["delete", "create", "move"]), st.integers(0, 99), st.integers(0, 99)
        ),
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(
    size=st.integers(0, 45),
    page_size=st.integers(1, 12),
    scheduled=changes,
    delays=st.lists(st.integers(0, 3), max_size=30),
)
def test_a_listing_read_holds_every_entry_that_stayed_exactly_once_or_fails(
    size: int, page_size: int, scheduled: list[tuple[int, Change]], delays: list[int]
) -> None:
    initial = [f"u{n}" for n in range(size)]
    plan: dict[int, list[Change]] = {}
    for after, change in scheduled:
        plan.setdefault(after, []).append(change)
    directory = Directory(list(initial), plan, delays)

    try:
        entries = read(FakeSession(directory), page_size)
    except RetriableError as error:
        assert directory.applied > 0, "a listing that stood still must read"
        assert "did not read consistently" in str(error)
        return

    ids = [entry["id"] for entry in entries]
    assert len(ids) == len(set(ids))
    assert set(initial) - directory.deleted <= set(ids), "an entry that stayed was missed"
    assert set(ids) <= directory.ever
    if directory.applied == 0:
        assert ids == initial


def test_a_shift_behind_the_first_page_is_caught_by_the_second_read() -> None:
    # Pages of 3: after page 2 is served, an entry on page 2 goes and a new one comes at
    # the end; page 3 then starts one entry late (u6 is never on a page) and the total
    # and count still add up. Page 1 is the same before and after.
    directory = Directory([f"u{n}" for n in range(9)], {1: [("delete", 4, 0), ("create", 8, 0)]})

    entries = read(FakeSession(directory), 3)

    assert [e["id"] for e in entries] == directory.ids
    assert "u6" in [e["id"] for e in entries]
    # Read and second read (page 2 disagrees), then a read and second read that agree.
    assert directory.requests == 2 * 3 + 2 * 3


def test_one_page_is_one_request() -> None:
    directory = Directory(["a", "b"])
    assert [e["id"] for e in read(FakeSession(directory), 5)] == ["a", "b"]
    assert directory.requests == 1


@pytest.mark.parametrize("total", [3, 1])
def test_a_last_first_page_whose_total_disagrees_fails(total: int) -> None:
    lying = {"items": [{"id": "a"}, {"id": "b"}], "total": total, "next": None}
    session = FakeSession(answers=[lying])

    with pytest.raises(RetriableError, match=f"1 page.s. hold 2 entries, the total says {total}"):
        read(session, 200)

    assert session.calls == json_api.LISTING_ATTEMPTS


def test_a_last_first_page_is_taken_once_it_adds_up() -> None:
    session = FakeSession(
        answers=[
            {"items": [{"id": "a"}], "total": 2, "next": None},
            {"items": [{"id": "a"}, {"id": "b"}], "total": 2, "next": None},
        ]
    )
    assert [e["id"] for e in read(session, 200)] == ["a", "b"]


def test_an_id_a_server_lists_on_two_pages_is_refused_not_taken() -> None:
    pages = [
        {"items": [{"id": "a"}, {"id": "b"}], "total": 4, "next": 2},
        {"items": [{"id": "b"}, {"id": "c"}], "total": 4, "next": None},
    ]

    class Twice(FakeSession):
        async def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
            number = int(kwargs["params"]["page"])
            self.calls += 1
            return httpx.Response(200, content=json.dumps(pages[number - 1]).encode())

    with pytest.raises(RetriableError, match="an id is on page 1 and on page 2"):
        read(Twice(), 2)


def test_a_bare_array_is_one_page() -> None:
    session = FakeSession(answers=[[{"guid": "g1"}, {"guid": "g2"}]])
    assert [e["guid"] for e in read(session, 200)] == ["g1", "g2"]


@pytest.mark.parametrize(
    "text", ['{"items": [{"id": "a"}], "total": 1, "next": nu', '{"items": [{"id": "å', ""]
)
def test_a_page_cut_short_is_read_again(text: str) -> None:
    whole = {"items": [{"id": "a"}], "total": 1, "next": None}

    class CutOnce(FakeSession):
        async def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
            self.calls += 1
            if self.calls == 1:
                return httpx.Response(200, content=text.encode())
            return httpx.Response(200, content=json.dumps(whole).encode())

    session = CutOnce()
    assert read(session, 200) == [{"id": "a"}]
    assert session.calls == 2
