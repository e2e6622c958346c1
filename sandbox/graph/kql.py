"""$search on messages: the KQL subset Exchange answers, matched on words as it does.

The value must be quoted as a whole (`$search="..."`); inside, a phrase is quoted
with backslash-escaped quotes: `$search="body:\\"22 33 44 55\\" OR participants:kari"`.

Grammar: terms joined by AND / OR (upper case; juxtaposition means AND), NOT, and
parentheses. A term is `property:value` or a bare value; a value is a word or a
"quoted phrase". Properties: participants (from, to, cc, bcc), recipients (to, cc,
bcc), from, to, cc, bcc, subject, body. A bare value searches from, subject and body,
the documented defaults. An unknown property is searched as free text.

Matching is by word (token), never by substring: text and value are cut into runs of
letters and digits, case folded, and the value's tokens must appear as a contiguous
run in one field (for addresses: in one recipient's name or address). So
"22 33 44 55" matches "ring 22 33 44 55" but not "22334455" or "22 33 44 56", and
"Kari" matches "Kari Nordmann" but not "Karianne". Real Exchange also matches some
prefixes; a client that re-checks every hit is right with either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox.graph.errors import bad_request
from sandbox.graph.store import Address, Message

_WORD = re.compile(r"\w+")
_FIELDS = {
    "participants": ("from", "to", "cc", "bcc"),
    "recipients": ("to", "cc", "bcc"),
    "from": ("from",),
    "to": ("to",),
    "cc": ("cc",),
    "bcc": ("bcc",),
    "subject": ("subject",),
    "body": ("body",),
}
_DEFAULT_FIELDS = ("from", "subject", "body")

Matcher = Callable[[Message], bool]


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.casefold()))


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    if not needle:
        return False
    width = len(needle)
    return any(
        tuple(haystack[i : i + width]) == tuple(needle) for i in range(len(haystack) - width + 1)
    )


def _people(message: Message, field: str) -> list[Address]:
    if field == "from":
        return [message.sender]
    if field == "to":
        return message.to
    if field == "cc":
        return message.cc
    return []  # bcc: the simulator's messages have none


@dataclass(frozen=True, slots=True)
class _Term:
    fields: tuple[str, ...]
    tokens: tuple[str, ...]

    def __call__(self, message: Message) -> bool:
        for field in self.fields:
            if field == "subject" and _contains_run(words(message.subject), self.tokens):
                return True
            if field == "body" and _contains_run(words(message.body), self.tokens):
                return True
            for person in _people(message, field):
                if _contains_run(words(person.name), self.tokens) or _contains_run(
                    words(person.address), self.tokens
                ):
                    return True
        return False


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value.replace('\\"', '"').replace("\\\\", "\\")


_LEXEME = re.compile(r'\s*(?:(?P<paren>[()])|(?P<phrase>"[^"]*")|(?P<word>[^\s()"]+(?:"[^"]*")?))')


def _lexemes(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _LEXEME.match(text, position)
        if match is None:
            raise bad_request(f"Syntax error in $search near '{text[position:]}'.")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def compile_search(raw: str) -> Matcher:
    """Parse a $search value into a predicate on messages; 400 on bad syntax."""
    text = _unquote(raw)
    parser = _Parser(_lexemes(text))
    if not parser.lexemes:
        raise bad_request("The $search query is empty.")
    matcher = parser.disjunction()
    if parser.position != len(parser.lexemes):
        raise bad_request(f"Syntax error in $search: '{text}'.")
    return matcher


class _Parser:
    def __init__(self, lexemes: list[tuple[str, str]]) -> None:
        self.lexemes = lexemes
        self.position = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.lexemes[self.position] if self.position < len(self.lexemes) else None

    def _operator(self, name: str) -> bool:
        if self._peek() == ("word", name):
            self.position += 1
            return True
        return False

    def disjunction(self) -> Matcher:
        parts = [self._conjunction()]
        while self._operator("OR"):
            parts.append(self._conjunction())
        return parts[0] if len(parts) == 1 else (lambda m: any(p(m) for p in parts))

    def _conjunction(self) -> Matcher:
        parts = [self._negation()]
        while True:
            if self._operator("AND"):
                parts.append(self._negation())
                continue
            nxt = self._peek()
            if nxt is None or nxt == ("paren", ")") or nxt == ("word", "OR"):
                break
            parts.append(self._negation())  # juxtaposition: implicit AND
        return parts[0] if len(parts) == 1 else (lambda m: all(p(m) for p in parts))

    def _negation(self) -> Matcher:
        if self._operator("NOT"):
            inner = self._negation()
            return lambda m: not inner(m)
        return self._primary()

    def _primary(self) -> Matcher:
        token = self._peek()
        if token is None:
            raise bad_request("Syntax error in $search: unexpected end.")
        self.position += 1
        kind, value = token
        if kind == "paren":
            if value != "(":
                raise bad_request("Syntax error in $search: unexpected ')'.")
            inner = self.disjunction()
            if self._peek() != ("paren", ")"):
                raise bad_request("Syntax error in $search: missing ')'.")
            self.position += 1
            return inner
        if kind == "phrase":
            return _Term(_DEFAULT_FIELDS, words(value))
        name, colon, rest = value.partition(":")
        if colon and name.lower() in _FIELDS and rest:
            return _Term(_FIELDS[name.lower()], words(rest.strip('"')))
        return _Term(_DEFAULT_FIELDS, words(value))
