"""The sandbox's seed data is as messy as a switchboard's directory, in known places.

Shared numbers, role addresses, extensions, namesakes and decomposed names are there,
`roles` names them, and every person Zisson holds can still be linked to its card by a
personal identifier (one that `daemon.identity` counts as personal).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest

from connectors.zisson.projection import project_xml
from daemon import identity, normalize
from daemon.domain import ContactKind, ContactRecord
from sandbox.seed import SWITCHBOARD, SeedCustomer, generate, seed_json


@pytest.fixture(scope="module")
def customers() -> list[SeedCustomer]:
    return generate(seed=1, customers=3, contacts=40)


def cards(customer: SeedCustomer) -> dict[str, ContactRecord]:
    return {c.card.external_id: c.card for c in customer.contacts}


def directory(customer: SeedCustomer) -> identity.Directory:
    records = [c.card for c in customer.contacts]
    records += [c.zisson for c in customer.contacts if c.zisson is not None]
    return identity.Directory(records)


def personal(found: identity.Directory, record: ContactRecord) -> set[str]:
    return {*found.personal_emails(record), *found.personal_phones(record)}


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data() -> None:
    first = seed_json(generate(seed=7, customers=3, contacts=25), seed=7)
    again = seed_json(generate(seed=7, customers=3, contacts=25), seed=7)
    other = seed_json(generate(seed=8, customers=3, contacts=25), seed=8)
    assert first == again
    assert first["customers"] != other["customers"]


@pytest.mark.parametrize("contacts", [6, 12, 40])
def test_every_customer_has_a_switchboard_department_whose_number_three_persons_share(
    contacts: int,
) -> None:
    for customer in generate(seed=2, customers=3, contacts=contacts):
        roles, by_id = customer.roles, cards(customer)
        department = by_id[roles["switchboard_department"]]
        assert department.kind is ContactKind.DEPARTMENT
        assert department.display_name == SWITCHBOARD
        assert [p.e164 for p in department.phones] == [roles["switchboard"]]
        assert department.emails == (roles["switchboard_email"],)
        assert roles["switchboard_email"].startswith("post@")
        sharing = [
            r
            for r in by_id.values()
            if r.kind is ContactKind.PERSON and roles["switchboard"] in identity.record_phones(r)
        ]
        assert len(sharing) >= 3
        assert {r.external_id for r in sharing} == set(roles["shares_switchboard"])
        found = directory(customer)
        assert found.phone_strength(roles["switchboard"]) is identity.Strength.SHARED
        assert found.email_strength(roles["switchboard_email"]) is identity.Strength.SHARED


def test_other_departments_have_main_numbers_of_their_own_that_persons_share(
    customers: list[SeedCustomer],
) -> None:
    for customer in customers:
        roles, by_id = customer.roles, cards(customer)
        others = [by_id[i] for i in roles["departments"] if i != roles["switchboard_department"]]
        assert others
        persons = [r for r in by_id.values() if r.kind is ContactKind.PERSON]
        for department in others:
            [number] = identity.record_phones(department)
            assert number != roles["switchboard"]
            assert identity.IdentityRules().is_role_address(department.emails[0])
        held = Counter(p for r in persons for p in identity.record_phones(r))
        assert any(held[next(iter(identity.record_phones(d)))] >= 2 for d in others)


def test_an_extension_holder_holds_an_extension_of_the_switchboard_in_both_systems(
    customers: list[SeedCustomer],
) -> None:
    for customer in customers:
        roles = customer.roles
        [contact] = [
            c for c in customer.contacts if c.card.external_id == roles["extension_holder"]
        ]
        extension = roles["extension"]
        assert normalize.without_extension(extension) == roles["switchboard"]
        assert ";ext=" in extension
        assert extension in identity.record_phones(contact.card)
        assert contact.zisson is not None and extension in identity.record_phones(contact.zisson)
        # Zisson holds the direct line, not the e-mail: the extension alone links them.
        assert contact.zisson.emails == ()
        found = directory(customer)
        assert personal(found, contact.card) & personal(found, contact.zisson) == {extension}
    written = {
        p.number
        for customer in generate(seed=3, customers=9, contacts=40)
        for c in customer.contacts
        for p in c.card.phones
        if p.e164 and ";ext=" in p.e164
    }
    markers = {re.search(r"(x|ext\.|innvalg|linje|#|;ext=)\s*\d+$", n) for n in written}
    assert None not in markers
    assert len({m[1] for m in markers if m}) >= 3  # written in several ways


def test_a_role_address_sits_on_a_person_whom_only_a_mobile_identifies(
    customers: list[SeedCustomer],
) -> None:
    for customer in customers:
        roles = customer.roles
        [contact] = [
            c for c in customer.contacts if c.card.external_id == roles["role_address_holder"]
        ]
        assert contact.card.kind is ContactKind.PERSON
        assert roles["role_address"] == f"faktura@{customer.domains[0]}"
        assert contact.card.emails == (roles["role_address"],)
        found = directory(customer)
        assert found.email_strength(roles["role_address"]) is identity.Strength.SHARED
        assert contact.zisson is not None
        common = personal(found, contact.card) & personal(found, contact.zisson)
        assert common and all(key.startswith("+4") for key in common)


def test_namesakes_within_a_customer_and_across_customers(
    customers: list[SeedCustomer],
) -> None:
    by_customer = {c.id: cards(c) for c in customers}
    for customer in customers:
        by_id = by_customer[customer.id]
        first, second = (by_id[i] for i in customer.roles["namesakes"])
        assert identity.record_names(first) == identity.record_names(second)
        assert set(first.emails).isdisjoint(second.emails)
        assert identity.record_phones(first).isdisjoint(identity.record_phones(second))
        assert all(
            {p.e164 for p in r.phones if p.type == "mobile"} for r in (first, second)
        )  # each a mobile of its own
        for entry in customer.roles["namesakes_elsewhere"]:
            here = by_id[entry["id"]]
            for other in entry["elsewhere"]:
                assert other["customer"] != customer.id
                there = by_customer[other["customer"]][other["id"]]
                assert identity.record_names(here) == identity.record_names(there)
    # The second customer's extension holder is named as the first customer's namesakes.
    one, two = customers[0], customers[1]
    pair = {identity.name_key(by_customer[one.id][i].display_name) for i in one.roles["namesakes"]}
    holder = by_customer[two.id][two.roles["extension_holder"]]
    assert identity.name_key(holder.display_name) in pair
    assert any(e["id"] == holder.external_id for e in two.roles["namesakes_elsewhere"])


def test_every_person_zisson_holds_shares_a_personal_identifier_with_its_card() -> None:
    for seed in (1, 2, 3, 4, 5):
        for customer in generate(seed=seed, customers=3, contacts=40):
            found = directory(customer)
            for contact in customer.contacts:
                if contact.zisson is None or contact.card.kind is ContactKind.DEPARTMENT:
                    continue
                assert personal(found, contact.card) & personal(found, contact.zisson), (
                    customer.id,
                    contact.card.external_id,
                )


def test_names_are_decomposed_in_zisson_and_normalise_to_the_cards(
    customers: list[SeedCustomer],
) -> None:
    for customer in customers:
        nfd = customer.roles["nfd_in_zisson"]
        assert nfd
        for contact in customer.contacts:
            if contact.card.external_id not in nfd:
                continue
            card, zisson = contact.card, contact.zisson
            assert zisson is not None
            assert zisson.family_name + zisson.given_name != card.family_name + card.given_name
            assert unicodedata.is_normalized("NFD", zisson.given_name + zisson.family_name)
            assert identity.record_names(zisson) & identity.record_names(card)
            assert normalize.name_key(zisson.given_name) == normalize.name_key(card.given_name)
            assert normalize.name_key(zisson.family_name) == normalize.name_key(card.family_name)


def test_zisson_holds_what_its_api_can_hold_and_persons_hold_several_numbers(
    customers: list[SeedCustomer],
) -> None:
    assert [c.zisson_api for c in customers] == ["json", "json", "xml"]
    for customer in customers:
        for contact in customer.contacts:
            if customer.zisson_api == "xml" and contact.zisson is not None:
                assert project_xml(contact.zisson) == contact.zisson
                assert len(contact.zisson.emails) <= 1 and len(contact.zisson.phones) <= 2
        persons = [c.card for c in customer.contacts if c.card.kind is ContactKind.PERSON]
        assert sum(len(p.phones) >= 2 for p in persons) > len(persons) // 2
        assert all(len(p.emails) == 1 for p in persons)
    # Every address is held by one record only (a role address included).
    for customer in customers:
        held = Counter(e for c in customer.contacts for e in c.card.emails)
        assert set(held.values()) == {1}


def test_what_existed_stays_missing_contacts_drifted_titles_and_number_formats() -> None:
    customers = generate(seed=1, customers=3, contacts=40)
    missing = sum(c.zisson is None for cust in customers for c in cust.contacts)
    drifted = sum(
        c.zisson is not None and c.zisson.title != c.card.title
        for cust in customers
        for c in cust.contacts
    )
    reformatted = sum(
        c.zisson is not None
        and [p.number for p in c.zisson.phones] != [p.number for p in c.card.phones]
        for cust in customers
        for c in cust.contacts
    )
    assert missing >= 5 and drifted >= 1 and reformatted >= 60
    assert all(c.roles["missing_in_zisson"] for c in customers)


def test_seed_json_describes_the_roles_by_card_id() -> None:
    customers = generate(seed=5, customers=2, contacts=20)
    written = seed_json(customers, seed=5)
    for customer, entry in zip(customers, written["customers"], strict=True):
        ids = {c["card"]["id"] for c in entry["contacts"]}
        roles = entry["roles"]
        assert entry["zisson_api"] == customer.zisson_api
        assert {
            "switchboard",
            "switchboard_department",
            "shares_switchboard",
            "namesakes",
            "extension_holder",
            "extension",
            "role_address",
            "role_address_holder",
            "nfd_in_zisson",
        } <= set(roles)
        for key in ("switchboard_department", "extension_holder", "role_address_holder"):
            assert roles[key] in ids
        for key in ("shares_switchboard", "namesakes", "nfd_in_zisson", "departments"):
            assert set(roles[key]) <= ids


def test_a_large_customer_is_generated_with_every_address_and_extension_its_own() -> None:
    # More extensions on one switchboard and departments of one name than two digits
    # and a hundred addresses hold (the generator once looped for ever there).
    [big] = generate(seed=3, customers=1, contacts=5000)
    assert len(big.contacts) >= 5000
    cards = [c.card for c in big.contacts]
    personal = [e for c in cards if c.kind is ContactKind.PERSON for e in c.emails]
    departments = [e for c in cards if c.kind is ContactKind.DEPARTMENT for e in c.emails]
    assert len(set(departments)) == len(departments)
    assert not set(departments) & set(personal)
    numbers = Counter(p.number for c in cards for p in c.phones if ";ext=" in (p.e164 or ""))
    assert numbers and max(numbers.values()) == 1  # one holder per extension
