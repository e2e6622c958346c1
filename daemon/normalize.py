"""Normalisation of identifiers for matching and fingerprints.

Normalisation never changes what a system holds: the verbatim value is always kept
beside the normal form, so nothing is lost in the mapping (O2).
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from daemon.domain import Phone, PhoneType

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
