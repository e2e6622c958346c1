"""$filter for messages and contacts: the subset of OData that Exchange answers.

Supported: comparisons `eq ne lt le gt ge` between a property path and a literal
(`'string'` with '' for a quote, an unquoted ISO 8601 date-time such as
2024-05-01T00:00:00Z, numbers, true/false/null); `and`, `or`, `not` and parentheses;
`startswith`, `endswith`, `contains` on strings; and lambdas on collections,
`toRecipients/any(r: r/emailAddress/address eq 'x')`.

Paths are matched without regard to case. String comparisons ignore case, as
Exchange does for addresses. A quoted string compared with a date-time property is a
type error (400), as in Graph.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from sandbox.graph.errors import bad_request

Env = Mapping[str, Any]  # "$it" -> the document; lambda variables -> collection items
Compiled = Callable[[Env], Any]

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')"
    r"|(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<punct>[(),:])"
    r"|(?P<name>[A-Za-z_@$][A-Za-z0-9_./@$]*))"
)
_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge"}
_FUNCTIONS = {"startswith", "endswith", "contains"}
_DATETIME_PROPERTIES = {
    "receiveddatetime",
    "sentdatetime",
    "createddatetime",
    "lastmodifieddatetime",
}


class _Literal:
    def __init__(self, value: Any) -> None:
        self.value = value


def _error(message: str) -> Exception:
    return bad_request(f"Invalid filter clause: {message}")


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _error(f"syntax error at position {position} in '{text}'.")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def compile_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Parse $filter once; the result tells whether a rendered document matches."""
    parser = _Parser(_tokens(text))
    expression = parser.expression()
    if parser.peek() is not None:
        raise _error(f"unexpected '{parser.peek()[1]}'.")  # type: ignore[index]

    def matches(document: Mapping[str, Any]) -> bool:
        return bool(expression({"$it": document}))

    return matches


def first_property(text: str) -> str | None:
    """The first property path named in a filter (for Exchange's $orderby rule)."""
    for kind, value in _tokens(text):
        if kind == "name" and value.lower() not in ("and", "or", "not", *_COMPARISONS, *_FUNCTIONS):
            return value.split("/")[0]
    return None


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._tokens = tokens
        self._position = 0

    def peek(self) -> tuple[str, str] | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _error("unexpected end of expression.")
        self._position += 1
        return token

    def _expect(self, punct: str) -> None:
        if self._take() != ("punct", punct):
            raise _error(f"expected '{punct}'.")

    def _keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "name" and token[1].lower() == word:
            self._position += 1
            return True
        return False

    def expression(self) -> Compiled:
        left = self._conjunction()
        while self._keyword("or"):
            right = self._conjunction()
            left = (lambda a, b: lambda env: bool(a(env)) or bool(b(env)))(left, right)
        return left

    def _conjunction(self) -> Compiled:
        left = self._negation()
        while self._keyword("and"):
            right = self._negation()
            left = (lambda a, b: lambda env: bool(a(env)) and bool(b(env)))(left, right)
        return left

    def _negation(self) -> Compiled:
        if self._keyword("not"):
            inner = self._negation()
            return lambda env: not inner(env)
        return self._comparison()

    def _comparison(self) -> Compiled:
        left = self._operand()
        token = self.peek()
        if token is not None and token[0] == "name" and token[1].lower() in _COMPARISONS:
            self._position += 1
            right = self._operand()
            return _compare(token[1].lower(), left, right)
        if isinstance(left, _Literal):
            raise _error("a literal is not a condition.")
        return cast(Compiled, left)

    def _operand(self) -> Any:
        kind, value = self._take()
        if kind == "punct" and value == "(":
            inner = self.expression()
            self._expect(")")
            return inner
        if kind == "string":
            return _Literal(value[1:-1].replace("''", "'"))
        if kind == "datetime":
            return _Literal(_parse_datetime(value))
        if kind == "number":
            return _Literal(float(value) if "." in value else int(value))
        if kind != "name":
            raise _error(f"unexpected '{value}'.")
        lowered = value.lower()
        if lowered in ("true", "false"):
            return _Literal(lowered == "true")
        if lowered == "null":
            return _Literal(None)
        if lowered in _FUNCTIONS:
            return self._function(lowered)
        if lowered.endswith(("/any", "/all")):
            return self._lambda(value)
        return _path(value)

    def _function(self, name: str) -> Compiled:
        self._expect("(")
        subject = self._operand()
        self._expect(",")
        needle = self._operand()
        self._expect(")")
        if not isinstance(needle, _Literal) or not isinstance(needle.value, str):
            raise _error(f"{name} needs a string literal.")
        wanted = needle.value.casefold()

        def call(env: Env) -> bool:
            value = subject(env) if callable(subject) else subject.value
            if not isinstance(value, str):
                return False
            text = value.casefold()
            if name == "startswith":
                return text.startswith(wanted)
            if name == "endswith":
                return text.endswith(wanted)
            return wanted in text

        return call

    def _lambda(self, value: str) -> Compiled:
        collection_path, _, quantifier = value.rpartition("/")
        collection = _path(collection_path)
        self._expect("(")
        kind, variable = self._take()
        if kind != "name":
            raise _error("expected a lambda variable.")
        self._expect(":")
        body = self.expression()
        self._expect(")")

        def evaluate(env: Env) -> bool:
            items = collection(env) or []
            if not isinstance(items, list):
                raise _error(f"'{collection_path}' is not a collection.")
            results = (bool(body({**env, variable: item})) for item in items)
            return any(results) if quantifier.lower() == "any" else all(results)

        return evaluate


