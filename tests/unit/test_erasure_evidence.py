"""Erasure planning on evidence (daemon/erasure.py's Weighing over daemon/identity.py),
over generated switchboard directories: the company's main number on everyone, its
extensions, role addresses, shared mailboxes, namesakes, departments.

The property: erasing any one subject, by any mix of its identifiers, never plans a
record for erasure (pending) that holds none of that subject's personal identifiers,
neither when planning nor in the sweep and verification after the subject's own records
are gone. "Personal" is decided here from the generated world, independently of the
code under test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import identity, normalize
from daemon.domain import ContactKind, ContactRecord, ItemRef, Subject
from daemon.erasure import (
    Located,
    Weighing,
    check_item_ids,
    item_id,
    strengths_from_list,
    strengths_to_list,
    subject_directory,
)
from daemon.identity import Evidence, IdKind, Strength

RULES = identity.IdentityRules()
SYSTEMS = ("firestore", "zisson")
MAIN = "22334400"
GIVEN = ["Ola", "Kari", "Åse"]
FAMILY = ["Hansen", "Bjørnstad"]
# Addresses and numbers several people might be given: collisions are the point.
SHARED_POOL_EMAILS = ["felles@firma.no", "post@firma.no", "Faktura@Firma.no", "kari.h@firma.no"]
MOBILE_POOL = ["91000001", "91000002", "91000003"]


@dataclass(frozen=True)
class World:
    records: tuple[ContactRecord, ...]

    def holders(
        self, kind: IdKind, key: str, records: tuple[ContactRecord, ...]
    ) -> list[ContactRecord]:
        found = identity.record_emails if kind is IdKind.EMAIL else identity.record_phones
        return [r for r in records if key in found(r)]

    def personal(
        self, kind: IdKind, key: str, records: tuple[ContactRecord, ...] | None = None
    ) -> bool:
        """The oracle: one record per system holds it, no department, no role address."""
        records = self.records if records is None else records
        if kind is IdKind.EMAIL and RULES.is_role_address(key):
            return False
        holders = self.holders(kind, key, records)
        if any(r.kind is ContactKind.DEPARTMENT for r in holders):
            return False
        return all(n <= 1 for n in Counter(r.system for r in holders).values())


@st.composite
def people(draw: st.DrawFn) -> World:
    count = draw(st.integers(1, 7))
    base: list[ContactRecord] = []
    for i in range(count):
        department = draw(st.booleans()) and draw(st.booleans())  # about one in four
        emails = []
        if draw(st.booleans()):
            emails.append(f"p{i}@firma.no")
        emails += draw(st.lists(st.sampled_from(SHARED_POOL_EMAILS), max_size=2, unique=True))
        phones = []
        if draw(st.booleans()):
            phones.append(MAIN)
        if draw(st.booleans()):
            phones.append(f"{MAIN} x{draw(st.integers(10, 13))}")
        if draw(st.booleans()):
            phones.append(draw(st.sampled_from([*MOBILE_POOL, f"9{i + 4:07d}"])))
        given_name, family_name = draw(st.sampled_from(GIVEN)), draw(st.sampled_from(FAMILY))
        base.append(
            ContactRecord(
                system="",
                external_id=f"c{i}",
                kind=ContactKind.DEPARTMENT if department else ContactKind.PERSON,
                given_name="" if department else given_name,
                family_name="" if department else family_name,
                display_name=f"Avdeling {i}" if department else f"{given_name} {family_name}",
                emails=tuple(emails),
                phones=tuple(normalize.phone(p) for p in phones),
            )
        )
    records = []
    for record in base:
        # Most contacts are in both systems; some only in one.
        where = draw(st.sampled_from([SYSTEMS, SYSTEMS, ("firestore",), ("zisson",)]))
        records += [
            replace(record, system=s, external_id=f"{s}-{record.external_id}") for s in where
        ]
    return World(records=tuple(records))


@st.composite
def subjects(draw: st.DrawFn, world: World) -> Subject:
    """Some of one contact's identifiers (as an admin types them), maybe another's."""
    record = draw(st.sampled_from(world.records))
    emails = draw(st.lists(st.sampled_from(record.emails), unique=True)) if record.emails else []
    phones = (
        draw(st.lists(st.sampled_from([p.number for p in record.phones]), unique=True))
        if record.phones
        else []
    )
    names = [record.display_name] if draw(st.booleans()) else []
    if draw(st.booleans()):
        emails.append(draw(st.sampled_from([*SHARED_POOL_EMAILS, "ukjent@firma.no"])))
    if draw(st.booleans()):
        phones.append(draw(st.sampled_from([MAIN, f"{MAIN} x11", *MOBILE_POOL])))
    if not (emails or phones or names):
        names = [record.display_name]
    return normalize.parse_subject(
        emails=list(dict.fromkeys(emails)), phones=list(dict.fromkeys(phones)), names=names
    )


def subject_keys(subject: Subject) -> list[tuple[IdKind, str]]:
    keys = [(IdKind.EMAIL, identity.email_key(e)) for e in subject.emails]
    keys += [(IdKind.PHONE, identity.phone_key(p) or p) for p in subject.phones]
    return keys


def holds_personal(
    world: World, subject: Subject, record: ContactRecord, records: tuple[ContactRecord, ...]
) -> bool:
    """Whether `record` is a person holding an identifier of `subject` that the oracle
    finds personal among `records`."""
    if record.kind is ContactKind.DEPARTMENT:
        return False
    held = identity.record_emails(record) | identity.record_phones(record)
    return any(
        key in held and world.personal(kind, key, records) for kind, key in subject_keys(subject)
    )


def directory(records: tuple[ContactRecord, ...], subject: Subject) -> identity.Directory:
    """As the erasure service builds it."""
    return subject_directory(records, subject, RULES)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_an_erasure_never_plans_a_record_without_a_personal_identifier_of_its_subject(
    data: st.DataObject,
) -> None:
    world = data.draw(people())
    subject = data.draw(subjects(world))
    weighing = Weighing(directory(world.records, subject), subject)

    planned = [r for r in world.records if weighing.record(r).personal]
    for record in planned:
        assert holds_personal(world, subject, record, world.records), (record, subject)
    # Whatever holds a personal identifier of the subject is found and planned.
    for record in world.records:
        if holds_personal(world, subject, record, world.records):
            assert record in planned, (record, subject)

    # Sweep and verification, after the planned records are gone: weighed as the plan
    # weighed them, what is left is planned only on plan-time personal evidence. (An
    # identifier shared with one colleague is that colleague's alone now.)
    weights = strengths_from_list(strengths_to_list(weighing.strengths))
    left = tuple(r for r in world.records if r not in planned)
    later = Weighing(directory(left, subject), subject, planned=weights)
    for record in left:
        if later.record(record).personal:
            assert holds_personal(world, subject, record, world.records), (record, subject)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_an_item_found_elsewhere_is_erased_only_on_a_personal_match(data: st.DataObject) -> None:
    """Outlook's items: by the identifiers the connector says they hold."""
    world = data.draw(people())
    subject = data.draw(subjects(world))
    weighing = Weighing(directory(world.records, subject), subject)
    keys = {
        **{
            ("email", i): (IdKind.EMAIL, identity.email_key(e))
            for i, e in enumerate(subject.emails)
        },
        **{
            ("phone", i): (IdKind.PHONE, identity.phone_key(p) or p)
            for i, p in enumerate(subject.phones)
        },
    }
    positions = [*keys, *(("name", i) for i in range(len(subject.names)))]
    matched = data.draw(st.lists(st.sampled_from(positions), unique=True, min_size=1))
    evidence = weighing.found(tuple(matched))
    assert evidence.personal == any(
        world.personal(*keys[position]) for position in matched if position in keys
    )
    # A connector that does not say what it matched: erased only if nothing of the
    # subject is shared or a name.
    unknown = weighing.found(())
    every = [world.personal(*key) for key in keys.values()] + [False] * len(subject.names)
    assert unknown.personal == all(every)


