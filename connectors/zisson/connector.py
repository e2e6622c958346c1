"""The Zisson connector: reads through the XML or JSON API, writes through write_api.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from connectors.base import (
    AuthError,
    Capability,
    ConflictError,
    ConnectorError,
    ContractError,
    FatalError,
    HttpConnectorBase,
    NotFoundError,
    RetriableError,
    RetryPolicy,
    customer_binding,
    tls_verify,
)
from connectors.file_vault import FileTokenVault
from connectors.vault import TokenVault
from connectors.zisson import instructions, json_api, write_api, xml_api
from connectors.zisson.auth import BasicSession, JwtSession
from connectors.zisson.projection import FIELDS, project, project_json, project_xml
from connectors.zisson.settings import ZissonApi, ZissonBinding, ZissonSettings
from connectors.zisson.tasks import run_all
from connectors.zisson.values import BadValues, coerce_values
from daemon.domain import (
    SYNC_FIELDS,
    ContactKind,
    ContactRecord,
    Customer,
    Operation,
    OpKind,
    OpResult,
    OpStatus,
    ReadResult,
    Rejected,
    Residual,
)

SYSTEM = "zisson"


class ZissonConnector(HttpConnectorBase):
    """Zisson, the telephony directory (capability: directory).

    One connector serves every customer; each customer's `ZissonBinding` says which API
    its account is read through. Both APIs hold every sync field, but not equally (see
    projection.py), so `project` depends on the API: `for_customer(customer)` (or
    `for_binding`) gives a view whose `project` is exact for that customer. The
    connector's own `project` is the JSON API's, the default.

    Writes follow `settings.write_mode`: "api" through the assumed contract in
    write_api.py, "manual" as MANUAL results with an operator instruction. A create or
    update is APPLIED only when Zisson shows it: the user answered (or read back) holds
    the intended values with a newer version; otherwise it is a CONFLICT naming the
    fields, retried with a new key next run. Every request is retried per `retry_policy`
    and limited per Zisson account.

    JSON-API accounts authenticate with a rotating refresh token kept in `vault`: by
    default each binding's `refresh_token_file` (one process); the daemon passes its
    store's vault, shared by every instance.
    """

    system: ClassVar[str] = SYSTEM
    capabilities: frozenset[Capability] = frozenset({Capability.DIRECTORY})
    fields: frozenset[str] = FIELDS

    def __init__(
        self,
        settings: ZissonSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        vault: TokenVault | None = None,
    ) -> None:
        verify = tls_verify(SYSTEM, settings.ca_bundle)
        super().__init__(
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            verify=verify,
            concurrency=settings.concurrency,
            retry_policy=retry_policy,
            transport=transport,
            headers={"User-Agent": "pdsync"},
            max_response_bytes=settings.max_response_bytes,
        )
        self.settings = settings
        self.vault: TokenVault = vault or FileTokenVault()
        self._sessions: dict[ZissonBinding, BasicSession | JwtSession] = {}
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._views = {api: ZissonApiView(self, api) for api in ("json", "xml")}

    # -- views ----------------------------------------------------------------------------

    def residuals(self) -> list[Residual]:
        return [
            Residual(
                system="zisson",
                what="Zisson's backups, call logs and statistics",
                retention="not published; per Zisson's data processing agreement",
                note="Ask Zisson to confirm deletion from backups and logs where needed.",
            )
        ]

    def for_binding(self, binding: ZissonBinding) -> ZissonApiView:
        return self._views[binding.api]

    def for_customer(self, customer: Customer) -> ZissonApiView:
        return self.for_binding(self.binding(customer))

    def project(self, record: ContactRecord) -> ContactRecord:
        """What the JSON API holds of `record`; use `for_customer(c).project` for XML customers."""
        return project_json(record)

    # -- reading --------------------------------------------------------------------------

    async def read(self, customer: Customer) -> ReadResult:
        binding = self.binding(customer)
        session = self._session(binding)
        if binding.api == "xml":
            entries = await xml_api.read_contacts(session)
        else:
            entries = await json_api.read_users(session, page_size=self.settings.page_size)
        records, rejected = _one_per_id(entries)
        self.log.info(
            "read",
            customer=customer.id,
            api=binding.api,
            records=len(records),
            rejected=len(rejected),
        )
        for entry in rejected:
            self.log.warning("rejected", customer=customer.id, reason=entry.reason)
        return ReadResult(records=tuple(records), rejected=tuple(rejected))

    # -- writing --------------------------------------------------------------------------

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        binding = self.binding(customer)
        if self.settings.write_mode == "manual":
            return await self._apply_manually(customer, binding, ops)
        results: dict[int, OpResult] = {}
        # Operations on one link run in order; different links run side by side.
        by_link: dict[str, list[int]] = {}
        for index, op in enumerate(ops):
            by_link.setdefault(op.link_id, []).append(index)

        async def run(indices: list[int]) -> None:
            for index in indices:
                results[index] = await self._apply_one(binding, ops[index])

        await run_all([functools.partial(run, indices) for indices in by_link.values()])
        ordered = [results[index] for index in range(len(ops))]
        self.log_applied(customer, ops, ordered)
        return ordered

    async def _apply_one(self, binding: ZissonBinding, op: Operation) -> OpResult:
        session = self._session(binding)
        try:
            if op.system != SYSTEM:
                raise BadValues(f"operation is for {op.system!r}, not zisson")
            # Both travel in HTTP headers (Idempotency-Key, If-Match), which are ASCII.
            if not op.op_id.isascii() or not (op.expected_version or "").isascii():
                raise BadValues("op_id and expected_version must be ASCII")
            values = coerce_values(op.values)
            if op.kind == OpKind.CREATE:
                record = project(binding.api, _blank().with_values(values))
                answer = await write_api.create_user(
                    session, write_api.user_body(record), idempotency_key=op.op_id
                )
                return await self._shown(
                    binding, op, answer, record, FIELDS, older=None, what="create user"
                )
            if not op.external_id:
                raise BadValues(f"{op.kind} needs the external_id")
            if op.kind == OpKind.UPDATE:
                if binding.api == "xml":
                    return await self._update_through_xml_view(binding, op, values)
                changed = project_json(_blank().with_values(values))
                answer = await write_api.update_user(
                    session,
                    op.external_id,
                    write_api.user_body(changed, values),
                    if_match=op.expected_version,
                    idempotency_key=op.op_id,
                )
                return await self._shown(
                    binding,
                    op,
                    answer,
                    changed,
                    frozenset(values),
                    older=op.expected_version,
                    what="update user",
                )
            if op.kind == OpKind.DELETE:
                await write_api.delete_user(
                    session, op.external_id, if_match=op.expected_version, idempotency_key=op.op_id
                )
                # Gone now or gone already: either way Zisson no longer holds it.
                return OpResult(op_id=op.op_id, status=OpStatus.APPLIED, external_id=op.external_id)
            raise BadValues(f"unknown operation kind {op.kind!r}")
        except ConflictError as exc:
            return _result(op, OpStatus.CONFLICT, str(exc))
        except NotFoundError as exc:
            return _result(op, OpStatus.NOT_FOUND, str(exc))
        except (AuthError, RetriableError):
            raise  # the whole system is unusable for now, not just this op
        except (FatalError, BadValues) as exc:
            return _result(op, OpStatus.FAILED, str(exc))

    async def _update_through_xml_view(
        self, binding: ZissonBinding, op: Operation, values: Mapping[str, Any]
    ) -> OpResult:
        """An UPDATE for an XML-API customer changes only what the XML view shows.

        The user is fetched first: which fields the XML shows depends on its kind, and
        the result must read back as the XML projection without disturbing what the XML
        view hides. E-mails and phones are replaced as a whole (extra ones would surface
        in the view otherwise).
        """
        assert op.external_id is not None
        session = self._session(binding)
        current = _parsed(await write_api.get_user(session, op.external_id), "get user")
        if op.expected_version is not None and current.version != op.expected_version:
            return _result(op, OpStatus.CONFLICT, "zisson: the user's version has changed")
        desired = project_xml(project_xml(current).with_values(values))
        names = set(values)
        if desired.kind is not current.kind:
            names |= {"kind", "given_name", "family_name", "display_name"}
        # Not shown by the XML view for this kind: left as Zisson holds them.
        names -= (
            {"given_name", "family_name"}
            if desired.kind is ContactKind.DEPARTMENT
            else {"display_name"}
        )
        body = {
            key: value
            for key, value in write_api.user_body(desired, names).items()
            if value != write_api.user_body(current, names).get(key)
        }
        if not body:
            return OpResult(
                op_id=op.op_id,
                status=OpStatus.APPLIED,
                external_id=current.external_id,
                version=current.version,
                record=project_xml(current),
            )
        answer = await write_api.update_user(
            session,
            op.external_id,
            body,
            if_match=current.version,
            idempotency_key=op.op_id,
        )
        # `desired` is the whole entry as the XML view should show it afterwards.
        return await self._shown(
            binding, op, answer, desired, FIELDS, older=current.version, what="update user"
        )

    async def _shown(
        self,
        binding: ZissonBinding,
        op: Operation,
        answer: write_api.Answer,
        intended: ContactRecord,
        fields: frozenset[str],
        *,
        older: str | None,
        what: str,
    ) -> OpResult:
        """APPLIED if Zisson shows the write: the answered user, or else a read-back of
        it, holds `intended` on `fields` with a version newer than `older`.

        A replayed answer is the first request's result under this key. For a create
        whose replay shows other values, that user may not be this write's at all, so it
        is not read back; the op is a CONFLICT and the next run writes under a new key.
        """
        api = binding.api
        user = project(api, _parsed(answer.user, what))
        unheld = _unheld(intended, user, fields, older)
        if not unheld:
            return _applied(op, user)
        if answer.replayed and op.kind is OpKind.CREATE:
            return _result(
                op,
                OpStatus.CONFLICT,
                f"zisson: {what} was answered with the replay of an earlier request under "
                f"this idempotency key, whose user does not hold the intended "
                f"{', '.join(unheld)}",
            )
        user_id = op.external_id if op.kind is OpKind.UPDATE else user.external_id
        assert user_id is not None
        try:
            fetched = await write_api.get_user(self._session(binding), user_id)
        except NotFoundError:
            if op.kind is OpKind.UPDATE:
                raise  # the target vanished meanwhile
            fetched = None
        if fetched is not None:
            user = project(api, _parsed(fetched, "get user"))
            unheld = _unheld(intended, user, fields, older)
            if not unheld:
                return _applied(op, user)
        replayed = " (a replayed answer)" if answer.replayed else ""
        return _result(
            op,
            OpStatus.CONFLICT,
            f"zisson: {what} was answered{replayed}, but neither the answer nor a read-back "
            f"shows the intended {', '.join(unheld)}",
        )

    async def _apply_manually(
        self, customer: Customer, binding: ZissonBinding, ops: Sequence[Operation]
    ) -> list[OpResult]:
        current: dict[str, ContactRecord] = {}
        if any(op.kind != OpKind.CREATE for op in ops):
            # Only to name the entries in the instructions; without it they give the id.
            try:
                current = {r.external_id: r for r in (await self.read(customer)).records}
            except ConnectorError as exc:
                self.log.warning(
                    "manual: no read for context", customer=customer.id, error=type(exc).__name__
                )
        return [self._manual(customer, binding.api, op, current) for op in ops]

    def _manual(
        self,
        customer: Customer,
        api: ZissonApi,
        op: Operation,
        current: Mapping[str, ContactRecord],
    ) -> OpResult:
        try:
            values = coerce_values(op.values)
            if op.kind == OpKind.CREATE:
                record = project(api, _blank().with_values(values))
                instruction = instructions.create(customer, api, record)
            elif not op.external_id:
                raise BadValues(f"{op.kind} needs the external_id")
            elif op.kind == OpKind.UPDATE:
                now = current.get(op.external_id)
                base = project(api, now or _blank())
                desired = project(api, base.with_values(values))
                # Knowing the entry, name only what really changes (a projection can
                # change more than the op names, e.g. a nameless department).
                changed = [n for n in SYNC_FIELDS if getattr(desired, n) != getattr(base, n)]
                instruction = instructions.update(
                    customer,
                    api,
                    op.external_id,
                    base if now else None,
                    desired,
                    changed if now and changed else list(values),
                )
            elif op.kind == OpKind.DELETE:
                instruction = instructions.delete(
                    customer, op.external_id, current.get(op.external_id)
                )
            else:
                raise BadValues(f"unknown operation kind {op.kind!r}")
        except BadValues as exc:
            return _result(op, OpStatus.FAILED, str(exc))
        return OpResult(
            op_id=op.op_id,
            status=OpStatus.MANUAL,
            external_id=op.external_id,
            instruction=instruction,
        )

    # -- plumbing -------------------------------------------------------------------------

    def binding(self, customer: Customer) -> ZissonBinding:
        """The customer's ZissonBinding (a mapping from config is validated here)."""
        return customer_binding(customer, SYSTEM, ZissonBinding)

    def _session(self, binding: ZissonBinding) -> BasicSession | JwtSession:
        session = self._sessions.get(binding)
        if session is None:
            if binding.api == "xml":
                session = BasicSession(self, binding)
            else:
                # One lock per account, so no two sessions ever spend the same refresh token.
                lock = self._refresh_locks.setdefault(binding.account, asyncio.Lock())
                session = JwtSession(self, binding, lock, self.vault)
            self._sessions[binding] = session
        return session


