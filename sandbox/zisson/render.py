"""How the simulated Zisson shows its directory through the XML API.

A user becomes one `Contact` element:

- `ContactId` = id; `Title`, `Department`, `Comments` as stored;
- `Email` = the first e-mail; `Number` = the first phone whose type is not "mobile";
  `GsmNumber` = the first phone of type "mobile";
- a person (`type` "user"): `FirstName`/`LastName` as stored, `Company` empty;
- a department: `FirstName`/`LastName` empty and the department's name (its
  `displayName`) in `Company`;
- `Address` empty and `Editable` true (neither is modelled).

The document is UTF-8 with `encoding="utf-8"` declared unless the account's
`XmlEncoding` (see `sandbox.zisson.faults`) says otherwise: then it is written in that
encoding (characters it cannot carry as character references, lone surrogates
U+DC80..U+DCFF in a raw fragment as the bytes 0x80..0xFF) under the declaration asked
for, or none. A carriage return is written as `&#13;` so it survives XML end-of-line
handling, and characters XML 1.0 cannot carry at all are left out. A raw entry that is a
string is taken to be an XML fragment and copied as-is; a raw JSON value is rendered as
tolerantly as possible (a missing id gives no `ContactId`, a `phoneNumbers` that is not a
list gives no numbers), so both APIs show the same malformed entry.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

# Characters outside the XML 1.0 `Char` production.
XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ESCAPE = re.compile("[&<>\r]")


def xml_text(value: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group()], XML_ILLEGAL.sub("", value))


def _string(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _phones(user: dict[str, Any]) -> tuple[str, str]:
    """(Number, GsmNumber) of a user."""
    phones = user.get("phoneNumbers")
    if not isinstance(phones, list):
        return "", ""
    work = mobile = None
    for phone in phones:
        if not isinstance(phone, dict):
            continue
        if phone.get("type") == "mobile":
            mobile = phone.get("number") if mobile is None else mobile
        else:
            work = phone.get("number") if work is None else work
    return _string(work), _string(mobile)


def contact_element(user: dict[str, Any]) -> str:
    emails = user.get("emails")
    email = emails[0] if isinstance(emails, list) and emails else ""
    number, gsm = _phones(user)
    department = user.get("type") == "department"
    elements: list[tuple[str, Any]] = []
    if user.get("id") is not None:
        elements.append(("ContactId", user["id"]))
    elements += [
        ("FirstName", "" if department else user.get("firstName")),
        ("LastName", "" if department else user.get("lastName")),
        ("Email", email),
        ("Number", number),
        ("GsmNumber", gsm),
        ("Company", user.get("displayName") if department else ""),
        ("Comments", user.get("comments")),
        ("Title", user.get("title")),
        ("Department", user.get("department")),
        ("Address", ""),
        ("Editable", "true"),
    ]
    inner = "".join(f"<{name}>{xml_text(_string(value))}</{name}>" for name, value in elements)
    return f"<Contact>{inner}</Contact>"


def _bytes_or_reference(error: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding error handler: a lone surrogate U+DC80..U+DCFF is the byte it escapes,
    any other character the encoding cannot carry becomes a character reference."""
    assert isinstance(error, UnicodeEncodeError)
    out = bytearray()
    for char in error.object[error.start : error.end]:
        code = ord(char)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else f"&#{code};".encode()
    return bytes(out), error.end


codecs.register_error("zisson-sim-xml", _bytes_or_reference)


def contacts_document(
    listing: list[tuple[bool, Any]],
    *,
    encoding: str = "utf-8",
    declaration: str | None = "utf-8",
) -> bytes:
    head = "" if declaration is None else f'<?xml version="1.0" encoding="{declaration}"?>\n'
    parts = [head + "<Contacts>"]
    for is_raw, entry in listing:
        if is_raw and isinstance(entry, str):
            parts.append(entry)
        elif isinstance(entry, dict):
            parts.append(contact_element(entry))
        # A raw JSON value that is not an object has no XML form; the JSON API shows it.
    parts.append("</Contacts>")
    return "".join(parts).encode(encoding, errors="zisson-sim-xml")