def test_a_switchboard_shared_with_one_colleague_stays_shared_after_the_subject_is_gone() -> None:
    ola = ContactRecord(
        system="zisson",
        external_id="1",
        display_name="Ola Hansen",
        emails=("ola@firma.no",),
        phones=(normalize.phone(MAIN),),
    )
    kari = ContactRecord(
        system="zisson", external_id="2", display_name="Kari", phones=(normalize.phone(MAIN),)
    )
    subject = normalize.parse_subject(emails=["ola@firma.no"], phones=[MAIN])
    plan = Weighing(directory((ola, kari), subject), subject)
    assert plan.record(ola).personal and not plan.record(kari).personal
    assert plan.personal() == Subject(emails=("ola@firma.no",))

    # Ola erased: the number is Kari's alone now, but not evidence that she is Ola.
    now = Weighing(directory((kari,), subject), subject)
    assert now.record(kari).personal  # what a fresh look would wrongly conclude
    sweep = Weighing(directory((kari,), subject), subject, planned=plan.strengths)
    assert not sweep.record(kari).personal and sweep.record(kari).ambiguous


def test_only_a_name_or_only_shared_identifiers_plan_nothing() -> None:
    board = normalize.phone(MAIN)
    records = (
        ContactRecord(system="zisson", external_id="1", display_name="Ola Hansen", phones=(board,)),
        ContactRecord(system="zisson", external_id="2", display_name="Ola Hansen", phones=(board,)),
        ContactRecord(
            system="zisson",
            external_id="3",
            kind=ContactKind.DEPARTMENT,
            display_name="Sentralbord",
            emails=("post@firma.no",),
            phones=(board,),
        ),
    )
    for subject in (
        normalize.parse_subject(names=["Ola Hansen"]),
        normalize.parse_subject(phones=["22 33 44 00"]),
        normalize.parse_subject(emails=["Post@Firma.no"]),
    ):
        weighing = Weighing(directory(records, subject), subject)
        assert weighing.nothing_personal
        found = [weighing.record(r) for r in records]
        assert not any(e.personal for e in found)
        assert all(e.ambiguous for e in found if e)