class ZissonApiView:
    """The Zisson connector as it applies to customers on one API.

    Reads and writes go to the connector; `project` is exact for `api`, so the law
    "write a record, read it back: you get `project(record)` on `fields`" holds.
    """

    system: str = SYSTEM
    capabilities: frozenset[Capability] = ZissonConnector.capabilities
    fields: frozenset[str] = FIELDS

    def __init__(self, connector: ZissonConnector, api: ZissonApi) -> None:
        self.connector = connector
        self.api: ZissonApi = api

    async def read(self, customer: Customer) -> ReadResult:
        self._check(customer)
        return await self.connector.read(customer)

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        self._check(customer)
        return await self.connector.apply(customer, ops)

    def project(self, record: ContactRecord) -> ContactRecord:
        return project(self.api, record)

    def for_customer(self, customer: Customer) -> ZissonApiView:
        return self.connector.for_customer(customer)

    def residuals(self) -> list[Residual]:
        return self.connector.residuals()

    async def aclose(self) -> None:
        """Nothing: the connector owns the HTTP client."""

    def _check(self, customer: Customer) -> None:
        api = self.connector.binding(customer).api
        if api != self.api:
            raise FatalError(
                f"zisson: customer {customer.id!r} uses the {api} API, this view is for {self.api}",
                system=SYSTEM,
            )


