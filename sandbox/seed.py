"""Deterministic seed data: Norwegian customers and their contacts (Faker no_NO, Norwegian Bokmål).

The same seed gives the same data. The data is as messy as a switchboard's directory is:

- per customer a switchboard ("Sentralbord", a department) holding the company's main
  number and a role address (`post@`), and other departments with main numbers and role
  addresses of their own;
- persons whose work phone is the company's or their department's main number (many
  share one), each with a number of their own beside it: a mobile, an extension of the
  main number ("22 33 44 55 x12", written another way in Zisson) or a direct line, and
  sometimes a private number too;
- role addresses on persons (`faktura@` on the accountant, `resepsjon@` on the
  receptionist), whom only their mobile identifies;
- two persons of the same name at one customer, and a name found at another customer;
- names with å stored decomposed (NFD) in Zisson.

The customer card holds every contact. Zisson holds most of them, what its API can hold
(the XML API: one e-mail, one work number, one mobile; no display name), with numbers
written the way people write them, a few titles that have drifted, an e-mail or two left
out, and some contacts missing, so a first sync has real work to do. Every person Zisson
holds shares at least one personal identifier (an e-mail, a mobile, an extension, a
direct line nobody else has) with its card, so a first sync can link it without leaning
on a shared number, a role address or a name.

`SeedCustomer.roles` names the contacts tests look for (see `seed_json`).
"""

from __future__ import annotations

import itertools
import random
import re
import string
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from faker import Faker

from connectors.zisson.projection import project_xml
from daemon import identity, normalize
from daemon.domain import ContactKind, ContactRecord, PhoneType

SWITCHBOARD = "Sentralbord"
# Other departments, each with its own main number and role address.
DEPARTMENTS = (
    ("Økonomi", "okonomi"),
    ("Kundeservice", "kundeservice"),
    ("Lager og logistikk", "ordre"),
    ("Ledelse", "kontor"),
    ("Salg", "salg"),
)
TITLES = (
    "Daglig leder",
    "Økonomisjef",
    "Selger",
    "Kundebehandler",
    "Lagerarbeider",
    "Prosjektleder",
    "Styreleder",
    "Rådgiver",
    "Sjåfør",
)
# Names with å (which NFD decomposes; æ and ø it does not): every customer gets some, so
# every run exercises æ, ø and å, and Zisson can hold them decomposed.
NORWEGIAN = (
    ("Åse", "Bjørnstad"),
    ("Kjærsti", "Løvås"),
    ("Ørjan", "Ødegård"),
    ("Pål", "Brækhus"),
    ("Håkon", "Sæther"),
    ("Åsmund", "Kvåle"),
    ("Målfrid", "Grønås"),
    ("Ståle", "Rønningsåsen"),
)
# How people write an extension after a main number; `normalize.e164` reads them all.
EXTENSION_STYLES = (" x{}", " x {}", " ext. {}", " innvalg {}", " linje {}", "#{}", ";ext={}")
INSTRUCTIONS = (
    "Sett over til sentralbordet ved sykdom. Ta imot beskjed ellers.",
    "Ta beskjed og send e-post til kontaktpersonen. Haster: ring mobil.",
    "Svar med firmanavn. Ved leveranser: henvis til lager.",
)
_ID_ALPHABET = string.ascii_letters + string.digits
ZissonApi = Literal["json", "xml"]


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
    zisson_api: ZissonApi = "json"
    contacts: list[SeedContact] = field(default_factory=list)
    # What tests look for, by card id (the contacts' `card.external_id`); see seed_json.
    roles: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Number:
    """A number as generated: eight digits, perhaps an extension of them."""

    digits: str
    type: PhoneType
    extension: str = ""

    def written(self, rng: random.Random) -> str:
        main = _formats(self.digits, rng)
        return (
            main + rng.choice(EXTENSION_STYLES).format(self.extension) if self.extension else main
        )

    @property
    def e164(self) -> str:
        key = normalize.e164(
            f"{self.digits};ext={self.extension}" if self.extension else self.digits
        )
        assert key is not None
        return key


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


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


