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

Hostile documents (issue 10). The document is parsed with defusedxml (no DTD, entities
or external references: a ContractError) and kept at most hostile.MAX_DEPTH levels deep;
a Contact nested deeper, or whose elements read into the record hold a C1 control
character, an overlong value, or an id that is no URL segment (`.`, `..`, `/`), is
rejected naming the element. (C0 controls and lone surrogates cannot be in well-formed
XML 1.0: such a document does not parse and is a ContractError.)

Encoding (issue 13, item 9). The bytes are decoded here, not by the XML parser, in this
order: a byte order mark; else the `charset` of the HTTP Content-Type; else the
`encoding` of the XML declaration; else UTF-8 if the bytes are valid UTF-8, and
windows-1252 if not (the documented fallback for legacy answers that say nothing). A
label is known if Python knows it; one it does not know is passed over for the next
source. The labels the WHATWG Encoding Standard maps to windows-1252 ("iso-8859-1",
"latin1", "us-ascii", ... see `_WINDOWS_1252_LABELS`, from
https://encoding.spec.whatwg.org/#names-and-labels) are read as windows-1252: Latin-1
declared by legacy software is windows-1252 in practice, so its 0x80-0x9F bytes are the
euro sign, curly quotes and dashes, never C1 control characters. When the HTTP charset
and the declaration disagree, HTTP wins (RFC 7303, section 3). A declaration of a
two-byte encoding (UTF-16/32) in a document whose declaration read as ASCII cannot be
true and is passed over. A byte that has no character in the chosen encoding (bad
UTF-8, or 0x81, 0x8D, 0x8F, 0x90, 0x9D in windows-1252, which the Encoding Standard
passes through as C1 controls) never fails the read: the Contact holding it is rejected,
with U+FFFD in its raw text, and the rest is read.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import xml.etree.ElementTree as ET
from email.message import Message
from typing import Any
from xml.parsers import expat

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from connectors import hostile
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


# The labels of windows-1252 in the WHATWG Encoding Standard, section 4.2 "Names and
# labels" (https://encoding.spec.whatwg.org/#names-and-labels): "iso-8859-1", "latin1"
# and "us-ascii" among them. Matched after lower-casing and stripping white space.
_WINDOWS_1252_LABELS = frozenset(
    {
        "ansi_x3.4-1968",
        "ascii",
        "cp1252",
        "cp819",
        "csisolatin1",
        "ibm819",
        "iso-8859-1",
        "iso-ir-100",
        "iso8859-1",
        "iso88591",
        "iso_8859-1",
        "iso_8859-1:1987",
        "l1",
        "latin1",
        "us-ascii",
        "windows-1252",
        "x-cp1252",
    }
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM starts it
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SHOWN = {"cp1252": "windows-1252"}  # Python codec name -> the name people know
_DECLARATION = re.compile(rb"""<\?xml\s[^>]*?\bencoding\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.ASCII)
_CHAR_REFERENCE = re.compile(r"&#(?:x([0-9A-Fa-f]+)|([0-9]+));")
# Stands in for an undecodable byte while the document is parsed: a private-use code
# point XML accepts, chosen so that the document neither holds nor references it.
_MARKERS = tuple(chr(code) for code in range(0x10FFFD, 0x10FFFD - 64, -1))


# The elements read into a record, checked by `_hostile` (the others are ignored).
READ_ELEMENTS = (
    "FirstName",
    "LastName",
    "Email",
    "Number",
    "GsmNumber",
    "Company",
    "Comments",
    "Title",
    "Department",
)


class CutShort(RetriableError):
    """GetContacts answered a document that ends before its root is closed."""


class _ShallowBuilder:
    """An ElementTree target that keeps at most MAX_DEPTH levels (ElementTree's own
    serialising recurses, so a document nested 100,000 deep would end in RecursionError).

    What lies deeper is left out of the tree and its top-level element noted in
    `too_deep` (with the name of the element under it that holds the deep part), so that
    Contact is rejected. `contacts` counts Contact elements at every depth, those left
    out included, so none can hide below the cut.
    """

    def __init__(self) -> None:
        self._tree = ET.TreeBuilder()
        self._open: list[ET.Element] = []
        self._skipped = 0  # levels open below the cut
        self.contacts = 0
        self.too_deep: dict[ET.Element, str] = {}

    def start(self, tag: str, attrib: dict[str, str]) -> Any:
        if _local(tag) == "Contact":
            self.contacts += 1
        if self._skipped or len(self._open) >= hostile.MAX_DEPTH:
            if not self._skipped and len(self._open) > 1:
                field = _local(self._open[2].tag) if len(self._open) > 2 else "Contact"
                self.too_deep.setdefault(self._open[1], field)
            self._skipped += 1
            return None
        element = self._tree.start(tag, attrib)
        self._open.append(element)
        return element

    def end(self, tag: str) -> Any:
        if self._skipped:
            self._skipped -= 1
            return None
        self._open.pop()
        return self._tree.end(tag)

    def data(self, data: str) -> None:
        if not self._skipped:
            self._tree.data(data)

    def close(self) -> ET.Element:
        return self._tree.close()


async def read_contacts(session: Session) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each Contact read, with its text as received."""
    for attempt in range(1, LISTING_ATTEMPTS + 1):
        response = await session.request(
            "GET", GET_CONTACTS, what="GetContacts", headers={"Accept": "application/xml"}
        )
        try:
            # Parsing and mapping the whole directory is CPU work (0.3 s for 5,000
            # contacts): in a worker thread, off the event loop.
            return await asyncio.to_thread(
                parse_contacts, response.content, content_type=response.headers.get("Content-Type")
            )
        except CutShort:
            if attempt == LISTING_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def parse_contacts(
    document: bytes, *, content_type: str | None = None
) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each Contact of a GetContacts document, decoded as the module says (`content_type`
    is the response's Content-Type header). Raises CutShort (retriable) for a document
    that ends early and ContractError for one that is not a contact list."""
    encoding = document_encoding(document, content_type)
    text, marker = _decode(document, encoding)
    builder = _ShallowBuilder()
    try:
        parser = DefusedXMLParser(target=builder)
        parser.feed(text)
        root = parser.close()
    except DefusedXmlException:
        raise ContractError(
            "zisson: GetContacts answered a document with a DTD, entities or external"
            " references, which are refused",
            system=SYSTEM,
        ) from None
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
    if builder.contacts != listed:
        raise ContractError(
            "zisson: GetContacts answered Contact elements that are not directly under "
            "the root; none were read, since a contact skipped would read as deleted",
            system=SYSTEM,
        )
    entries: list[tuple[ContactRecord | Rejected, str]] = []
    for element in root:
        if _local(element.tag) == "Contact":
            element.tail = None  # the entry's own text, not the white space after it
            raw = ET.tostring(element, encoding="unicode")
            if marker is not None and marker in raw:
                rejected = _undecodable(element, raw, marker, encoding)
                entries.append((rejected, rejected.raw))
                continue
            deep = builder.too_deep.get(element)
            if deep is not None:
                rejected = Rejected(
                    system=SYSTEM,
                    external_id=_contact_id(element),
                    reason=f"{deep}: nested deeper than {hostile.MAX_DEPTH} levels",
                    raw=raw,
                )
                entries.append((rejected, raw))
                continue
            entries.append((contact_record(element, raw), raw))
    return entries


def document_encoding(document: bytes, content_type: str | None) -> str:
    """The Python codec name to decode a GetContacts document with (see the module)."""
    for bom, name in _BOMS:
        if document.startswith(bom):
            return name
    if content_type:
        message = Message()
        message["Content-Type"] = content_type
        charset = message.get_param("charset")
        if isinstance(charset, str):
            known = _codec(charset)
            if known is not None:
                return known
    declared = _DECLARATION.match(document)
    if declared is not None:
        label = declared.group(1) or declared.group(2) or b""
        known = _codec(label.decode("ascii", errors="replace"))
        if known is not None and _ascii_compatible(known):
            return known
    try:
        document.decode("utf-8")
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _codec(label: str) -> str | None:
    label = label.strip().strip('"').strip().lower()
    if label in _WINDOWS_1252_LABELS:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _ascii_compatible(codec: str) -> bool:
    try:
        return "<?xml".encode(codec) == b"<?xml"
    except UnicodeError:
        return False


def _decode(document: bytes, encoding: str) -> tuple[str, str | None]:
    """The document as text, and the marker standing in for its undecodable bytes (None
    when every byte decoded)."""
    try:
        text = document.decode(encoding)
    except UnicodeDecodeError:
        pass
    else:
        return text.removeprefix("\ufeff"), None
    lenient = document.decode(encoding, errors="replace")
    referenced = {
        int(hexadecimal, 16) if hexadecimal else int(decimal)
        for hexadecimal, decimal in _CHAR_REFERENCE.findall(lenient)
    }
    for marker in _MARKERS:
        if marker not in lenient and ord(marker) not in referenced:
            break
    else:  # pragma: no cover - a document holding 64 private-use characters
        raise ContractError(
            f"zisson: GetContacts answered bytes that are not {_SHOWN.get(encoding, encoding)}",
            system=SYSTEM,
        )
    # `replace` gives U+FFFD per bad sequence; a marker takes the place of each.
    text = document.decode(encoding, errors=_marker_handler(marker))
    return text.removeprefix("\ufeff"), marker


def _marker_handler(marker: str) -> str:
    name = f"pdsync-zisson-marker-{ord(marker):x}"
    try:
        codecs.lookup_error(name)
    except LookupError:

        def handler(error: UnicodeError) -> tuple[str, int]:
            assert isinstance(error, UnicodeDecodeError)
            return marker, error.end

        codecs.register_error(name, handler)
    return name


def _undecodable(element: ET.Element, raw: str, marker: str, encoding: str) -> Rejected:
    """A Contact holding bytes that are not `encoding`: quarantined, not guessed at."""
    values = {_local(child.tag): ET.tostring(child, encoding="unicode") for child in element}
    where = sorted(name for name, text in values.items() if marker in text) or ["Contact"]
    contact_id = _contact_id(element)
    if contact_id is not None and marker in contact_id:
        contact_id = None
    return Rejected(
        system=SYSTEM,
        external_id=contact_id,
        reason=f"{', '.join(where)}: bytes that are not {_SHOWN.get(encoding, encoding)}",
        raw=raw.replace(marker, "\ufffd"),
    )


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
    if problem is None:
        problem = _hostile(values)
    if problem is not None:
        return Rejected(
            system=SYSTEM, external_id=hostile.safe_id(contact_id), reason=problem, raw=raw
        )

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


def _hostile(values: dict[str, str]) -> str | None:
    """The first element read into the record that cannot be taken in, named, or None."""
    problem = hostile.id_problem(values["ContactId"].strip())
    if problem is not None:
        return f"ContactId: {problem}"
    for name in READ_ELEMENTS:
        problem = hostile.text_problem(
            values.get(name, ""),
            limit=hostile.MAX_NOTES_CHARS if name == "Comments" else hostile.MAX_TEXT_CHARS,
        )
        if problem is not None:
            return f"{name}: {problem}"
    return None


def _contact_id(element: ET.Element) -> str | None:
    """The Contact's id, if it has exactly one that is fit to be shown and stored."""
    ids = [child.text for child in element if _local(child.tag) == "ContactId"]
    return hostile.safe_id((ids[0] or "").strip()) if len(ids) == 1 else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
