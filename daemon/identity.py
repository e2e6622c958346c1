"""Identity evidence: what makes a record a given person, and how strongly.

One module for one rule, used by reconciliation (linking), erasure planning, tombstones
and the Outlook matcher's scope. A switchboard's directory is full of identifiers that
several records carry: the company's or a department's main number on every employee,
role addresses (`post@`, `faktura@`), namesakes. So, per customer, each normalised
identifier is

personal  held by one record in each system that holds it (a person's own address, a
          direct line, a mobile, an extension of its own);
shared    held by several distinct records of one system, by a department, or a role
          address by declaration (its local part is in `IdentityRules.role_addresses`).

Names are never personal: namesakes exist within and across customers.

Only personal identifiers are evidence of identity. A shared identifier alone never
links two records, never selects a record for erasure and never makes a tombstone
match; a name links only where no personal identifier conflicts; a department never
merges into a person. Whatever is left ambiguous goes to a person.

Identifiers compare in normal form: e-mails NFKC and case-folded; phones in E.164 with
their extension (`+4722334455;ext=12` is not the switchboard `+4722334455`); names NFKC,
case-folded, white space collapsed, also in surname-first order ("Hansen, Ola").
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from daemon import normalize
from daemon.domain import ContactKind, ContactRecord, Subject

# Local parts that name a function, not a person (Norwegian and English), by default.
DEFAULT_ROLE_ADDRESSES: frozenset[str] = frozenset(
    {
        "post",
        "postmottak",
        "firmapost",
        "epost",
        "mail",
        "faktura",
        "fakturamottak",
        "invoice",
        "invoices",
        "regnskap",
        "okonomi",
        "økonomi",
        "lonn",
        "lønn",
        "resepsjon",
        "sentralbord",
        "kundeservice",
        "kundesenter",
        "service",
        "support",
        "hjelp",
        "help",
        "info",
        "kontakt",
        "contact",
        "kontor",
        "office",
        "salg",
        "sales",
        "ordre",
        "bestilling",
        "booking",
        "innkjop",
        "innkjøp",
        "personal",
        "hr",
        "admin",
        "drift",
        "it",
        "marked",
        "noreply",
        "no-reply",
        "ikke-svar",
        "hei",
        "hello",
        "jobb",
    }
)


class IdKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    NAME = "name"


class Strength(StrEnum):
    """How much a matched identifier says about who a record is."""

    PERSONAL = "personal"  # one person holds it: evidence of identity
    SHARED = "shared"  # several records, a department or a role: evidence of nothing alone
    NAME = "name"  # a name: namesakes exist; evidence only beside a personal identifier


@dataclass(frozen=True, kw_only=True, slots=True)
class IdentityRules:
    """What a customer's directory declares shared whoever holds it."""

    role_addresses: frozenset[str] = DEFAULT_ROLE_ADDRESSES

    def is_role_address(self, email_key: str) -> bool:
        local = email_key.rpartition("@")[0]
        # "post+kunde@", "faktura.oslo@": the role is the first part of the local part.
        head = local.split("+", 1)[0]
        return head in self.role_addresses or head.split(".", 1)[0] in self.role_addresses


# -- normal forms -----------------------------------------------------------------------


def email_key(value: str) -> str:
    return normalize.email(value)


def phone_key(value: str) -> str | None:
    """E.164 with the extension kept, or None for what is no phone number."""
    return normalize.e164(value)


def name_key(value: str) -> str:
    return normalize.name_key(value)


def record_emails(record: ContactRecord) -> set[str]:
    return {key for key in (email_key(e) for e in record.emails) if key}


def record_phones(record: ContactRecord) -> set[str]:
    return {p.e164 for p in record.phones if p.e164}


def record_keys(record: ContactRecord) -> set[str]:
    """The record's e-mails and phones in normal form, together."""
    keys = record_emails(record)
    keys.update([p.e164 for p in record.phones if p.e164])
    return keys


def record_names(record: ContactRecord) -> set[str]:
    """The record's name in every order it may be written: "Ola Hansen", and from a
    display name "Hansen, Ola" also "ola hansen"."""
    names = set()
    full = name_key(f"{record.given_name} {record.family_name}")
    if full:
        names.add(full)
    shown = name_key(record.display_name)
    if shown:
        names.add(shown)
        surname, comma, given = shown.partition(",")
        if comma and given.strip() and surname.strip():
            names.add(name_key(f"{given} {surname}"))
    return names


def subject_names(subject: Subject) -> set[str]:
    found = set()
    for name in subject.names:
        key = name_key(name)
        surname, comma, given = key.partition(",")
        found.add(name_key(f"{given} {surname}") if comma else key)
    return {n for n in found if n}


