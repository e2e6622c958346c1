"""Locating and erasing a data subject's mail and contacts, and retention, against the
Graph simulator. What happened is checked on the simulator's side (sim.messages,
sim.purged), never through the connector."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from connectors.base import FatalError
from connectors.outlook.settings import OutlookBinding
from daemon.config import CustomerConfig
from daemon.domain import ContactRecord, ItemRef, Operation, OpKind, OpStatus, Phone, Subject
from daemon.retention import RetentionService
from daemon.store import Store
from sandbox.graph_sim import GraphSimulator
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import Connect, OutlookWorld

SUBJECT = Subject(
    emails=("ase.bjornstad@kunde-a.no",), phones=("22334455",), names=("Åse Bjørnstad",)
)
NAMING: list[dict[str, Any]] = [  # each names the subject in one way
    {"subject": "Ring Åse Bjørnstad", "body": "Hun ringte i dag."},
    {"subject": "Beskjed", "body": "Ring tilbake på 22 33 44 55."},
    {"subject": "Beskjed", "body": "Nummer: +47 22334455"},
    {"subject": "Beskjed", "body": "Nummer: 0047 22 33 44 55"},
    {"subject": "Beskjed", "body": "Mobil 223 34 455"},
    {"subject": "Fra kunden", "body": "Hei", "sender": "ase.bjornstad@kunde-a.no"},
    {"subject": "Til kunden", "body": "Hei", "to": ["ASE.Bjornstad@kunde-a.no"]},
    {"subject": "Kopi", "body": "Hei", "cc": ["ase.bjornstad@kunde-a.no"]},
    {
        "subject": "Navn i adressefeltet",
        "body": "Hei",
        "to": ["x@y.no"],
        "to_names": ["Bjørnstad, Åse"],
    },
    {"subject": "ÅSE BJØRNSTAD", "body": "store bokstaver"},
    {"subject": "Beskjed", "body": "skriv til ase.bjornstad@kunde-a.no i dag"},
]
# Each looks like the subject to a search, but is someone else.
NEAR_MISSES: list[dict[str, Any]] = [
    {"subject": "Ring Åse Bjørnstad-Lie", "body": "Hun ringte."},
    {"subject": "Beskjed", "body": "Ring 223344556 i dag."},
    {"subject": "Beskjed", "body": "Kundenummer 122334455"},
    {"subject": "Beskjed", "body": "Ring 22 33 44 56"},
    {"subject": "Fra andre", "body": "Hei", "sender": "ase.bjornstad@kunde-a.no.evil.com"},
    {"subject": "Annen Åse", "body": "Åse Berg og Per Bjørnstad"},
    {"subject": "Beskjed", "body": "kase.bjornstad@kunde-a.no"},
]

# Fixtures shared by the test_outlook_* modules (tests/fixtures/ is another engineer's).
outlook = harness.outlook
outlook_connect = harness.outlook_connect


def seed(world: OutlookWorld, folder: str = "inbox") -> tuple[set[str], set[str]]:
    naming = {world.message(folder, **fields) for fields in NAMING}
    misses = {world.message(folder, **fields) for fields in NEAR_MISSES}
    return naming, misses


async def test_locate_finds_exactly_the_messages_that_name_the_subject(
    outlook: OutlookWorld,
) -> None:
    naming, _ = seed(outlook)
    refs = await outlook.connector.locate_messages(outlook.customer, SUBJECT)
    assert outlook.ids(refs) == naming
    assert all(ref.kind == "message" and ref.scope == outlook.mailbox for ref in refs)
    # Each carries which of the subject's identifiers it holds.
    held = {ref.matched for ref in refs}
    assert held == {(("email", 0),), (("phone", 0),), (("name", 0),)}


async def test_surname_first_forms_are_located_and_near_misses_are_not(
    outlook: OutlookWorld,
) -> None:
    subject = Subject(names=("Ola van der Berg", "Kari Nordmann Hansen", "Maria de la Cruz"))
    written = {0: "van der Berg, Ola", 1: "Nordmann Hansen, Kari", 2: "de la Cruz, Maria"}
    named: dict[str, tuple[tuple[str, int], ...]] = {}
    for position, name in written.items():
        named[outlook.message(subject="Hei", body="Hei", to=["x@annen.no"], to_names=[name])] = (
            ("name", position),
        )
        named[outlook.message(subject="Fravær", body="Hei", sender_name=name)] = (
            ("name", position),
        )
        named[outlook.message(subject="Beskjed", body=f"Ring {name} i dag")] = (("name", position),)
    misses = set()
    for near in ("Berg, Ola", "van der Bergen, Ola", "Hansen, Kari", "Nordmann-Hansen, Kari"):
        misses.add(outlook.message(subject="Hei", body="Hei", to=["x@annen.no"], to_names=[near]))
        misses.add(outlook.message(subject="Beskjed", body=f"Ring {near} i dag"))
    misses.add(outlook.message(subject="Beskjed", body="Ring Cruz, Maria i dag"))
    refs = await outlook.connector.locate_messages(outlook.customer, subject)
    assert {ref.id: ref.matched for ref in refs} == named


async def test_a_number_with_an_extension_is_another_line(outlook: OutlookWorld) -> None:
    extension = {
        outlook.message(subject="Beskjed", body=f"Ring {written}")
        for written in ("22 33 44 55 x12", "22334455 innvalg 12", "22334455#12", "22334455x12")
    }
    switchboard = {
        outlook.message(subject="Beskjed", body=f"Ring {written}")
        for written in ("22 33 44 55", "+47 22334455")
    }
    outlook.message(subject="Beskjed", body="Ring 22334455 x13")
    refs = await outlook.connector.locate_messages(
        outlook.customer, Subject(phones=("+4722334455;ext=12",))
    )
    assert outlook.ids(refs) == extension
    refs = await outlook.connector.locate_messages(outlook.customer, Subject(phones=("22334455",)))
    assert outlook.ids(refs) == switchboard


async def test_erasure_leaves_none_of_them_and_touches_nothing_else(
    outlook: OutlookWorld, graph_client: httpx.Client
) -> None:
    naming, misses = seed(outlook)
    # Deleted by a user, they have left the customer's folder: an address must say whose.
    deleted_once = outlook.message(
        "inbox", subject="slettet en gang", body="Hei", sender="ase.bjornstad@kunde-a.no"
    )
    in_deletions = outlook.message(
        "inbox", subject="Beskjed", body="22334455 (to ganger slettet)", sender="per@kunde-a.no"
    )
    name_only = outlook.message("inbox", subject="Åse Bjørnstad", body="slettet, uten adresse")
    await outlook.connector.apply(  # and a contact of hers
        outlook.customer,
        [
            Operation(
                op_id="c",
                kind=OpKind.CREATE,
                system="outlook",
                link_id="l",
                values=ContactRecord(
                    system="x",
                    external_id="",
                    given_name="Åse",
                    family_name="Bjørnstad",
                    phones=(Phone(number="+47 22 33 44 55"),),
                ).values(),
            )
        ],
    )
    # Deleted by a user: one now in Deleted Items, one on in Recoverable Items/Deletions.
    for message_id in (deleted_once, in_deletions, in_deletions, name_only):
        answer = graph_client.delete(f"/users/{outlook.mailbox}/messages/{message_id}")
        assert answer.status_code == 204

    refs = await outlook.connector.locate(outlook.customer, SUBJECT)
    targets = naming | {deleted_once, in_deletions}
    assert {r.id for r in refs if r.kind == "message"} == targets
    assert [r.kind for r in refs].count("contact") == 1
    statuses = await outlook.connector.erase(outlook.customer, refs)
    assert [status for _, status in statuses] == [OpStatus.APPLIED] * len(refs)

    assert outlook.remaining() == misses | {name_only}  # checked on the simulator's side
    assert targets <= outlook.purged()
    assert outlook.contacts() == []
    assert await outlook.connector.verify_absent(outlook.customer, SUBJECT) == []
    again = await outlook.connector.erase(outlook.customer, refs)  # gone already: 404s
    assert {status for _, status in again} == {OpStatus.APPLIED}


async def test_refs_of_another_mailbox_are_refused(outlook: OutlookWorld) -> None:
    (naming, _) = seed(outlook)
    refs = await outlook.connector.locate_messages(outlook.customer, SUBJECT)
    foreign = [ItemRef(system="outlook", kind="message", id=r.id, scope="other@x.no") for r in refs]
    statuses = await outlook.connector.erase(outlook.customer, foreign)
    assert {status for _, status in statuses} == {OpStatus.FAILED}
    assert naming <= outlook.remaining()


async def test_a_vague_subject_is_refused(outlook: OutlookWorld) -> None:
    with pytest.raises(FatalError, match=r"subject names\[0\]: a name of one word"):
        await outlook.connector.locate(outlook.customer, Subject(names=("Åse",)))


async def test_a_search_at_the_cap_is_not_trusted(outlook_connect: Connect) -> None:
    with GraphSimulator(seed=1, search_cap=40) as sim:
        world = outlook_connect(sim, search_cap=40, page_size=25)
        naming = {world.message(subject=f"Åse Bjørnstad #{i}", body="x") for i in range(70)}
        misses = {world.message(subject=f"Åse Bjørnstad-Lie #{i}", body="x") for i in range(15)}
        refs = await world.connector.locate_messages(
            world.customer, Subject(names=("Åse Bjørnstad",))
        )
        assert world.ids(refs) == naming and not misses & world.ids(refs)
        assert world.connector.mail.scans >= 1


async def test_a_customers_mail_is_its_folders_and_its_domains(outlook_connect: Connect) -> None:
    with GraphSimulator(seed=2) as sim:
        world = outlook_connect(
            sim, binding={"mail_folders": ["Kunde A"], "domains": ["kunde-a.no"]}
        )
        folder = sim.add_folder(world.mailbox, "Kunde A")
        sub = sim.add_folder(world.mailbox, "Arkiv 2023", parent=folder)
        other = sim.add_folder(world.mailbox, "Kunde B")
        mine = {
            world.message(folder, subject="a", sender="x@annen.no"),
            world.message(sub, subject="b", sender="x@annen.no"),
            world.message("inbox", subject="c", sender="per@kunde-a.no"),
            world.message(
                "sentitems", subject="d", sender="svc@we4you.no", to=["kari@avd.kunde-a.no"]
            ),
            world.message(other, subject="e", sender="x@annen.no", cc=["ola@KUNDE-A.no"]),
        }
        theirs = {
            world.message(other, subject="f", sender="x@kunde-b.no"),
            world.message("inbox", subject="g", sender="x@kunde-a.no.evil.com"),
            world.message("inbox", subject="h kunde-a.no", sender="x@annen.no"),
        }
        refs = await world.connector.locate_customer_mail(world.customer)
        assert world.ids(refs) == mine
        made = await world.connector.apply(
            world.customer,
            [
                Operation(op_id=f"c{i}", kind=OpKind.CREATE, system="outlook", link_id=f"l{i}")
                for i in range(3)
            ],
        )
        everything = await world.connector.locate_customer(world.customer)
        assert world.ids(everything) == mine | {str(r.external_id) for r in made}
        statuses = await world.connector.erase(world.customer, everything)
        assert {status for _, status in statuses} == {OpStatus.APPLIED}
        assert world.remaining() == theirs and world.contacts() == []


async def test_a_customers_mail_that_another_customer_holds_too_is_marked(
    outlook_connect: Connect,
) -> None:
    """Mail between two customers of the mailbox, or in the other's folders, is the other
    customer's data as much: marked, for the erasure to leave alone unless included.
    The customer's own folders are its alone; another mailbox's customer holds nothing."""
    with GraphSimulator(seed=3) as sim:
        world = outlook_connect(
            sim, binding={"mail_folders": ["Kunde A"], "domains": ["kunde-a.no"]}
        )
        a_folder = sim.add_folder(world.mailbox, "Kunde A")
        b_folder = sim.add_folder(world.mailbox, "Kunde B", parent="inbox")
        b_sub = sim.add_folder(world.mailbox, "2024", parent=b_folder)
        b = CustomerConfig(
            id="kunde-b",
            name="Kunde B",
            outlook=OutlookBinding(
                mailbox=world.mailbox.upper(),  # the same mailbox, however it is spelt
                contact_folder="Kunde B – kontakter",
                mail_folders=("Kunde B",),
                domains=("kunde-b.no",),
            ),
        )
        elsewhere = CustomerConfig(  # the same domain, served from another mailbox
            id="kunde-c",
            name="Kunde C",
            outlook=OutlookBinding(
                mailbox="annen@we4you.no", contact_folder="Kunde C", domains=("kunde-a.no",)
            ),
        )
        a_alone = {
            world.message("inbox", subject="a", sender="per@kunde-a.no"),
            world.message(a_folder, subject="b", sender="ola@kunde-b.no"),  # A's folder
            world.message("inbox", subject="c", sender="per@kunde-a.no", to=["x@kunde-c.no"]),
        }
        both = {
            world.message("inbox", subject="d", sender="per@kunde-a.no", to=["ola@kunde-b.no"]),
            world.message(
                "sentitems", subject="e", sender="svc@we4you.no", to=["kari@avd.kunde-a.no"],
                cc=["ola@salg.kunde-b.no"],
            ),
            world.message(b_sub, subject="f", sender="x@annen.no", cc=["ola@kunde-a.no"]),
        }  # fmt: skip
        world.message(b_folder, subject="g", sender="x@kunde-b.no")  # B's alone: not A's

        neighbours = [b.to_customer(), elsewhere.to_customer(), world.customer]
        refs = await world.connector.locate_customer_mail(world.customer, neighbours=neighbours)
        assert world.ids(refs) == a_alone | both
        assert {r.id for r in refs if r.held_by_others} == both
        # Told of no other customer, nothing is marked (and the same mail is found).
        alone = await world.connector.locate_customer_mail(world.customer)
        assert world.ids(alone) == a_alone | both and not any(r.held_by_others for r in alone)


async def _contacts(world: OutlookWorld, first: int, count: int) -> list[ItemRef]:
    made = await world.connector.apply(
        world.customer,
        [
            Operation(op_id=f"c{i}", kind=OpKind.CREATE, system="outlook", link_id=f"l{i}")
            for i in range(first, first + count)
        ],
    )
    return [
        ItemRef(system="outlook", kind="contact", id=str(r.external_id), scope=world.mailbox)
        for r in made
    ]


async def test_contacts_are_purged_not_soft_deleted(outlook: OutlookWorld) -> None:
    refs = await _contacts(outlook, 0, 5)
    statuses = await outlook.connector.erase(outlook.customer, refs)
    assert {status for _, status in statuses} == {OpStatus.APPLIED}
    assert outlook.contacts() == []
    counters = outlook.sim.counters
    assert (counters["contact_permanent_deletes"], counters["deletes"]) == (5, 0)


async def test_without_contact_purge_a_mailbox_is_asked_once_then_deleted_from(
    outlook_connect: Connect,
) -> None:
    with GraphSimulator(seed=4, contact_permanent_delete=False) as sim:
        world = outlook_connect(sim)
        first, later = await _contacts(world, 0, 3), await _contacts(world, 3, 4)
        sim.reset_counters()
        statuses = await world.connector.erase(world.customer, first)
        refused_then_deleted = sim.counters["batch_items"]
        sim.reset_counters()
        statuses += await world.connector.erase(world.customer, later)
        assert {status for _, status in statuses} == {OpStatus.APPLIED}
        assert world.contacts() == []
        assert refused_then_deleted == 3 + 3  # three refused permanentDeletes, three DELETEs
        assert sim.counters["batch_items"] == 4  # later: straight to DELETE
        assert sim.counters["deletes"] == 4


async def test_retention_deletes_exactly_what_is_past_the_rule(outlook_connect: Connect) -> None:
    with GraphSimulator(seed=3) as sim:
        world = outlook_connect(
            sim,
            binding={
                "mail_folders": ["inbox", "Kunde A"],
                "retention_days": {"inbox": 30, "Kunde A": 365},
            },
        )
        folder = sim.add_folder(world.mailbox, "Kunde A")
        now = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)

        def at(folder: str, days: float) -> str:
            return world.message(
                folder, subject="s", body="b", received=now - dt.timedelta(days=days)
            )

        past = {at("inbox", 31), at("inbox", 400), at(folder, 366), at(folder, 1000)}
        kept = {at("inbox", 29), at("inbox", 29.99), at(folder, 364), at("sentitems", 5000)}
        refs = list((await world.connector.expired(world.customer, now)).refs)
        assert world.ids(refs) == past
        await world.connector.erase(world.customer, refs)
        assert world.remaining() == kept and past <= world.purged()


async def test_a_retention_run_refused_by_graph_is_an_incident(
    outlook_connect: Connect, graph_sim: GraphSimulator, store: Store
) -> None:
    outlook = outlook_connect(graph_sim, binding={"retention_days": {"inbox": 30}})
    customer = CustomerConfig(id="kunde-a", name="Kunde A", outlook=outlook.binding)
    graph_sim.fail_next(20, status=401)  # every call refused, token renewals too
    summary = await RetentionService(store, {"outlook": outlook.connector}).run(
        customer, trigger="test"
    )
    assert "error" in summary["outlook"]
    [run] = store.list_runs(customer_id="kunde-a")
    assert run.status == "failed"
    events = {e.event: e for e in store.run_events(run_id=run.id)}
    assert (events["incident_auth_failed"].level, events["incident_auth_failed"].system) == (
        "error",
        "outlook",
    )


async def test_a_2000_message_erasure_within_the_limits(outlook_connect: Connect) -> None:
    with GraphSimulator(seed=4) as sim:
        world = outlook_connect(sim, page_size=500)
        sim.set_faults(latency_ms=1)  # service time, held in the mailbox's slots
        subject = Subject(phones=("41234567",))
        naming = {
            world.message(subject="Beskjed", body=f"Ring 412 34 567, sak {i}") for i in range(2000)
        }
        others = {
            world.message(subject="Beskjed", body=f"Ring 412 34 568, sak {i}") for i in range(50)
        }
        refs = await world.connector.locate(world.customer, subject)
        assert world.ids(refs) == naming
        statuses = await world.connector.erase(world.customer, refs)
        assert {status for _, status in statuses} == {OpStatus.APPLIED}
        assert world.remaining() == others and naming <= world.purged()
        counters = sim.counters
        assert counters["concurrency_violations"] == 0 and counters["429"] == 0
        assert counters["max_in_flight"] <= 4
        assert counters["batches"] == 100  # 2,000 deletes, 20 to a $batch


async def test_throttled_batch_items_are_retried_and_none_is_lost(outlook_connect: Connect) -> None:
    with GraphSimulator(seed=5) as sim:
        world = outlook_connect(sim)
        naming = {world.message(subject="Åse Bjørnstad", body=f"sak {i}") for i in range(200)}
        refs = await world.connector.locate(world.customer, Subject(names=("Åse Bjørnstad",)))
        sim.set_faults(rate_429=0.25, retry_after=1, error_rate=0.05, seed=5)
        statuses = await world.connector.erase(world.customer, refs)
        sim.set_faults()
        assert {status for _, status in statuses} == {OpStatus.APPLIED}
        assert sim.counters["429"] > 0 and world.connector.throttled > 0
        assert world.remaining() == set() and naming == world.purged()


async def test_the_budget_is_kept_at_close_to_its_rate(outlook_connect: Connect) -> None:
    # 150 requests per simulated 600 s, which pass in one second at this time scale.
    with GraphSimulator(seed=6, request_budget=150, time_scale=600) as sim:
        world = outlook_connect(sim, request_budget=150, budget_window_seconds=1.0)
        naming = {world.message(subject="Beskjed", body=f"22334455 sak {i}") for i in range(440)}
        refs = await world.connector.locate_messages(world.customer, Subject(phones=("22334455",)))
        assert world.ids(refs) == naming
        started = dt.datetime.now(dt.UTC)
        statuses = await world.connector.erase(world.customer, refs)
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
        assert {status for _, status in statuses} == {OpStatus.APPLIED}
        assert sim.counters["throttled_budget"] == 0 and sim.counters["429"] == 0
        assert 2.0 <= elapsed <= 6.0  # 440 deletes at 150/s: about three windows, not more
