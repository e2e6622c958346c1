"""The client-side re-check: does a message (or contact) really name the data subject?

Graph's search is fuzzy (stemming, prefix matches, its own tokens), so nothing is
deleted on its word alone. A hit is kept only if, after NFC and case folding (so "ÅSE"
is "åse", and a decomposed "å" is "å"):

e-mail  an address of a participant (from, sender, to, cc, bcc, reply-to) equals one
        of the subject's addresses, or the address stands alone in the subject line or
        body: not inside a longer address ("ola@x.no" is not in "ola@x.no.evil.com" nor
        in "kola@x.no").
phone   the number's digits appear with at most one separator (space, no-break space,
        '.', '-') between any two, optionally after a country prefix (+47, 0047, 47,
        "(+47)"), and not glued to more digits: 22334455 is not in 223344556 nor in
        122334455, "22-33-44-55-6" does not match. Numbers side by side with a space
        between them ("22334455 99887766") each still match: a space cannot tell one
        number from two.
name    the name's words in order, separated by any white space, as whole words: not
        part of a longer word or a hyphenated or apostrophed compound. "Åse Bjørnstad"
        is not found in "Åse Bjørnstad-Lie" (another surname) nor in "Anne-Åse
        Bjørnstad", but it is in "Åse Bjørnstads" and "Åse Bjørnstad's" (genitive) and
        in "Bjørnstad, Åse" (surname first); "Henrik Ibsens gate" (a street) does not
        name Henrik Ibsen.

Identifiers too vague to erase by are refused (ValueError, naming the position, never
the value): a name of one word, a phone number of fewer than five digits, an e-mail
address without a domain.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from daemon import normalize
from daemon.domain import ContactRecord, Subject

MIN_PHONE_DIGITS = 5
PARTICIPANT_FIELDS = ("from", "sender", "toRecipients", "ccRecipients", "bccRecipients", "replyTo")
# What a re-check needs of a message: ask Graph for these and nothing else.
MESSAGE_SELECT = ",".join(("subject", "body", "receivedDateTime", *PARTICIPANT_FIELDS))

_SEP = r"[ \u00a0.\-]?"
_WORD_BEFORE = r"(?<![\w])(?<![\w][-'’])"
# The genitive ("Bjørnstads", "Bjørnstad's") names the person too, except in street names
# made of a person's name ("Henrik Ibsens gate"), which name no one.
_STREETS = r"(?:gate|gata|vei|veien|veg|vegen|plass|allé|alle|torg|bakke|brygge)"
_WORD_AFTER = rf"(?!s\s+{_STREETS}(?![\w]))(?:s|['’]s?)?(?![\w])(?![-'’][\w])"
_TAGS = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]+>", re.S | re.I)


def fold(text: str) -> str:
    """NFC and case-folded: how every text is compared."""
    return unicodedata.normalize("NFC", text).casefold()


@dataclass(frozen=True, slots=True)
class PhoneForms:
    """A phone number's digit forms: country code, significant and national digits."""

    country_code: str  # "47"; "" when the number could not be parsed
    significant: str  # "22334455"
    national: str  # as dialled inside the country: "22334455", "0701234567"


def phone_forms(number: str) -> PhoneForms:
    """Digit forms of a number as people write it (raises ValueError if too short)."""
    candidate = normalize.text(number)
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    digits = "".join(ch for ch in unicodedata.normalize("NFKC", candidate) if ch.isdigit())
    if len(digits) < MIN_PHONE_DIGITS:
        raise ValueError("too few digits")
    if normalize.e164(number) is not None:
        parsed = phonenumbers.parse(candidate, normalize.DEFAULT_REGION)
        significant = phonenumbers.national_significant_number(parsed)
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return PhoneForms(
            country_code=str(parsed.country_code),
            significant=significant,
            national="".join(ch for ch in national if ch.isdigit()) or significant,
        )
    return PhoneForms(country_code="", significant=digits, national=digits)


def _digits(digits: str) -> str:
    return _SEP.join(re.escape(d) for d in digits)


def phone_pattern(forms: PhoneForms) -> re.Pattern[str]:
    alternatives = [_digits(forms.national)]
    if forms.country_code:
        prefix = rf"\(?(?:\+|00)?\s?{_digits(forms.country_code)}\)?{_SEP}"
        alternatives.insert(0, prefix + _digits(forms.significant))
    body = "|".join(alternatives)
    return re.compile(rf"(?<!\d)(?<!\d[.\-])(?:{body})(?!\d)(?![.\-]\d)")


