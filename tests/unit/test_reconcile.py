"""The reconciler on in-memory directories: situations, three-way merge, authority."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from daemon import normalize
from daemon.domain import SYNC_FIELDS, ContactKind, ContactRecord, OpKind, PhoneType
from daemon.policy import FieldPolicy, ForeignChange, SyncPolicy
from daemon.reconcile import (
    POSSIBLE_DUPLICATE,
    RECORD,
    SEPARATE,
    Plan,
    Reconciler,
    SystemView,
    same_as,
)
from daemon.state import CustomerState, Decision, Link, Member, OpenDispute

KEY = b"k" * 32
ALL_FIELDS = frozenset(SYNC_FIELDS)


class World:
    """Two or three directories in memory and the stored state, applying plans fully."""

    def __init__(
        self, policy: SyncPolicy | None = None, systems: tuple[str, ...] = ("firestore", "zisson")
    ) -> None:
        self.policy = policy or SyncPolicy()
        self.records: dict[str, dict[str, ContactRecord]] = {s: {} for s in systems}
        self.links: dict[str, dict[str, Member]] = {}
        self.disputes: dict[tuple[str, str], OpenDispute] = {}
        self.decisions: dict[tuple[str, str], Decision] = {}
        self.ids = itertools.count(1)
        self.writes = 0
        # Per system, what it can hold of a record (default: everything).
        self.projections: dict[str, Callable[[ContactRecord], ContactRecord]] = {}

    def put(self, system: str, **values: object) -> ContactRecord:
        external_id = str(values.pop("external_id", f"{system}-{next(self.ids)}"))
        record = ContactRecord(
            system=system, external_id=external_id, version=str(next(self.ids)), **values
        )  # type: ignore[arg-type]
        self.records[system][external_id] = record
        return record

    def edit(self, system: str, external_id: str, **values: object) -> None:
        old = self.records[system][external_id]
        self.records[system][external_id] = replace(
            old.with_values(values), version=str(next(self.ids))
        )

    def state(self) -> CustomerState:
        return CustomerState(
            customer_id="c1",
            links={lid: Link(id=lid, members=dict(m)) for lid, m in self.links.items()},
            disputes=dict(self.disputes),
            decisions=dict(self.decisions),
        )

    def plan(self) -> Plan:
        views = {
            s: SystemView(
                system=s,
                fields=ALL_FIELDS,
                records=list(r.values()),
                project=self.projections.get(s, lambda record: record),
            )
            for s, r in self.records.items()
        }
        return Reconciler(customer_id="c1", key=KEY, policy=self.policy).plan(views, self.state())

    def sync(self) -> Plan:
        plan = self.plan()
        for m in plan.members:
            self.links.setdefault(m.link_id, {})[m.system] = Member(
                system=m.system,
                external_id=m.external_id,
                version=m.version,
                fingerprints=dict(m.fingerprints),
            )
        for link_id, system in plan.removals:
            self.links.get(link_id, {}).pop(system, None)
        for d in plan.disputes:
            self.disputes[(d.link_id, d.field)] = OpenDispute(
                id=1, link_id=d.link_id, field=d.field, fingerprints=d.fingerprints
            )
        for key in plan.settled_disputes:
            self.disputes.pop(key, None)
        self.decisions = {k: d for k, d in self.decisions.items() if d.id not in plan.decided}
        for p in plan.ops:
            op = p.op
            self.writes += 1
            if op.kind is OpKind.CREATE:
                new = self.put(op.system, **dict(op.values))
                self.links.setdefault(op.link_id, {})[op.system] = Member(
                    system=op.system, external_id=new.external_id, fingerprints=dict(p.fingerprints)
                )
            elif op.kind is OpKind.UPDATE:
                assert op.external_id is not None
                assert self.records[op.system][op.external_id].version == op.expected_version
                self.edit(op.system, op.external_id, **dict(op.values))
                self.links[op.link_id][op.system] = Member(
                    system=op.system, external_id=op.external_id, fingerprints=dict(p.fingerprints)
                )
            else:
                assert op.external_id is not None
                del self.records[op.system][op.external_id]
                self.links[op.link_id].pop(op.system, None)
        self.links = {k: v for k, v in self.links.items() if v}
        return plan

    def decide(self, field: str, winner: str) -> Decision:
        """A person resolves the open dispute about `field`: `winner`'s value stands."""
        (key,) = [k for k in self.disputes if k[1] == field]
        dispute = self.disputes.pop(key)
        decision = Decision(
            id=len(self.decisions) + 100,
            link_id=dispute.link_id,
            field=field,
            winner=winner,
            fingerprints=dispute.fingerprints,
        )
        self.decisions[key] = decision
        return decision

    def settle(self, limit: int = 5) -> int:
        """Sync until a run plans nothing at all; the number of runs it took."""
        for run in range(1, limit + 1):
            if self.sync().is_empty:
                return run
        raise AssertionError("did not converge")


