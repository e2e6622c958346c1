"""OutlookConnector: Outlook contacts and mail of the service mailboxes, through Graph."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import ClassVar

import httpx

from connectors.base import Capability, FatalError, RetryPolicy, customer_binding
from connectors.outlook.auth import TokenProvider
from connectors.outlook.directory import ContactDirectory
from connectors.outlook.graph import GraphClient
from connectors.outlook.limits import MailboxLease, MailboxTurns, WeightedLimiter
from connectors.outlook.mail import MailStore
from connectors.outlook.mapping import FIELDS, project
from connectors.outlook.matching import SubjectMatcher
from connectors.outlook.settings import OutlookBinding, OutlookSettings
from connectors.outlook.wire import SYSTEM, mailbox_label
from daemon.domain import (
    ContactRecord,
    Customer,
    ItemRef,
    Operation,
    OpResult,
    OpStatus,
    ReadResult,
    Residual,
    RetentionScan,
    Subject,
)


class OutlookConnector(GraphClient):
    """Outlook through Microsoft Graph (capabilities: directory, erasable, retention).

    Directory: each customer's contact folder in its service mailbox (directory.py).
    `project` is what an Outlook contact can hold (mapping.py); it is the same for every
    customer, so `for_customer` is the connector itself.

    Erasable: `locate(customer, subject, personal_emails=...)` finds the subject's
    messages within the customer's part of the service mailbox (mail.py, scope.py) and
    the subject's contacts in its contact folder, each ref carrying which of the
    subject's identifiers it holds (`matched`; the daemon weighs them); `erase(customer,
    refs)` deletes them for good; `verify_absent` locates again, in the same scope, and
    must come back empty. `locate_customer_mail` finds everything of a customer whose
    contract ends, `locate_customer` that and its contacts. Retention: `expired(customer,
    now)`.

    Raises only connector errors: AuthError (credentials), RetriableError (Graph
    unavailable beyond the retries), FatalError (configuration, a subject too vague to
    erase by), ResyncRequired (an expired delta cursor).
    """

    system: ClassVar[str] = SYSTEM
    capabilities: frozenset[Capability] = frozenset(
        {Capability.DIRECTORY, Capability.ERASABLE, Capability.RETENTION}
    )
    fields: frozenset[str] = FIELDS

    def __init__(
        self,
        settings: OutlookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        tokens: TokenProvider | None = None,
    ) -> None:
        super().__init__(settings, transport=transport, retry_policy=retry_policy, tokens=tokens)
        self.contacts = ContactDirectory(self)
        self.mail = MailStore(self)

    def share_mailboxes(self, lease: MailboxLease, **turns: float) -> MailboxTurns:
        """Take turns at each mailbox with the other instances holding `lease`, so that
        the mailbox's limits hold across all of them (limits.py); `turns`: MailboxTurns'
        timings."""
        assert isinstance(self.limiter, WeightedLimiter)
        self.limiter.turns = MailboxTurns(lease, self.budget, **turns)
        return self.limiter.turns

    async def aclose(self) -> None:
        if isinstance(self.limiter, WeightedLimiter) and self.limiter.turns is not None:
            await self.limiter.turns.close()
        await super().aclose()

    def project(self, record: ContactRecord) -> ContactRecord:
        return project(record)

    # -- directory ------------------------------------------------------------------------

    async def read(self, customer: Customer) -> ReadResult:
        result = await self.contacts.read(self.binding(customer))
        self.log.info(
            "read", customer=customer.id, records=len(result.records), rejected=len(result.rejected)
        )
        for rejected in result.rejected:
            self.log.warning("rejected", customer=customer.id, reason=rejected.reason)
        return result

    async def apply(self, customer: Customer, ops: Sequence[Operation]) -> list[OpResult]:
        results = await self.contacts.apply(self.binding(customer), ops)
        self.log_applied(customer, ops, results)
        return results

    async def changes(
        self, customer: Customer, cursor: str | None
    ) -> tuple[ReadResult, list[str], str]:
        """Contacts changed since `cursor` (None: all), removed ids, the next cursor.

        Raises ResyncRequired (a FatalError) when the cursor has expired on the server:
        call again with `cursor=None` and treat that result as the complete folder.
        """
        return await self.contacts.changes(self.binding(customer), cursor)

    # -- erasure --------------------------------------------------------------------------

    async def locate(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        """Every message and contact of `customer` that holds an identifier of `subject`.

        A message counts only in the customer's scope: in its `mail_folders` trees, or
        from or to one of its `domains` or one of `personal_emails` (the subject's
        addresses the daemon holds personal, normalised as daemon.normalize.email);
        one that matches by names alone only inside its folders. Each ref's `matched`
        names the subject's identifiers it holds, by kind and position.
        """
        messages = await self.locate_messages(customer, subject, personal_emails=personal_emails)
        return messages + await self.locate_contacts(customer, subject)

    async def locate_messages(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        binding = self.binding(customer)
        refs = await self.mail.locate(binding, _matcher(subject), personal_emails=personal_emails)
        self.log.info("located messages", customer=customer.id, items=len(refs))
        return refs

    async def locate_contacts(self, customer: Customer, subject: Subject) -> list[ItemRef]:
        binding = self.binding(customer)
        refs = await self.contacts.locate(binding, _matcher(subject))
        self.log.info("located contacts", customer=customer.id, items=len(refs))
        return refs

    async def erase(
        self, customer: Customer, refs: Sequence[ItemRef]
    ) -> list[tuple[ItemRef, OpStatus]]:
        """Delete `refs` for good (permanentDelete); APPLIED also for what was gone."""
        return await self.mail.erase(self.binding(customer), refs)

    async def verify_absent(
        self, customer: Customer, subject: Subject, *, personal_emails: Collection[str] = ()
    ) -> list[ItemRef]:
        """What Graph still shows of the subject in the customer's scope (as `locate`):
        empty after a complete erasure."""
        return await self.locate(customer, subject, personal_emails=personal_emails)

    async def locate_customer_mail(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]:
        """Every message in the customer's folders, and from or to its domains; those
        one of `neighbours` (the other customers) holds too are marked (mail.py)."""
        others = [self.binding(c) for c in neighbours if SYSTEM in c.bindings]
        refs = await self.mail.locate_customer_mail(self.binding(customer), neighbours=others)
        self.log.info("located customer mail", customer=customer.id, items=len(refs))
        return refs

    async def locate_customer(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]:
        """Everything Outlook holds of a customer whose contract ends: its mail (as
        `locate_customer_mail`, mail another customer holds too marked as such) and
        every contact in its contact folder."""
        binding = self.binding(customer)
        refs = await self.locate_customer_mail(customer, neighbours=neighbours)
        refs += await self.contacts.locate(binding, None)
        self.log.info("located customer", customer=customer.id, items=len(refs))
        return refs

    async def expired(
        self, customer: Customer, now: datetime, *, neighbours: Sequence[Customer] = ()
    ) -> RetentionScan:
        """The customer's messages older than its retention rules (per folder and the
        folders below it) at `now`; a rule that cannot be applied fails alone. A message
        that one of `neighbours` (the other customers) served from the same mailbox
        holds too is kept while that customer's rules keep it (mail.py)."""
        others = [self.binding(c) for c in neighbours if SYSTEM in c.bindings]
        return await self.mail.expired(self.binding(customer), now, neighbours=others)

    def residuals(self) -> list[Residual]:
        """What Exchange Online keeps after pdsync deletes, and for how long.

        Mailboxes found without message permanentDelete (national clouds, mail.py
        `erase`) are named, by their log label, with what their messages left behind.
        """
        deleted_down = [
            Residual(
                system=SYSTEM,
                what=f"Messages of mailbox {mailbox_label(scope)} erased without "
                "permanentDelete (not offered in this cloud): deleted down into "
                "Recoverable Items (Purges)",
                retention="held in Recoverable Items until the mailbox's deleted item "
                "retention ends: 14 days by default, up to 30 days as configured",
                note="Graph offers message permanentDelete in the global service only; here "
                "each message was deleted to Deleted Items, then from Recoverable Items "
                "(Deletions) into Purges, where no mail client or Graph call reaches it.",
            )
            for scope in sorted(self.mail.no_message_purge)
        ]
        return [
            *deleted_down,
            Residual(
                system=SYSTEM,
                what="Recoverable Items (Purges) of the mailbox",
                retention="14 days by default; up to 30 days as the mailbox is configured",
                note="permanentDelete moves a message there: no mail client or Graph call can "
                "reach it, and Exchange removes it when the deleted item retention ends.",
            ),
            Residual(
                system=SYSTEM,
                what="Holds on the mailbox (Litigation Hold, eDiscovery or Purview retention)",
                retention="as long as the hold or retention policy says, possibly indefinitely",
                note="a held item stays in Recoverable Items whatever pdsync deletes; check the "
                "tenant's holds before promising erasure.",
            ),
            Residual(
                system=SYSTEM,
                what="Contacts deleted where Graph has no permanentDelete for contacts, and "
                "contacts removed by sync (DELETE)",
                retention="in Deleted Items until it is emptied, then as Recoverable Items",
                note="DELETE is a soft delete in Exchange; erasure uses permanentDelete "
                "wherever Graph offers it for contacts.",
            ),
            Residual(
                system=SYSTEM,
                what="Exchange Online message trace (sender, recipients, subject)",
                retention="up to 90 days",
                note="kept by Microsoft for mail flow troubleshooting; Graph cannot erase it.",
            ),
        ]

    # -- plumbing -------------------------------------------------------------------------

    def binding(self, customer: Customer) -> OutlookBinding:
        """The customer's OutlookBinding (a mapping from config is validated here)."""
        return customer_binding(customer, SYSTEM, OutlookBinding)


def _matcher(subject: Subject) -> SubjectMatcher:
    if not subject:
        raise FatalError("outlook: the subject has no identifiers", system=SYSTEM)
    try:
        return SubjectMatcher(subject)
    except ValueError as exc:
        raise FatalError(f"outlook: {exc}", system=SYSTEM) from None
