"""The client-side re-check: which of the data subject's identifiers does an item hold?

Graph's search is fuzzy (stemming, prefix matches, its own tokens), so nothing is
deleted on its word alone. The matcher reports every identifier of the subject it finds
on an item, as ("email" | "phone" | "name", position in the subject's list): the daemon
weighs them (daemon/identity.py: personal, shared or a name only), the connector only
reports. After NFC and case folding (so "ÅSE" is "åse", and a decomposed "å" is "å"):

e-mail  an address of a participant (from, sender, to, cc, bcc, reply-to) equals one
        of the subject's addresses, or the address stands alone in the subject line,
        the body or a participant's display name: not inside a longer address
        ("ola@x.no" is not in "ola@x.no.evil.com" nor in "kola@x.no").
phone   the number's digits appear with at most one separator (space, no-break space,
        '.', '-') between any two, optionally after a country prefix (+47, 0047, 47,
        "(+47)"), and not glued to more digits: 22334455 is not in 223344556 nor in
        122334455, "22-33-44-55-6" does not match. Numbers side by side with a space
        between them ("22334455 99887766") each still match: a space cannot tell one
        number from two. An extension is another line (daemon.normalize.e164 keeps it:
        "+4722334455;ext=12"): such a subject number matches only where the main number
        is followed, on the same line, by an extension marker (x, ext, ext., extension,
        ext=, innvalg, linje, lokal, intern, tast, #) and exactly those digits ("22 33
        44 55 x12", "22334455 innvalg 12", "22334455#12"), never the bare main number;
        and a number without an extension does not match one written with an extension.
name    the name's words in order, separated by any white space, as whole words: not
        part of a longer word or a hyphenated or apostrophed compound. "Åse Bjørnstad"
        is not found in "Åse Bjørnstad-Lie" (another surname) nor in "Anne-Åse
        Bjørnstad", but it is in "Åse Bjørnstads" and "Åse Bjørnstad's" (genitive);
        "Henrik Ibsens gate" (a street) does not name Henrik Ibsen. Surname first
        counts too, for every split of the words into given names and surname, with or
        without a comma: "Ola van der Berg" is in "van der Berg, Ola" (and "Berg, Ola van
        der"), "Kari Nordmann Hansen" in "Nordmann Hansen, Kari" and "Hansen Kari
        Nordmann". A subject name written surname first ("Hansen, Ola") is read given
        names first. Subject, body and each display name are searched apart: a name
        never runs from one into the next.

A contact is the subject's where an address, a number (extension included) or the
whole name (given + family, or the display name in any of the orders above) is equal.

Identifiers too vague to erase by are refused (ValueError, naming the position, never
the value): a name of one word, a phone number of fewer than five digits, an e-mail
address without a domain.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import phonenumbers

from daemon import normalize
from daemon.domain import ContactRecord, Subject

MIN_PHONE_DIGITS = 5
PARTICIPANT_FIELDS = ("from", "sender", "toRecipients", "ccRecipients", "bccRecipients", "replyTo")
# What a re-check needs of a message: ask Graph for these and nothing else.
MESSAGE_SELECT = ",".join(("subject", "body", "receivedDateTime", *PARTICIPANT_FIELDS))

# Which of a subject's identifiers an item holds: ("email" | "phone" | "name", position in
# the subject's e-mails, phones or names), as daemon.domain.ItemRef.matched carries them.
Matched = tuple[tuple[str, int], ...]
EMAIL, PHONE, NAME = "email", "phone", "name"

_SEP = r"[ \u00a0.\-]?"
# An extension marker after a main number, as daemon.normalize.e164 reads one ("x12",
# "ext. 12", "ext=12", "#12", "innvalg 12", "linje 12", "tast 12"), on the same line.
_GAP = r"[^\S\n]*"
_EXT_MARKER = (
    rf"{_GAP}[,;]?{_GAP}(?:x|ext(?:ension)?\.?|ext=|innvalg|linje|lokal|intern|tast|#){_GAP}"
)
_WRITTEN_EXTENSION = re.compile(rf"^(?P<main>.*\d){_EXT_MARKER}(?P<ext>\d{{1,6}})\s*$", re.I)
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
    """A phone number's digit forms: country code, significant and national digits of
    the main number, and the extension ("" for none)."""

    country_code: str  # "47"; "" when the number could not be parsed
    significant: str  # "22334455"
    national: str  # as dialled inside the country: "22334455", "0701234567"
    extension: str = ""  # "12" for "+4722334455;ext=12"


def phone_forms(number: str) -> PhoneForms:
    """Digit forms of a number as people write it (raises ValueError if too short).

    The extension is split off first ("22334455 x12", "+4722334455;ext=12"): it is
    never part of the main number's digits.
    """
    key = normalize.e164(number)
    if key is not None:
        main, _, extension = key.partition(";ext=")
        parsed = phonenumbers.parse(main, None)
        significant = phonenumbers.national_significant_number(parsed)
        if len(significant) < MIN_PHONE_DIGITS:
            raise ValueError("too few digits")
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return PhoneForms(
            country_code=str(parsed.country_code),
            significant=significant,
            national="".join(ch for ch in national if ch.isdigit()) or significant,
            extension=extension,
        )
    candidate = unicodedata.normalize("NFKC", normalize.text(number))
    main, _, extension = candidate.partition(";ext=")
    written = _WRITTEN_EXTENSION.match(main)
    if written and not extension:
        main, extension = written["main"], written["ext"]
    digits = "".join(ch for ch in main if ch.isdigit())
    if len(digits) < MIN_PHONE_DIGITS:
        raise ValueError("too few digits")
    extension = "".join(ch for ch in extension if ch.isdigit())
    return PhoneForms(country_code="", significant=digits, national=digits, extension=extension)


def _digits(digits: str) -> str:
    return _SEP.join(re.escape(d) for d in digits)


def phone_pattern(forms: PhoneForms) -> re.Pattern[str]:
    alternatives = [_digits(forms.national)]
    if forms.country_code:
        prefix = rf"\(?(?:\+|00)?\s?{_digits(forms.country_code)}\)?{_SEP}"
        alternatives.insert(0, prefix + _digits(forms.significant))
    main = rf"(?<!\d)(?<!\d[.\-])(?:{'|'.join(alternatives)})"
    if forms.extension:
        return re.compile(rf"{main}{_EXT_MARKER}{re.escape(forms.extension)}(?!\d)")
    # A main number followed by an extension is another line, not this one.
    return re.compile(rf"{main}(?!\d)(?![.\-]\d)(?!{_EXT_MARKER}\d)")


def given_first(name: str) -> list[str]:
    """A name's words, given names first: "Hansen, Ola" is ["Ola", "Hansen"]."""
    surname, comma, given = name.partition(",")
    if comma and surname.strip() and given.strip():
        name = f"{given} {surname}"
    return name.replace(",", " ").split()