def person(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = dict(
        kind=ContactKind.PERSON,
        given_name="Åse",
        family_name="Bjørnstad",
        display_name="Åse Bjørnstad",
        title="Daglig leder",
        department="Økonomi",
        emails=("ase@example.no",),
        phones=(
            normalize.phone("22 33 44 55", PhoneType.WORK),
            normalize.phone("+47 912 34 567", PhoneType.MOBILE),
        ),
    )
    values.update(overrides)
    return values


def linked_world(policy: SyncPolicy | None = None) -> tuple[World, ContactRecord, ContactRecord]:
    world = World(policy)
    card = world.put("firestore", **person())
    zisson = world.put(
        "zisson",
        **person(
            phones=(
                normalize.phone("22334455", PhoneType.WORK),
                normalize.phone("91234567", PhoneType.MOBILE),
            )
        ),
    )
    world.settle()
    return world, card, zisson


def test_matching_records_are_linked_without_writes_even_when_phone_formats_differ() -> None:
    world, _, _ = linked_world()
    assert world.writes == 0
    assert len(world.links) == 1
    assert world.plan().is_empty


def test_new_card_contact_is_created_in_zisson_and_then_nothing_more() -> None:
    world = World()
    world.put("firestore", **person())
    plan = world.sync()
    assert [(p.op.kind, p.op.system, p.reason) for p in plan.ops] == [
        (OpKind.CREATE, "zisson", "new")
    ]
    assert plan.ops[0].op.values["given_name"] == "Åse"
    assert world.settle() <= 2
    assert len(world.records["zisson"]) == 1


def test_title_changed_on_card_reaches_zisson_and_only_the_title_is_written() -> None:
    world, card, zisson = linked_world()
    world.edit("firestore", card.external_id, title="Styreleder")
    plan = world.sync()
    assert [(p.op.kind, p.op.system, dict(p.op.values)) for p in plan.ops] == [
        (OpKind.UPDATE, "zisson", {"title": "Styreleder"})
    ]
    assert world.records["zisson"][zisson.external_id].title == "Styreleder"
    world.settle()
    assert world.records["zisson"][zisson.external_id].title == "Styreleder"


def test_phone_changed_in_zisson_is_put_back_when_the_card_is_authority() -> None:
    world, _, zisson = linked_world()
    world.edit(
        "zisson", zisson.external_id, phones=(normalize.phone("99999999", PhoneType.MOBILE),)
    )
    plan = world.sync()
    assert [(p.op.system, p.reason, p.changed_fields) for p in plan.ops] == [
        ("zisson", "propagate", ("phones",))
    ]
    assert {p.e164 for p in world.records["zisson"][zisson.external_id].phones} == {
        "+4722334455",
        "+4791234567",
    }


def test_phone_changed_in_zisson_becomes_a_dispute_when_policy_says_so() -> None:
    policy = SyncPolicy(
        fields={
            "phones": FieldPolicy(authority="firestore", on_foreign_change=ForeignChange.DISPUTE)
        }
    )
    world, _, zisson = linked_world(policy)
    world.edit(
        "zisson", zisson.external_id, phones=(normalize.phone("99999999", PhoneType.MOBILE),)
    )
    plan = world.sync()
    assert plan.ops == ()
    assert [(d.field) for d in plan.disputes] == ["phones"]
    assert world.records["zisson"][zisson.external_id].phones[0].e164 == "+4799999999"


def test_phone_changed_in_zisson_propagates_to_the_card_when_policy_says_so() -> None:
    policy = SyncPolicy(
        fields={
            "phones": FieldPolicy(authority="firestore", on_foreign_change=ForeignChange.PROPAGATE)
        }
    )
    world, card, zisson = linked_world(policy)
    world.edit(
        "zisson", zisson.external_id, phones=(normalize.phone("99999999", PhoneType.MOBILE),)
    )
    world.settle()
    assert [p.e164 for p in world.records["firestore"][card.external_id].phones] == ["+4799999999"]


def test_edits_on_both_sides_become_one_dispute_and_neither_value_is_lost() -> None:
    world, card, zisson = linked_world()
    world.edit("firestore", card.external_id, title="Leder A")
    world.edit("zisson", zisson.external_id, title="Leder B", department="Salg")
    plan = world.sync()
    assert [d.field for d in plan.disputes] == ["title"]
    # The one-sided department change is put back; the title is left alone on both sides.
    assert all("title" not in p.op.values for p in plan.ops)
    for _ in range(3):
        again = world.sync()
        assert [d.field for d in again.disputes] == ["title"]
    assert world.records["firestore"][card.external_id].title == "Leder A"
    assert world.records["zisson"][zisson.external_id].title == "Leder B"
    assert len(world.disputes) == 1
    # Someone makes them agree by hand: the dispute settles and sync goes quiet.
    world.edit("zisson", zisson.external_id, title="Leder A")
    assert world.sync().settled_disputes == ((next(iter(world.links)), "title"),)
    assert world.settle() <= 2
    assert not world.disputes


@pytest.mark.parametrize("winner", ["firestore", "zisson"])
def test_a_decided_dispute_carries_the_winners_value_everywhere(winner: str) -> None:
    world, card, zisson = linked_world()
    world.edit("firestore", card.external_id, title="Leder A")
    world.edit("zisson", zisson.external_id, title="Leder B")
    world.sync()
    world.decide("title", winner)
    plan = world.sync()
    [(system, reason, fields)] = [(p.op.system, p.reason, p.changed_fields) for p in plan.ops]
    loser = "zisson" if winner == "firestore" else "firestore"
    assert (system, reason, fields) == (loser, "dispute_decided", ("title",))
    assert plan.disputes == ()
    assert world.settle() <= 2
    expected = "Leder A" if winner == "firestore" else "Leder B"
    assert world.records["firestore"][card.external_id].title == expected
    assert world.records["zisson"][zisson.external_id].title == expected
    assert world.decisions == {} and world.disputes == {}
    # The decision was about that conflict only: a later edit syncs as usual.
    world.edit("firestore", card.external_id, title="Leder C")
    world.settle()
    assert world.records["zisson"][zisson.external_id].title == "Leder C"


def test_a_decision_overtaken_by_a_new_edit_is_asked_again() -> None:
    world, card, zisson = linked_world()
    world.edit("firestore", card.external_id, title="Leder A")
    world.edit("zisson", zisson.external_id, title="Leder B")
    world.sync()
    decision = world.decide("title", "zisson")
    world.edit("zisson", zisson.external_id, title="Leder D")  # after the decision
    plan = world.sync()
    assert decision.id in plan.decided
    assert all("title" not in p.op.values for p in plan.ops)
    assert [d.field for d in plan.disputes] == ["title"]
    assert world.records["firestore"][card.external_id].title == "Leder A"


@pytest.mark.parametrize("winner", ["firestore", "zisson"])
def test_a_decided_record_dispute_keeps_or_deletes_the_contact(winner: str) -> None:
    world, card, zisson = linked_world(SyncPolicy(on_foreign_change=ForeignChange.DISPUTE))
    del world.records["zisson"][zisson.external_id]
    assert world.sync().ops == ()  # missed once: not yet believed gone
    [dispute] = world.sync().disputes
    assert dict(dispute.fingerprints) == {"zisson": "deleted", "firestore": "present"}
    world.decide(RECORD, winner)
    plan = world.sync()
    world.settle()
    if winner == "zisson":  # its deletion stands
        assert [(p.op.kind, p.reason) for p in plan.ops] == [(OpKind.DELETE, "dispute_decided")]
        assert world.records == {"firestore": {}, "zisson": {}}
    else:  # the card's record stands: back into Zisson
        assert [(p.op.kind, p.reason) for p in plan.ops] == [(OpKind.CREATE, "revert")]
        assert len(world.records["zisson"]) == 1 and card.external_id in world.records["firestore"]
    assert world.decisions == {} and world.disputes == {}


def test_a_foreign_record_decided_to_stand_reaches_the_card() -> None:
    world = World()
    world.put("zisson", **person())
    world.sync()
    world.decide(RECORD, "zisson")
    plan = world.sync()
    assert [(p.op.system, p.op.kind) for p in plan.ops] == [("firestore", OpKind.CREATE)]
    world.settle()
    assert [r.display_name for r in world.records["firestore"].values()] == ["Åse Bjørnstad"]
    assert world.decisions == {} and world.disputes == {}


def test_contact_deleted_from_the_card_is_deleted_from_zisson() -> None:
    world, card, zisson = linked_world()
    del world.records["firestore"][card.external_id]
    plan = world.sync()
    assert [(p.op.kind, p.op.system, p.op.external_id) for p in plan.ops] == [
        (OpKind.DELETE, "zisson", zisson.external_id)
    ]
    assert plan.deleted_contacts == 1
    assert world.records["zisson"] == {}
    # The card's side of the link is let go once every system has confirmed.
    assert [m.system for m in world.links[plan.ops[0].op.link_id].values()] == ["firestore"]
    assert world.sync().ops == ()
    assert world.links == {}


@pytest.mark.parametrize("policy", list(ForeignChange))
def test_a_card_deletion_that_did_not_land_is_planned_again_never_a_foreign_record(
    policy: ForeignChange,
) -> None:
    """The Zisson delete conflicted, failed, waits for an operator or was cut short: the
    link keeps the card's side, so the next run deletes again; it never brings the
    contact back to the card nor asks a question nobody can answer."""
    world, card, zisson = linked_world(
        SyncPolicy(on_foreign_change=policy, on_foreign_record=policy)
    )
    del world.records["firestore"][card.external_id]
    for _ in range(3):
        plan = world.plan()  # planned, never applied
        assert [(p.op.kind, p.op.system, p.reason) for p in plan.ops] == [
            (OpKind.DELETE, "zisson", "deleted_in_authority")
        ]
        assert plan.disputes == ()
        assert [set(m) for m in world.links.values()] == [{"firestore", "zisson"}]
    # Zisson's entry is gone too meanwhile (an operator deleted it): the link is let go.
    del world.records["zisson"][zisson.external_id]
    assert world.sync().ops == ()  # missed once: not yet believed gone
    plan = world.sync()
    assert plan.ops == () and plan.disputes == ()
    assert world.links == {}


def test_contact_deleted_from_zisson_is_recreated_when_the_card_is_authority() -> None:
    world, _, zisson = linked_world()
    del world.records["zisson"][zisson.external_id]
    assert world.sync().ops == ()  # missed once: not yet believed gone
    plan = world.sync()
    assert [(p.op.kind, p.reason) for p in plan.ops] == [(OpKind.CREATE, "revert")]
    world.settle()
    assert len(world.records["zisson"]) == 1


def test_a_record_only_in_zisson_becomes_a_record_dispute_by_default() -> None:
    world = World()
    world.put("zisson", **person())
    plan = world.sync()
    assert plan.ops == ()
    assert [d.field for d in plan.disputes] == [RECORD]
    assert [d.field for d in world.sync().disputes] == [RECORD]
    assert len(world.disputes) == 1


@pytest.mark.parametrize("shared", ["emails", "phones", "name_without_other_identifiers"])
def test_correlation_by_email_then_phone_then_name(shared: str) -> None:
    world = World()
    base = person()
    other = person(
        given_name="Per",
        family_name="Ås",
        display_name="Per Ås",
        emails=("per@example.no",),
        phones=(normalize.phone("33445566"),),
    )
    if shared == "emails":
        other["emails"] = base["emails"]
    elif shared == "phones":
        other["phones"] = (normalize.phone("+47 22 33 44 55", PhoneType.WORK),)
    else:  # the name, and no identifier of another person beside it
        other.update(display_name=base["display_name"], emails=(), phones=())
    world.put("firestore", **base)
    world.put("zisson", **other)
    plan = world.sync()
    assert plan.situations["zisson"].get("unlinked") == 1
    assert not any(p.op.kind is OpKind.CREATE for p in plan.ops)


def test_a_namesake_whose_personal_identifiers_conflict_is_a_possible_duplicate() -> None:
    """Same name, another e-mail and mobile: not the same person on the evidence. Nothing
    is linked or overwritten; a person is asked, and neither is copied meanwhile."""
    world = World()
    world.put("firestore", **person())
    kari = world.put(
        "zisson",
        **person(
            emails=("ase.b@example.no",), phones=(normalize.phone("99887766", PhoneType.MOBILE),)
        ),
    )
    plan = world.sync()
    assert plan.situations["zisson"].get("disputed") == 1
    assert [p for p in plan.ops] == []
    (review,) = plan.disputes
    assert review.field == POSSIBLE_DUPLICATE
    assert set(review.fingerprints) == {SEPARATE, same_as(next(iter(world.links)))}
    assert review.fingerprints[SEPARATE] == f"zisson:{kari.external_id}"
    assert world.records["zisson"][kari.external_id] == kari


def test_an_answered_review_links_the_record_or_lets_it_stand_alone() -> None:
    world = World()
    world.put("firestore", **person())
    world.put(
        "zisson",
        **person(emails=("ase.b@example.no",), phones=(normalize.phone("99887766"),)),
    )
    (review,) = world.sync().disputes
    card_link = next(iter(world.links))
    world.decisions[(review.link_id, review.field)] = Decision(
        id=7, link_id=review.link_id, field=review.field, winner=same_as(card_link), fingerprints={}
    )
    plan = world.sync()
    assert 7 in plan.decided
    assert plan.situations["zisson"].get("unlinked") == 1
    assert (review.link_id, review.field) in plan.settled_disputes
    assert {(p.op.system, p.op.kind) for p in plan.ops} == {("zisson", OpKind.UPDATE)}

    separate = World()
    separate.put("firestore", **person())
    separate.put(
        "zisson",
        **person(emails=("ase.b@example.no",), phones=(normalize.phone("99887766"),)),
    )
    (review,) = separate.sync().disputes
    separate.decisions[(review.link_id, review.field)] = Decision(
        id=8, link_id=review.link_id, field=review.field, winner=SEPARATE, fingerprints={}
    )
    plan = separate.sync()
    # Two people: the card's is created in Zisson; Zisson's own is a foreign record.
    assert [(p.op.system, p.op.kind) for p in plan.ops] == [("zisson", OpKind.CREATE)]
    assert [d.field for d in plan.disputes] == [RECORD]


def test_a_shared_number_or_role_address_alone_never_links() -> None:
    world = World()
    switchboard = normalize.phone("22 33 44 55", PhoneType.WORK)
    world.put("firestore", **person(emails=("post@example.no",), phones=(switchboard,)))
    world.put(
        "firestore",
        **person(
            given_name="Per",
            family_name="Ås",
            display_name="Per Ås",
            emails=(),
            phones=(switchboard, normalize.phone("91111111")),
        ),
    )
    world.put(
        "zisson",
        **person(
            given_name="Kari",
            family_name="Li",
            display_name="Kari Li",
            emails=("Post@Example.no",),
            phones=(switchboard,),
        ),
    )
    plan = world.sync()
    assert plan.situations["zisson"].get("unmatched") == 1
    assert plan.situations["zisson"].get("unlinked") is None


def test_a_department_never_merges_into_a_person_with_its_number() -> None:
    world = World()
    world.put("firestore", **person(phones=(normalize.phone("22334455"),), emails=()))
    world.put(
        "zisson",
        kind=ContactKind.DEPARTMENT,
        display_name="Sentralbord",
        phones=(normalize.phone("22 33 44 55"),),
    )
    plan = world.sync()
    assert plan.situations["zisson"].get("unlinked") is None
    assert not [p for p in plan.ops if p.op.kind is OpKind.UPDATE]


def test_a_changed_extension_is_a_change() -> None:
    world, card, _ = linked_world()
    card_id = card.external_id
    world.edit("firestore", card_id, phones=(normalize.phone("22334455 x12", PhoneType.WORK),))
    plan = world.sync()
    assert [(p.op.system, p.changed_fields) for p in plan.ops] == [("zisson", ("phones",))]


def test_two_candidates_are_disputed_and_no_duplicate_is_created() -> None:
    world = World()
    world.put("firestore", **person())
    world.put("zisson", **person(display_name="A"))
    world.put("zisson", **person(display_name="B"))
    plan = world.sync()
    assert plan.situations["zisson"].get("disputed") == 2
    assert not [p for p in plan.ops if p.op.kind is OpKind.CREATE]


def test_plans_are_deterministic_so_a_rerun_after_a_crash_repeats_the_same_operations() -> None:
    world = World()
    for i in range(5):
        world.put(
            "firestore", **person(emails=(f"p{i}@example.no",), display_name=f"P {i}", phones=())
        )
    first, second = world.plan(), world.plan()
    assert [p.op.op_id for p in first.ops] == [p.op.op_id for p in second.ops]
    assert [p.op.link_id for p in first.ops] == [p.op.link_id for p in second.ops]


def test_a_quarantined_linked_record_is_neither_deleted_nor_recreated() -> None:
    world, _, zisson = linked_world()
    del world.records["zisson"][zisson.external_id]
    views = {
        s: SystemView(
            system=s,
            fields=ALL_FIELDS,
            records=list(r.values()),
            quarantined=frozenset({zisson.external_id}) if s == "zisson" else frozenset(),
        )
        for s, r in world.records.items()
    }
    plan = Reconciler(customer_id="c1", key=KEY, policy=world.policy).plan(views, world.state())
    assert plan.ops == ()


def test_three_systems_converge() -> None:
    world = World(systems=("firestore", "zisson", "outlook"))
    world.put("firestore", **person())
    world.put("outlook", **person(title="Old"))
    world.settle()
    assert len(world.records["zisson"]) == 1
    assert [r.title for r in world.records["outlook"].values()] == ["Daglig leder"]


def test_a_tombstoned_contact_is_never_recreated_and_is_erased_again_where_it_reappears() -> None:
    from daemon import identity
    from daemon.domain import Subject

    world = World()
    world.put("zisson", **person())
    tombstones = frozenset(identity.tombstones(KEY, Subject(emails=("ASE@example.no",))))
    views = {
        s: SystemView(system=s, fields=ALL_FIELDS, records=list(r.values()))
        for s, r in world.records.items()
    }
    state = replace(world.state(), tombstones=tombstones)
    plan = Reconciler(customer_id="c1", key=KEY, policy=world.policy).plan(views, state)
    assert [(p.op.kind, p.op.system, p.reason) for p in plan.ops] == [
        (OpKind.DELETE, "zisson", "tombstone")
    ]
    assert plan.deleted_contacts == 1  # counted against the threshold like any deletion
    assert [n for n, _ in plan.notes] == ["incident_erased_data_reappeared"]
    assert not [p for p in plan.ops if p.op.kind is OpKind.CREATE]


def test_deleting_from_an_empty_card_always_needs_an_approval() -> None:
    """A mistyped card id reads as an empty card: the share check cannot be skipped."""
    threshold = SyncPolicy().deletion_threshold
    assert threshold.exceeded_by(1, 0)
    assert threshold.exceeded_by(3, 4) and not threshold.exceeded_by(2, 4)
    assert not threshold.exceeded_by(0, 0)


@pytest.mark.parametrize("source_holds", [1, 3])
def test_propagate_from_a_system_that_holds_less_keeps_what_it_cannot_hold(
    source_holds: int,
) -> None:
    """Zisson (XML: one address) or Outlook (three) changed an address under
    `propagate`: the card takes that change and keeps its other addresses."""
    policy = SyncPolicy(on_foreign_change=ForeignChange.PROPAGATE)
    world = World(policy)
    emails = ("ase@example.no", "ase.privat@example.no", "a.b@example.no", "ab@example.no")
    world.put("firestore", **person(emails=emails))

    def project(record: ContactRecord) -> ContactRecord:
        return replace(record, emails=record.emails[:source_holds])

    zisson = world.put("zisson", **person(emails=emails[:source_holds]))
    world.projections["zisson"] = project
    world.settle()
    world.edit("zisson", zisson.external_id, emails=("ny@example.no", *emails[1:source_holds]))
    world.settle()
    (card,) = world.records["firestore"].values()
    assert card.emails == ("ny@example.no", *emails[1:])
    (held,) = world.records["zisson"].values()
    assert held.emails == ("ny@example.no", *emails[1:source_holds])


def test_a_record_one_read_left_out_is_not_gone_until_the_next_read_misses_it_too() -> None:
    """A vendor's listing can leave a record out once (an outage, a lagging replica).
    Re-created at once, it came back beside its copy: two entries, and a dispute."""
    world, _, zisson = linked_world()
    del world.records["zisson"][zisson.external_id]
    plan = world.sync()
    assert plan.ops == () and plan.situations["zisson"] == {"missed_once": 1}
    world.records["zisson"][zisson.external_id] = zisson  # back in the next read
    assert world.sync().ops == ()
    assert world.settle() == 1 and len(world.records["zisson"]) == 1
    # Missed twice in a row: gone, and put back (the card is the authority).
    del world.records["zisson"][zisson.external_id]
    world.sync()
    plan = world.sync()
    assert [(p.op.kind, p.op.system) for p in plan.ops] == [(OpKind.CREATE, "zisson")]


def test_a_plan_leaves_the_cyclic_collector_on_and_nothing_frozen_and_cycles_collectable() -> None:
    """Planning turns the cyclic collector off and moves what it made to the oldest
    generation at the end (daemon/reconcile.py `_no_cyclic_gc`): the collector is on
    again afterwards, no object stays frozen out of its reach, and a reference cycle
    that became garbage during the plan is still collected."""
    import gc
    import weakref

    class Node:
        other: object = None

    cycles: list[weakref.ref[Node]] = []

    def holding_with_a_cycle(record: ContactRecord) -> ContactRecord:
        assert not gc.isenabled()  # called while planning
        a, b = Node(), Node()
        a.other, b.other = b, a
        cycles.append(weakref.ref(a))
        return record

    world = World()
    world.projections["zisson"] = holding_with_a_cycle
    world.put("firestore", **person())
    assert gc.isenabled()
    plan = world.plan()
    assert cycles and all(ref() is not None for ref in cycles)  # garbage, not yet collected
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert plan.ops and all(gc.is_tracked(p) for p in plan.ops)
    gc.collect()
    assert all(ref() is None for ref in cycles)
