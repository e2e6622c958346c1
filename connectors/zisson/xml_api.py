"""Zisson's legacy XML API (shape from public code), read only.

GET /api/simple/GetContacts with HTTP Basic answers every contact at once::

    <Contacts>
      <Contact>
        <ContactId/> <FirstName/> <LastName/> <Email/> <Number/> <GsmNumber/>
        <Company/> <Comments/> <Title/> <Department/> <Address/> <Editable/>
      </Contact> ...
    </Contacts>

Read into a record: `Number` is a work phone and `GsmNumber` a mobile; an entry with
empty first and last name and a `Company` is a department named by `Company` (our
documented convention, see projection.py); `Address` and `Editable` are not sync fields
and are ignored, as are elements we do not know. The XML API has no version. A
`Contact` without a `ContactId`, with a repeated element or with elements where text
belongs is rejected; the rest of the read goes on. Namespaces are tolerated.

A listing in one document cannot shift between pages the way the JSON API's can, and a
document cut short never parses (its root is closed last), so it can never pass for a
shorter listing: it is read again (LISTING_ATTEMPTS in all), then a RetriableError. What
a complete document cannot tell, and this module therefore refuses or leaves to others:
- another root (an error page) is refused, not read as "no contacts";
- `Contact` elements anywhere but directly under the root (a wrapper the public shape
  does not have) are refused rather than silently skipped, since a contact not seen
  reads as deleted;
- an empty `<Contacts/>`, or a listing the server cut to some limit of its own while
  closing the document properly, looks like a directory that shrank: no count or
  paging is known for this API, so only the daemon's shrink guard can hold that.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.parsers import expat

from connectors.base import ContractError, RetriableError
from connectors.zisson.auth import Session
from connectors.zisson.projection import held_emails, held_phones
from daemon.domain import ContactKind, ContactRecord, Phone, PhoneType, Rejected

GET_CONTACTS = "/api/simple/GetContacts"
SYSTEM = "zisson"
LISTING_ATTEMPTS = 3
_ROOTS = ("Contacts", "ArrayOfContact")
# Parse errors that mean the document ended early: nothing wrong in what did arrive.
_CUT_SHORT = frozenset(
    expat.errors.codes[message]
    for message in (
        expat.errors.XML_ERROR_NO_ELEMENTS,
        expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR,
        expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)


class CutShort(RetriableError):
    """GetContacts answered a document that ends before its root is closed."""


async def read_contacts(session: Session) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each Contact read, with its text as received."""
    for attempt in range(1, LISTING_ATTEMPTS + 1):
        response = await session.request(
            "GET", GET_CONTACTS, what="GetContacts", headers={"Accept": "application/xml"}
        )
        try:
            return parse_contacts(response.content)
        except CutShort:
            if attempt == LISTING_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def parse_contacts(document: bytes) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each Contact of a GetContacts document. Raises CutShort (retriable) for a document
    that ends early and ContractError for one that is not a contact list."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        line, column = exc.position
        if exc.code in _CUT_SHORT:
            raise CutShort(
                f"zisson: GetContacts answered a document cut short (line {line}:{column})",
                system=SYSTEM,
            ) from None
        raise ContractError(
            f"zisson: GetContacts answered XML that cannot be parsed (line {line}:{column})",
            system=SYSTEM,
        ) from None
    # An unexpected root (an error page, say) must not read as "no contacts at all".
    if _local(root.tag) not in _ROOTS:
        raise ContractError(
            f"zisson: GetContacts answered a <{_local(root.tag)}> document, not <Contacts>",
            system=SYSTEM,
        )
    listed = sum(1 for element in root if _local(element.tag) == "Contact")
    if sum(1 for element in root.iter() if _local(element.tag) == "Contact") != listed:
        raise ContractError(
            "zisson: GetContacts answered Contact elements that are not directly under "
            "the root; none were read, since a contact skipped would read as deleted",
            system=SYSTEM,
        )
    entries = []
    for element in root:
        if _local(element.tag) == "Contact":
            element.tail = None  # the entry's own text, not the white space after it
            raw = ET.tostring(element, encoding="unicode")
            entries.append((contact_record(element, raw), raw))
    return entries


def contact_record(element: ET.Element, raw: str) -> ContactRecord | Rejected:
    values: dict[str, str] = {}
    problem: str | None = None
    for child in element:
        name = _local(child.tag)
        if name in values:
            problem = f"{name}: appears more than once"
        elif len(child):
            problem = f"{name}: holds elements instead of text"
        values.setdefault(name, child.text or "")
    contact_id = values.get("ContactId", "").strip()
    if problem is None and not contact_id:
        problem = "ContactId: missing" if "ContactId" not in values else "ContactId: empty"
    if problem is not None:
        return Rejected(system=SYSTEM, external_id=contact_id or None, reason=problem, raw=raw)

    first, last = values.get("FirstName", ""), values.get("LastName", "")
    company = values.get("Company", "")
    department = not first and not last and company != ""
    return ContactRecord(
        system=SYSTEM,
        external_id=contact_id,
        kind=ContactKind.DEPARTMENT if department else ContactKind.PERSON,
        given_name=first,
        family_name=last,
        display_name=company if department else "",
        title=values.get("Title", ""),
        department=values.get("Department", ""),
        emails=held_emails([values.get("Email", "")]),
        phones=held_phones(
            [
                Phone(number=values.get("Number", ""), type=PhoneType.WORK),
                Phone(number=values.get("GsmNumber", ""), type=PhoneType.MOBILE),
            ]
        ),
        notes=values.get("Comments", ""),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
