"""Plain-language tasks for an operator, for `write_mode = "manual"`.

Each instruction says exactly what to enter, change or delete in Zisson, field by field,
in the terms of the customer's API (one e-mail and two numbers for the XML API). It
holds personal data by necessity; the daemon stores it encrypted and never logs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.zisson.settings import ZissonApi
from daemon.domain import ContactKind, ContactRecord, Customer, Phone, PhoneType

_LABELS = {
    "given_name": "First name",
    "family_name": "Last name",
    "display_name": "Display name",
    "title": "Title",
    "department": "Department",
    "notes": "Comments",
}
_ORDER = (
    "given_name",
    "family_name",
    "display_name",
    "title",
    "department",
    "emails",
    "phones",
    "notes",
)
_CLOSING = "The task closes by itself once a read of Zisson shows the change."


def create(customer: Customer, api: ZissonApi, record: ContactRecord) -> str:
    what = "department" if record.kind is ContactKind.DEPARTMENT else "person"
    lines = [
        f"In Zisson, for the customer {_quote(customer.name)} (id {customer.id}), add a new {what}:"
    ]
    if api == "xml" and record.kind is ContactKind.DEPARTMENT:
        lines.append("  - First name and Last name: leave empty")
    for label, value in _fields(api, record, _ORDER):
        if value:
            lines.append(f"  - {label}: {value}")
    lines += ["Leave every other field empty.", _CLOSING]
    return "\n".join(lines)


def update(
    customer: Customer,
    api: ZissonApi,
    external_id: str,
    current: ContactRecord | None,
    desired: ContactRecord,
    names: Iterable[str],
) -> str:
    """`current` is the entry as the API shows it, if known; `names` the fields to change."""
    wanted = set(names)
    lines = [
        f"In Zisson, for the customer {_quote(customer.name)} (id {customer.id}), "
        f"open {_who(external_id, current)} and make these changes:"
    ]
    if "kind" in wanted:
        what = "a department" if desired.kind is ContactKind.DEPARTMENT else "a person"
        lines.append(f"  - make it {what}")
    names = [n for n in _ORDER if n in wanted]
    before = dict(_fields(api, current, names)) if current is not None else {}
    for label, value in _fields(api, desired, names):
        if label in before and before[label] == value and "kind" not in wanted:
            continue  # e.g. the GSM number when only the work number changes
        lines.append(f"  - set {label} to {value}" if value else f"  - clear {label}")
    lines.append(_CLOSING)
    return "\n".join(lines)


def delete(customer: Customer, external_id: str, current: ContactRecord | None) -> str:
    return (
        f"In Zisson, for the customer {_quote(customer.name)} (id {customer.id}), "
        f"delete {_who(external_id, current)}.\n{_CLOSING}"
    )


def _who(external_id: str, current: ContactRecord | None) -> str:
    if current is None:
        return f"the entry with Zisson id {external_id}"
    name = (
        " ".join(p for p in (current.given_name, current.family_name) if p) or current.display_name
    )
    return (
        f"the entry {_quote(name)} (Zisson id {external_id})"
        if name
        else f"the entry with Zisson id {external_id}"
    )


def _fields(api: ZissonApi, record: ContactRecord, names: Iterable[str]) -> list[tuple[str, str]]:
    """(label, value) per field as the operator sees it; an empty value means "clear"."""
    out: list[tuple[str, str]] = []
    for name in names:
        if name == "emails":
            label = "E-mail" if api == "xml" else "E-mail addresses"
            out.append((label, _list(record.emails)))
        elif name == "phones":
            out += _phone_fields(api, record.phones)
        elif name == "display_name" and api == "xml":
            if record.kind is ContactKind.DEPARTMENT:
                out.append(("Company (the department's name)", _quote(record.display_name)))
        elif name in _LABELS:
            value = getattr(record, name)
            out.append((_LABELS[name], _quote(value) if value else ""))
    return out


def _phone_fields(api: ZissonApi, phones: tuple[Phone, ...]) -> list[tuple[str, str]]:
    if api == "xml":
        work = next((p.number for p in phones if p.type is not PhoneType.MOBILE), "")
        mobile = next((p.number for p in phones if p.type is PhoneType.MOBILE), "")
        return [
            ("Number", _quote(work) if work else ""),
            ("GSM number", _quote(mobile) if mobile else ""),
        ]
    listed = ", ".join(f"{_quote(p.number)} ({p.type.value})" for p in phones)
    return [("Phone numbers", f"{listed}, in this order" if len(phones) > 1 else listed)]


def _list(values: tuple[str, ...]) -> str:
    listed = ", ".join(_quote(v) for v in values)
    return f"{listed}, in this order" if len(values) > 1 else listed


def _quote(value: str) -> str:
    return f"«{value}»"