def surname_first(words: Sequence[str]) -> list[tuple[list[str], list[str]]]:
    """Every (surname, given names) split of a name written given names first: a
    surname of several words ("Nordmann Hansen"), with particles ("van der Berg")."""
    return [(list(words[k:]), list(words[:k])) for k in range(1, len(words))]


def name_words(name: str) -> list[str]:
    """The name's words in normal form (NFKC, case-folded), given names first."""
    words = given_first(normalize.name_key(name))
    if len(words) < 2:
        raise ValueError("a name of one word is too vague to erase by")
    return words


def _name_form(text: str) -> str:
    """name_key, with a comma written ", " wherever it stands."""
    return re.sub(r"\s*,\s*", ", ", normalize.name_key(text)).strip(", ")


def name_keys(name: str) -> frozenset[str]:
    """Every way the name may be written, as _name_form writes it: in order, and
    surname first with and without a comma."""
    words = name_words(name)
    keys = {" ".join(words)}
    for surname, given in surname_first(words):
        keys.add(f"{' '.join(surname)}, {' '.join(given)}")
        keys.add(" ".join(surname + given))
    return frozenset(keys)


def name_pattern(name: str) -> re.Pattern[str]:
    words = name_words(name)
    gap = r"\s+"

    def run(part: Sequence[str]) -> str:
        return gap.join(re.escape(w) for w in part)

    forms = [run(words)]
    forms += [
        run(surname) + r"(?:\s*,\s*|\s+)" + run(given) for surname, given in surname_first(words)
    ]
    return re.compile(rf"{_WORD_BEFORE}(?:{'|'.join(forms)}){_WORD_AFTER}")


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


