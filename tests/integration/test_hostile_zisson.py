"""Hostile records from Zisson, over real HTTP against the simulator: each is quarantined
with its field named, and the rest of the customer reads and syncs (issue 10, item 5)."""

from __future__ import annotations

import pytest

from connectors.base import ContractError
from connectors.zisson import ZissonConnector, ZissonSettings
from daemon.domain import ContactRecord, Operation, OpKind, OpStatus, Rejected
from sandbox.zisson import JsonText, ZissonSimulator
from tests.fixtures.zisson import FAST_RETRIES, ZissonBound, ZissonConnect
from tests.integration.sync_world import SyncWorld

LONG = "Å" * 5000
DEEP = 100_000

# (raw entry, field the reason must name, external id the rejection keeps)
HOSTILE_JSON: list[tuple[object, str, str | None]] = [
    ({"id": "h-surrogate", "firstName": "Kari\ud800"}, "firstName", "h-surrogate"),
    # U+DCFF is served as the byte 0xFF: one byte that is not UTF-8 in the page.
    ({"id": "h-byte", "lastName": "Nordm\udcffann"}, "lastName", "h-byte"),
    ({"id": "h-escape", "title": "\x1b[31mSjef"}, "title", "h-escape"),
    ({"id": "h-c1", "department": "\x9b2J"}, "department", "h-c1"),
    ({"id": "h-nul", "comments": "a\x00b"}, "comments", "h-nul"),
    ({"id": "h-long", "firstName": LONG}, "firstName", "h-long"),
    ({"id": "h-many", "emails": [f"p{i}@fjord.no" for i in range(500)]}, "emails", "h-many"),
    ({"id": "..", "firstName": "Dot"}, "id", None),
    ({"id": "a/../b", "firstName": "Slash"}, "id", None),
    (
        JsonText('{"id": "h-deep", "comments": ' + "[" * DEEP + "]" * DEEP + "}"),
        "comments",
        "h-deep",
    ),
]


def good(n: int) -> dict[str, object]:
    return {"firstName": f"Åse{n}", "lastName": "Ødegård", "emails": [f"ase{n}@fjord.no"]}


def assert_named(rejected: Rejected, field: str) -> None:
    assert rejected.reason.startswith(f"{field}:"), rejected.reason
    for secret in ("Kari", "Nordm", "Sjef", "2J", LONG[:20], "fjord", "Dot", "Slash"):
        assert secret not in rejected.reason
    rejected.raw.encode("utf-8")  # storable: no lone surrogate left


async def test_json_hostile_entries_are_rejected_one_by_one_and_the_rest_is_read(
    zisson_json: ZissonBound,
) -> None:
    kept = [zisson_json.seed(good(n)) for n in range(3)]
    for raw, _, _ in HOSTILE_JSON:
        zisson_json.sim.put_raw(zisson_json.guid, raw)

    result = await zisson_json.view.read(zisson_json.customer)

    assert sorted(r.external_id for r in result.records) == sorted(kept)
    assert len(result.rejected) == len(HOSTILE_JSON)
    for rejected, (_, field, external_id) in zip(result.rejected, HOSTILE_JSON, strict=True):
        assert rejected.external_id == external_id
        assert_named(rejected, field)


HOSTILE_XML: list[tuple[str, str]] = [
    # A C1 control is legal XML 1.0, so it arrives in the text.
    ("<Contact><ContactId>x-c1</ContactId><FirstName>\x9b2J</FirstName></Contact>", "FirstName"),
    # U+DC80..U+DCFF is served as the byte it escapes: not UTF-8.
    ("<Contact><ContactId>x-byte</ContactId><LastName>\udcff</LastName></Contact>", "LastName"),
    ("<Contact><ContactId>x-long</ContactId><Title>" + LONG + "</Title></Contact>", "Title"),
    ("<Contact><ContactId>..</ContactId><FirstName>Dot</FirstName></Contact>", "ContactId"),
    (
        "<Contact><ContactId>x-deep</ContactId><Comments>"
        + "<a>" * DEEP
        + "</a>" * DEEP
        + "</Comments></Contact>",
        "Comments",
    ),
]


async def test_xml_hostile_contacts_are_rejected_one_by_one_and_the_rest_is_read(
    zisson_xml: ZissonBound,
) -> None:
    kept = [zisson_xml.seed(good(n)) for n in range(3)]
    for fragment, _ in HOSTILE_XML:
        zisson_xml.sim.put_raw(zisson_xml.guid, fragment)

    result = await zisson_xml.view.read(zisson_xml.customer)

    assert sorted(r.external_id for r in result.records) == sorted(kept)
    assert [r.reason.split(":")[0] for r in result.rejected] == [f for _, f in HOSTILE_XML]
    for rejected, (_, field) in zip(result.rejected, HOSTILE_XML, strict=True):
        assert_named(rejected, field)
    assert [r.external_id for r in result.rejected] == ["x-c1", "x-byte", "x-long", None, "x-deep"]


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_an_answer_over_the_size_cap_is_refused_whole_naming_the_cap(
    zisson_sim: ZissonSimulator, zisson_connect: ZissonConnect, api: str
) -> None:
    settings = ZissonSettings(base_url=zisson_sim.url, max_response_bytes=64 * 1024)
    connector = ZissonConnector(settings, retry_policy=FAST_RETRIES)
    capped = zisson_connect(api, connector=connector)  # type: ignore[arg-type]
    try:
        capped.seed({"firstName": "B" * (100 * 1024)})  # the "50 MB first name", scaled
        with pytest.raises(ContractError, match=f"cap of {64 * 1024} bytes"):
            await capped.view.read(capped.customer)
    finally:
        await connector.aclose()


async def test_a_write_to_a_dot_id_is_refused_before_any_request(zisson_json: ZissonBound) -> None:
    zisson_json.sim.reset_counters()
    ops = [
        Operation(
            op_id=f"op-{kind}-{n}",
            kind=kind,
            system="zisson",
            link_id=f"link-{n}",
            external_id=bad,
            values={"title": "Ny"} if kind is OpKind.UPDATE else {},
        )
        for n, bad in enumerate(["..", ".", "a/../b", "x?y"])
        for kind in (OpKind.UPDATE, OpKind.DELETE)
    ]

    results = await zisson_json.view.apply(zisson_json.customer, ops)

    assert [r.status for r in results] == [OpStatus.FAILED] * len(ops)
    assert all("cannot go into a URL" in (r.error or "") for r in results)
    assert zisson_json.sim.counters["requests"] == 0


async def test_hostile_records_are_quarantined_and_the_customer_still_syncs(
    world: SyncWorld,
) -> None:
    card = [
        ContactRecord(system="firestore", external_id="", given_name=f"Åse{n}", family_name="Ø")
        for n in range(2)
    ]
    await world.put_card(card)
    for raw, _, _ in HOSTILE_JSON:
        world.zisson.sim.put_raw(world.zisson.guid, raw)

    report = await world.sync()

    assert report.status == "completed", report.error
    assert report.applied["zisson.create.applied"] == 2
    assert sorted(u["firstName"] for u in world.users()) == ["Åse0", "Åse1"]
    rows = world.store.list_quarantine(customer_id="kunde-01")
    assert len(rows) == len(HOSTILE_JSON)
    assert {row.reason.split(":")[0] for row in rows} == {f for _, f, _ in HOSTILE_JSON}
    assert all(row.system == "zisson" for row in rows)
