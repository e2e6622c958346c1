"""Who a record is, end to end: shared numbers, role addresses, namesakes, departments
and extensions between the real Firestore emulator and the Zisson simulator.

Each test failed on the main of 2026-12-04 (issue 9): a shared identifier or a name
alone was taken as proof that two records are one person.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon import normalize
from daemon.cli import app
from daemon.domain import ContactKind, ContactRecord, PhoneType
from daemon.reconcile import AMBIGUOUS_MATCH, POSSIBLE_DUPLICATE, SEPARATE
from tests.integration.sync_world import SyncWorld

pytestmark = pytest.mark.emulator

SWITCHBOARD = "22 33 44 55"


def contact(given: str, family: str, **overrides: object) -> ContactRecord:
    values: dict[str, object] = dict(
        system="firestore",
        external_id="",
        kind=ContactKind.PERSON,
        given_name=given,
        family_name=family,
        display_name=f"{given} {family}",
        title="Rådgiver",
        department="Økonomi",
    )
    values.update(overrides)
    return ContactRecord(**values)  # type: ignore[arg-type]


def phones(*numbers: str) -> tuple[object, ...]:
    return tuple(normalize.phone(n, PhoneType.WORK) for n in numbers)


def by_id(world: SyncWorld) -> dict[str, dict[str, object]]:
    return {str(u["id"]): u for u in world.users()}


async def test_a_department_is_never_merged_into_a_person_who_has_its_number(
    world: SyncWorld,
) -> None:
    """Case 3: "Sentralbord" in Zisson and a person on the card with that number."""
    await world.put_card([contact("Ola", "Hansen", phones=phones(SWITCHBOARD))])
    board = world.put_user(
        contact(
            "",
            "",
            system="zisson",
            kind=ContactKind.DEPARTMENT,
            display_name="Sentralbord",
            phones=phones(SWITCHBOARD),
        )
    )
    before = by_id(world)[board]
    report = await world.sync()
    assert report.status == "completed"
    assert world.zisson.sim.counters["updates"] == 0
    assert by_id(world)[board] == before  # the department is as it was
    assert report.plan is not None
    assert report.plan.situations["zisson"].get("unlinked") is None


async def test_several_candidates_open_a_review_item_that_pdsync_disputes_shows(
    world: SyncWorld, tmp_path: Path, cli_logging_restored: None
) -> None:
    """Case 4: two card contacts that one Zisson entry fits equally (namesakes with no
    identifier of their own in Zisson) are no longer passed over in silence."""
    await world.put_card(
        [
            contact("Kari", "Nordmann", emails=("kari.n@fjord.no",)),
            contact("Kari", "Nordmann", emails=("kari.nordmann@fjord.no",), title="Selger"),
        ]
    )
    world.put_user(contact("Kari", "Nordmann", system="zisson", phones=phones(SWITCHBOARD)))
    report = await world.sync()
    assert report.status == "completed"
    (review,) = world.store.list_disputes(open_only=True)
    assert review.field == AMBIGUOUS_MATCH
    assert len([a for a in review.fingerprints if a.startswith("same:")]) == 2
    assert "disputes_open" in {e.event for e in world.store.run_events(run_id=report.run_id)}
    # Neither Kari was copied into Zisson over the one already there.
    assert len(world.users()) == 1

    config = world.config_file(tmp_path / "pdsync.toml")
    listed = CliRunner().invoke(app, ["disputes", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "ambiguous match" in listed.output
    assert f"pdsync disputes resolve {review.id} --winner separate" in listed.output


async def test_a_namesake_with_other_identifiers_is_not_merged_and_a_person_decides(
    world: SyncWorld,
) -> None:
    """Case 5: two different people named Kari Nordmann; calls must not be routed to
    the wrong one. Nothing is overwritten until a person answers the review."""
    await world.put_card(
        [contact("Kari", "Nordmann", emails=("kari@fjord.no",), phones=phones("91111111"))]
    )
    other = world.put_user(
        contact(
            "Kari",
            "Nordmann",
            system="zisson",
            emails=("kari.nordmann@fjord.no",),
            phones=phones("92222222"),
            title="Sjåfør",
        )
    )
    before = by_id(world)[other]
    report = await world.sync()
    assert report.status == "completed"
    (review,) = world.store.list_disputes(open_only=True)
    assert review.field == POSSIBLE_DUPLICATE
    assert by_id(world) == {other: before}  # untouched, and no copy made meanwhile

    world.store.resolve_dispute(review.id, winner=SEPARATE, by="ops")
    await world.sync()
    users = by_id(world)
    assert users[other] == before  # the other Kari keeps her own entry
    assert len(users) == 2  # and the card's Kari is in Zisson too
    assert {u["emails"][0] for u in users.values()} == {"kari@fjord.no", "kari.nordmann@fjord.no"}


async def test_an_extension_is_a_number_of_its_own_and_a_changed_one_syncs(
    world: SyncWorld,
) -> None:
    """Case 6: `22334455 x12` is not the switchboard, and x12 -> x13 reaches Zisson."""
    (card,) = await world.put_card(
        [contact("Pål", "Brækhus", phones=phones(f"{SWITCHBOARD} x12"), emails=())]
    )
    await world.settle()
    (user,) = world.users()
    assert [p["number"] for p in user["phoneNumbers"]] == ["22 33 44 55 x12"]

    world.contacts_ref().document(card.external_id).update(
        {"phones": [{"number": "22 33 44 55 x13", "type": "work"}]}
    )
    report = await world.sync()
    assert report.status == "completed"
    (user,) = world.users()
    assert [p["number"] for p in user["phoneNumbers"]] == ["22 33 44 55 x13"]


async def test_a_role_address_or_a_switchboard_number_alone_links_nobody(
    world: SyncWorld,
) -> None:
    """Two different people at `post@` and the switchboard: Zisson's is not merged into
    the card's (and overwritten); both end up in both systems."""
    await world.put_card(
        [
            contact("Ola", "Hansen", emails=("post@fjord.no",), phones=phones(SWITCHBOARD)),
            contact("Per", "Li", phones=phones(SWITCHBOARD, "93333333")),
        ]
    )
    stranger = world.put_user(
        contact(
            "Nina",
            "Berg",
            system="zisson",
            emails=("Post@Fjord.no",),
            phones=phones(SWITCHBOARD),
        )
    )
    before = by_id(world)[stranger]
    report = await world.sync()
    assert report.status == "completed"
    assert report.plan is not None
    assert report.plan.situations["zisson"].get("unlinked") is None
    assert by_id(world)[stranger] == before
