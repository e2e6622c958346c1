"""What Zisson holds of a contact record, through each API.

Both APIs carry every sync field, but not equally:

JSON  everything; only e-mails and phone numbers that are blank are left out, and phone
      numbers are held as entered (trimmed) with their E.164 form recomputed.
      Control characters other than tab and line breaks, and lone surrogates, are
      dropped (through either API): a read rejects a record holding them
      (connectors/hostile.py), so they are never written.
XML   one e-mail (the first), one work number (`Number`: the first phone that is not a
      mobile, whatever its type) and one mobile (`GsmNumber`); phones come back work
      first, then mobile. A person has no display name. A department is an entry with
      empty first and last name and its name (`display_name`) in `Company`, so a
      department without a name reads back as a nameless person, and a department's
      given and family names are not held. Characters XML 1.0 cannot carry are dropped.

`project_*(project_*(r)) == project_*(r)`, and a record read through an API is already
its own projection.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from connectors import hostile
from connectors.zisson.settings import ZissonApi
from daemon import normalize
from daemon.domain import SYNC_FIELDS, ContactKind, ContactRecord, Phone, PhoneType

FIELDS: frozenset[str] = frozenset(SYNC_FIELDS)

_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_FIELDS = ("given_name", "family_name", "display_name", "title", "department", "notes")


def xml_safe(value: str) -> str:
    return hostile.scrub(_XML_ILLEGAL.sub("", value))


def held_emails(emails: Iterable[str]) -> tuple[str, ...]:
    return tuple(e for e in emails if e.strip())


def held_phones(phones: Iterable[Phone]) -> tuple[Phone, ...]:
    """Phones as read back: trimmed number, recomputed E.164, blanks left out."""
    held = (normalize.phone(p.number, p.type) for p in phones)
    return tuple(p for p in held if p.number)


def project_json(record: ContactRecord) -> ContactRecord:
    text = {name: hostile.scrub(getattr(record, name)) for name in _TEXT_FIELDS}
    return record.with_values(
        {
            **text,
            "emails": held_emails(hostile.scrub(e) for e in record.emails),
            "phones": held_phones(
                dataclasses.replace(p, number=hostile.scrub(p.number)) for p in record.phones
            ),
        }
    )


def project_xml(record: ContactRecord) -> ContactRecord:
    text = {name: xml_safe(getattr(record, name)) for name in _TEXT_FIELDS}
    emails = held_emails(xml_safe(e) for e in record.emails)[:1]
    phones = held_phones(dataclasses.replace(p, number=xml_safe(p.number)) for p in record.phones)
    work = next((p for p in phones if p.type is not PhoneType.MOBILE), None)
    mobile = next((p for p in phones if p.type is PhoneType.MOBILE), None)
    xml_phones = tuple(
        p
        for p in (
            dataclasses.replace(work, type=PhoneType.WORK) if work else None,
            mobile,
        )
        if p is not None
    )
    kind = record.kind
    if kind is ContactKind.DEPARTMENT:
        text["given_name"] = text["family_name"] = ""
        if not text["display_name"]:
            kind = ContactKind.PERSON
    else:
        text["display_name"] = ""
    return record.with_values({**text, "kind": kind, "emails": emails, "phones": xml_phones})


def project(api: ZissonApi, record: ContactRecord) -> ContactRecord:
    return project_xml(record) if api == "xml" else project_json(record)
