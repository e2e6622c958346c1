"""Deterministic seed data: Norwegian customers and their contacts (Faker no_NO, Norwegian Bokmål).

The same seed gives the same data. The customer card holds every contact; Zisson holds
most of them, with phone numbers written the way people write them, a few titles that
have drifted, and some contacts missing, so a first sync has real work to do.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from faker import Faker

from daemon import normalize
from daemon.domain import ContactKind, ContactRecord, Phone, PhoneType

DEPARTMENTS = ("Sentralbord", "Økonomi", "Kundeservice", "Lager og logistikk", "Ledelse", "Salg")
TITLES = (
    "Daglig leder",
    "Økonomisjef",
    "Regnskapsfører",
    "Selger",
    "Kundebehandler",
    "Lagerarbeider",
    "Prosjektleder",
    "Styreleder",
    "Rådgiver",
    "Sjåfør",
)
# Names that must always appear, so every run exercises æ, ø and å.
NORWEGIAN = (("Åse", "Bjørnstad"), ("Kjærsti", "Løvås"), ("Ørjan", "Ødegård"), ("Pål", "Brækhus"))


@dataclass(kw_only=True, slots=True)
class SeedContact:
    card: ContactRecord  # as on the customer card (system "firestore")
    zisson: ContactRecord | None  # as in Zisson, or None if missing there


@dataclass(kw_only=True, slots=True)
class SeedCustomer:
    id: str
    name: str
    domains: tuple[str, ...]
    instructions: str
    contacts: list[SeedContact] = field(default_factory=list)


def _ascii(text: str) -> str:
    text = text.replace("æ", "ae").replace("ø", "o").replace("å", "aa")
    text = text.replace("Æ", "Ae").replace("Ø", "O").replace("Å", "Aa")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9.]+", "", text.lower())


def _formats(digits: str, rng: random.Random) -> str:
    """One 8-digit Norwegian number written one of the ways people write it."""
    styles = [
        digits,
        f"{digits[:2]} {digits[2:4]} {digits[4:6]} {digits[6:]}",
        f"+47 {digits}",
        f"+47 {digits[:3]} {digits[3:5]} {digits[5:]}",
        f"0047 {digits[:2]} {digits[2:4]} {digits[4:6]} {digits[6:]}",
        f"{digits[:3]} {digits[3:5]} {digits[5:]}",
    ]
    return rng.choice(styles)


def _phone(number: str, kind: PhoneType) -> Phone:
    return normalize.phone(number, kind)


def generate(*, seed: int = 1, customers: int = 3, contacts: int = 40) -> list[SeedCustomer]:
    fake = Faker("no_NO")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    used_mobiles: set[str] = set()
    result = []
    for c in range(1, customers + 1):
        company = fake.unique.company()
        domain = _ascii(company.split()[0]) + ".no"
        customer = SeedCustomer(
            id=f"kunde-{c:02d}",
            name=company,
            domains=(domain,),
            instructions=rng.choice(
                [
                    "Sett over til sentralbordet ved sykdom. Ta imot beskjed ellers.",
                    "Ta beskjed og send e-post til kontaktpersonen. Haster: ring mobil.",
                    "Svar med firmanavn. Ved leveranser: henvis til lager.",
                ]
            ),
        )
        for i in range(contacts):
            if i % 12 == 5:
                department = DEPARTMENTS[(i // 12) % len(DEPARTMENTS)]
                work = f"{rng.randint(2, 7)}{rng.randint(1000000, 9999999)}"
                card = ContactRecord(
                    system="firestore",
                    external_id="",
                    kind=ContactKind.DEPARTMENT,
                    display_name=department,
                    department=department,
                    emails=(f"{_ascii(department.split()[0])}{i}@{domain}",),
                    phones=(_phone(_formats(work, rng), PhoneType.WORK),),
                    notes="Åpent 08–16",
                )
            else:
                if i < len(NORWEGIAN) and c == 1:
                    given, family = NORWEGIAN[i]
                else:
                    given, family = fake.first_name(), fake.last_name()
                while True:
                    mobile = f"{rng.choice('49')}{rng.randint(1000000, 9999999)}"
                    if mobile not in used_mobiles:
                        used_mobiles.add(mobile)
                        break
                phones = [_phone(_formats(mobile, rng), PhoneType.MOBILE)]
                if rng.random() < 0.4:
                    work = f"{rng.randint(2, 7)}{rng.randint(1000000, 9999999)}"
                    phones.append(_phone(_formats(work, rng), PhoneType.WORK))
                card = ContactRecord(
                    system="firestore",
                    external_id="",
                    kind=ContactKind.PERSON,
                    given_name=given,
                    family_name=family,
                    display_name=f"{given} {family}",
                    title=rng.choice(TITLES),
                    department=rng.choice(DEPARTMENTS),
                    emails=(f"{_ascii(given)}.{_ascii(family)}{i}@{domain}",),
                    phones=tuple(phones),
                    notes=rng.choice(["", "", "Foretrekker SMS", "Jobber deltid, man–ons"]),
                )
            zisson: ContactRecord | None = None
            roll = rng.random()
            if roll >= 0.15:  # 15 % are missing in Zisson: the first sync creates them
                zisson_phones = tuple(
                    _phone(_formats(re.sub(r"\D", "", p.e164 or p.number)[-8:], rng), p.type)
                    for p in card.phones
                )
                zisson = ContactRecord(
                    system="zisson",
                    external_id="",
                    kind=card.kind,
                    given_name=card.given_name,
                    family_name=card.family_name,
                    display_name=card.display_name,
                    title=card.title if roll >= 0.2 else rng.choice(TITLES),  # some drifted
                    department=card.department,
                    emails=card.emails,
                    phones=zisson_phones,
                    notes=card.notes,
                )
            customer.contacts.append(SeedContact(card=card, zisson=zisson))
        result.append(customer)
    return result


def record_json(record: ContactRecord) -> dict[str, Any]:
    return {
        "kind": str(record.kind),
        "given_name": record.given_name,
        "family_name": record.family_name,
        "display_name": record.display_name,
        "title": record.title,
        "department": record.department,
        "emails": list(record.emails),
        "phones": [
            {"number": p.number, "type": str(p.type), "e164": p.e164} for p in record.phones
        ],
        "notes": record.notes,
    }


def seed_json(customers: list[SeedCustomer], *, seed: int) -> dict[str, Any]:
    """What `sandbox up` writes to seed.json: everything it put in the systems."""
    return {
        "seed": seed,
        "customers": [
            {
                "id": c.id,
                "name": c.name,
                "domains": list(c.domains),
                "instructions": c.instructions,
                "contacts": [
                    {
                        "card": record_json(s.card) | {"id": s.card.external_id},
                        "zisson": None
                        if s.zisson is None
                        else record_json(s.zisson) | {"id": s.zisson.external_id},
                    }
                    for s in c.contacts
                ],
            }
            for c in customers
        ],
    }