def _blank() -> ContactRecord:
    return ContactRecord(system=SYSTEM, external_id="")


def _parsed(user: Mapping[str, Any], what: str) -> ContactRecord:
    record = json_api.user_record(dict(user))
    if isinstance(record, Rejected):
        raise ContractError(
            f"zisson: {what} answered a user that cannot be read ({record.reason})", system=SYSTEM
        )
    return record


def _result(op: Operation, status: OpStatus, error: str) -> OpResult:
    return OpResult(op_id=op.op_id, status=status, external_id=op.external_id, error=error)


def _applied(op: Operation, record: ContactRecord) -> OpResult:
    return OpResult(
        op_id=op.op_id,
        status=OpStatus.APPLIED,
        external_id=record.external_id,
        version=record.version,
        record=record,
    )


def _unheld(
    intended: ContactRecord, held: ContactRecord, fields: frozenset[str], older: str | None
) -> list[str]:
    """The sync fields on which `held` is not `intended`, and the version when it is not
    newer than `older`: names only, never values."""
    unheld = [
        name
        for name in SYNC_FIELDS
        if name in fields and getattr(held, name) != getattr(intended, name)
    ]
    if older is not None and not _newer(held.version, older):
        unheld.append("version (not newer)")
    return unheld


def _newer(version: str | None, than: str) -> bool:
    if version is None:
        return False
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than  # opaque versions: a different one is a later one


def _one_per_id(
    entries: Sequence[tuple[ContactRecord | Rejected, str]],
) -> tuple[list[ContactRecord], list[Rejected]]:
    """Records and rejects; an id that comes twice with different content is rejected."""
    by_id: dict[str, list[tuple[ContactRecord, str]]] = {}
    rejected: list[Rejected] = []
    for entry, raw in entries:
        if isinstance(entry, Rejected):
            rejected.append(entry)
        else:
            by_id.setdefault(entry.external_id, []).append((entry, raw))
    records: list[ContactRecord] = []
    for external_id, copies in by_id.items():
        if all(record == copies[0][0] for record, _ in copies):
            records.append(copies[0][0])
            continue
        # Neither copy can be trusted; quarantined, not dropped, so nothing reads as deleted.
        rejected += [
            Rejected(
                system=SYSTEM,
                external_id=external_id,
                reason="id: appears more than once with different content",
                raw=raw,
            )
            for _, raw in copies
        ]
    return records, rejected
