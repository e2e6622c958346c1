"""The identity evidence model (daemon/identity.py) and what the reconciler does with it,
over generated switchboard directories: shared main numbers, role addresses, namesakes,
departments and extensions."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import identity, normalize
from daemon.domain import ContactKind, ContactRecord, OpKind, Phone, PhoneType, Subject
from daemon.policy import SyncPolicy
from daemon.reconcile import Reconciler, SystemView
from daemon.state import CustomerState

KEY = b"i" * 32
FIELDS = frozenset({"kind", "given_name", "family_name", "display_name", "emails", "phones"})
NAMES = [("Ola", "Hansen"), ("Kari", "Nordmann"), ("Åse", "Bjørnstad"), ("Pål", "Brækhus")]
MAIN = "22334455"


# -- normal forms ------------------------------------------------------------------------


def test_extensions_are_kept_and_written_many_ways() -> None:
    assert normalize.e164("22 33 44 55 x12") == "+4722334455;ext=12"
    for spelling in ("22334455 ext. 12", "+47 22 33 44 55 #12", "22334455 innvalg 12"):
        assert normalize.e164(spelling) == "+4722334455;ext=12", spelling
    assert normalize.e164("22334455") == "+4722334455"


def test_role_addresses_and_case_and_compatibility_forms() -> None:
    rules = identity.IdentityRules()
    assert rules.is_role_address(identity.email_key("Post@Firma.no"))
    assert rules.is_role_address("faktura.oslo@firma.no")
    assert not rules.is_role_address("ola.hansen@firma.no")
    assert identity.email_key("ＯＬＡ@firma.no") == "ola@firma.no"  # full-width letters
    decomposed = unicodedata.normalize("NFD", "Åse Bjørnstad")
    assert identity.name_key(decomposed) == identity.name_key("åse  bjørnstad")


def test_surname_first_display_names_are_the_same_name() -> None:
    record = ContactRecord(system="zisson", external_id="1", display_name="Hansen, Ola")
    assert "ola hansen" in identity.record_names(record)


def test_a_number_on_several_records_or_a_department_is_shared() -> None:
    board = normalize.phone(MAIN)
    directory = identity.Directory(
        [
            ContactRecord(system="f", external_id="1", phones=(board, normalize.phone("91"))),
            ContactRecord(system="f", external_id="2", phones=(board,)),
            ContactRecord(
                system="f",
                external_id="3",
                kind=ContactKind.DEPARTMENT,
                phones=(normalize.phone("23456789"),),
            ),
            ContactRecord(system="z", external_id="4", phones=(normalize.phone("91234567"),)),
            ContactRecord(system="f", external_id="5", phones=(normalize.phone("91234567"),)),
        ]
    )
    assert directory.phone_strength("+4722334455") is identity.Strength.SHARED
    assert directory.phone_strength("+4723456789") is identity.Strength.SHARED
    # One record in each of two systems: the same person twice, not two people.
    assert directory.phone_strength("+4791234567") is identity.Strength.PERSONAL


def test_each_directory_answers_from_its_own_count_of_a_record() -> None:
    """A record counted by two directories (two runs over the same records, one with a
    colleague holding the mobile too) is personal to one and shared to the other, in
    either order of asking, and in a copy of it (`replace`) as in the record itself."""
    mobile = normalize.phone("91234567")
    ola = ContactRecord(system="f", external_id="1", emails=("Ola@Firma.no",), phones=(mobile,))
    kari = ContactRecord(system="f", external_id="2", phones=(mobile,))
    alone = identity.Directory([ola])
    together = identity.Directory([ola, kari])
    for _ in range(2):
        assert alone.personal_ids(ola) == (("ola@firma.no",), ("+4791234567",))
        assert together.personal_ids(ola) == (("ola@firma.no",), ())
        assert together.personal_ids(replace(ola, title="Leder")) == (("ola@firma.no",), ())
        assert replace(ola, title="Leder") != ola and replace(ola) == ola
    assert identity.Directory([kari]).personal_ids(kari) == ((), ("+4791234567",))
    assert together.personal_ids(kari) is identity._NOTHING


# -- generated directories ------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Ground truth of one person (or department) of a customer."""

    n: int
    kind: ContactKind
    name: tuple[str, str]
    email: str | None  # personal
    mobile: str | None  # personal
    extension: int | None  # personal line on the main number
    on_switchboard: bool  # carries the main number
    role: str | None  # carries a role address (post@, faktura@)


@st.composite
def people(draw: st.DrawFn) -> list[Person]:
    count = draw(st.integers(min_value=2, max_value=10))
    found = []
    for n in range(count):
        department = draw(st.booleans()) and n % 4 == 0
        found.append(
            Person(
                n=n,
                kind=ContactKind.DEPARTMENT if department else ContactKind.PERSON,
                name=("", f"Avdeling {n}") if department else draw(st.sampled_from(NAMES)),
                email=None if department or draw(st.booleans()) else f"p{n}@firma.no",
                mobile=None if department or draw(st.booleans()) else f"9{n:07d}",
                extension=None if department or draw(st.booleans()) else 10 + n,
                on_switchboard=department or draw(st.booleans()),
                role=draw(st.sampled_from([None, None, "post", "faktura"])),
            )
        )
    return found