def test_item_ids_are_short_stable_and_checked() -> None:
    first = item_id("zisson", "contact", "7f3a0c1e-9b1d-4c2a-8e0f-2a9b7c6d5e4f")
    assert first == item_id("zisson", "contact", "7f3a0c1e-9b1d-4c2a-8e0f-2a9b7c6d5e4f")
    assert first != item_id("zisson", "contact", "7f3a0c1e-9b1d-4c2a-8e0f-2a9b7c6d5e40")
    assert first != item_id("firestore", "contact", "7f3a0c1e-9b1d-4c2a-8e0f-2a9b7c6d5e4f")
    assert len(first) == len("zisson:") + 8 and first.startswith("zisson:")
    assert check_item_ids([f" {first} ", first]) == [first]
    for bad in ("zisson", "zisson:ABCDEFGH", "zisson:k3f7q2m", "x:k3f7q2ma1", "'; drop"):
        try:
            check_item_ids([bad])
        except Exception as exc:
            assert "not an item id" in str(exc)
        else:
            raise AssertionError(bad)
    located = Located(
        ref=ItemRef(system="zisson", kind="contact", id="42"),
        evidence=Evidence(
            matches=(identity.Match(kind=IdKind.PHONE, position=0, strength=Strength.SHARED),)
        ),
    )
    assert located.ambiguous and located.new_item().status == "ambiguous"
    assert located.new_item().evidence == ({"kind": "phone", "position": 0, "strength": "shared"},)
