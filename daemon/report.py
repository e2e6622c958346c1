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
    # The same rules in Norwegian, for the text report (the JSON holds the English).
    retention_no: tuple[str, ...] = ()


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
    # Per system: what they found past the customer's rules but kept, as another
    # customer's too whose rules keep it (Outlook: mail between two customers of one
    # service mailbox); systems with nothing kept left out.
    kept_shared_by_system: Mapping[str, int] = field(default_factory=dict)


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
    # What pdsync keeps about its own work, and for how many days ([history] config).
    own_records_days: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        for section in plain["systems"]:
            section.pop("retention_no", None)
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
                retention_no=tuple(_retention(settings, customer_id, system, "no")),
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
        own_records_days={
            "runs": settings.history.runs_days,
            "quiet_runs": min(settings.history.quiet_runs_days, settings.history.runs_days),
            "journal": settings.history.journal_days,
            "work_items": settings.history.work_days,
            "quarantine": settings.history.quarantine_days,
            "api_audit": settings.api.audit_retention_days,
        },
    )


def _retention(
    settings: Settings, customer_id: str, system: str, language: Language = "en"
) -> list[str]:
    customer = settings.customer(customer_id)
    interval, hours = settings.sync.interval_seconds, settings.erasure.deadline_hours
    if language == "no":
        first = (
            "en kontakt blir værende så lenge den står på kundekortet: kundens instruks fjerner den"
            if system == settings.sync.authority
            else "en kontakt som fjernes fra kundekortet, slettes her ved neste"
            f" synkronisering (hvert {interval}. sekund)"
        )
        rules = [
            first,
            "alt om kunden slettes her når den ber om sletting eller avtalen opphører"
            f" (frist {hours} timer)",
        ]
        rule = {
            "outlook": "e-post i mappen {where!r} slettes {days} dager etter at den ble mottatt",
            "firestore": "dokumenter i {where!r} på kortet slettes {days} dager etter siste"
            " endring",
        }.get(system)
    else:
        first = (
            "a contact stays while it is on the customer card: the customer's instruction"
            " removes it"
            if system == settings.sync.authority
            else "a contact removed from the customer card is deleted here at the next sync"
            f" (every {interval} s)"
        )
        rules = [
            first,
            "everything of the customer is deleted here when it asks for erasure or its"
            f" contract ends (deadline {hours} h)",
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
    if system == "outlook" and customer.outlook is not None and customer.outlook.retention_days:
        mailbox = customer.outlook.scope
        if any(
            c.id != customer.id and c.outlook is not None and c.outlook.scope == mailbox
            for c in settings.customers
        ):
            rules.append(
                "e-post som også er en annen kundes i den samme postboksen, slettes først når"
                " også den kundens regler tillater det"
                if language == "no"
                else "mail that is also another customer's in the same mailbox is deleted only"
                " when that customer's rules let it go too"
            )
    return rules


def _activity(store: Store, customer_id: str, now: datetime) -> Activity:
    since = now - timedelta(days=ACTIVITY_DAYS)
    # A month of syncs is tens of thousands of runs: counted in the store, and only
    # those that changed something (and the retention runs) read.
    tally = store.tally_runs(customer_id=customer_id, since=since)
    changed = store.list_runs(
        customer_id=customer_id, since=since, kind="sync", applied_only=True, limit=100_000
    )
    retention = store.list_runs(
        customer_id=customer_id, since=since, kind="retention", limit=100_000
    )
    changes = sum(
        int(n)
        for r in changed
        for key, n in dict(r.summary.get("applied") or {}).items()
        if str(key).endswith(".applied")
    )
    deleted: dict[str, int] = {}
    kept: dict[str, int] = {}
    for r in retention:
        for system, part in r.summary.items():
            if isinstance(part, dict):
                n = int(dict(part.get("results") or {}).get("applied", 0))
                if n:
                    deleted[str(system)] = deleted.get(str(system), 0) + n
                n = int(part.get("kept_shared") or 0)
                if n:
                    kept[str(system)] = kept.get(str(system), 0) + n
    completed = tally.get(("sync", "completed"))
    return Activity(
        syncs=sum(t.runs for (kind, _), t in tally.items() if kind == "sync"),
        syncs_failed=tally["sync", "failed"].runs if ("sync", "failed") in tally else 0,
        changes=changes,
        retention_runs=len(retention),
        deleted_by_retention=sum(deleted.values()),
        last_sync=completed.last_finished if completed else None,
        deleted_by_system=dict(sorted(deleted.items())),
        kept_shared_by_system=dict(sorted(kept.items())),
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
    "kept_shared": {
        "en": "kept as another customer's too, under its rules",
        "no": "beholdt som også en annen kundes, etter dens regler",
    },
    "nothing": {"en": "nothing", "no": "ingenting"},
    "last_sync": {"en": "last sync", "no": "siste synkronisering"},
    "erasures": {"en": "Erasure requests", "no": "Slettebegjæringer"},
    "completed": {"en": "completed", "no": "fullført"},
    "open": {"en": "open", "no": "åpne"},
    "casework": {"en": "Open casework", "no": "Åpne saker"},
    "disputes": {"en": "disputes", "no": "tvister"},
    "manual_tasks": {"en": "manual tasks", "no": "manuelle oppgaver"},
    "quarantined_records": {"en": "quarantined records", "no": "oppføringer i karantene"},
    "never": {"en": "never", "no": "aldri"},
    "own_records": {
        "en": "pdsync's records of its own work are kept (days)",
        "no": "pdsyncs registreringer om eget arbeid lagres (dager)",
    },
    "runs": {"en": "runs and their events", "no": "kjøringer og hendelser"},
    "quiet_runs": {
        "en": "runs without changes (then counted per day)",
        "no": "kjøringer uten endringer (deretter talt per dag)",
    },
    "journal": {"en": "operation journal", "no": "operasjonsjournal"},
    "work_items": {"en": "work queue", "no": "arbeidskø"},
    "quarantine": {"en": "quarantine", "no": "karantene"},
    "api_audit": {"en": "API audit log", "no": "API-revisjonslogg"},
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
    "12 mail messages (outlook), 3 card documents (firestore)"; "nothing" when none.
    What they kept as another customer's too follows, where there is any."""
    text = _per_system(activity.deleted_by_system, language) or _WORDS["nothing"][language]
    if activity.kept_shared_by_system:
        kept = _per_system(activity.kept_shared_by_system, language)
        text += f"; {_WORDS['kept_shared'][language]}: {kept}"
    return text


def _per_system(counts: Mapping[str, int], language: Language) -> str:
    return ", ".join(f"{counted(system, n, language)} ({system})" for system, n in counts.items())


def render_text(report: ProcessingReport, language: Language = "en") -> str:
    """The report as plain text in English or Norwegian: the built-in register, the
    rules and what the systems keep are translated; text from the config is shown as
    configured."""

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
            f"  {w('service')}: {translated(section.service, language)}",
            f"  {w('categories')}: "
            + ", ".join(translated(c, language) for c in section.categories),
        ]
        if section.location:
            lines.append(f"  {w('location')}: {section.location}")
        lines.append(f"  {w('contacts')}: {section.contacts}")
        rules = section.retention_no if language == "no" and section.retention_no else None
        lines += [f"  {w('retention')}: {rule}" for rule in rules or section.retention]
        lines += [
            f"  {w('residuals')}: {translated(r.what, language)},"
            f" {translated(r.retention, language)}"
            for r in section.residuals
        ]
    a = report.activity
    lines += [
        "",
        f"{w('activity')}: {a.syncs} {w('syncs')} ({a.syncs_failed} {w('failed')}),"
        f" {a.changes} {w('changes')}, {a.retention_runs} {w('retention_runs')},"
        f" {w('deleted')}: {describe_deleted(a, language)}; {w('last_sync')}: {when(a.last_sync)}",
        f"{w('erasures')}: {report.erasures_completed} {w('completed')},"
        f" {report.erasures_open} {w('open')}",
        f"{w('casework')}: " + ", ".join(f"{w(k)} {v}" for k, v in report.open_casework.items()),
        f"{w('own_records')}: "
        + ", ".join(f"{w(k)} {v}" for k, v in report.own_records_days.items()),
    ]
    return "\n".join(lines) + "\n"


def translated(text: str, language: Language) -> str:
    """`text` in `language` where it is one of pdsync's own (the built-in register of
    subprocessors, what the connectors say each system keeps after a deletion); text from
    the config or unknown text as it is."""
    if language == "no":
        return NORWEGIAN.get(text, text)
    return text


# pdsync's own English texts that reports and certificates show, in Norwegian: the
# built-in register (daemon/config.py DEFAULT_SUBPROCESSORS) and the connectors'
# residuals().
NORWEGIAN: dict[str, str] = {
    "Telephony system: the switchboard's directory": "Telefonisystem: sentralbordets katalog",
    "names of the customer's departments and employees": "navn på kundens avdelinger og ansatte",
    "phone numbers": "telefonnumre",
    "The customer card": "Kundekortet",
    "the customer's instructions": "kundens instrukser",
    "names": "navn",
    "job titles": "stillingstitler",
    "e-mail addresses": "e-postadresser",
    "Sending and receiving e-mail": "Sending og mottak av e-post",
    "messages and information from the customer": "meldinger og opplysninger fra kunden",
    "messages sent to the customer on behalf of callers": "meldinger sendt til kunden på"
    " vegne av innringere",
    "contacts (names, job titles, phone numbers, e-mail addresses)": "kontakter (navn,"
    " stillingstitler, telefonnumre, e-postadresser)",
    # Firestore
    "Point-in-time recovery (PITR)": "Gjenoppretting til et tidspunkt (PITR)",
    "up to 7 days, where PITR is enabled on the database": "opptil 7 dager, der PITR er slått"
    " på for databasen",
    "Deleted documents can be read from earlier versions until then.": "Slettede dokumenter"
    " kan leses fra tidligere versjoner fram til da.",
    "Scheduled backups and exports": "Planlagte sikkerhetskopier og eksporter",
    "as long as the backup schedule keeps them (up to 14 weeks)": "så lenge planen for"
    " sikkerhetskopier beholder dem (opptil 14 uker)",
    "Backups taken before the deletion keep the data until they expire.": "Sikkerhetskopier"
    " tatt før slettingen beholder dataene til de utløper.",
    # Zisson
    "Zisson's backups, call logs and statistics": "Zissons sikkerhetskopier, samtalelogger"
    " og statistikk",
    "not published; per Zisson's data processing agreement": "ikke offentliggjort; etter"
    " Zissons databehandleravtale",
    "Ask Zisson to confirm deletion from backups and logs where needed.": "Be Zisson bekrefte"
    " sletting fra sikkerhetskopier og logger der det trengs.",
    # Outlook
    "Recoverable Items (Purges) of the mailbox": "Gjenopprettbare elementer (Purges) i postboksen",
    "14 days by default; up to 30 days as the mailbox is configured": "14 dager som"
    " standard; opptil 30 dager etter hvordan postboksen er satt opp",
    "Holds on the mailbox (Litigation Hold, eDiscovery or Purview retention)": "Tilbakeholdelse"
    " på postboksen (Litigation Hold, eDiscovery eller Purview-oppbevaring)",
    "as long as the hold or retention policy says, possibly indefinitely": "så lenge"
    " tilbakeholdelsen eller oppbevaringsregelen sier, muligens uten tidsgrense",
    "Contacts deleted where Graph has no permanentDelete for contacts, and contacts removed"
    " by sync (DELETE)": "Kontakter slettet der Graph ikke har permanentDelete for kontakter,"
    " og kontakter fjernet ved synkronisering (DELETE)",
    "in Deleted Items until it is emptied, then as Recoverable Items": "i Slettede elementer"
    " til mappen tømmes, deretter som gjenopprettbare elementer",
    "permanentDelete moves a message there: no mail client or Graph call can reach it, and"
    " Exchange removes it when the deleted item retention ends.": "permanentDelete flytter"
    " meldingen dit: ingen e-postklient eller Graph-kall når den, og Exchange fjerner den"
    " når oppbevaringstiden for slettede elementer er ute.",
    "a held item stays in Recoverable Items whatever pdsync deletes; check the tenant's holds"
    " before promising erasure.": "et element under tilbakeholdelse blir i gjenopprettbare"
    " elementer uansett hva pdsync sletter; sjekk leietakerens tilbakeholdelser før sletting"
    " loves.",
    "DELETE is a soft delete in Exchange; erasure uses permanentDelete wherever Graph offers"
    " it for contacts.": "DELETE er en myk sletting i Exchange; sletting bruker"
    " permanentDelete der Graph tilbyr det for kontakter.",
}