def _path(text: str) -> Compiled:
    segments = text.split("/")

    def resolve(env: Env) -> Any:
        if segments[0] in env and segments[0] != "$it":
            current, rest = env[segments[0]], segments[1:]
        else:
            current, rest = env["$it"], segments
            if not _has_key(current, rest[0]):
                raise bad_request(
                    f"Could not find a property named '{rest[0]}' on the filtered type.",
                    "RequestBroker--ParseUri",
                )
        for segment in rest:
            if not isinstance(current, Mapping):
                return None
            current = _get(current, segment)
        return current

    resolve.__name__ = segments[-1].lower()  # lets _compare spot date-time properties
    return resolve


def _has_key(document: Any, name: str) -> bool:
    return isinstance(document, Mapping) and any(k.lower() == name.lower() for k in document)


def _get(document: Mapping[str, Any], name: str) -> Any:
    for key, value in document.items():
        if key.lower() == name.lower():
            return value
    return None


def _parse_datetime(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _error(f"'{text}' is not a date-time.") from None


def _compare(op: str, left: Any, right: Any) -> Compiled:
    for side in (left, right):
        if (
            callable(side)
            and getattr(side, "__name__", "") in _DATETIME_PROPERTIES
            and isinstance(right if side is left else left, _Literal)
            and isinstance((right if side is left else left).value, str)
        ):
            raise bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                "'Edm.DateTimeOffset' and 'Edm.String' for operator kind "
                f"'{_OPERATOR_NAMES[op]}'."
            )

    def value_of(side: Any, env: Env) -> Any:
        return side.value if isinstance(side, _Literal) else side(env)

    def evaluate(env: Env) -> bool:
        a, b = value_of(left, env), value_of(right, env)
        if isinstance(a, dt.datetime) and isinstance(b, str):
            b = _parse_datetime(b)
        elif isinstance(b, dt.datetime) and isinstance(a, str):
            a = _parse_datetime(a)
        if isinstance(a, str) and isinstance(b, str):
            a, b = a.casefold(), b.casefold()
        if op == "eq":
            return bool(a == b)
        if op == "ne":
            return bool(a != b)
        if a is None or b is None:
            return False
        try:
            return bool(_ORDERINGS[op](a, b))
        except TypeError:
            raise bad_request(f"Cannot compare {a!r} and {b!r}.") from None

    return evaluate


_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_OPERATOR_NAMES = {
    "eq": "Equal",
    "ne": "NotEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
}