@dataclass(frozen=True, slots=True)
class _Email:
    position: int
    address: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class _Phone:
    position: int
    forms: PhoneForms
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class _Name:
    position: int
    keys: frozenset[str]
    pattern: re.Pattern[str]


class SubjectMatcher:
    """Finds, client-side, which of the data subject's identifiers an item holds.

    `emails`, `phones` and `names` (given names first, as written, NFC) are what the
    searches look for, without duplicates; positions in what the matcher reports are
    those of the subject's own lists.
    """

    def __init__(self, subject: Subject) -> None:
        emails = _checked(subject.emails, "emails", check_email)
        phones = _checked(subject.phones, "phones", phone_forms)
        names = _checked(subject.names, "names", _checked_name)
        self._emails = [_Email(i, e, email_pattern(e)) for i, e in enumerate(emails)]
        self._phones = [_Phone(i, p, phone_pattern(p)) for i, p in enumerate(phones)]
        self._names = [_Name(i, name_keys(n), name_pattern(n)) for i, n in enumerate(subject.names)]
        self.emails: tuple[str, ...] = tuple(dict.fromkeys(emails))
        self.phones: tuple[PhoneForms, ...] = tuple(dict.fromkeys(phones))
        self.names: tuple[str, ...] = tuple(dict.fromkeys(names))

    def text_matches(self, *texts: str) -> Matched:
        """The subject's identifiers named in any of `texts` (each searched apart)."""
        found: set[tuple[str, int]] = set()
        for text in texts:
            folded = fold(text)
            found |= {(EMAIL, e.position) for e in self._emails if e.pattern.search(folded)}
            found |= {(NAME, n.position) for n in self._names if n.pattern.search(folded)}
            digits = unicodedata.normalize("NFKC", folded)
            found |= {(PHONE, p.position) for p in self._phones if p.pattern.search(digits)}
        return ordered(found)

    def message_matches(self, message: Mapping[str, Any]) -> Matched:
        """The subject's identifiers a message holds: participants' addresses, and
        the subject line, body and participants' display names as text."""
        people = participants(message)
        addresses = {address for address, _ in people}
        found = {(EMAIL, e.position) for e in self._emails if e.address in addresses}
        subject = message.get("subject")
        texts = [subject if isinstance(subject, str) else "", body_text(message)]
        texts += [name for _, name in people if name]
        return ordered(found | set(self.text_matches(*texts)))

    def contact_matches(self, record: ContactRecord) -> Matched:
        """The subject's identifiers a contact holds whole: an address, a number (with
        the same extension, or none on both), the full name in any order."""
        addresses = {fold(e).strip() for e in record.emails}
        found = {(EMAIL, e.position) for e in self._emails if e.address in addresses}
        numbers = []
        for phone in record.phones:
            try:
                numbers.append(phone_forms(phone.number))
            except ValueError:
                continue
        found |= {
            (PHONE, p.position)
            for p in self._phones
            if any(_same_number(p.forms, number) for number in numbers)
        }
        shown = {
            _name_form(f"{record.given_name} {record.family_name}"),
            _name_form(record.display_name),
        }
        found |= {(NAME, n.position) for n in self._names if n.keys & shown}
        return ordered(found)


_KINDS = {EMAIL: 0, PHONE: 1, NAME: 2}


def ordered(found: Iterable[tuple[str, int]]) -> Matched:
    """Matches in a stable order: e-mails, phones, names, each by position."""
    return tuple(sorted(found, key=lambda m: (_KINDS[m[0]], m[1])))


def _same_number(a: PhoneForms, b: PhoneForms) -> bool:
    if a.extension != b.extension:
        return False  # an extension is another line than the main number
    if a.country_code and b.country_code:
        return (a.country_code, a.significant) == (b.country_code, b.significant)
    return a.national == b.national or a.significant == b.significant


def _checked_name(name: str) -> str:
    """The name as the searches use it: NFC, white space collapsed, given names first."""
    name_words(name)
    return " ".join(given_first(normalize.text(name)))


T = TypeVar("T")


def _checked(values: Iterable[str], field: str, check: Callable[[str], T]) -> list[T]:
    checked = []
    for index, value in enumerate(values):
        try:
            checked.append(check(value))
        except ValueError as exc:
            raise ValueError(f"subject {field}[{index}]: {exc}") from None
    return checked
