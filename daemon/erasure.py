"""Erasure: one data subject, or a whole customer, across every system and our store.

A request is a durable state machine in the store:

    received -> planned -> (awaiting_approval) -> executing -> verifying -> completed
                                                                         \\-> failed
    (cancelled from any open state before executing)

`advance` moves a request as far as it can go and is safe to call again at any time:
after a crash it resumes where it stopped, and every item is deleted once. Rate limits
are the connectors' business (they wait, they do not fight).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from connectors.base import Connector, ConnectorError
from daemon import identity
from daemon.certificate import MaskedIdentifiers
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
from daemon.store import Store
from daemon.store.rows import ErasureRow, ErasureState
from daemon.token_vault import own_token_accounts

log = structlog.get_logger("pdsync.erasure")

OPEN_STATES = (
    ErasureState.RECEIVED,
    ErasureState.PLANNED,
    ErasureState.AWAITING_APPROVAL,
    ErasureState.EXECUTING,
    ErasureState.VERIFYING,
)


class ErasureError(Exception):
    """A request cannot be made or moved; the message says why (no personal data)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Erased:
    ref: ItemRef
    status: OpStatus
    instruction: str | None = None  # for MANUAL: what an operator must do (encrypted)


class Eraser(Protocol):
    """What erasure needs of one system."""

    system: str

    async def locate(self, customer: Customer, subject: Subject) -> list[ItemRef]: ...

    async def locate_customer(self, customer: Customer) -> list[ItemRef]: ...

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]: ...

    def residuals(self) -> list[Residual]: ...


class Recorder(Protocol):
    """Where erasure steps are recorded as proof (the ledger)."""

    def record(self, kind: str, *, customer_id: str | None = None, **payload: Any) -> Any: ...


class DirectoryEraser:
    """Erasure through a directory connector: read, match, delete (Firestore, Zisson)."""

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

    async def locate(self, customer: Customer, subject: Subject) -> list[ItemRef]:
        result = await self.connector.for_customer(customer).read(customer)
        directory = identity.Directory(result.records)
        refs = []
        for record in result.records:
            evidence = directory.evidence(subject, record)
            if evidence.personal:
                refs.append(
                    ItemRef(
                        system=self.system,
                        kind="contact",
                        id=record.external_id,
                        scope=customer.id,
                        matched=tuple((str(m.kind), m.position) for m in evidence.matches),
                    )
                )
        return refs

    async def locate_customer(self, customer: Customer) -> list[ItemRef]:
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
                await self._delete_card(customer)
                erased.append(Erased(ref=ref, status=OpStatus.APPLIED))
        return erased

    def residuals(self) -> list[Residual]:
        residuals: Callable[[], list[Residual]] | None = getattr(self.connector, "residuals", None)
        return residuals() if residuals else []