# -- the evidence index ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Match:
    """One of a subject's identifiers found on an item, and what it is worth there."""

    kind: IdKind
    position: int  # index in the subject's e-mails, phones or names
    strength: Strength


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """Why an item was found for a subject: its matches, and so whether it is the
    subject's (a personal identifier matched) or only possibly so (ambiguous)."""

    matches: tuple[Match, ...] = ()

    @property
    def personal(self) -> bool:
        return any(m.strength is Strength.PERSONAL for m in self.matches)

    @property
    def ambiguous(self) -> bool:
        """Found, but only through shared identifiers or a name: a person decides."""
        return bool(self.matches) and not self.personal

    def __bool__(self) -> bool:
        return bool(self.matches)

    def to_list(self) -> list[dict[str, object]]:
        return [
            {"kind": str(m.kind), "position": m.position, "strength": str(m.strength)}
            for m in self.matches
        ]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, object]]) -> Evidence:
        return cls(
            matches=tuple(
                Match(
                    kind=IdKind(str(i["kind"])),
                    position=int(str(i["position"])),
                    strength=Strength(str(i["strength"])),
                )
                for i in items
            )
        )


class Directory:
    """Per customer: which identifiers are personal and which shared, from every record
    every system holds now (the same person in three systems counts once per system).
    """

    def __init__(
        self,
        records: Iterable[ContactRecord],
        rules: IdentityRules | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> None:
        """`only`: the identifiers (normal forms) the caller will ask about; the others
        are not counted, and a question about one is answered as if it were absent."""
        self.rules = rules or IdentityRules()
        wanted = None if only is None else set(only)
        # Hot (every record of every system, when a run links or checks tombstones):
        # count (system, identifier) pairs; more than one is several records.
        # Hot (every record of every system, when a run links or checks tombstones): an
        # identifier a second record of one system holds is shared (the same person in
        # three systems counts once per system).
        held: dict[str, list[str]] = defaultdict(list)  # by system, once per record
        shared: set[str] = set()
        email = normalize.email
        # Each record's e-mails and phones as counted (by id: the caller keeps the records),
        # as tuples: a first sync counts every record of every system, and sets of one or
        # two values would take three times the memory.
        self._keys: dict[int, Ids] = {}
        self._mark = object()  # a record counted by this directory holds it
        if wanted is None:
            # Every record counts (a first sync links them all): taken in the order they
            # lie in memory, as a large customer's fill more than the CPU caches and in
            # another order each would be a cache miss (the counts do not depend on it).
            records = sorted(records, key=id)
        for record in records:
            mails = _distinct([email(e) for e in record.emails]) if record.emails else ()
            phones = _distinct([p.e164 for p in record.phones if p.e164]) if record.phones else ()
            if wanted is not None:
                mails = tuple(k for k in mails if k in wanted)
                phones = tuple(k for k in phones if k in wanted)
            if not (mails or phones):
                continue
            if record.kind is ContactKind.DEPARTMENT:
                shared.update(mails, phones)
            keys = held[record.system]
            keys += mails
            keys += phones
            if wanted is None:
                object.__setattr__(record, "counted", (self._mark, (mails, phones)))
            else:
                self._keys[id(record)] = (mails, phones)
        is_role = self.rules.is_role_address
        for keys_held in held.values():
            counts = Counter(keys_held)
            shared.update(key for key, n in counts.items() if n > 1)
            shared.update(key for key in counts if "@" in key and is_role(key))
        self._shared = shared

    def email_strength(self, key: str) -> Strength:
        if key in self._shared or self.rules.is_role_address(key):
            return Strength.SHARED
        return Strength.PERSONAL

    def phone_strength(self, key: str) -> Strength:
        return Strength.SHARED if key in self._shared else Strength.PERSONAL

    def personal_ids(self, record: ContactRecord) -> Ids:
        """The record's personal e-mails and phones, each once (a department has none)."""
        if record.kind is ContactKind.DEPARTMENT:
            return _NOTHING
        mark = record.counted
        if mark is not None and mark[0] is self._mark:
            counted: Ids | None = mark[1]
        else:
            counted = self._keys.get(id(record))
        if counted is not None:
            # Counted: its role addresses are among the shared already.
            mails, phones = counted
            shared = self._shared
            if shared.isdisjoint(mails) and shared.isdisjoint(phones):
                return counted
            mails = tuple(k for k in mails if k not in shared)
            phones = tuple(k for k in phones if k not in shared)
            return (mails, phones) if mails or phones else _NOTHING
        # A record this directory was not built from.
        personal = record_keys(record) - self._shared
        if not personal:
            return _NOTHING
        role = self.rules.is_role_address
        return (
            tuple(sorted(k for k in personal if "@" in k and not role(k))),
            tuple(sorted(k for k in personal if "@" not in k)),
        )

    def personal_emails(self, record: ContactRecord) -> frozenset[str]:
        return frozenset(self.personal_ids(record)[0])

    def personal_phones(self, record: ContactRecord) -> frozenset[str]:
        return frozenset(self.personal_ids(record)[1])

    # -- linking --------------------------------------------------------------------------

    def conflict(self, a: ContactRecord, b: ContactRecord) -> bool:
        """Whether two records cannot be one person on the evidence: different kinds, or
        no personal identifier in common while both hold personal identifiers of one
        sort (two e-mails, two mobiles) that differ."""
        if a.kind is not b.kind:
            return True
        emails_a, phones_a = self.personal_ids(a)
        emails_b, phones_b = self.personal_ids(b)
        if any(e in emails_b for e in emails_a) or any(p in phones_b for p in phones_a):
            return False
        return bool(emails_a and emails_b) or bool(phones_a and phones_b)

    # -- erasure ---------------------------------------------------------------------------

    def subject_strengths(self, subject: Subject) -> dict[tuple[IdKind, int], Strength]:
        """Each of a subject's identifiers as this directory holds it."""
        found: dict[tuple[IdKind, int], Strength] = {}
        for i, value in enumerate(subject.emails):
            found[IdKind.EMAIL, i] = self.email_strength(email_key(value))
        for i, value in enumerate(subject.phones):
            key = phone_key(value)
            found[IdKind.PHONE, i] = self.phone_strength(key) if key else Strength.SHARED
        for i in range(len(subject.names)):
            found[IdKind.NAME, i] = Strength.NAME
        return found

    def personal_subject(self, subject: Subject) -> Subject:
        """Only the subject's personal e-mails and phones (no names): what identifies
        the person here, and so what a tombstone and a mailbox scope may rest on."""
        strengths = self.subject_strengths(subject)
        return Subject(
            emails=tuple(
                email_key(e)
                for i, e in enumerate(subject.emails)
                if strengths[IdKind.EMAIL, i] is Strength.PERSONAL
            ),
            phones=tuple(
                phone_key(p) or p
                for i, p in enumerate(subject.phones)
                if strengths[IdKind.PHONE, i] is Strength.PERSONAL
            ),
        )

    def evidence(self, subject: Subject, record: ContactRecord) -> Evidence:
        """Which of the subject's identifiers `record` holds, each with its strength.

        A shared value on the subject's own record goes with that record only: the
        record is the subject's when a personal identifier matches too."""
        strengths = self.subject_strengths(subject)
        emails, phones, names = record_emails(record), record_phones(record), record_names(record)
        matches = [
            Match(kind=IdKind.EMAIL, position=i, strength=strengths[IdKind.EMAIL, i])
            for i, value in enumerate(subject.emails)
            if email_key(value) in emails
        ]
        matches += [
            Match(kind=IdKind.PHONE, position=i, strength=strengths[IdKind.PHONE, i])
            for i, value in enumerate(subject.phones)
            if (phone_key(value) or value) in phones
        ]
        wanted = [subject_names(Subject(names=(n,))) for n in subject.names]
        matches += [
            Match(kind=IdKind.NAME, position=i, strength=Strength.NAME)
            for i, keys in enumerate(wanted)
            if keys & names
        ]
        if any(m.strength is Strength.PERSONAL for m in matches) and record.kind is (
            ContactKind.DEPARTMENT
        ):
            # A department is nobody's own record, whatever it shares with the subject.
            matches = [
                Match(kind=m.kind, position=m.position, strength=Strength.SHARED)
                if m.strength is Strength.PERSONAL
                else m
                for m in matches
            ]
        return Evidence(matches=tuple(matches))

    def classify(self, subject: Subject, matched: Sequence[tuple[str, int]]) -> Evidence:
        """Evidence for an item another system found by the subject's identifiers
        (Outlook: `matched` names them by kind and position)."""
        strengths = self.subject_strengths(subject)
        return Evidence(
            matches=tuple(
                Match(kind=IdKind(kind), position=i, strength=strengths[IdKind(kind), i])
                for kind, i in matched
                if (IdKind(kind), i) in strengths
            )
        )

    # -- tombstones ------------------------------------------------------------------------

    def tombstone_hits(self, key: bytes, record: ContactRecord, tombstones: frozenset[str]) -> bool:
        """Whether `record` holds a personal identifier of an erased subject.

        A record that carries an erased subject's number or address only where it is
        shared now (the switchboard, a role address) is somebody else's and is kept.
        """
        if not tombstones:
            return False
        emails, phones = self.personal_ids(record)
        found = {tombstone(key, IdKind.EMAIL, e) for e in emails}
        found |= {tombstone(key, IdKind.PHONE, p) for p in phones}
        return bool(found & tombstones)


Ids = tuple[tuple[str, ...], tuple[str, ...]]  # a record's e-mails and phones, normal forms
_NOTHING: Ids = ((), ())


def _distinct(values: list[str]) -> tuple[str, ...]:
    """`values` without blanks and repeats, in order (one or two, nearly always)."""
    if len(values) == 1:
        return (values[0],) if values[0] else ()
    return tuple(v for v in dict.fromkeys(values) if v)


def tombstone(key: bytes, kind: IdKind, normal: str) -> str:
    """The keyed fingerprint of one identifier in normal form, as tombstones hold it."""
    message = f"id:{kind}\x00{normal}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def tombstones(key: bytes, personal: Subject) -> set[str]:
    """The tombstones of an erased subject: its personal e-mails and phones only.

    Names never: a later namesake is another person. Pass `Directory.personal_subject`.
    """
    found = {tombstone(key, IdKind.EMAIL, email_key(e)) for e in personal.emails}
    found |= {tombstone(key, IdKind.PHONE, phone_key(p) or p) for p in personal.phones}
    return found