class _Numbers:
    """Numbers nobody else has: mobiles (4, 9) and landlines (2, 3, 5, 6, 7)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _new(self, first: str) -> str:
        while True:
            digits = f"{self.rng.choice(first)}{self.rng.randint(1000000, 9999999)}"
            if digits not in self.used:
                self.used.add(digits)
                return digits

    def mobile(self) -> str:
        return self._new("49")

    def landline(self) -> str:
        return self._new("23567")


@dataclass(kw_only=True)
class _Person:
    """A person as planned, before it is written into the card and Zisson."""

    given: str
    family: str
    title: str
    department: str
    numbers: list[_Number]
    email: str
    notes: str = ""
    always_in_zisson: bool = False
    zisson_email: bool = True  # whether Zisson holds the e-mail
    nfd_in_zisson: bool = False


def generate(*, seed: int = 1, customers: int = 3, contacts: int = 40) -> list[SeedCustomer]:
    """`customers` customers of `contacts` contacts each (at least 6 for every role)."""
    fake = Faker("no_NO")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    ids = random.Random(f"pdsync-seed-ids-{seed}")
    numbers = _Numbers(rng)
    result: list[SeedCustomer] = []
    pair_names: list[tuple[str, str]] = []  # each customer's namesakes' name
    for c in range(1, customers + 1):
        company = fake.unique.company()
        domain = _ascii(company.split()[0]) + ".no"
        customer = SeedCustomer(
            id=f"kunde-{c:02d}",
            name=company,
            domains=(domain,),
            instructions=rng.choice(INSTRUCTIONS),
            zisson_api="xml" if c % 3 == 0 else "json",  # every third reads through XML
        )
        switchboard = numbers.landline()
        builder = _CustomerBuilder(customer, rng, ids)
        builder.department(SWITCHBOARD, switchboard, builder.role_address("post"), switchboard=True)
        accents = [NORWEGIAN[(2 * (c - 1) + k) % len(NORWEGIAN)] for k in range(2)]
        pair = (fake.first_name(), fake.last_name())
        # The same name at another customer: this customer's extension holder is named as
        # the previous customer's namesakes.
        elsewhere = pair_names[-1] if pair_names else (fake.first_name(), fake.last_name())
        pair_names.append(pair)
        main, home = switchboard, SWITCHBOARD
        for i in range(1, contacts):
            if i == 1:
                person = _Person(
                    given=accents[0][0],
                    family=accents[0][1],
                    title="Daglig leder",
                    department="Ledelse",
                    numbers=[_Number(switchboard, PhoneType.WORK), _mobile(numbers)],
                    email=builder.email(*accents[0]),
                    always_in_zisson=True,
                    nfd_in_zisson=True,
                )
                builder.person(person)
            elif i == 2:
                extension = builder.extension(switchboard)
                person = _Person(
                    given=elsewhere[0],
                    family=elsewhere[1],
                    title="Prosjektleder",
                    department=SWITCHBOARD,
                    numbers=[extension, _Number(switchboard, PhoneType.WORK)],
                    email=builder.email(*elsewhere),
                    always_in_zisson=True,
                    zisson_email=False,  # Zisson knows the direct line only
                )
                builder.person(person, role="extension_holder")
                customer.roles["extension"] = extension.e164
            elif i == 3:
                role_address = f"faktura@{domain}"
                person = _Person(
                    given=fake.first_name(),
                    family=fake.last_name(),
                    title="Regnskapsfører",
                    department="Økonomi",
                    numbers=[_Number(switchboard, PhoneType.WORK), _mobile(numbers)],
                    email=role_address,
                    always_in_zisson=True,
                )
                builder.person(person, role="role_address_holder")
                customer.roles["role_address"] = role_address
            elif i in (4, 5):
                person = _Person(
                    given=pair[0],
                    family=pair[1],
                    title=rng.choice(TITLES),
                    department=rng.choice(DEPARTMENTS)[0],
                    numbers=[_Number(switchboard, PhoneType.WORK), _mobile(numbers)]
                    if i == 4
                    else [_mobile(numbers), _Number(numbers.landline(), PhoneType.HOME)],
                    email=builder.email(*pair),
                    always_in_zisson=True,
                )
                builder.person(person, role="namesakes")
            elif i % 10 == 6:
                name, local = DEPARTMENTS[(i // 10) % len(DEPARTMENTS)]
                main, home = numbers.landline(), name
                builder.department(name, main, builder.role_address(local))
            elif i == 7:
                person = _Person(
                    given=accents[1][0],
                    family=accents[1][1],
                    title="Resepsjonist",
                    department=SWITCHBOARD,
                    numbers=[_Number(switchboard, PhoneType.WORK), _mobile(numbers)],
                    email=f"resepsjon@{domain}",
                    always_in_zisson=True,
                    nfd_in_zisson=True,
                )
                builder.person(person)
            else:
                builder.person(_random_person(fake, rng, numbers, builder, main, home))
        result.append(customer)
    _namesakes_elsewhere(result)
    return result


def _mobile(numbers: _Numbers) -> _Number:
    return _Number(numbers.mobile(), PhoneType.MOBILE)


def _random_person(
    fake: Faker,
    rng: random.Random,
    numbers: _Numbers,
    builder: _CustomerBuilder,
    main: str,
    home: str,
) -> _Person:
    """A person of the department `home` (main number `main`) or of the company."""
    if home != SWITCHBOARD and rng.random() < 0.35:
        main, home = builder.switchboard, SWITCHBOARD
    given, family = fake.first_name(), fake.last_name()
    if rng.random() < 0.1:
        given, family = rng.choice(NORWEGIAN)
    own: list[_Number] = []
    if rng.random() < 0.35:
        own.append(builder.extension(main))
    if rng.random() < 0.8 or not own:
        own.append(_mobile(numbers))
    work = [_Number(main, PhoneType.WORK)]
    if rng.random() < 0.1:
        work = [_Number(numbers.landline(), PhoneType.WORK)]  # a direct line of its own
    extra = [_Number(numbers.landline(), PhoneType.HOME)] if rng.random() < 0.1 else []
    # An extension comes first: Zisson's XML API holds the first work number only.
    ordered = [n for n in own if n.extension] + work + [n for n in own if not n.extension]
    return _Person(
        given=given,
        family=family,
        title=rng.choice(TITLES),
        department=home,
        numbers=ordered + extra,
        email=builder.email(given, family),
        notes=rng.choice(["", "", "Foretrekker SMS", "Jobber deltid, man–ons"]),
        # Either API holds the person's own number, so the e-mail may be left out.
        zisson_email=rng.random() >= 0.12,
        nfd_in_zisson=rng.random() < 0.5,
    )


class _CustomerBuilder:
    def __init__(self, customer: SeedCustomer, rng: random.Random, ids: random.Random) -> None:
        self.customer = customer
        self.rng = rng
        self.ids = ids
        self.domain = customer.domains[0]
        self.switchboard = ""
        self.locals: set[str] = set()
        self.extensions: dict[str, set[str]] = defaultdict(set)
        self.rules = identity.IdentityRules()

    def card_id(self) -> str:
        """A Firestore-like document id, reproducible for the seed."""
        return "".join(self.ids.choice(_ID_ALPHABET) for _ in range(20))

    def email(self, given: str, family: str) -> str:
        """A personal address: given.family@, then g.family@, given.family2@ for namesakes."""
        base = f"{_ascii(given)}.{_ascii(family)}"
        candidates = [base, f"{_ascii(given)[:1]}.{_ascii(family)}"]
        for local in itertools.chain(candidates, (f"{base}{n}" for n in itertools.count(2))):
            address = f"{local}@{self.domain}"
            if local not in self.locals and not self.rules.is_role_address(address):
                self.locals.add(local)
                return address
        raise AssertionError("no free address")  # pragma: no cover

    def role_address(self, local: str) -> str:
        """A department's address: `kundeservice@`, `kundeservice.2@` for a second one."""
        for candidate in itertools.chain([local], (f"{local}.{n}" for n in itertools.count(2))):
            if candidate not in self.locals:
                self.locals.add(candidate)
                return f"{candidate}@{self.domain}"
        raise AssertionError("unreachable")  # pragma: no cover

    def extension(self, main: str) -> _Number:
        taken = self.extensions[main]
        # Two digits while they last (80 of them), then three, then four: a large
        # customer's switchboard has more extensions than two digits hold.
        low, high = (
            (10, 89) if len(taken) < 80 else (100, 999) if len(taken) < 980 else (1000, 9999)
        )
        while True:
            extension = str(self.rng.randint(low, high))
            if extension not in taken:
                taken.add(extension)
                return _Number(main, PhoneType.WORK, extension)

    def department(self, name: str, main: str, address: str, *, switchboard: bool = False) -> None:
        card = ContactRecord(
            system="firestore",
            external_id=self.card_id(),
            kind=ContactKind.DEPARTMENT,
            display_name=name,
            department=name,
            emails=(address,),
            phones=(normalize.phone(_formats(main, self.rng), PhoneType.WORK),),
            notes="Åpent 08–16",
        )
        held = _Person(
            given="",
            family="",
            title="",
            department=name,
            numbers=[_Number(main, PhoneType.WORK)],
            email=address,
        )
        zisson = self._zisson(card, held)
        self.customer.contacts.append(SeedContact(card=card, zisson=zisson))
        roles = self.customer.roles
        if switchboard:
            self.switchboard = main
            roles["switchboard"] = _Number(main, PhoneType.WORK).e164
            roles["switchboard_department"] = card.external_id
            roles["switchboard_email"] = address
        roles.setdefault("departments", []).append(card.external_id)

    def person(self, person: _Person, *, role: str | None = None) -> None:
        card = ContactRecord(
            system="firestore",
            external_id=self.card_id(),
            kind=ContactKind.PERSON,
            given_name=person.given,
            family_name=person.family,
            display_name=f"{person.given} {person.family}",
            title=person.title,
            department=person.department,
            emails=(person.email,),
            phones=tuple(normalize.phone(n.written(self.rng), n.type) for n in person.numbers),
            notes=person.notes,
        )
        roles = self.customer.roles
        roll = self.rng.random()
        zisson = None
        if roll >= 0.15 or person.always_in_zisson:  # 15 % are missing: a first sync creates them
            zisson = self._zisson(card, person, drifted=0.15 <= roll < 0.2)
        else:
            roles.setdefault("missing_in_zisson", []).append(card.external_id)
        self.customer.contacts.append(SeedContact(card=card, zisson=zisson))
        if role == "extension_holder" or role == "role_address_holder":
            roles[role] = card.external_id
        elif role is not None:
            roles.setdefault(role, []).append(card.external_id)
        if self.switchboard in {n.digits for n in person.numbers if not n.extension}:
            roles.setdefault("shares_switchboard", []).append(card.external_id)
        if zisson is not None and (zisson.given_name, zisson.family_name) != (
            card.given_name,
            card.family_name,
        ):
            roles.setdefault("nfd_in_zisson", []).append(card.external_id)

    def _zisson(
        self, card: ContactRecord, person: _Person, *, drifted: bool = False
    ) -> ContactRecord:
        """The card's contact as Zisson holds it: numbers written another way, a title
        perhaps drifted, the e-mail perhaps left out, å perhaps decomposed."""
        decomposed = person.nfd_in_zisson and _nfd(card.given_name + card.family_name) != (
            card.given_name + card.family_name
        )
        given = _nfd(card.given_name) if decomposed else card.given_name
        family = _nfd(card.family_name) if decomposed else card.family_name
        record = ContactRecord(
            system="zisson",
            external_id="",
            kind=card.kind,
            given_name=given,
            family_name=family,
            display_name=f"{given} {family}"
            if card.kind is ContactKind.PERSON
            else card.display_name,
            title=self.rng.choice(TITLES) if drifted else card.title,
            department=card.department,
            emails=card.emails if person.zisson_email else (),
            phones=tuple(normalize.phone(n.written(self.rng), n.type) for n in person.numbers),
            notes=card.notes,
        )
        return project_xml(record) if self.customer.zisson_api == "xml" else record


