"""Retention in one service mailbox that several customers share: each customer's rule
deletes the customer's own mail past it and nothing else (scope.py decides whose mail is
whose, as for erasure), in the rule's folder and the folders below it; a rule naming a
folder the mailbox does not have fails alone and loudly, and `config check` names it.
Against the Graph simulator; what happened is read on the simulator's side."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connectors.outlook import OutlookBinding
from connectors.outlook.check import check_mail_folders
from daemon.config import CustomerConfig
from daemon.ledger import Ledger, Signer
from daemon.retention import RetentionService
from daemon.store import Store
from sandbox.graph_sim import GraphSimulator
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import Connect, OutlookWorld

outlook_connect = harness.outlook_connect

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
# Per customer: days kept in the shared inbox, and in its own folder (and below it).
RULES = {"a": (30, 90), "b": (365, 180), "c": (730, 400)}
AGES = (20, 100, 250, 500, 800)


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=os.urandom(32))
    yield store
    store.close()


@dataclass
class SharedMailbox:
    """One service mailbox, three customers: kunde-a, kunde-b, kunde-c."""

    world: OutlookWorld
    customers: dict[str, CustomerConfig] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # "a", "a/arkiv": folder ids
    # What each customer's rules delete, and what nobody's rule may touch.
    doomed: dict[str, set[str]] = field(default_factory=dict)
    everyone_keeps: set[str] = field(default_factory=set)

    @property
    def sim(self) -> GraphSimulator:
        return self.world.sim

    def message(self, folder: str, days: float, sender: str, **fields: Any) -> str:
        return self.sim.add_message(
            self.world.mailbox,
            folder,
            subject="Beskjed",
            body="Ring tilbake",
            sender=sender,
            received=ago(days),
            **fields,
        )


@pytest.fixture
def shared(graph_sim: GraphSimulator, outlook_connect: Connect) -> SharedMailbox:
    world = outlook_connect(graph_sim)
    box = SharedMailbox(world)
    for c, (inbox_days, own_days) in RULES.items():
        name = f"Kunde {c.upper()}"
        box.folders[c] = graph_sim.add_folder(world.mailbox, name)
        # Every customer's archive has the same name: found by the tree, not by name.
        box.folders[f"{c}/arkiv"] = graph_sim.add_folder(
            world.mailbox, "Arkiv 2024", parent=box.folders[c]
        )
        box.customers[c] = CustomerConfig(
            id=f"kunde-{c}",
            name=name,
            outlook=OutlookBinding(
                mailbox=world.mailbox,
                contact_folder=f"{name} – kontakter",
                mail_folders=(name,),
                domains=(f"kunde-{c}.no",),
                retention_days={"inbox": inbox_days, name: own_days},
            ),
        )
        doomed = box.doomed.setdefault(c, set())
        for days in AGES:
            # In the shared inbox: the customer's by its domain (a subdomain too).
            for sender in (f"per@kunde-{c}.no", f"kari@avd.kunde-{c}.no"):
                message = box.message("inbox", days, sender)
                if days > inbox_days:
                    doomed.add(message)
            # Sent to the customer from the service: its mail too, by the recipient.
            message = box.message("inbox", days, "svc@we4you.no", to=[f"ola@kunde-{c}.no"])
            if days > inbox_days:
                doomed.add(message)
            # In its own folder and the folder below: its mail whoever wrote it.
            for folder in (box.folders[c], box.folders[f"{c}/arkiv"]):
                message = box.message(folder, days, "x@annen.no")
                if days > own_days:
                    doomed.add(message)
    # Nobody's mail in the shared inbox: nobody's rule deletes it.
    box.everyone_keeps |= {box.message("inbox", days, "x@annen.no") for days in AGES}
    # A's domain, in B's folder: B's (its folder), under B's rule there (180 days: kept);
    # A's inbox rule does not reach B's folder.
    box.everyone_keeps.add(box.message(box.folders["b"], 100, "per@kunde-a.no"))
    # Old mail in a folder no rule names.
    box.everyone_keeps.add(box.message("sentitems", 5000, "svc@we4you.no", to=["p@kunde-a.no"]))
    return box


async def test_each_customer_loses_exactly_its_own_expired_mail_and_the_ledger_says_whose(
    shared: SharedMailbox, sqlite_store: Store
) -> None:
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"outlook": shared.world.connector}, ledger=ledger)
    everything = shared.world.remaining()
    assert all(shared.doomed.values()) and all(
        not (shared.doomed[x] & shared.doomed[y]) for x in RULES for y in RULES if x != y
    )

    gone: set[str] = set()
    for c in sorted(RULES):
        summary = await service.run(shared.customers[c], trigger="test", now=NOW)

        gone |= shared.doomed[c]
        assert shared.world.remaining() == everything - gone, f"after kunde-{c}"
        assert shared.doomed[c] <= shared.world.purged()
        count = len(shared.doomed[c])
        assert summary == {"outlook": {"expired": count, "results": {"applied": count}}}
        [run] = sqlite_store.list_runs(customer_id=f"kunde-{c}")
        assert run.status == "completed"
        [entry] = [e for e in sqlite_store.ledger_entries() if e.kind == "retention.run"][-1:]
        assert (entry.customer_id, entry.payload["results"]) == (f"kunde-{c}", {"applied": count})
    assert shared.everyone_keeps <= shared.world.remaining()
    # Every deletion is on the ledger under the customer whose rule made it.
    by_customer: dict[str | None, int] = {}
    for entry in sqlite_store.ledger_entries():
        if entry.kind == "retention.deleted":
            applied = int(entry.payload["results"].get("applied", 0))
            by_customer[entry.customer_id] = by_customer.get(entry.customer_id, 0) + applied
    assert by_customer == {f"kunde-{c}": len(shared.doomed[c]) for c in RULES}


async def test_a_rule_covers_the_folders_below_its_folder_and_a_nearer_rule_wins(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(
        graph_sim,
        binding={
            "mail_folders": ["Kunde A"],
            "retention_days": {"Kunde A": 365, "Kundesaker": 3650},
        },
    )
    mailbox = world.mailbox
    top = graph_sim.add_folder(mailbox, "Kunde A")
    archive = graph_sim.add_folder(mailbox, "Arkiv 2024", parent=top)
    deeper = graph_sim.add_folder(mailbox, "Gammelt", parent=archive)
    cases = graph_sim.add_folder(mailbox, "Kundesaker", parent=top)  # a rule of its own
    below_cases = graph_sim.add_folder(mailbox, "2019", parent=cases)

    def at(folder: str, days: float) -> str:
        return world.message(folder, subject="s", body="b", received=ago(days))

    past = {at(top, 400), at(archive, 400), at(deeper, 4000), at(cases, 4000)}
    kept = {at(top, 300), at(archive, 300), at(cases, 400), at(below_cases, 3000)}
    past.add(at(below_cases, 3700))

    scan = await world.connector.expired(world.customer, NOW)

    assert world.ids(list(scan.refs)) == past and scan.failed == {}
    await world.connector.erase(world.customer, list(scan.refs))
    assert world.remaining() == kept


async def test_a_misspelt_folder_fails_its_rule_alone_and_loudly(
    graph_sim: GraphSimulator, outlook_connect: Connect, sqlite_store: Store
) -> None:
    world = outlook_connect(
        graph_sim,
        binding={
            "mail_folders": ["Kunde A"],
            "retention_days": {"inbox": 30, "Kunde  A": 365, "Kunde A/Arkiv": 90},
        },
    )
    folder = graph_sim.add_folder(world.mailbox, "Kunde A")
    old_inbox = world.message("inbox", sender="per@kunde-a.no", received=ago(40))
    old_folder = world.message(folder, sender="x@annen.no", received=ago(400))
    config = CustomerConfig(id="kunde-a", name="Kunde A", outlook=world.binding)
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"outlook": world.connector}, ledger=ledger)

    summary = await service.run(config, trigger="test", now=NOW)

    # The inbox rule ran; the misspelt ones did not, and nothing of theirs was touched.
    assert world.remaining() == {old_folder} and old_inbox in world.purged()
    assert summary["outlook"] == {
        "expired": 1,
        "results": {"applied": 1},
        "rules_failed": ["Kunde  A", "Kunde A/Arkiv"],
    }
    [run] = sqlite_store.list_runs(customer_id="kunde-a")
    assert run.status == "failed"
    failed = [
        e for e in sqlite_store.run_events(run_id=run.id) if e.event == "retention_rule_failed"
    ]
    assert [(e.level, e.system, e.detail["rule"]) for e in failed] == [
        ("error", "outlook", "Kunde  A"),
        ("error", "outlook", "Kunde A/Arkiv"),
    ]
    # The events name the rule and the error, never a message or a person.
    assert all(set(e.detail) == {"rule", "kind", "error"} for e in failed)
    assert "Ring" not in str([e.detail for e in failed])
    [ran] = [e.payload for e in sqlite_store.ledger_entries() if e.kind == "retention.run"]
    assert (ran["rules_failed"], ran["results"]) == (2, {"applied": 1})


async def test_config_check_names_the_key_of_each_folder_the_mailbox_does_not_have(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(
        graph_sim,
        binding={
            "mail_folders": ["Kunde A", "Kunde X"],
            "retention_days": {
                "inbox": 30,
                "Kunde  A": 365,
                "Arkiv 2024": 90,
                "sentitems": 365,
                "Sendte elementer": 30,
            },
        },
    )
    top = graph_sim.add_folder(world.mailbox, "Kunde A")
    graph_sim.add_folder(world.mailbox, "Arkiv 2024", parent=top)
    graph_sim.add_folder(world.mailbox, "Arkiv 2024")  # two of that name

    check = await check_mail_folders(
        world.connector.settings,
        [("customers[3].outlook", world.binding)],
        connector=world.connector,
    )

    assert check.unchecked == []
    assert check.problems == [
        "customers[3].outlook.mail_folders[1]: mail folder 'Kunde X' is not in the mailbox"
        " (no folder, nor well-known folder, by that name)",
        "customers[3].outlook.retention_days.\"Kunde  A\": mail folder 'Kunde  A' is not in"
        " the mailbox (no folder, nor well-known folder, by that name)",
        "customers[3].outlook.retention_days.\"Arkiv 2024\": mail folder 'Arkiv 2024' names"
        " several folders in the mailbox; rename one of them",
        'customers[3].outlook.retention_days."Sendte elementer": mail folder'
        " 'Sendte elementer' is the folder another retention rule names already",
    ]


async def test_config_check_says_what_it_could_not_check(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim, binding={"retention_days": {"inbox": 30}})
    graph_sim.fail_next(50, status=401)  # every call refused, token renewals too

    check = await check_mail_folders(
        world.connector.settings,
        [("customers[0].outlook", world.binding)],
        connector=world.connector,
    )

    assert check.problems == []
    [line] = check.unchecked
    assert line.startswith("customers[0].outlook: folders not checked (")


async def test_mail_that_is_two_customers_goes_only_when_both_customers_rules_let_it_go(
    graph_sim: GraphSimulator, outlook_connect: Connect, sqlite_store: Store
) -> None:
    # A's inbox rule reaches B's folder (below the inbox); D has no rule at all.
    world = outlook_connect(
        graph_sim,
        binding={"mail_folders": ["Kunde A"], "retention_days": {"inbox": 30, "Kunde A": 60}},
    )
    mailbox = world.mailbox
    a_folder = graph_sim.add_folder(mailbox, "Kunde A")
    b_folder = graph_sim.add_folder(mailbox, "Kunde B", parent="inbox")
    customers = {
        "a": CustomerConfig(id="kunde-a", name="Kunde A", outlook=world.binding),
        "b": CustomerConfig(
            id="kunde-b",
            name="Kunde B",
            outlook=OutlookBinding(
                mailbox=mailbox.upper(),  # the same mailbox, however it is spelt
                contact_folder="Kunde B – kontakter",
                mail_folders=("Kunde B",),
                domains=("kunde-b.no",),
                retention_days={"inbox": 365, "Kunde B": 1000},
            ),
        ),
        "d": CustomerConfig(
            id="kunde-d",
            name="Kunde D",
            outlook=OutlookBinding(
                mailbox=mailbox, contact_folder="Kunde D – kontakter", domains=("kunde-d.no",)
            ),
        ),
    }

    def mail(folder: str, days: float, *to: str) -> str:
        return world.message(
            folder, sender="per@kunde-a.no", to=list(to), subject="s", body="b", received=ago(days)
        )

    to_b = "ola@kunde-b.no"
    to_b_inbox = mail("inbox", 100, to_b)  # B's by address, under B's inbox rule (365)
    in_b_folder = {mail(b_folder, 100), mail(b_folder, 400)}  # B's folder rule (1000)
    to_d = {mail("inbox", 100, "kari@kunde-d.no"), mail("inbox", 5000, "kari@kunde-d.no")}
    past_for_both = {mail("inbox", 400, to_b), mail(b_folder, 1500), mail("inbox", 100)}
    # In A's own folder, A's alone: B's address on it does not make it B's.
    past_for_both.add(mail(a_folder, 100, to_b))
    service = RetentionService(
        sqlite_store,
        {"outlook": world.connector},
        ledger=Ledger(sqlite_store, Signer.generate()),
        customers=list(customers.values()),
    )

    summary = await service.run(customers["a"], trigger="test", now=NOW)

    assert past_for_both <= world.purged()
    kept = {to_b_inbox, *in_b_folder, *to_d}
    assert kept <= world.remaining()
    assert summary["outlook"] == {"expired": 4, "results": {"applied": 4}, "kept_shared": 5}
    [ran] = [e.payload for e in sqlite_store.ledger_entries() if e.kind == "retention.run"]
    assert (ran["kept_shared"], ran["results"]) == (5, {"applied": 4})
    # B's run deletes none of them: each is within one of B's rules.
    summary = await service.run(customers["b"], trigger="test", now=NOW)
    assert summary["outlook"]["expired"] == 0 and kept <= world.remaining()

    # 300 days on, B's inbox rule lets go of the message to B; B's folder rule still
    # keeps the two in its folder, and D (no rule) its own.
    later = NOW + dt.timedelta(days=300)
    summary = await service.run(customers["a"], trigger="test", now=later)
    assert summary["outlook"] == {"expired": 1, "results": {"applied": 1}, "kept_shared": 4}
    assert to_b_inbox in world.purged() and kept - {to_b_inbox} <= world.remaining()

    # The connector told of no other customer takes A's rule alone: all four would go.
    scan = await world.connector.expired(world.customer, later)
    assert scan.kept_shared == 0 and world.ids(list(scan.refs)) == kept - {to_b_inbox}


async def test_the_other_customers_of_a_mailbox_cost_a_retention_run_no_requests_per_customer(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(
        graph_sim, binding={"mail_folders": ["Kunde A"], "retention_days": {"inbox": 30}}
    )
    graph_sim.add_folder(world.mailbox, "Kunde A")
    neighbours = []
    for n in range(40):
        graph_sim.add_folder(world.mailbox, f"Kunde {n}", parent="inbox")
        binding = OutlookBinding(
            mailbox=world.mailbox,
            contact_folder=f"Kunde {n} – kontakter",
            mail_folders=(f"Kunde {n}",),
            domains=(f"kunde-{n}.no",),
            retention_days={"inbox": 365, f"Kunde {n}": 90},
        )
        neighbours.append(CustomerConfig(id=f"k{n}", name=f"Kunde {n}", outlook=binding))
    shared = world.message("inbox", sender="per@kunde-a.no", to=["x@kunde-7.no"], received=ago(100))
    alone = world.message("inbox", sender="per@kunde-a.no", received=ago(100))

    await world.connector.expired(world.customer, NOW)  # a token and what else is kept
    graph_sim.reset_counters()
    scan = await world.connector.expired(world.customer, NOW)
    requests_alone = graph_sim.counters["requests"]
    graph_sim.reset_counters()
    others = [c.to_customer() for c in neighbours]
    scan_shared = await world.connector.expired(world.customer, NOW, neighbours=others)

    assert world.ids(list(scan.refs)) == {shared, alone}
    assert world.ids(list(scan_shared.refs)) == {alone} and scan_shared.kept_shared == 1
    # The folder tree read for the run answers for every customer's folder names.
    assert graph_sim.counters["requests"] == requests_alone
