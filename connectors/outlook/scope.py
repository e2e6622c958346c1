"""What of the service mailbox is one customer's: the one rule locate, verify, a
whole-customer erasure and retention share.

One service mailbox holds every customer's mail, so whatever names a data subject is
looked at only where it is the customer's. A message is the customer's when

folder   it lies in one of the customer's `mail_folders` or a folder below one
         (`parentFolderId`); or
address  a participant (from, sender, to, cc, bcc, reply-to) has an address in one of
         the customer's `domains` or a subdomain of one ("ola@avd.kunde-a.no"; not
         "x@kunde-a.no.evil.com"), or one of the subject's personal addresses (the
         daemon passes those: daemon/identity.py decides what is personal).

For a subject, what matched counts too: a message whose only matches are names is the
customer's only inside its folders (a name is no evidence of whose mail it is; its
folders are). Mail in Recoverable Items/Deletions, or moved to Deleted Items, has left
every customer folder: there only the address rule holds.

Retention deletes, under one customer's rule, only what `holds` says is the customer's:
in a folder every customer's mail passes through (the shared inbox), another customer's
message is that customer's to keep or delete by its own rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.outlook.matching import NAME, Matched, participants
from daemon import normalize

# What the scope needs of a message beyond the participants the re-check reads.
FOLDER_FIELD = "parentFolderId"


@dataclass(frozen=True, slots=True)
class MailScope:
    """The customer's part of the service mailbox (see the module docstring)."""

    folder_ids: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    personal_emails: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        folder_ids: Iterable[str],
        domains: Iterable[str],
        personal_emails: Collection[str] = (),
    ) -> MailScope:
        return cls(
            folder_ids=frozenset(folder_ids),
            domains=tuple(d.casefold().rstrip(".") for d in domains),
            personal_emails=frozenset(normalize.email(e) for e in personal_emails if e),
        )

    def without_folders(self) -> MailScope:
        """The scope where no customer folder is (Recoverable Items/Deletions)."""
        return dataclasses.replace(self, folder_ids=frozenset())

    def in_folders(self, message: Mapping[str, Any]) -> bool:
        return message.get(FOLDER_FIELD) in self.folder_ids

    def by_address(self, message: Mapping[str, Any]) -> bool:
        """Whether a participant is at one of the domains or a personal address."""
        for address, _ in participants(message):
            if not address:
                continue
            if in_domains(address, self.domains):
                return True
            if normalize.email(address) in self.personal_emails:
                return True
        return False

    def holds(self, message: Mapping[str, Any]) -> bool:
        """Whether the message is the customer's at all (a whole-customer erasure,
        retention)."""
        return self.in_folders(message) or self.by_address(message)

    def holds_match(self, message: Mapping[str, Any], matched: Matched) -> bool:
        """Whether a message that holds `matched` of a subject is the customer's to
        report: names alone only inside its folders."""
        if not matched:
            return False
        if self.in_folders(message):
            return True
        if all(kind == NAME for kind, _ in matched):
            return False
        return self.by_address(message)


def in_domains(address: str, domains: Iterable[str]) -> bool:
    """Whether `address` (folded) is at one of `domains` or a subdomain of one."""
    domain = address.rpartition("@")[2].rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in domains)


def domain_suffixes(address: str) -> list[str]:
    """The domain of `address` (folded) and every domain above it, nearest first
    ("ola@avd.kunde-a.no": avd.kunde-a.no, kunde-a.no, no): the address is `in_domains`
    of exactly the domains among them."""
    labels = address.rpartition("@")[2].rstrip(".").split(".")
    return [".".join(labels[k:]) for k in range(len(labels))]