def _namesakes_elsewhere(customers: list[SeedCustomer]) -> None:
    """Per customer, its persons whose name a person at another customer has too."""
    holders: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for customer in customers:
        for contact in customer.contacts:
            if contact.card.kind is ContactKind.PERSON:
                key = normalize.name_key(contact.card.display_name)
                holders[key].append((customer.id, contact.card.external_id))
    for customer in customers:
        found = []
        for contact in customer.contacts:
            if contact.card.kind is not ContactKind.PERSON:
                continue
            key = normalize.name_key(contact.card.display_name)
            others = [(c, i) for c, i in holders[key] if c != customer.id]
            if others:
                found.append(
                    {
                        "id": contact.card.external_id,
                        "name": contact.card.display_name,
                        "elsewhere": [{"customer": c, "id": i} for c, i in others],
                    }
                )
        customer.roles["namesakes_elsewhere"] = found


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
    """What `sandbox up` writes to seed.json: everything it put in the systems.

    Per customer, `roles` names (by card id) the contacts tests look for:

    switchboard             the main number (E.164) on the switchboard and many persons
    switchboard_department  the "Sentralbord" department; switchboard_email its `post@`
    shares_switchboard      persons whose work number is the switchboard's
    departments             every department, the switchboard first
    extension_holder        a person with an extension of the switchboard number
                            (`extension`, E.164 with ";ext="), which Zisson holds
                            without the person's e-mail
    role_address            `faktura@` on the accountant (role_address_holder), whose
                            only personal identifier is a mobile
    namesakes               two persons of one name (different mobiles and e-mails)
    namesakes_elsewhere     persons whose name a person at another customer has too:
                            [{id, name, elsewhere: [{customer, id}]}]
    nfd_in_zisson           persons whose name Zisson holds decomposed (NFD)
    missing_in_zisson       contacts Zisson does not hold (a first sync creates them)
    """
    return {
        "seed": seed,
        "customers": [
            {
                "id": c.id,
                "name": c.name,
                "domains": list(c.domains),
                "instructions": c.instructions,
                "zisson_api": c.zisson_api,
                "roles": c.roles,
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