def name_pattern(name: str) -> re.Pattern[str]:
    words = normalize.name_key(name).split(" ")
    if len(words) < 2:
        raise ValueError("a name of one word is too vague to erase by")
    gap = r"\s+"
    in_order = gap.join(re.escape(w) for w in words)
    surname_first = re.escape(words[-1]) + r",?" + gap + gap.join(re.escape(w) for w in words[:-1])
    return re.compile(rf"{_WORD_BEFORE}(?:{in_order}|{surname_first}){_WORD_AFTER}")


def email_pattern(address: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.+%\-]){re.escape(address)}(?![\w\-])(?!\.[\w\-])")


def check_email(address: str) -> str:
    folded = fold(address).strip()
    local, at, domain = folded.partition("@")
    if not at or not local or "." not in domain or any(ch.isspace() for ch in folded):
        raise ValueError("not an e-mail address")
    return folded


def body_text(message: Mapping[str, Any]) -> str:
    """The message body as text (HTML stripped when Graph sent HTML anyway)."""
    body = message.get("body")
    if not isinstance(body, Mapping):
        return ""
    content = body.get("content")
    if not isinstance(content, str):
        return ""
    if str(body.get("contentType", "")).lower() == "html":
        return html.unescape(_TAGS.sub(" ", content))
    return content


def participants(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(address, name) of everyone on a message, folded."""
    found: list[tuple[str, str]] = []
    for field in PARTICIPANT_FIELDS:
        value = message.get(field)
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            email = entry.get("emailAddress")
            if isinstance(email, Mapping):
                address, name = email.get("address"), email.get("name")
                found.append(
                    (
                        fold(address).strip() if isinstance(address, str) else "",
                        fold(name) if isinstance(name, str) else "",
                    )
                )
    return found


class SubjectMatcher:
    """Decides, client-side, whether an item names the data subject."""

    def __init__(self, subject: Subject) -> None:
        self.emails: tuple[str, ...] = tuple(
            dict.fromkeys(_checked(subject.emails, "emails", check_email))
        )
        self.phones: tuple[PhoneForms, ...] = tuple(
            dict.fromkeys(_checked(subject.phones, "phones", phone_forms))
        )
        self._names = [name_pattern(n) for n in _checked(subject.names, "names", _name)]
        self._email_res = [email_pattern(e) for e in self.emails]
        self._phone_res = [phone_pattern(p) for p in self.phones]
        self.names: tuple[str, ...] = tuple(normalize.name_key(n) for n in subject.names)

    def matches_text(self, text: str) -> bool:
        folded = fold(text)
        if any(p.search(folded) for p in self._email_res + self._names):
            return True
        digits = unicodedata.normalize("NFKC", folded)
        return any(p.search(digits) for p in self._phone_res)

    def matches_message(self, message: Mapping[str, Any]) -> bool:
        people = participants(message)
        if any(address in self.emails for address, _ in people):
            return True
        if any(p.search(name) for _, name in people for p in self._names):
            return True
        subject = message.get("subject")
        text = (subject if isinstance(subject, str) else "") + "\n" + body_text(message)
        return self.matches_text(text)

    def matches_contact(self, record: ContactRecord) -> bool:
        """A contact is the subject's if an address, a number or the full name is equal."""
        if any(fold(e).strip() in self.emails for e in record.emails):
            return True
        for phone in record.phones:
            try:
                forms = phone_forms(phone.number)
            except ValueError:
                continue
            if any(_same_number(forms, wanted) for wanted in self.phones):
                return True
        full = normalize.name_key(f"{record.given_name} {record.family_name}")
        shown = normalize.name_key(record.display_name)
        return any(name in (full, shown) for name in self.names if name)


def _same_number(a: PhoneForms, b: PhoneForms) -> bool:
    if a.country_code and b.country_code:
        return (a.country_code, a.significant) == (b.country_code, b.significant)
    return a.national == b.national or a.significant == b.significant


def _name(name: str) -> str:
    name_pattern(name)
    return name


def _checked(values: Iterable[str], field: str, check: Any) -> list[Any]:
    checked = []
    for index, value in enumerate(values):
        try:
            checked.append(check(value))
        except ValueError as exc:
            raise ValueError(f"subject {field}[{index}]: {exc}") from None
    return checked
