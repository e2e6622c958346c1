"""Normalisation of identifiers for matching and fingerprints.

Normalisation never changes what a system holds: the verbatim value is always kept
beside the normal form, so nothing is lost in the mapping (O2).
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from daemon.domain import ContactRecord, Phone, PhoneType, Subject

DEFAULT_REGION = "NO"
_SPACES = re.compile(r"\s+")


def text(value: str | None) -> str:
    """Unicode NFC with surrounding white space trimmed; letters are never dropped."""
    if value is None:
        return ""
    return unicodedata.normalize("NFC", value).strip()


def email(value: str) -> str:
    """Case-folded, trimmed e-mail address for matching."""
    return text(value).casefold()


def name_key(value: str) -> str:
    """A name reduced for matching: NFC, case-folded, inner white space collapsed."""
    return _SPACES.sub(" ", text(value)).casefold()


def e164(number: str, region: str = DEFAULT_REGION) -> str | None:
    """The E.164 form of a phone number, or None if it cannot be parsed as a valid one.

    A Norwegian 8-digit number without a country code gets +47.
    """
    candidate = text(number)
    if not candidate or not any(ch.isdigit() for ch in candidate):
        return None
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone(number: str, type: PhoneType = PhoneType.OTHER, region: str = DEFAULT_REGION) -> Phone:
    return Phone(number=text(number), type=type, e164=e164(number, region))


def phone_type(value: str | None) -> PhoneType:
    """Map a system's phone-type label onto PhoneType; unknown labels become OTHER."""
    label = (value or "").strip().lower()
    aliases = {
        "gsm": PhoneType.MOBILE,
        "cell": PhoneType.MOBILE,
        "mobil": PhoneType.MOBILE,
        "mobile": PhoneType.MOBILE,
        "business": PhoneType.WORK,
        "office": PhoneType.WORK,
        "jobb": PhoneType.WORK,
        "work": PhoneType.WORK,
        "direct": PhoneType.WORK,
        "home": PhoneType.HOME,
        "privat": PhoneType.HOME,
        "fax": PhoneType.FAX,
    }
    return aliases.get(label, PhoneType.OTHER)


def subject_matches(subject: Subject, record: ContactRecord) -> bool:
    """Whether `record` holds any of the subject's identifiers: an e-mail (case
    insensitive), a phone number (by E.164, whatever its formatting) or a full name."""
    emails = {email(e) for e in subject.emails}
    if emails & {email(e) for e in record.emails}:
        return True
    phones = {e164(p) or text(p) for p in subject.phones}
    if phones & {p.e164 or text(p.number) for p in record.phones}:
        return True
    names = {name_key(n) for n in subject.names}
    candidates = {
        name_key(record.display_name),
        name_key(f"{record.given_name} {record.family_name}"),
    }
    return bool(names & (candidates - {""}))


class BadIdentifier(ValueError):
    """An identifier of an erasure request is malformed; the message never repeats it."""


def parse_subject(
    *,
    emails: list[str] | tuple[str, ...] = (),
    phones: list[str] | tuple[str, ...] = (),
    names: list[str] | tuple[str, ...] = (),
) -> Subject:
    """A Subject from what an admin typed, each identifier checked."""
    for i, value in enumerate(emails, 1):
        local, _, domain = text(value).partition("@")
        if not local or "." not in domain or " " in value.strip():
            raise BadIdentifier(f"--email #{i} is not an e-mail address")
    for i, value in enumerate(phones, 1):
        if e164(value) is None:
            raise BadIdentifier(f"--phone #{i} is not a phone number (8 digits, or +country)")
    for i, value in enumerate(names, 1):
        if len(name_key(value)) < 2 or not any(ch.isalpha() for ch in value):
            raise BadIdentifier(f"--name #{i} is not a name")
    subject = Subject(
        emails=tuple(email(e) for e in emails),
        phones=tuple(e164(p) or text(p) for p in phones),
        names=tuple(text(n) for n in names),
    )
    if not subject:
        raise BadIdentifier("give at least one --email, --phone or --name")
    return subject
