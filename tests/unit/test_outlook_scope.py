"""What of the service mailbox is one customer's (connectors/outlook/scope.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connectors.outlook.scope import MailScope, domain_suffixes, in_domains

SCOPE = MailScope.of(["folder-a", "folder-a-sub"], ["kunde-a.no"], ["Ola.Privat@Gmail.com"])


def message(folder: str = "inbox", **people: str) -> dict[str, Any]:
    found: dict[str, Any] = {"parentFolderId": folder}
    for field, address in people.items():
        entry = {"emailAddress": {"name": "", "address": address}}
        found[field] = [entry] if field.endswith("Recipients") else entry
    return found


def test_a_customers_folders_and_addresses_are_its_scope() -> None:
    assert SCOPE.holds(message("folder-a-sub", sender="x@kunde-b.no"))
    assert SCOPE.holds(message(sender="per@avd.KUNDE-A.no"))
    assert SCOPE.holds(message(ccRecipients="ola.privat@gmail.com"))
    assert SCOPE.holds(message(replyTo="x@kunde-a.no"))
    assert not SCOPE.holds(message("folder-b", sender="x@kunde-a.no.evil.com"))
    assert not SCOPE.holds(message(sender="ola.privat@gmail.com.evil.com"))
    assert not SCOPE.holds(message(toRecipients="kola.privat@gmail.com"))


def test_names_alone_count_only_inside_the_customers_folders() -> None:
    name, phone = (("name", 0),), (("phone", 0), ("name", 0))
    assert SCOPE.holds_match(message("folder-a", sender="x@kunde-b.no"), name)
    assert not SCOPE.holds_match(message(sender="per@kunde-a.no"), name)
    assert SCOPE.holds_match(message(sender="per@kunde-a.no"), phone)
    assert not SCOPE.holds_match(message(sender="per@kunde-b.no"), phone)
    assert not SCOPE.holds_match(message("folder-a"), ())  # nothing matched, nothing held


def test_where_no_customer_folder_is_only_addresses_count() -> None:
    deletions = SCOPE.without_folders()
    assert not deletions.holds_match(message("folder-a", sender="x@kunde-b.no"), (("phone", 0),))
    assert deletions.holds_match(message("folder-a", sender="x@kunde-a.no"), (("phone", 0),))


LABEL = st.text(alphabet="abkno-æ1", min_size=1, max_size=4)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@given(
    local=st.text(alphabet="olaper.@", max_size=6),
    domain=DOMAIN,
    domains=st.lists(DOMAIN, max_size=4),
    dot=st.booleans(),
)
def test_an_address_is_in_the_domains_among_its_domain_suffixes_and_no_others(
    local: str, domain: str, domains: list[str], dot: bool
) -> None:
    # The retention run looks holders up by suffix (mail.py); the scope asks in_domains.
    address = f"{local}@{domain}{'.' if dot else ''}"
    suffixes = domain_suffixes(address)
    assert in_domains(address, domains) == any(d in suffixes for d in domains)
    assert suffixes[0] == domain and all(domain.endswith(s) for s in suffixes)
