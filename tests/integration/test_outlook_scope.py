"""One service mailbox, two customers: a subject erasure for one never reaches the
other's mail (issue 9). Against the Graph simulator; what happened is checked on the
simulator's side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from connectors.outlook import OutlookBinding
from daemon.domain import (
    ContactRecord,
    Customer,
    ItemRef,
    Operation,
    OpKind,
    OpStatus,
    Phone,
    Subject,
)
from sandbox.graph_sim import GraphSimulator
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import Connect, OutlookWorld

outlook_connect = harness.outlook_connect

# A's subject: a private address A's directory holds personal, a shared-looking address
# (several customers' people write from it), A's switchboard, and a name with particles.
SUBJECT = Subject(
    emails=("ola.vdberg@gmail.com", "post@felles.no"),
    phones=("22334455",),
    names=("Ola van der Berg",),
)
PERSONAL = ("ola.vdberg@gmail.com",)  # what the daemon passes: the personal addresses only
EMAIL, SHARED, PHONE, NAME = ("email", 0), ("email", 1), ("phone", 0), ("name", 0)


@dataclass
class TwoCustomers:
    world: OutlookWorld
    a: Customer
    b: Customer
    folder_a: str
    sub_a: str
    folder_b: str

    def message(self, folder: str, **fields: Any) -> str:
        return self.world.message(folder, **fields)

    async def locate(self, customer: Customer, personal: tuple[str, ...] = ()) -> list[ItemRef]:
        return await self.world.connector.locate(customer, SUBJECT, personal_emails=personal)


@pytest.fixture
def two(graph_sim: GraphSimulator, outlook_connect: Connect) -> TwoCustomers:
    world = outlook_connect(
        graph_sim,
        binding={
            "mail_folders": ["Kunde A"],
            "domains": ["kunde-a.no"],
            "contact_folder": "Kunde A – kontakter",
        },
    )
    binding_b = OutlookBinding(
        mailbox=world.mailbox,
        contact_folder="Kunde B – kontakter",
        mail_folders=("Kunde B",),
        domains=("kunde-b.no",),
    )
    b = Customer(id="kunde-b", name="Kunde B", bindings={"outlook": binding_b})
    folder_a = graph_sim.add_folder(world.mailbox, "Kunde A")
    sub_a = graph_sim.add_folder(world.mailbox, "Arkiv", parent=folder_a)
    folder_b = graph_sim.add_folder(world.mailbox, "Kunde B")
    return TwoCustomers(world, world.customer, b, folder_a, sub_a, folder_b)


def matched(refs: list[ItemRef]) -> dict[str, tuple[tuple[str, int], ...]]:
    return {ref.id: ref.matched for ref in refs if ref.kind == "message"}


async def test_a_subject_erasure_stays_within_the_customers_mail(
    two: TwoCustomers, graph_client: httpx.Client
) -> None:
    m = two.message
    a_mail = {
        # In A's folder tree: whatever it holds, names included.
        m(two.folder_a, subject="Beskjed", body="Ring van der Berg, Ola", sender="x@annen.no"): (
            NAME,
        ),
        m(two.sub_a, subject="Beskjed", body="Tlf 22 33 44 55", sender="x@annen.no"): (PHONE,),
        m(two.folder_a, subject="Fra felles", body="Hei", sender="post@felles.no"): (SHARED,),
        # From or to A's domain, anywhere: a number or an address, not a name alone.
        m("inbox", subject="Beskjed", body="Ring 22334455", sender="per@avd.kunde-a.no"): (PHONE,),
        # From or to the subject's personal address, anywhere.
        m("inbox", subject="Hei", body="Hilsen Ola", sender="ola.vdberg@gmail.com"): (EMAIL,),
        m(
            "sentitems",
            subject="Svar til Ola van der Berg",
            body="Hei",
            sender="svc@we4you.no",
            to=["Ola.VdBerg@gmail.com"],
        ): (EMAIL, NAME),
    }
    deleted = m("inbox", subject="Beskjed", body="22334455", sender="kari@kunde-a.no")
    a_mail[deleted] = (PHONE,)
    b_mail = {
        # B's mail naming A's subject: by name, by a number that is B's switchboard too,
        # by an address that is not A's subject's personal one.
        m(two.folder_b, subject="Ola van der Berg ringte", body="Hei", sender="x@kunde-b.no"),
        m(two.folder_b, subject="Sentralbord", body="Ring 22 33 44 55", sender="x@kunde-b.no"),
        m(two.folder_b, subject="Fra felles", body="Hei", sender="post@felles.no"),
        m(
            "inbox",
            subject="Beskjed",
            body="Ring 22334455",
            sender="kari@kunde-b.no",
            to=["post@felles.no"],
        ),
    }
    elsewhere = {
        # A name alone counts only inside A's folders, also on A's domain's mail.
        m("inbox", subject="Ola van der Berg", body="Hei", sender="per@kunde-a.no"),
        m("inbox", subject="Hei", body="Hilsen van der Berg, Ola", sender="x@annen.no"),
        # Nobody's: an unrelated sender, the shared address.
        m("inbox", subject="Beskjed", body="Ring 22334455", sender="x@annen.no"),
        m("inbox", subject="Hei", body="Hei", sender="post@felles.no"),
    }
    # A name-only message of A's folder, then deleted twice: out of every folder now.
    gone_from_folder = m(two.folder_a, subject="Ola van der Berg", body="Hei", sender="x@annen.no")
    elsewhere.add(gone_from_folder)
    for message_id in (deleted, deleted, gone_from_folder, gone_from_folder):
        answer = graph_client.delete(f"/users/{two.world.mailbox}/messages/{message_id}")
        assert answer.status_code == 204

    refs = await two.locate(two.a, PERSONAL)
    assert matched(refs) == a_mail
    # Without the personal address, only A's folders and domain say whose mail it is.
    without = await two.locate(two.a)
    assert set(matched(without)) == set(a_mail) - {
        i for i, held in a_mail.items() if held[0] == EMAIL
    }
    # The same subject at customer B finds B's mail, and none of A's.
    assert set(matched(await two.locate(two.b))) == b_mail

    statuses = await two.world.connector.erase(two.a, refs)
    assert {status for _, status in statuses} == {OpStatus.APPLIED}
    assert two.world.remaining() == b_mail | elsewhere  # on the simulator's side
    assert set(a_mail) <= two.world.purged()
    assert await two.world.connector.verify_absent(two.a, SUBJECT, personal_emails=PERSONAL) == []


async def test_contacts_carry_what_they_matched(two: TwoCustomers) -> None:
    def create(link: str, record: ContactRecord) -> Operation:
        return Operation(
            op_id=link, kind=OpKind.CREATE, system="outlook", link_id=link, values=record.values()
        )

    made = await two.world.connector.apply(
        two.a,
        [
            create(
                "ola",
                ContactRecord(
                    system="x",
                    external_id="",
                    display_name="van der Berg, Ola",
                    emails=("ola.vdberg@gmail.com",),
                ),
            ),
            create(
                "sentralbord",
                ContactRecord(
                    system="x",
                    external_id="",
                    display_name="Sentralbordet",
                    phones=(Phone(number="22 33 44 55"),),
                ),
            ),
            create(
                "annen",
                ContactRecord(
                    system="x",
                    external_id="",
                    display_name="Berg, Ola",
                    phones=(Phone(number="22 33 44 55 x12"),),
                ),
            ),
        ],
    )
    ola, board, _ = (str(r.external_id) for r in made)
    refs = await two.world.connector.locate_contacts(two.a, SUBJECT)
    assert {r.id: r.matched for r in refs} == {ola: (EMAIL, NAME), board: (PHONE,)}