def record_of(person: Person, system: str, *, nfd: bool = False) -> ContactRecord:
    given, family = person.name
    phones: list[Phone] = []
    if person.on_switchboard:
        phones.append(normalize.phone("22 33 44 55", PhoneType.WORK))
    if person.extension is not None:
        phones.append(normalize.phone(f"{MAIN} x{person.extension}", PhoneType.WORK))
    if person.mobile:
        phones.append(normalize.phone(person.mobile, PhoneType.MOBILE))
    emails = [e for e in (person.email, person.role and f"{person.role}@firma.no") if e]
    display = f"{given} {family}".strip()
    if nfd:
        display = unicodedata.normalize("NFD", display)
    return ContactRecord(
        system=system,
        external_id=f"{system}-{person.n}",
        kind=person.kind,
        given_name=given,
        family_name=family,
        display_name=display,
        emails=tuple(emails),
        phones=tuple(phones),
    )


def views(records: dict[str, list[ContactRecord]]) -> dict[str, SystemView]:
    return {s: SystemView(system=s, fields=FIELDS, records=r) for s, r in records.items()}


def plan(records: dict[str, list[ContactRecord]], state: CustomerState | None = None):  # type: ignore[no-untyped-def]
    reconciler = Reconciler(customer_id="c", key=KEY, policy=SyncPolicy())
    return reconciler.plan(views(records), state or CustomerState(customer_id="c"))


@settings(max_examples=150, deadline=None)
@given(card=people(), zisson=people(), nfd=st.booleans())
def test_linking_never_joins_conflicting_records_nor_kinds(
    card: list[Person], zisson: list[Person], nfd: bool
) -> None:
    """Two independently drawn directories (so many namesakes and shared values meet):
    whatever is linked has no conflicting personal identifier and one kind."""
    records = {
        "firestore": [record_of(p, "firestore") for p in card],
        "zisson": [record_of(p, "zisson", nfd=nfd) for p in zisson],
    }
    result = plan(records)
    directory = identity.Directory([r for rs in records.values() for r in rs])
    by_id = {r.external_id: r for rs in records.values() for r in rs}
    linked = [m for m in result.members if m.system == "zisson"]
    card_of_link = {m.link_id: m.external_id for m in result.members if m.system == "firestore"}
    for member in linked:
        if member.link_id not in card_of_link:
            continue
        a, b = by_id[card_of_link[member.link_id]], by_id[member.external_id]
        assert a.kind is b.kind
        assert not directory.conflict(a, b)
        shares_personal = bool(
            (directory.personal_emails(a) & directory.personal_emails(b))
            | (directory.personal_phones(a) & directory.personal_phones(b))
        )
        same_name = bool(identity.record_names(a) & identity.record_names(b))
        assert shares_personal or same_name  # never by a shared identifier alone


@settings(max_examples=150, deadline=None)
@given(directory=people(), pick=st.integers(min_value=0), later=people())
def test_a_sync_after_an_erasure_deletes_only_what_holds_a_personal_identifier(
    directory: list[Person], pick: int, later: list[Person]
) -> None:
    """Erase one person given by everything they hold (name, switchboard, role address,
    own lines); later hires may share the switchboard, the role address or the name.
    The tombstones delete a record only if it holds one of the subject's personal
    identifiers (as the directory held them when erased)."""
    subject_person = directory[pick % len(directory)]
    before = [record_of(p, "firestore") for p in directory]
    subject_record = before[pick % len(directory)]
    subject = Subject(
        emails=subject_record.emails,
        phones=tuple(p.number for p in subject_record.phones),
        names=(subject_record.display_name,) if subject_record.display_name else (),
    )
    personal = identity.Directory(before).personal_subject(subject)
    tombstones = frozenset(identity.tombstones(KEY, personal))
    # After the erasure: everyone else, plus the later hires (new ids).
    hires = [replace(record_of(p, "firestore"), external_id=f"hire-{p.n}") for p in later]
    after = [r for r in before if r is not subject_record] + hires
    result = plan({"firestore": after}, CustomerState(customer_id="c", tombstones=tombstones))
    deleted = {p.op.external_id for p in result.ops if p.op.kind is OpKind.DELETE}
    wanted_emails = set(personal.emails)
    wanted_phones = set(personal.phones)
    for record in after:
        holds = bool(identity.record_emails(record) & wanted_emails) or bool(
            identity.record_phones(record) & wanted_phones
        )
        if record.external_id in deleted:
            assert holds, (subject_person, record)
            assert record.kind is ContactKind.PERSON
