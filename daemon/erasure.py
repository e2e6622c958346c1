"""Erasure: one data subject, or a whole customer, across every system and our store.

A request is a durable state machine in the store:

    received -> planned -> (awaiting_approval) -> executing -> verifying -> completed
                                                                         \\-> failed
    (cancelled from any open state before executing)

`advance` moves a request as far as it can go and is safe to call again at any time:
after a crash it resumes where it stopped, and every item is deleted once. Rate limits
are the connectors' business (they wait, they do not fight).

A subject is erased on evidence (daemon/identity.py). Each locate phase (plan, sweep,
verify) reads the directory systems (the customer card, Zisson) once, weighs the
subject's identifiers against every record they hold, and classifies each item found:
one that holds a personal identifier of the subject is erased; one found only by
identifiers several people share (the switchboard number, `post@`) or by a name is
*ambiguous*, shown in the plan with its evidence and left alone unless an admin
includes it by its item id (`zisson:k3f7q2ma`). The plan's weights are kept: once the
subject's own record is gone, an identifier it shared with one colleague does not turn
into that colleague's "personal" one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from connectors.base import Connector, ConnectorError
from daemon import identity
from daemon.certificate import MaskedIdentifiers
from daemon.certificate.evidence import left_alone_groups
from daemon.config import Settings
from daemon.domain import (
    ContactRecord,
    Customer,
    ItemRef,
    Operation,
    OpKind,
    OpStatus,
    Residual,
    Subject,
)
from daemon.identity import Evidence, IdKind, Match, Strength
from daemon.store import Store
from daemon.store.rows import ErasureItemRow, ErasureRow, ErasureState, NewErasureItem
from daemon.threads import in_thread
from daemon.token_vault import own_token_accounts

log = structlog.get_logger("pdsync.erasure")

T = TypeVar("T")

OPEN_STATES = (
    ErasureState.RECEIVED,
    ErasureState.PLANNED,
    ErasureState.AWAITING_APPROVAL,
    ErasureState.EXECUTING,
    ErasureState.VERIFYING,
)
# An item of a plan as people copy it: the system, and 8 characters of base32.
ITEM_ID = re.compile(r"[a-z][a-z0-9_]{0,31}:[a-z2-7]{8}")
ITEM_ID_EXAMPLE = "zisson:k3f7q2ma"


class ErasureError(Exception):
    """A request cannot be made or moved; the message says why (no personal data)."""


# Bidirectional formatting characters: they reorder what a terminal or a PDF shows.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_reason(reason: str) -> None:
    """ErasureError when a reason is empty or holds a control character.

    A reason is shown on terminals (`erasures show`), printed on the certificate and
    kept in the ledger: an escape sequence, a line break or a bidi override there
    would change what people read. One check for the CLI, the API and the dashboard."""
    if not reason.strip():
        raise ErasureError("give a reason (--reason): it goes on the certificate")
    for position, char in enumerate(reason, 1):
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI:
            raise ErasureError(
                f"the reason holds a control character (U+{ord(char):04X} at position"
                f" {position}): write it as plain text on one line"
            )


def item_id(system: str, kind: str, external_id: str) -> str:
    """A short id of an item found for an erasure, for people to copy (`--include`): the
    same for the same item in every plan of any request, so an id a `--plan` printed
    names the item in the request made after it. (A digest of the system's own id,
    which is no personal data; 40 bits tell apart the items one erasure finds.)"""
    digest = hashlib.sha256(f"{kind}\x00{external_id}".encode()).digest()
    return f"{system}:{base64.b32encode(digest).decode('ascii').lower()[:8]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Erased:
    ref: ItemRef
    status: OpStatus
    instruction: str | None = None  # for MANUAL: what an operator must do (encrypted)
    # A card: how many documents went with it (the card and everything below it).
    documents: int | None = None


class Eraser(Protocol):
    """What erasure needs of one system.

    `locate` finds the subject's items, each ref's `matched` naming which of the
    subject's identifiers it holds (the service weighs them); `personal_emails` are the
    subject's addresses the customer's directory holds personal, which may widen a
    search beyond the customer's own folders (Outlook's mail from or to the person).
    `verify_absent` is `locate` again after erasing, as the system checks absence.
    """

    system: str

    async def locate(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]: ...

    async def verify_absent(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]: ...

    async def locate_customer(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]: ...

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]: ...

    def residuals(self) -> list[Residual]: ...


class Recorder(Protocol):
    """Where erasure steps are recorded as proof (the ledger)."""

    def record(self, kind: str, *, customer_id: str | None = None, **payload: Any) -> Any: ...

    def record_many(
        self, entries: Sequence[tuple[str, Mapping[str, Any]]], *, customer_id: str | None = None
    ) -> Any: ...


def _matched(evidence: Evidence) -> tuple[tuple[str, int], ...]:
    return tuple((str(m.kind), m.position) for m in evidence.matches)


class DirectoryEraser:
    """Erasure through a directory connector: read, match, delete (Firestore, Zisson).

    Its records are also what the customer's identity Directory is made of: the service
    reads them once per locate phase (`records`) and weighs each itself."""

    def __init__(
        self,
        connector: Connector,
        *,
        has_card: Callable[[Customer], Awaitable[bool]] | None = None,
        delete_card: Callable[[Customer], Awaitable[int]] | None = None,
    ) -> None:
        self.connector = connector
        self.system = connector.system
        # What only a whole-customer erasure removes: the Firestore card document and
        # every subcollection below it.
        self._has_card = has_card
        self._delete_card = delete_card
        self.card_documents = 0  # documents a failed card delete removed, not yet recorded

    async def records(self, customer: Customer) -> list[ContactRecord]:
        """Every contact the system holds for `customer`."""
        result = await self.connector.for_customer(customer).read(customer)
        return list(result.records)

    def ref(self, customer: Customer, record: ContactRecord, evidence: Evidence) -> ItemRef:
        return ItemRef(
            system=self.system,
            kind="contact",
            id=record.external_id,
            scope=customer.id,
            matched=_matched(evidence),
        )

    async def locate(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        """Every record holding an identifier of `subject`, weighed by this system's
        records alone (the service weighs against every directory system at once)."""
        records = await self.records(customer)
        directory = identity.Directory(records)
        found = ((r, directory.evidence(subject, r)) for r in records)
        return [self.ref(customer, r, evidence) for r, evidence in found if evidence]

    async def verify_absent(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        return await self.locate(customer, subject, personal_emails=personal_emails)

    async def locate_customer(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]:
        # A directory holds each customer apart: nothing here is another customer's.
        result = await self.connector.for_customer(customer).read(customer)
        refs = [
            ItemRef(system=self.system, kind="contact", id=r.external_id, scope=customer.id)
            for r in result.records
        ]
        refs += [
            ItemRef(system=self.system, kind="rejected", id=r.external_id, scope=customer.id)
            for r in result.rejected
            if r.external_id
        ]
        if self._has_card is not None and await self._has_card(customer):
            refs.append(ItemRef(system=self.system, kind="card", id=customer.id, scope=customer.id))
        return refs

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]:
        contacts = [r for r in refs if r.kind in ("contact", "rejected")]
        ops = [
            Operation(
                op_id=Operation.make_id("erase", self.system, r.id),
                kind=OpKind.DELETE,
                system=self.system,
                # One "link" per item: connectors run ops of different links in parallel.
                link_id=f"erasure:{r.id}",
                external_id=r.id,
            )
            for r in contacts
        ]
        results = await self.connector.for_customer(customer).apply(customer, ops) if ops else []
        erased = [
            Erased(ref=ref, status=result.status, instruction=result.instruction)
            for ref, result in zip(contacts, results, strict=True)
        ]
        for ref in refs:
            if ref.kind == "card" and self._delete_card is not None:
                try:
                    documents = await self._delete_card(customer)
                except ConnectorError as exc:
                    # Some went: counted, and the rest is tried again on the next pass.
                    self.card_documents += int(getattr(exc, "deleted", 0) or 0)
                    raise
                self.card_documents += documents
                erased.append(Erased(ref=ref, status=OpStatus.APPLIED, documents=documents))
        return erased

    def residuals(self) -> list[Residual]:
        residuals: Callable[[], list[Residual]] | None = getattr(self.connector, "residuals", None)
        return residuals() if residuals else []


class OutlookEraser:
    """Erasure in Outlook: the connector finds mail and contacts itself (KQL search,
    exact filters, a client-side re-check, within the customer's scope) and deletes
    them for good."""

    system = "outlook"

    def __init__(self, connector: Any) -> None:
        self.connector = connector

    async def locate(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        return list(await self.connector.locate(customer, subject, personal_emails=personal_emails))

    async def verify_absent(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        return list(
            await self.connector.verify_absent(customer, subject, personal_emails=personal_emails)
        )

    async def locate_customer(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]:
        return list(await self.connector.locate_customer(customer, neighbours=neighbours))

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]:
        results = await self.connector.erase(customer, list(refs))
        return [Erased(ref=ref, status=status) for ref, status in results]

    def residuals(self) -> list[Residual]:
        return list(self.connector.residuals())


# -- weighing the evidence -----------------------------------------------------------------


def _weaker(a: Strength, b: Strength) -> Strength:
    """Personal only if both say so: shared (or a name) wins."""
    if Strength.NAME in (a, b):
        return Strength.NAME
    if Strength.SHARED in (a, b):
        return Strength.SHARED
    return Strength.PERSONAL


Strengths = Mapping[tuple[IdKind, int], Strength]


def strengths_to_list(strengths: Strengths) -> list[dict[str, object]]:
    """As stored on the request: [{kind, position, strength}], no identifier values."""
    return Evidence(
        matches=tuple(
            Match(kind=kind, position=position, strength=strength)
            for (kind, position), strength in sorted(strengths.items())
        )
    ).to_list()


def strengths_from_list(items: Iterable[Mapping[str, Any]]) -> dict[tuple[IdKind, int], Strength]:
    return {(m.kind, m.position): m.strength for m in Evidence.from_list(items).matches}


def subject_directory(
    records: Iterable[ContactRecord], subject: Subject, rules: identity.IdentityRules
) -> identity.Directory:
    """The customer's Directory as an erasure of `subject` asks it: about the subject's
    identifiers only, so only they are counted."""
    asked = {identity.email_key(e) for e in subject.emails}
    asked |= {identity.phone_key(p) or p for p in subject.phones}
    return identity.Directory(records, rules, only=asked)


class Weighing:
    """A subject's identifiers weighed against the customer's directory.

    `planned` are the weights the plan gave (None while planning): an identifier is
    never weighed stronger than then. An identifier the subject shared with one
    colleague is personal to the colleague once the subject's record is erased; the
    sweep and the verification must not take the colleague for the subject.
    """

    def __init__(
        self, directory: identity.Directory, subject: Subject, planned: Strengths | None = None
    ) -> None:
        self.directory = directory
        self.subject = subject
        now = directory.subject_strengths(subject)
        self.strengths: dict[tuple[IdKind, int], Strength] = {
            key: _weaker(strength, (planned or {}).get(key, strength))
            for key, strength in now.items()
        }

    def _reweighed(self, evidence: Evidence) -> Evidence:
        return Evidence(
            matches=tuple(
                Match(
                    kind=m.kind,
                    position=m.position,
                    strength=_weaker(
                        m.strength, self.strengths.get((m.kind, m.position), m.strength)
                    ),
                )
                for m in evidence.matches
            )
        )

    def record(self, record: ContactRecord) -> Evidence:
        """Which of the subject's identifiers a directory record holds, weighed."""
        return self._reweighed(self.directory.evidence(self.subject, record))

    def found(self, matched: Sequence[tuple[str, int]]) -> Evidence:
        """The evidence of an item another system found (Outlook), by what it matched."""
        if matched:
            return self._reweighed(self.directory.classify(self.subject, matched))
        # A system that does not say which identifier it found: the item is the
        # subject's only when every identifier of the subject is personal.
        every = tuple(
            Match(kind=kind, position=position, strength=strength)
            for (kind, position), strength in sorted(self.strengths.items())
        )
        if all(m.strength is Strength.PERSONAL for m in every):
            return Evidence(matches=every)
        return Evidence(matches=tuple(m for m in every if m.strength is not Strength.PERSONAL))

    def personal(self) -> Subject:
        """The subject's personal e-mails and phones, in normal form."""
        s = self.strengths
        return Subject(
            emails=tuple(
                identity.email_key(e)
                for i, e in enumerate(self.subject.emails)
                if s[IdKind.EMAIL, i] is Strength.PERSONAL
            ),
            phones=tuple(
                identity.phone_key(p) or p
                for i, p in enumerate(self.subject.phones)
                if s[IdKind.PHONE, i] is Strength.PERSONAL
            ),
        )

    @property
    def nothing_personal(self) -> bool:
        """No identifier given is personal here: on its own, the request erases nothing."""
        return not any(s is Strength.PERSONAL for s in self.strengths.values())


@dataclass(frozen=True, kw_only=True, slots=True)
class Located:
    """An item found for an erasure, and why: its evidence (None in a whole-customer
    erasure, where everything goes)."""

    ref: ItemRef
    evidence: Evidence | None = None

    @property
    def item(self) -> str:
        return item_id(self.ref.system, self.ref.kind, self.ref.id)

    @property
    def ambiguous(self) -> bool:
        """Found, but not by a personal identifier (or, in a whole-customer erasure,
        another customer's too): left alone unless included."""
        if self.evidence is None:
            return self.ref.held_by_others
        return not self.evidence.personal

    def new_item(self) -> NewErasureItem:
        return NewErasureItem(
            system=self.ref.system,
            kind=self.ref.kind,
            item_id=self.ref.id,
            scope=self.ref.scope,
            status="ambiguous" if self.ambiguous else "pending",
            evidence=None if self.evidence is None else tuple(self.evidence.to_list()),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Preview:
    """What an erasure would do, changing nothing: every item found with its evidence,
    how the subject's identifiers weigh, and the store rows a customer erasure removes."""

    customer_id: str
    scope: str
    identifiers: MaskedIdentifiers
    located: tuple[Located, ...] = ()
    strengths: Mapping[tuple[IdKind, int], Strength] = field(default_factory=dict)
    systems: tuple[str, ...] = ()
    pdsync: Mapping[str, int] = field(default_factory=dict)

    def counts(self, *, ambiguous: bool = False) -> dict[str, dict[str, int]]:
        """Per system and kind: the items to be erased (or, `ambiguous`, left alone)."""
        counts: dict[str, dict[str, int]] = {system: {} for system in self.systems}
        for found in self.located:
            if found.ambiguous is ambiguous:
                kinds = counts.setdefault(found.ref.system, {})
                kinds[found.ref.kind] = kinds.get(found.ref.kind, 0) + 1
        if self.scope == "customer" and not ambiguous:
            counts["pdsync"] = dict(self.pdsync)
        return counts

    @property
    def nothing_personal(self) -> bool:
        """A subject request none of whose identifiers is personal here."""
        return self.scope == "subject" and not any(
            s is Strength.PERSONAL for s in self.strengths.values()
        )


def _json_subject(subject: Subject) -> str:
    return json.dumps(
        {"emails": subject.emails, "phones": subject.phones, "names": subject.names},
        ensure_ascii=False,
    )


def _subject_from_json(text: str) -> Subject:
    data = json.loads(text)
    return Subject(
        emails=tuple(data["emails"]), phones=tuple(data["phones"]), names=tuple(data["names"])
    )


def masked(subject: Subject | None) -> dict[str, Any]:
    return MaskedIdentifiers.of(subject or Subject()).to_dict()


def check_item_ids(items: Iterable[str]) -> list[str]:
    """The item ids, each checked (ErasureError names the first malformed one)."""
    checked = []
    for item in items:
        text = item.strip()
        if not ITEM_ID.fullmatch(text):
            raise ErasureError(
                f"{text[:40]!r} is not an item id from an erasure plan (like {ITEM_ID_EXAMPLE})"
            )
        if text not in checked:
            checked.append(text)
    return checked


class ErasureService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        erasers: Mapping[str, Eraser],
        *,
        recorder: Recorder | None = None,
        certify: Callable[[ErasureRow, list[Residual]], str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.erasers = erasers
        self.recorder = recorder
        self.certify = certify
        self.progress = progress or (lambda system, done, total: None)
        # The store work that grows with the request's items (thousands for a customer:
        # every contact and message), and the customer's purge, run here rather than on
        # the event loop the daemon's syncs and API share (daemon/threads.py).
        self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="erasure")

    async def _off_loop(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_thread(self._threads, call, *args, **kwargs)

    # -- making requests ---------------------------------------------------------------

    def _customer(self, customer_id: str) -> Customer:
        try:
            return self.settings.customer(customer_id).to_customer()
        except Exception as exc:  # ConfigError: unknown customer
            raise ErasureError(str(exc)) from None

    def _erasers_for(self, customer: Customer) -> dict[str, Eraser]:
        return {s: e for s, e in self.erasers.items() if s in customer.bindings}

    def request(
        self,
        customer_id: str,
        *,
        scope: str,
        subject: Subject | None,
        requested_by: str,
        reason: str,
        include: Sequence[str] = (),
    ) -> str:
        """Record a request (state `received`). Raises ErasureError for an unknown
        customer, a missing reason or one with control characters, a subject request
        without identifiers, or an `include` that is no item id.

        `include`: ids of ambiguous items (as a plan shows them) to erase all the same
        (a subject erasure's items found only by shared identifiers or a name; a
        whole-customer erasure's items another customer holds too); the plan applies
        them, and a request whose plan lacks one is cancelled, having erased nothing."""
        self._customer(customer_id)
        if scope not in ("subject", "customer"):
            raise ErasureError(f"scope must be 'subject' or 'customer', not {scope!r}")
        if scope == "subject" and not subject:
            raise ErasureError("a subject erasure needs at least one identifier")
        check_reason(reason)
        included = check_item_ids(include)
        earlier = [
            e
            for e in self.store.list_erasures(customer_id=customer_id, limit=10_000)
            if e.scope == "customer"
        ]
        for done in (e for e in earlier if e.state is ErasureState.COMPLETED):
            # Its key is destroyed: nothing of it can be read, found or erased again.
            raise ErasureError(
                f"customer {customer_id!r} was erased as a whole (erasure {done.id});"
                " nothing of it is left to erase: remove it from the config"
            )
        self.store.customer_key(customer_id)  # KeyDestroyed: shredded some other way
        ended = (ErasureState.COMPLETED, ErasureState.FAILED, ErasureState.CANCELLED)
        for open_one in (e for e in earlier if scope == "customer" and e.state not in ended):
            raise ErasureError(
                f"customer {customer_id!r} already has an open whole-customer erasure:"
                f" {open_one.id} ({open_one.state}); see `pdsync erasures show {open_one.id}`"
            )
        now = datetime.now(UTC).isoformat()
        request_id = self.store.create_erasure(
            customer_id,
            scope=scope,
            identifiers=_json_subject(subject or Subject()),
            masked=masked(subject),
            requested_by=requested_by,
            reason=reason,
            deadline=timedelta(hours=self.settings.erasure.deadline_hours),
            includes=[{"item": i, "by": requested_by, "at": now} for i in included],
        )
        self._record("erasure_received", customer_id, request_id, scope=scope)
        if included:
            self._record(
                "erasure_include_requested",
                customer_id,
                request_id,
                item_ids=included,
                by=requested_by,
            )
        log.info("erasure_received", request_id=request_id, customer=customer_id, scope=scope)
        return request_id

    async def preview(self, customer_id: str, *, scope: str, subject: Subject | None) -> Preview:
        """What an erasure would do, per system: each item with its evidence; changes
        nothing."""
        customer = self._customer(customer_id)
        located, weighing = await self._located(customer, scope, subject)
        return Preview(
            customer_id=customer_id,
            scope=scope,
            identifiers=MaskedIdentifiers.of(subject or Subject()),
            located=tuple(located),
            strengths=weighing.strengths if weighing is not None else {},
            systems=tuple(sorted(self._erasers_for(customer))),
            pdsync={"links": self.store.counts(customer_id)["links"]}
            if scope == "customer"
            else {},
        )

    def approve(self, request_id: str, *, approver: str) -> ErasureRow:
        row = self.store.get_erasure(request_id)
        if row.state is not ErasureState.AWAITING_APPROVAL:
            raise ErasureError(f"erasure {row.id} is {row.state}, not awaiting approval")
        if approver == row.requested_by:
            raise ErasureError("the admin who asked for an erasure cannot approve it")
        self.store.update_erasure(
            row.id,
            state=ErasureState.EXECUTING,
            expect=[ErasureState.AWAITING_APPROVAL],
            approved_by=approver,
            approved_at=datetime.now(UTC),
        )
        self._record("erasure_approved", row.customer_id, row.id, approved_by=approver)
        return self.store.get_erasure(row.id)

    def cancel(self, request_id: str, *, by: str) -> ErasureRow:
        row = self.store.get_erasure(request_id)
        cancellable = [ErasureState.RECEIVED, ErasureState.PLANNED, ErasureState.AWAITING_APPROVAL]
        if not self.store.update_erasure(
            row.id, state=ErasureState.CANCELLED, expect=cancellable, error=f"cancelled by {by}"
        ):
            raise ErasureError(f"erasure {row.id} is {row.state}: too late to cancel")
        self.store.forget_erasure_identifiers(row.id)
        self._record("erasure_cancelled", row.customer_id, row.id, by=by)
        return self.store.get_erasure(row.id)

    def include(self, request_id: str, items: Sequence[str], *, by: str) -> ErasureRow:
        """Erase ambiguous items of a request all the same, by their ids in its plan.

        Before the plan exists (state `received`) the ids are kept for it; after, each
        must name an item of the plan (ErasureError, changing nothing, if one does not).
        Too late once the request is executing. Recorded in the ledger."""
        row = self.store.get_erasure(request_id)
        wanted = check_item_ids(items)
        if not wanted:
            raise ErasureError("name at least one item to include")
        if row.state is ErasureState.RECEIVED:
            now = datetime.now(UTC).isoformat()
            known = {str(i["item"]) for i in row.includes}
            includes = [
                *row.includes,
                *({"item": i, "by": by, "at": now} for i in wanted if i not in known),
            ]
            if self.store.update_erasure(row.id, includes=includes, expect=[ErasureState.RECEIVED]):
                self._record(
                    "erasure_include_requested", row.customer_id, row.id, item_ids=wanted, by=by
                )
                return self.store.get_erasure(row.id)
            row = self.store.get_erasure(row.id)  # planned meanwhile: include in the plan
        if row.state not in (ErasureState.PLANNED, ErasureState.AWAITING_APPROVAL):
            raise ErasureError(f"erasure {row.id} is {row.state}: too late to include items")
        unknown = self._include(row, wanted, by=by)
        if unknown:
            raise ErasureError(
                f"erasure {row.id}: no item of its plan is {unknown[0]}"
                + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + ": nothing included"
            )
        return self.store.get_erasure(row.id)

    def _include(self, row: ErasureRow, wanted: Sequence[str], *, by: str) -> list[str]:
        """Include the plan's items named by `wanted`; returns the ids it lacks (and
        then includes nothing)."""
        by_id: dict[str, list[ErasureItemRow]] = defaultdict(list)
        for item in self.store.erasure_items(row.id):
            by_id[item_id(item.system, item.kind, item.item_id)].append(item)
        unknown = [w for w in wanted if w not in by_id]
        if unknown:
            return unknown
        chosen = [
            (item.system, item.kind, item.item_id)
            for w in wanted
            for item in by_id[w]
            if item.status == "ambiguous"
        ]
        if self.store.include_erasure_items(row.id, chosen, by=by):
            plan = self._plan_counts(row.id)
            self.store.update_erasure(row.id, plan=plan)
            self._record(
                "erasure_included",
                row.customer_id,
                row.id,
                item_ids=[w for w in wanted if any(i.status == "ambiguous" for i in by_id[w])],
                by=by,
                plan=plan,
            )
        return []

    # -- carrying them out ---------------------------------------------------------------

    async def advance(self, request_id: str, *, until: ErasureState | None = None) -> ErasureRow:
        """Move the request as far as it can go now (or until it reaches `until`); safe
        to repeat after any crash.

        Its store work, ledger entries and certificate are made on the erasure thread,
        not on the event loop every customer's sync and the API share."""
        off_loop = self._off_loop
        row = await off_loop(self.store.get_erasure, request_id)
        customer = self._customer(row.customer_id)
        for _ in range(6):  # at most one pass through every state
            state = row.state
            if state is until:
                break
            if state is ErasureState.RECEIVED:
                await self._plan(row, customer)
            elif state is ErasureState.PLANNED:
                await off_loop(self._gate, row)
            elif state is ErasureState.EXECUTING:
                await self._execute(row, customer)
            elif state is ErasureState.VERIFYING:
                await self._verify(row, customer)
            row = await off_loop(self.store.get_erasure, row.id)
            if row.state is state or row.state not in OPEN_STATES:
                break
        return row

    async def advance_all(self) -> list[ErasureRow]:
        """The daemon's worker: every open request, oldest first."""
        listed = await self._off_loop(self.store.list_erasures, open_only=True)
        rows = sorted(listed, key=lambda r: r.requested_at)
        done = []
        for row in rows:
            if row.state is ErasureState.AWAITING_APPROVAL:
                continue
            try:
                done.append(await self.advance(row.id))
            except ConnectorError as exc:
                log.warning("erasure_delayed", request_id=row.id, error=str(exc))
        return done

    def _subject(self, row: ErasureRow) -> Subject | None:
        if row.scope == "customer":
            return None
        return _subject_from_json(self.store.erasure_identifiers(row.id))

    async def _located(
        self,
        customer: Customer,
        scope: str,
        subject: Subject | None,
        *,
        planned: Strengths | None = None,
        verifying: bool = False,
    ) -> tuple[list[Located], Weighing | None]:
        """One locate phase: every item found, with its evidence, and the weighing."""
        erasers = self._erasers_for(customer)
        if scope == "customer":
            # Each system at once: the slowest system's rate limit bounds the erasure,
            # not the sum of them all. What another customer holds too (a shared
            # mailbox) comes marked, and is left alone unless included.
            neighbours = [c.to_customer() for c in self.settings.customers if c.id != customer.id]
            found = await asyncio.gather(
                *(e.locate_customer(customer, neighbours=neighbours) for e in erasers.values())
            )
            return [Located(ref=r) for refs in found for r in refs], None
        assert subject is not None
        directories = {s: e for s, e in erasers.items() if isinstance(e, DirectoryEraser)}
        # The directory systems are read once, and make the customer's Directory.
        read = await asyncio.gather(*(e.records(customer) for e in directories.values()))
        directory = subject_directory(
            (r for records in read for r in records), subject, self.settings.sync.policy().identity
        )
        weighing = Weighing(directory, subject, planned)
        located = []
        for eraser, records in zip(directories.values(), read, strict=True):
            for record in records:
                evidence = weighing.record(record)
                if evidence:
                    located.append(
                        Located(ref=eraser.ref(customer, record, evidence), evidence=evidence)
                    )
        personal_emails = weighing.personal().emails
        others = [e for s, e in erasers.items() if s not in directories]
        found = await asyncio.gather(
            *(
                (e.verify_absent if verifying else e.locate)(
                    customer, subject, personal_emails=personal_emails
                )
                for e in others
            )
        )
        located += [
            Located(ref=r, evidence=weighing.found(r.matched)) for refs in found for r in refs
        ]
        return located, weighing

    async def _plan(self, row: ErasureRow, customer: Customer) -> None:
        off_loop = self._off_loop
        subject = await off_loop(self._subject, row)
        located, weighing = await self._located(customer, row.scope, subject)
        includes = (await off_loop(self.store.get_erasure, row.id)).includes
        if includes:
            found = {found.item for found in located}
            missing = sorted({str(i["item"]) for i in includes} - found)
            if missing:
                await off_loop(self._cancel_unplanned, row, missing)
                return
        if weighing is not None:
            assert subject is not None
            await off_loop(self._tombstone, row, weighing, subject)
        items = [found.new_item() for found in located]
        await off_loop(self.store.add_erasure_items, row.id, items, phase="plan")
        by_who: dict[str, list[str]] = defaultdict(list)
        for include in includes:
            by_who[str(include["by"])].append(str(include["item"]))
        for who, wanted in by_who.items():
            await off_loop(self._include, row, wanted, by=who)
        plan = await off_loop(self._plan_counts, row.id)
        await off_loop(
            self.store.update_erasure,
            row.id,
            state=ErasureState.PLANNED,
            expect=[ErasureState.RECEIVED],
            plan=plan,
            strengths=None if weighing is None else strengths_to_list(weighing.strengths),
        )
        # An include that came in while this plan was being made goes in now.
        applied = {str(i["item"]) for i in includes}
        late: dict[str, list[str]] = defaultdict(list)
        for include in (await off_loop(self.store.get_erasure, row.id)).includes:
            if str(include["item"]) not in applied:
                late[str(include["by"])].append(str(include["item"]))
        for who, wanted in late.items():
            unknown = await off_loop(self._include, row, wanted, by=who)
            if unknown:
                await off_loop(
                    self._record,
                    "erasure_include_unmatched",
                    row.customer_id,
                    row.id,
                    item_ids=unknown,
                    by=who,
                )
        if late:
            plan = await off_loop(self._plan_counts, row.id)
        ambiguous = _kind_counts(
            await off_loop(self.store.erasure_items, row.id, status="ambiguous")
        )
        shared = (
            0
            if weighing is None
            else sum(1 for s in weighing.strengths.values() if s is Strength.SHARED)
        )
        await off_loop(
            self._record,
            "erasure_planned",
            row.customer_id,
            row.id,
            plan=plan,
            ambiguous=ambiguous,
            shared_identifiers=shared,
        )
        if weighing is not None and weighing.nothing_personal:
            log.warning("erasure_nothing_personal", request_id=row.id, customer=row.customer_id)

    def _tombstone(self, row: ErasureRow, weighing: Weighing, subject: Subject) -> None:
        """Tombstones before anything is erased: from now on no sync re-creates this
        person anywhere. On personal identifiers only: a later hire who has the
        switchboard number, or the same name, is somebody else."""
        key = self.store.customer_key(row.customer_id)
        personal = weighing.directory.personal_subject(subject)
        self.store.add_tombstones(row.customer_id, identity.tombstones(key, personal))

    def _cancel_unplanned(self, row: ErasureRow, missing: Sequence[str]) -> None:
        """An admin included an item the plan does not have: erase nothing, say why."""
        error = (
            f"--include {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + " is no item this erasure found; nothing was erased. Ask again with ids"
            " from its plan."
        )
        if self.store.update_erasure(
            row.id, state=ErasureState.CANCELLED, expect=[ErasureState.RECEIVED], error=error
        ):
            self.store.forget_erasure_identifiers(row.id)
            self._record(
                "erasure_cancelled", row.customer_id, row.id, by="plan", item_ids=list(missing)
            )

    def _plan_counts(self, request_id: str) -> dict[str, dict[str, int]]:
        """Per system and kind, the items the request erases (not the ambiguous ones)."""
        plan: dict[str, dict[str, int]] = defaultdict(dict)
        for item in self.store.erasure_items(request_id):
            if item.status != "ambiguous":
                plan[item.system][item.kind] = plan[item.system].get(item.kind, 0) + 1
        return dict(plan)

    def _gate(self, row: ErasureRow) -> None:
        needs_approval = row.scope == "customer" and self.settings.erasure.require_second_admin
        state = ErasureState.AWAITING_APPROVAL if needs_approval else ErasureState.EXECUTING
        self.store.update_erasure(row.id, state=state, expect=[ErasureState.PLANNED])
        if needs_approval:
            log.warning("erasure_awaiting_approval", request_id=row.id, customer=row.customer_id)

    async def _erase_pending(self, row: ErasureRow, customer: Customer) -> None:
        pending = await self._off_loop(self.store.erasure_items, row.id, status="pending")
        by_system: dict[str, list[ItemRef]] = defaultdict(list)
        for item in pending:
            by_system[item.system].append(
                ItemRef(system=item.system, kind=item.kind, id=item.item_id, scope=item.scope)
            )
        await asyncio.gather(
            *(self._erase_system(row, customer, s, refs) for s, refs in sorted(by_system.items()))
        )

    async def _erase_system(
        self, row: ErasureRow, customer: Customer, system: str, refs: list[ItemRef]
    ) -> None:
        # Progress is persisted after every chunk: a crash repeats at most one chunk,
        # and a repeated delete of something already gone counts as done.
        batch = 500
        eraser = self.erasers[system]
        total, done = len(refs), 0
        for start in range(0, total, batch):
            chunk = refs[start : start + batch]
            try:
                results = await eraser.erase(customer, chunk)
            finally:
                await self._off_loop(self._note_card_documents, row, eraser)
            by_status: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
            tasks: list[tuple[str, str]] = []  # (item id, instruction) a person carries out
            for result in results:
                status = {
                    OpStatus.APPLIED: "done",
                    OpStatus.NOT_FOUND: "done",
                    OpStatus.MANUAL: "manual",
                }.get(result.status, "failed")
                by_status[status].append((system, result.ref.kind, result.ref.id))
                if result.status is OpStatus.MANUAL:
                    tasks.append((result.ref.id, result.instruction or f"delete {result.ref.id}"))
            for ref_id, instruction in tasks:
                await self._off_loop(
                    self.store.open_task,
                    row.customer_id,
                    system,
                    f"erasure:{row.id}",
                    "erase",
                    ref_id,
                    instruction,
                )
            for status, items in by_status.items():
                await self._off_loop(self.store.mark_erasure_items, row.id, items, status)
            done += len(chunk)
            self.progress(system, done, total)

    def _note_card_documents(self, row: ErasureRow, eraser: Eraser) -> None:
        """Add the documents a card delete removed (all of them, or those a failed one
        did) to the request's count, kept in the store across passes and crashes."""
        documents = getattr(eraser, "card_documents", 0)
        if not documents:
            return
        eraser.card_documents = 0  # type: ignore[attr-defined]
        so_far = self.store.get_erasure(row.id).card_documents
        self.store.update_erasure(row.id, card_documents=so_far + documents)

    def _planned(self, row: ErasureRow) -> Strengths | None:
        return strengths_from_list(row.strengths) if row.strengths else None

    async def _execute(self, row: ErasureRow, customer: Customer) -> None:
        await self._erase_pending(row, customer)
        # What arrived while we worked (a new message, a contact typed in) goes too,
        # weighed as the plan weighed the subject; so does an item included meanwhile.
        located, _ = await self._located(
            customer,
            row.scope,
            await self._off_loop(self._subject, row),
            planned=self._planned(row),
        )
        items = [found.new_item() for found in located]
        await self._off_loop(self.store.add_erasure_items, row.id, items, phase="sweep")
        await self._erase_pending(row, customer)
        if row.scope == "subject":
            await self._off_loop(self._forget_links, row)
        await self._off_loop(self._executed, row)

    def _executed(self, row: ErasureRow) -> None:
        self.store.update_erasure(
            row.id, state=ErasureState.VERIFYING, expect=[ErasureState.EXECUTING]
        )
        self._record(
            "erasure_executed",
            row.customer_id,
            row.id,
            items=dict(Counter(i.status for i in self.store.erasure_items(row.id))),
        )

    def _forget_links(self, row: ErasureRow) -> None:
        """Our own state about the erased contacts: their links and fingerprints."""
        for item in self.store.erasure_items(row.id):
            if item.kind != "contact" or item.status != "done":
                continue
            link_id = self.store.find_member(row.customer_id, item.system, item.item_id)
            if link_id is not None:
                self.store.remove_member(row.customer_id, link_id, item.system)

    async def _verify(self, row: ErasureRow, customer: Customer) -> None:
        subject = await self._off_loop(self._subject, row) if row.scope == "subject" else None
        items = await self._off_loop(self.store.erasure_items, row.id)
        located, _ = await self._located(
            customer, row.scope, subject, planned=self._planned(row), verifying=True
        )
        outcome = await self._off_loop(self._verified, row, customer, items, located)
        if outcome is not None:
            await self._complete(row, customer, outcome)

    def _verified(
        self,
        row: ErasureRow,
        customer: Customer,
        items: Sequence[ErasureItemRow],
        located: Sequence[Located],
    ) -> dict[str, Any] | None:
        """Each system's outcome, from the items erased and what a read finds now: the
        outcome when every system is verified clean (the request completes), else None
        (it waits for a person's manual step, or it failed: recorded here)."""
        # What counts as still there: an item the request erases (planned or included),
        # or one that holds a personal identifier of the subject. Ambiguous items left
        # alone are somebody else's as far as anyone can tell, and stay.
        erasing = {(i.system, i.kind, i.item_id) for i in items if i.status != "ambiguous"}
        outcome: dict[str, Any] = {}
        waiting = failed = False
        now = datetime.now(UTC).isoformat()
        for system in sorted(self._erasers_for(customer)):
            mine = [i for i in items if i.system == system and i.status != "ambiguous"]
            left = [i for i in items if i.system == system and i.status == "ambiguous"]
            remaining = [
                found
                for found in located
                if found.ref.system == system
                and (
                    not found.ambiguous
                    or (found.ref.system, found.ref.kind, found.ref.id) in erasing
                )
            ]
            counts = dict(Counter(i.kind for i in mine if i.status == "done"))
            if counts.get("card") and row.card_documents:
                counts["card"] = row.card_documents  # the documents under it, not one card
            manual = [i for i in mine if i.status == "manual"]
            if remaining and manual:
                result = "manual_pending"
                waiting = True
            elif remaining:
                result = "failed"
                failed = True
            elif not mine:
                result = "no_match"
            else:
                result = "executed"
                for task in self.store.list_tasks(customer_id=row.customer_id, open_only=True):
                    if task.link_id == f"erasure:{row.id}" and task.system == system:
                        self.store.close_task(task.id, "verified absent by read-back")
                if manual:
                    counts = dict(Counter(i.kind for i in mine))
            outcome[system] = {
                "outcome": result,
                "counts": counts,
                "verified_absent": not remaining,
                "remaining": len(remaining),
                "verified_at": now,
                "left_alone": _kind_counts(left),
                "left_alone_groups": left_alone_groups(
                    (item_id(i.system, i.kind, i.item_id), i.kind, i.evidence or ()) for i in left
                ),
                "included": sum(1 for i in mine if i.included_by),
            }
        if waiting:
            self.store.update_erasure(row.id, outcome=outcome)
            return None
        if failed:
            self.store.update_erasure(
                row.id,
                state=ErasureState.FAILED,
                outcome=outcome,
                error="data still present after erasing: see outcome",
            )
            self._record("erasure_failed", row.customer_id, row.id, outcome=_counts_only(outcome))
            log.error("erasure_failed", request_id=row.id, customer=row.customer_id)
            return None
        return outcome

    async def _complete(self, row: ErasureRow, customer: Customer, outcome: dict[str, Any]) -> None:
        if row.scope == "customer":
            accounts = own_token_accounts(self.settings, row.customer_id)
            noted = dict((row.outcome or {}).get("pdsync") or {})
            if noted.get("outcome") == "executed":
                outcome["pdsync"] = noted  # counted before a crash that came before the end
            else:
                # Count first and note it, so a crash after the purge does not leave the
                # certificate with the zeros a second purge would count.
                await self._off_loop(self._count_own, row, accounts, outcome)
            await self._off_loop(self._purge, row.customer_id, accounts)
        else:
            await self._off_loop(self.store.forget_erasure_identifiers, row.id)
        residuals = [r for e in self._erasers_for(customer).values() for r in e.residuals()]
        await self._off_loop(self._completed, row, outcome, residuals)

    def _count_own(
        self, row: ErasureRow, accounts: Sequence[tuple[str, str]], outcome: dict[str, Any]
    ) -> None:
        """What pdsync's own store holds of the customer, in `outcome` and noted."""
        counts = self.store.customer_rows(row.customer_id)
        counts["connector_secrets"] = sum(
            1 for system, account in accounts if self.store.connector_secret(system, account)
        )
        outcome["pdsync"] = {
            "outcome": "executed",
            "counts": {k: v for k, v in counts.items() if v},
            "verified_absent": True,
            "remaining": 0,
            "verified_at": datetime.now(UTC).isoformat(),
        }
        self.store.update_erasure(row.id, outcome=outcome)

    def _completed(
        self, row: ErasureRow, outcome: dict[str, Any], residuals: list[Residual]
    ) -> None:
        """The request completed: recorded, and its certificate made and kept."""
        completed_at = datetime.now(UTC)
        self.store.update_erasure(
            row.id,
            state=ErasureState.COMPLETED,
            expect=[ErasureState.VERIFYING],
            outcome=outcome,
            completed_at=completed_at,
        )
        self._record("erasure_completed", row.customer_id, row.id, outcome=_counts_only(outcome))
        if self.certify is not None:
            residuals.append(
                Residual(
                    system="pdsync",
                    what="Backups of pdsync's own store taken before the erasure",
                    retention=self.settings.store.backup_retention,
                    note="They hold the links, fingerprints and encrypted state the erasure"
                    " removed, and the customer's key wrapped under the master key.",
                )
            )
            certificate = self.certify(self.store.get_erasure(row.id), residuals)
            self.store.update_erasure(row.id, certificate=certificate)
        log.info("erasure_completed", request_id=row.id, customer=row.customer_id)

    def _purge(self, customer_id: str, accounts: Iterable[tuple[str, str]]) -> None:
        """Everything the store holds of the customer (its key crypto-shredded too), and
        the credentials to its own accounts (Zisson's token)."""
        self.store.purge_customer(customer_id)
        for system, account in accounts:
            self.store.forget_connector_secret(system, account)

    def _record(self, kind: str, customer_id: str, request_id: str, **payload: Any) -> None:
        if self.recorder is not None:
            self.recorder.record(kind, customer_id=customer_id, request_id=request_id, **payload)


def _kind_counts(items: Iterable[ErasureItemRow]) -> dict[str, int]:
    return dict(sorted(Counter(i.kind for i in items).items()))


def _counts_only(outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {
        system: {
            "outcome": o["outcome"],
            "counts": o["counts"],
            "verified": o["verified_absent"],
            **({"left_alone": o["left_alone"]} if o.get("left_alone") else {}),
        }
        for system, o in outcome.items()
    }
