"""The queries that find a data subject's mail: KQL for `$search`, OData for `$filter`.

One `$search` per identifier, its spellings joined with OR, so each query stays small
and one that reaches Graph's 1000-hit cap is seen as truncated (the caller then scans).
Graph documents the cap (1000 results per message `$search`) but no length limit of its
own (learn.microsoft.com/graph/search-query-parameter); KQL's reference gives 4,096
characters for queries made in code and 2,048 for SharePoint's search box, and the
MS-SEARCH protocol only promises more than 1,024 (learn.microsoft.com/sharepoint/dev/
general-development/keyword-query-language-kql-syntax-reference; [MS-SEARCH] 2.2.11.2).
So a query is kept within MAX_QUERY_CHARS: an identifier whose spellings would pass it
(a name of very many words) gets several queries, each under the limit.

e-mail  `participants:"ola@x.no"` (from, to, cc, bcc) and the bare phrase `"ola@x.no"`
        (subject and body), plus the exact `from/emailAddress/address eq 'ola@x.no'`
        filter, which has no cap.
name    the bare phrase of the name in order (`"Ola van der Berg"`) and, for every split
        into given names and surname, surname first (`"van der Berg Ola"`, `"der Berg
        Ola van"`, `"Berg Ola van der"`: these find "van der Berg, Ola", as a comma is
        no word), each also as `participants:` (display names on from, to, cc, bcc).
        A name of n words has n phrases, so 2n terms.
phone   a bare phrase per way Norwegians write the number: 22334455, 22 33 44 55,
        223 34 455 (mobile style), 2233 4455, +47 22334455, +4722334455, +47 22 33 44
        55, 0047 22 33 44 55, 004722334455; for a foreign number its national form and
        +CC with the significant digits. A number with an extension ("+4722334455;ext=12")
        is looked for by its main number's spellings (the re-check wants the extension
        after it), and also glued to its "x" ("22334455x12"), a single word to the index.

Whatever Graph finds is re-checked client-side (matching.py) before anything is
deleted, so the queries may be generous; what they must not do is miss.
"""

from __future__ import annotations

from connectors.outlook.matching import PhoneForms, surname_first
from connectors.outlook.wire import odata_string

MAX_QUERY_CHARS = 1024


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
    if forms.extension:
        spellings.append(f"{forms.national}x{forms.extension}")
    return list(dict.fromkeys(spellings))


def _any(terms: list[str]) -> list[str]:
    """The terms joined with OR, in as few queries within MAX_QUERY_CHARS as they fit."""
    queries: list[str] = []
    for term in dict.fromkeys(terms):
        if queries and len(queries[-1]) + len(" OR ") + len(term) <= MAX_QUERY_CHARS:
            queries[-1] += " OR " + term
        else:
            queries.append(term)
    return queries


def email_query(email: str) -> list[str]:
    # Quoted as a phrase, as every term: an address is data, and one with a space, a
    # quote, a colon or a word like OR in it must not change the query.
    phrase = _phrase(email)
    return _any([f"participants:{phrase}", phrase])


def name_query(name: str) -> list[str]:
    """`name` given names first, its words as written (the index folds case itself)."""
    words = name.split()
    orders = [words] + [surname + given for surname, given in surname_first(words)]
    phrases = [_phrase(" ".join(order)) for order in orders]
    return _any(phrases + [f"participants:{phrase}" for phrase in phrases])


def phone_query(forms: PhoneForms) -> list[str]:
    return _any([_phrase(spelling) for spelling in phone_spellings(forms)])


def subject_queries(
    emails: tuple[str, ...], phones: tuple[PhoneForms, ...], names: tuple[str, ...]
) -> list[str]:
    """The KQL queries for one subject: one per identifier (more only for one whose
    spellings pass MAX_QUERY_CHARS), without duplicates."""
    queries = [q for e in emails for q in email_query(e)]
    queries += [q for n in names for q in name_query(n)]
    queries += [q for p in phones for q in phone_query(p)]
    return list(dict.fromkeys(queries))


def sender_filter(email: str) -> str:
    """The exact $filter on a message's sender address (no cap, paged)."""
    return f"from/emailAddress/address eq {odata_string(email)}"


def received_before(iso: str) -> str:
    return f"receivedDateTime lt {iso}"
