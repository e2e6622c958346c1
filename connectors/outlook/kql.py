"""The queries that find a data subject's mail: KQL for `$search`, OData for `$filter`.

One `$search` per identifier, its spellings joined with OR, so each query stays small
and one that reaches Graph's 1000-hit cap is seen as truncated (the caller then scans):

e-mail  `participants:ola@x.no` (from, to, cc, bcc) and the bare phrase `"ola@x.no"`
        (subject and body), plus the exact `from/emailAddress/address eq 'ola@x.no'`
        filter, which has no cap.
name    the bare phrases `"Åse Bjørnstad"` and `"Bjørnstad Åse"` (from, subject, body;
        the second finds "Bjørnstad, Åse") and both as `participants:` (display names
        on to and cc).
phone   a bare phrase per way Norwegians write the number: 22334455, 22 33 44 55,
        223 34 455 (mobile style), 2233 4455, +47 22334455, +4722334455, +47 22 33 44
        55, 0047 22 33 44 55, 004722334455; for a foreign number its national form and
        +CC with the significant digits.

Whatever Graph finds is re-checked client-side (matching.py) before anything is
deleted, so the queries may be generous; what they must not do is miss.
"""

from __future__ import annotations

from connectors.outlook.matching import PhoneForms
from connectors.outlook.wire import odata_string


def _phrase(text: str) -> str:
    # KQL cannot carry a double quote or backslash inside a phrase; the search index
    # does not index them either, so a space loses nothing.
    cleaned = " ".join(text.replace('"', " ").replace("\\", " ").split())
    return f'"{cleaned}"'


def search_value(kql: str) -> str:
    """The `$search` parameter: the KQL in double quotes, inner quotes escaped."""
    return '"' + kql.replace("\\", "\\\\").replace('"', '\\"') + '"'


def phone_spellings(forms: PhoneForms) -> list[str]:
    """How a number is written in mail, most common first, without duplicates."""
    s, cc = forms.significant, forms.country_code
    spellings: list[str] = []
    if cc == "47" and len(s) == 8:
        spellings += [
            s,
            f"{s[0:2]} {s[2:4]} {s[4:6]} {s[6:8]}",
            f"{s[0:3]} {s[3:5]} {s[5:8]}",
            f"{s[0:4]} {s[4:8]}",
            f"+47 {s}",
            f"+47{s}",
            f"+47 {s[0:2]} {s[2:4]} {s[4:6]} {s[6:8]}",
            f"0047 {s[0:2]} {s[2:4]} {s[4:6]} {s[6:8]}",
            f"0047{s}",
        ]
    else:
        spellings.append(forms.national)
        if cc:
            spellings += [f"+{cc} {s}", f"+{cc}{s}", f"00{cc}{s}"]
    return list(dict.fromkeys(spellings))


def _any(terms: list[str]) -> str:
    return " OR ".join(dict.fromkeys(terms))


def email_query(email: str) -> str:
    return _any([f"participants:{email}", _phrase(email)])


def name_query(name: str) -> str:
    words = name.split()
    surname_first = " ".join(words[-1:] + words[:-1])  # "Bjørnstad, Åse"; the comma is no word
    phrases = [_phrase(name), _phrase(surname_first)]
    return _any(phrases + [f"participants:{phrase}" for phrase in phrases])


def phone_query(forms: PhoneForms) -> str:
    return _any([_phrase(spelling) for spelling in phone_spellings(forms)])


def subject_queries(
    emails: tuple[str, ...], phones: tuple[PhoneForms, ...], names: tuple[str, ...]
) -> list[str]:
    """The KQL queries for one subject: one per identifier, without duplicates."""
    queries = [email_query(e) for e in emails]
    queries += [name_query(n) for n in names]
    queries += [phone_query(p) for p in phones]
    return list(dict.fromkeys(queries))


def sender_filter(email: str) -> str:
    """The exact $filter on a message's sender address (no cap, paged)."""
    return f"from/emailAddress/address eq {odata_string(email)}"


def received_before(iso: str) -> str:
    return f"receivedDateTime lt {iso}"
