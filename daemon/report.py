"""The processing report for one customer (O7, O8): which personal data pdsync keeps in
step for it, in which system and with which subprocessor, how much, since when, under
which retention rule, and what pdsync did with it lately.

Counts and dates come from pdsync's store (the links it keeps: fingerprints, never
values), rules from the configuration, what each system keeps after a deletion from its
connector. The report names no data subject: it holds counts, categories and rules.

    report = build_report(settings, store, "acme", residuals={"firestore": [...]})
    report.to_json()          # canonical JSON
    render_text(report, "no") # or "en"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from daemon.config import Settings
from daemon.domain import Residual
from daemon.store import ErasureState, Store

ACTIVITY_DAYS = 30
Language = Literal["en", "no"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemSection:
    system: str
    subprocessor: str
    service: str
    categories: tuple[str, ...]
    location: str
    contacts: int  # the customer's contacts pdsync keeps in step in this system
    retention: tuple[str, ...]  # the rules that delete data here, in words
    residuals: tuple[Residual, ...]  # what the system keeps for a while after a delete


@dataclass(frozen=True, kw_only=True, slots=True)
class Activity:
    """What pdsync did for the customer in the last ACTIVITY_DAYS days."""

    syncs: int
    syncs_failed: int
    changes: int  # records created, updated or deleted by those syncs
    retention_runs: int
    deleted_by_retention: int  # in all systems; what it was, per system, below
    last_sync: datetime | None
    # Per system: what the retention runs deleted there (Outlook: mail messages;
    # Firestore: documents on the customer card), systems with nothing deleted left out.
    deleted_by_system: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessingReport:
    customer_id: str
    customer_name: str
    generated_at: datetime
    erased: bool  # the whole customer was erased; nothing of it is processed any more
    # When pdsync first linked a contact of the customer; kept when that contact leaves
    # or is erased (the store records it).
    since: datetime | None
    systems: tuple[SystemSection, ...]
    activity: Activity
    erasures_completed: int
    erasures_open: int
    open_casework: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        return plain

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, indent=2) + "\n"


def build_report(
    settings: Settings,
    store: Store,
    customer_id: str,
    *,
    residuals: Mapping[str, Sequence[Residual]] | None = None,
    now: datetime | None = None,
) -> ProcessingReport:
    """The report as of `now`; raises ConfigError for a customer not configured."""
    customer = settings.customer(customer_id)
    now = now or datetime.now(UTC)
    residuals = residuals or {}
    erasures = store.list_erasures(customer_id=customer_id, limit=10_000)
    erased = any(e.scope == "customer" and e.state is ErasureState.COMPLETED for e in erasures)
    counts = store.counts(customer_id)
    members = {} if erased else counts["members"]
    systems = []
    for system in customer.bindings():
        register = settings.subprocessor(system)
        systems.append(
            SystemSection(
                system=system,
                subprocessor=register.name,
                service=register.service,
                categories=tuple(register.categories),
                location=register.location,
                contacts=int(members.get(system, 0)),
                retention=tuple(_retention(settings, customer_id, system)),
                residuals=tuple(residuals.get(system, ())),
            )
        )
    return ProcessingReport(
        customer_id=customer.id,
        customer_name=customer.name,
        generated_at=now,
        erased=erased,
        since=None if erased else store.first_linked_at(customer_id),
        systems=tuple(systems),
        activity=_activity(store, customer_id, now),
        erasures_completed=sum(1 for e in erasures if e.state is ErasureState.COMPLETED),
        erasures_open=sum(
            1
            for e in erasures
            if e.state not in (ErasureState.COMPLETED, ErasureState.FAILED, ErasureState.CANCELLED)
        ),
        open_casework={
            "disputes": counts["open_disputes"],
            "manual_tasks": counts["open_tasks"],
            "quarantined_records": counts["quarantined"],
        },
    )


def _retention(settings: Settings, customer_id: str, system: str) -> list[str]:
    customer = settings.customer(customer_id)
    first = (
        "a contact stays while it is on the customer card: the customer's instruction removes it"
        if system == settings.sync.authority
        else "a contact removed from the customer card is deleted here at the next sync"
        f" (every {settings.sync.interval_seconds} s)"
    )
    rules = [
        first,
        "everything of the customer is deleted here when it asks for erasure or its"
        f" contract ends (deadline {settings.erasure.deadline_hours} h)",
    ]
    rule = {
        "outlook": "mail in folder {where!r} is deleted {days} days after it was received",
        "firestore": "documents in {where!r} on the card are deleted {days} days after"
        " they last changed",
    }.get(system)
    if rule is not None:
        rules += [
            rule.format(where=where, days=days)
            for where, days in sorted(customer.retention_rules().get(system, {}).items())
        ]
    return rules


def _activity(store: Store, customer_id: str, now: datetime) -> Activity:
    runs = store.list_runs(
        customer_id=customer_id, since=now - timedelta(days=ACTIVITY_DAYS), limit=100_000
    )
    syncs = [r for r in runs if r.kind == "sync"]
    retention = [r for r in runs if r.kind == "retention"]
    changes = sum(
        int(n)
        for r in syncs
        for key, n in dict(r.summary.get("applied") or {}).items()
        if str(key).endswith(".applied")
    )
    deleted: dict[str, int] = {}
    for r in retention:
        for system, part in r.summary.items():
            if isinstance(part, dict):
                n = int(dict(part.get("results") or {}).get("applied", 0))
                if n:
                    deleted[str(system)] = deleted.get(str(system), 0) + n
    finished = [r.finished_at for r in syncs if r.status == "completed" and r.finished_at]
    return Activity(
        syncs=len(syncs),
        syncs_failed=sum(1 for r in syncs if r.status == "failed"),
        changes=changes,
        retention_runs=len(retention),
        deleted_by_retention=sum(deleted.values()),
        last_sync=max(finished, default=None),
        deleted_by_system=dict(sorted(deleted.items())),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- text ---------------------------------------------------------------------------------

_WORDS: dict[str, dict[Language, str]] = {
    "title": {"en": "Processing report", "no": "Rapport om behandling"},
    "customer": {"en": "Customer", "no": "Kunde"},
    "generated": {"en": "Generated", "no": "Laget"},
    "erased": {
        "en": "The customer was erased: pdsync processes none of its data.",
        "no": "Kunden er slettet: pdsync behandler ingen av dens data.",
    },
    "since": {"en": "Processed since", "no": "Behandlet siden"},
    "subprocessor": {"en": "Subprocessor", "no": "Underleverandør"},
    "service": {"en": "Used for", "no": "Brukes til"},
    "categories": {"en": "Personal data", "no": "Personopplysninger"},
    "location": {"en": "Location", "no": "Sted"},
    "contacts": {"en": "Contacts kept in step", "no": "Kontakter som holdes oppdatert"},
    "retention": {"en": "Deleted", "no": "Slettes"},
    "residuals": {"en": "Kept after deletion", "no": "Beholdes etter sletting"},
    "activity": {
        "en": f"The last {ACTIVITY_DAYS} days",
        "no": f"De siste {ACTIVITY_DAYS} dagene",
    },
    "syncs": {"en": "syncs", "no": "synkroniseringer"},
    "failed": {"en": "failed", "no": "feilet"},
    "changes": {"en": "records changed", "no": "endrede oppføringer"},
    "retention_runs": {"en": "retention runs", "no": "kjøringer av sletteregler"},
    "deleted": {"en": "deleted by them", "no": "slettet av dem"},
    "nothing": {"en": "nothing", "no": "ingenting"},
    "last_sync": {"en": "last sync", "no": "siste synkronisering"},
    "erasures": {"en": "Erasure requests", "no": "Slettebegjæringer"},
    "completed": {"en": "completed", "no": "fullført"},
    "open": {"en": "open", "no": "åpne"},
    "casework": {"en": "Open casework", "no": "Åpne saker"},
    "never": {"en": "never", "no": "aldri"},
}


# What a retention run deletes in each system, (one, many) per language: mail in
# Outlook, documents on the customer card in Firestore.
_UNITS: dict[str, dict[Language, tuple[str, str]]] = {
    "outlook": {
        "en": ("mail message", "mail messages"),
        "no": ("e-postmelding", "e-postmeldinger"),
    },
    "firestore": {
        "en": ("card document", "card documents"),
        "no": ("dokument på kundekortet", "dokumenter på kundekortet"),
    },
    "zisson": {"en": ("contact", "contacts"), "no": ("kontakt", "kontakter")},
}
_ITEMS: dict[Language, tuple[str, str]] = {"en": ("item", "items"), "no": ("element", "elementer")}


def counted(system: str, n: int, language: Language = "en") -> str:
    """`n` of what `system` holds, in words: "3 mail messages", "1 card document"."""
    one, many = _UNITS.get(system, {}).get(language) or _ITEMS[language]
    return f"{n} {one if n == 1 else many}"


def describe_deleted(activity: Activity, language: Language = "en") -> str:
    """What the retention runs deleted, per system in its own words:
    "12 mail messages (outlook), 3 card documents (firestore)"; "nothing" when none."""
    parts = [
        f"{counted(system, n, language)} ({system})"
        for system, n in activity.deleted_by_system.items()
    ]
    return ", ".join(parts) or _WORDS["nothing"][language]


def render_text(report: ProcessingReport, language: Language = "en") -> str:
    """The report as plain text in English or Norwegian (the rules stay in English)."""

    def w(key: str) -> str:
        return _WORDS[key][language]

    def when(moment: datetime | None) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else w("never")

    lines = [
        f"{w('title')}: {report.customer_name} ({report.customer_id})",
        f"{w('generated')}: {when(report.generated_at)}",
    ]
    if report.erased:
        lines.append(w("erased"))
    else:
        lines.append(f"{w('since')}: {when(report.since)}")
    for section in report.systems:
        lines += [
            "",
            f"[{section.system}] {w('subprocessor')}: {section.subprocessor}",
            f"  {w('service')}: {section.service}",
            f"  {w('categories')}: {', '.join(section.categories)}",
        ]
        if section.location:
            lines.append(f"  {w('location')}: {section.location}")
        lines.append(f"  {w('contacts')}: {section.contacts}")
        lines += [f"  {w('retention')}: {rule}" for rule in section.retention]
        lines += [f"  {w('residuals')}: {r.what}, {r.retention}" for r in section.residuals]
    a = report.activity
    lines += [
        "",
        f"{w('activity')}: {a.syncs} {w('syncs')} ({a.syncs_failed} {w('failed')}),"
        f" {a.changes} {w('changes')}, {a.retention_runs} {w('retention_runs')},"
        f" {w('deleted')}: {describe_deleted(a, language)}; {w('last_sync')}: {when(a.last_sync)}",
        f"{w('erasures')}: {report.erasures_completed} {w('completed')},"
        f" {report.erasures_open} {w('open')}",
        f"{w('casework')}: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.open_casework.items()),
    ]
    return "\n".join(lines) + "\n"
