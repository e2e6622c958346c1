"""Masked identifiers for certificates: enough for the customer to recognise, no more.

    mask_email("ola.nordmann@firma.no")  -> "o***@f***.no"
    mask_phone("+47 912 34 555")         -> "+47 ** ** ** 55"
    mask_phone("22334455 x12")           -> "+47 ** ** ** 55 x**"  (an extension)
    mask_name("Åse Bjørg")               -> "Å*** B***"

An e-mail keeps the first letter of its local part and of its domain, and the top-level
domain when that is a country code or a common generic one; a phone number its country
code and last two digits (never its length), and that it is an extension (never which);
a name the first letter of each part.
MASKED_* tell a masked value from a raw one.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from daemon import normalize

MASK = "***"
MASKED_EMAIL = re.compile(r"[^\s@*]\*\*\*@[^\s@*.]\*\*\*(?:\.[^\s@*.]+)?|\*\*\*")
MASKED_PHONE = re.compile(r"(?:\+\d{1,3} )?\*\* \*\* \*\* \d\d(?: x\*\*)?|\*\*\*")
MASKED_NAME = re.compile(r"[^\s*]\*\*\*(?: [^\s*]\*\*\*)*|\*\*\*")
_COUNTRY_TLD = re.compile(r"[a-z]{2}")
_GENERIC_TLDS = frozenset({"com", "net", "org", "info", "biz", "edu", "gov", "int", "app", "dev"})


def _first(text: str) -> str:
    """The first character of `text` (NFC, so "Å" is one character however typed)."""
    return unicodedata.normalize("NFC", text)[:1]


def mask_email(value: str) -> str:
    local, at, domain = normalize.email(value).rpartition("@")
    labels = [label for label in domain.split(".") if label]
    first_local, first_domain = _first(local), _first(labels[0]) if labels else ""
    if not at or not first_local.strip("*") or not first_domain.strip("*.@"):
        return MASK
    last = labels[-1] if len(labels) > 1 else ""
    # A country code or a common generic TLD says nothing of the person; an odd last
    # label ("ola@kari.nordmann") might, so it stays hidden.
    tld = f".{last}" if _COUNTRY_TLD.fullmatch(last) or last in _GENERIC_TLDS else ""
    masked = f"{first_local}{MASK}@{first_domain}{MASK}{tld}"
    return masked if MASKED_EMAIL.fullmatch(masked) else MASK


def mask_phone(value: str) -> str:
    digits = [ch for ch in value if ch.isdigit() and ch.isascii()]
    if len(digits) < 4:
        return MASK
    e164 = normalize.e164(value)
    prefix = extension = ""
    if e164 is not None:
        parsed = phonenumbers.parse(e164)
        national = str(parsed.national_number)
        if len(national) >= 4:
            prefix, digits = f"+{parsed.country_code} ", list(national)
            # An extension is another line than its main number: say so, not which.
            extension = " x**" if parsed.extension else ""
    masked = f"{prefix}** ** ** {''.join(digits[-2:])}{extension}"
    return masked if MASKED_PHONE.fullmatch(masked) else MASK


def mask_name(value: str) -> str:
    parts = [_first(part) for part in normalize.text(value).split()]
    parts = [first for first in parts if first and first != "*"]
    if not parts:
        return MASK
    masked = " ".join(f"{first}{MASK}" for first in parts)
    return masked if MASKED_NAME.fullmatch(masked) else MASK