class OutlookEraser:
    """Erasure in Outlook: the connector finds mail and contacts itself (KQL search,
    exact filters, a client-side re-check) and deletes them for good."""

    system = "outlook"

    def __init__(self, connector: Any) -> None:
        self.connector = connector

    async def locate(self, customer: Customer, subject: Subject) -> list[ItemRef]:
        return list(await self.connector.locate(customer, subject))

    async def locate_customer(self, customer: Customer) -> list[ItemRef]:
        return list(await self.connector.locate_customer(customer))

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]:
        results = await self.connector.erase(customer, list(refs))
        return [Erased(ref=ref, status=status) for ref, status in results]

    def residuals(self) -> list[Residual]:
        return list(self.connector.residuals())


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
    ) -> str:
        """Record a request (state `received`). Raises ErasureError for an unknown
        customer, a missing reason, or a subject request without identifiers."""
        self._customer(customer_id)
        if scope not in ("subject", "customer"):
            raise ErasureError(f"scope must be 'subject' or 'customer', not {scope!r}")
        if scope == "subject" and not subject:
            raise ErasureError("a subject erasure needs at least one identifier")
        if not reason.strip():
            raise ErasureError("give a reason (--reason): it goes on the certificate")
        request_id = self.store.create_erasure(
            customer_id,
            scope=scope,
            identifiers=_json_subject(subject or Subject()),
            masked=masked(subject),
            requested_by=requested_by,
            reason=reason,
            deadline=timedelta(hours=self.settings.erasure.deadline_hours),
        )
        self._record("erasure_received", customer_id, request_id, scope=scope)
        log.info("erasure_received", request_id=request_id, customer=customer_id, scope=scope)
        return request_id

    async def preview(
        self, customer_id: str, *, scope: str, subject: Subject | None
    ) -> dict[str, dict[str, int]]:
        """What an erasure would delete, per system and kind; changes nothing."""
        customer = self._customer(customer_id)
        counts: dict[str, dict[str, int]] = {}
        for system, eraser in self._erasers_for(customer).items():
            refs = await self._locate(eraser, customer, scope, subject)
            counts[system] = dict(Counter(r.kind for r in refs))
        links = self.store.counts(customer_id)["links"] if scope == "customer" else 0
        counts["pdsync"] = {"links": links} if scope == "customer" else {}
        return counts

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

    # -- carrying them out ---------------------------------------------------------------

    async def advance(self, request_id: str) -> ErasureRow:
        """Move the request as far as it can go now; safe to repeat after any crash."""
        row = self.store.get_erasure(request_id)
        customer = self._customer(row.customer_id)
        for _ in range(6):  # at most one pass through every state
            state = row.state
            if state is ErasureState.RECEIVED:
                await self._plan(row, customer)
            elif state is ErasureState.PLANNED:
                self._gate(row)
            elif state is ErasureState.EXECUTING:
                await self._execute(row, customer)
            elif state is ErasureState.VERIFYING:
                await self._verify(row, customer)
            row = self.store.get_erasure(row.id)
            if row.state is state or row.state not in OPEN_STATES:
                break
        return row

    async def advance_all(self) -> list[ErasureRow]:
        """The daemon's worker: every open request, oldest first."""
        rows = sorted(self.store.list_erasures(open_only=True), key=lambda r: r.requested_at)
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

    async def _locate(
        self, eraser: Eraser, customer: Customer, scope: str, subject: Subject | None
    ) -> list[ItemRef]:
        if scope == "customer":
            return await eraser.locate_customer(customer)
        assert subject is not None
        return await eraser.locate(customer, subject)

    async def _locate_into(self, row: ErasureRow, customer: Customer, *, phase: str) -> int:
        subject = self._subject(row)
        erasers = list(self._erasers_for(customer).values())
        # Each system at once: the slowest system's rate limit bounds the erasure, not
        # the sum of them all.
        located = await asyncio.gather(
            *(self._locate(e, customer, row.scope, subject) for e in erasers)
        )
        return sum(
            self.store.add_erasure_items(
                row.id, [(r.system, r.kind, r.id, r.scope) for r in refs], phase=phase
            )
            for refs in located
        )

    async def _plan(self, row: ErasureRow, customer: Customer) -> None:
        if row.scope == "subject":
            # Tombstones first: from now on no sync re-creates this person anywhere.
            subject = self._subject(row)
            assert subject is not None
            key = self.store.customer_key(row.customer_id)
            self.store.add_tombstones(
                row.customer_id, identity.tombstones(key, await self._personal(customer, subject))
            )
        await self._locate_into(row, customer, phase="plan")
        plan: dict[str, dict[str, int]] = defaultdict(dict)
        for item in self.store.erasure_items(row.id):
            plan[item.system][item.kind] = plan[item.system].get(item.kind, 0) + 1
        self.store.update_erasure(
            row.id, state=ErasureState.PLANNED, expect=[ErasureState.RECEIVED], plan=dict(plan)
        )
        self._record("erasure_planned", row.customer_id, row.id, plan=dict(plan))

    async def _personal(self, customer: Customer, subject: Subject) -> Subject:
        """The subject's identifiers that are personal in the customer's directories."""
        records: list[ContactRecord] = []
        for eraser in self._erasers_for(customer).values():
            if isinstance(eraser, DirectoryEraser):
                result = await eraser.connector.for_customer(customer).read(customer)
                records += result.records
        rules = self.settings.sync.policy().identity
        return identity.Directory(records, rules).personal_subject(subject)

    def _gate(self, row: ErasureRow) -> None:
        needs_approval = row.scope == "customer" and self.settings.erasure.require_second_admin
        state = ErasureState.AWAITING_APPROVAL if needs_approval else ErasureState.EXECUTING
        self.store.update_erasure(row.id, state=state, expect=[ErasureState.PLANNED])
        if needs_approval:
            log.warning("erasure_awaiting_approval", request_id=row.id, customer=row.customer_id)

    async def _erase_pending(self, row: ErasureRow, customer: Customer) -> None:
        pending = self.store.erasure_items(row.id, status="pending")
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
            results = await eraser.erase(customer, chunk)
            by_status: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
            for result in results:
                status = {
                    OpStatus.APPLIED: "done",
                    OpStatus.NOT_FOUND: "done",
                    OpStatus.MANUAL: "manual",
                }.get(result.status, "failed")
                by_status[status].append((system, result.ref.kind, result.ref.id))
                if result.status is OpStatus.MANUAL:
                    self.store.open_task(
                        row.customer_id,
                        system,
                        f"erasure:{row.id}",
                        "erase",
                        result.ref.id,
                        result.instruction or f"delete {result.ref.id}",
                    )
            for status, items in by_status.items():
                self.store.mark_erasure_items(row.id, items, status)
            done += len(chunk)
            self.progress(system, done, total)

    async def _execute(self, row: ErasureRow, customer: Customer) -> None:
        await self._erase_pending(row, customer)
        # What arrived while we worked (a new message, a contact typed in) goes too.
        if await self._locate_into(row, customer, phase="sweep"):
            await self._erase_pending(row, customer)
        if row.scope == "subject":
            self._forget_links(row)
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
        subject = self._subject(row) if row.scope == "subject" else None
        items = self.store.erasure_items(row.id)
        outcome: dict[str, Any] = {}
        waiting = failed = False
        now = datetime.now(UTC).isoformat()
        for system, eraser in sorted(self._erasers_for(customer).items()):
            mine = [i for i in items if i.system == system]
            remaining = await self._locate(eraser, customer, row.scope, subject)
            counts = dict(Counter(i.kind for i in mine if i.status == "done"))
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
            }
        if waiting:
            self.store.update_erasure(row.id, outcome=outcome)
            return
        if failed:
            self.store.update_erasure(
                row.id,
                state=ErasureState.FAILED,
                outcome=outcome,
                error="data still present after erasing: see outcome",
            )
            self._record("erasure_failed", row.customer_id, row.id, outcome=_counts_only(outcome))
            log.error("erasure_failed", request_id=row.id, customer=row.customer_id)
            return
        await self._complete(row, customer, outcome)

    async def _complete(self, row: ErasureRow, customer: Customer, outcome: dict[str, Any]) -> None:
        if row.scope == "customer":
            accounts = own_token_accounts(self.settings, row.customer_id)
            noted = dict((row.outcome or {}).get("pdsync") or {})
            if noted.get("outcome") == "executed":
                outcome["pdsync"] = noted  # counted before a crash that came before the end
            else:
                # Count first and note it, so a crash after the purge does not leave the
                # certificate with the zeros a second purge would count.
                counts = self.store.customer_rows(row.customer_id)
                counts["connector_secrets"] = sum(
                    1
                    for system, account in accounts
                    if self.store.connector_secret(system, account)
                )
                outcome["pdsync"] = {
                    "outcome": "executed",
                    "counts": {k: v for k, v in counts.items() if v},
                    "verified_absent": True,
                    "remaining": 0,
                    "verified_at": datetime.now(UTC).isoformat(),
                }
                self.store.update_erasure(row.id, outcome=outcome)
            self.store.purge_customer(row.customer_id)  # crypto-shreds the key too
            # Credentials to the customer's own accounts go with it (Zisson's token).
            for system, account in accounts:
                self.store.forget_connector_secret(system, account)
        else:
            self.store.forget_erasure_identifiers(row.id)
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
            residuals = [r for e in self._erasers_for(customer).values() for r in e.residuals()]
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

    def _record(self, kind: str, customer_id: str, request_id: str, **payload: Any) -> None:
        if self.recorder is not None:
            self.recorder.record(kind, customer_id=customer_id, request_id=request_id, **payload)


def _counts_only(outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {
        system: {"outcome": o["outcome"], "counts": o["counts"], "verified": o["verified_absent"]}
        for system, o in outcome.items()
    }
