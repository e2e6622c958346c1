"""The Outlook connector against Graph as Microsoft documents it (issue 11): a cloud
without message permanentDelete, expired delta links answered with 400/404/410, the
invisible link marker and the migration of the old category marker, a certificate msal
cannot use, HTTP/2 on or off, and a `$search` cut at 250 hits."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.base import FatalError
from connectors.outlook import MARKER, OutlookSettings, ResyncRequired
from connectors.outlook.wire import mailbox_label
from daemon.domain import ItemRef, OpStatus, Subject
from daemon.erasure import OutlookEraser
from sandbox.graph_sim import GraphSimulator
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_contacts import create, record
from tests.integration.test_outlook_harness import Connect, OutlookWorld

# Fixtures shared by the test_outlook_* modules (tests/fixtures/ is another engineer's).
outlook = harness.outlook
outlook_connect = harness.outlook_connect


def _refs(world: OutlookWorld, ids: set[str]) -> list[ItemRef]:
    return [
        ItemRef(system="outlook", kind="message", id=i, scope=world.mailbox) for i in sorted(ids)
    ]


# -- 1. a cloud without message permanentDelete ----------------------------------------------


async def test_without_message_purge_mail_is_deleted_down_into_purges_and_named(
    outlook_connect: Connect,
) -> None:
    with GraphSimulator(seed=5, national_cloud=True) as sim:
        world = outlook_connect(sim)
        first = {
            world.message("inbox", subject="a"),
            world.message("deleteditems", subject="b"),
            world.message("recoverableitemsdeletions", subject="c"),
        }
        later = {world.message("inbox", subject=f"d{i}") for i in range(3)}
        kept = world.message("inbox", subject="not erased")
        label = mailbox_label(world.mailbox)
        assert label not in str(world.connector.residuals())  # nothing to name yet

        statuses = await world.connector.erase(world.customer, _refs(world, first))
        assert {s for _, s in statuses} == {OpStatus.APPLIED}
        assert world.remaining() == later | {kept}  # out of every folder Graph shows
        assert world.purged() == first  # in Recoverable Items/Purges

        sim.reset_counters()
        statuses = await world.connector.erase(world.customer, _refs(world, later))
        assert {s for _, s in statuses} == {OpStatus.APPLIED}
        assert world.remaining() == {kept}
        counters = sim.counters
        assert counters["permanent_deletes"] == 0 and counters["deletes"] == 9  # 3 steps each
        assert "POST /users/{user}/messages/{message}/permanentDelete" not in counters

        # The certificate and the report take residuals from the eraser: the mailbox is named.
        named = [r for r in OutlookEraser(world.connector).residuals() if "Purges" in r.what]
        assert any(label in r.what and "14 days" in r.retention for r in named)
        assert world.mailbox not in str(named)  # a label, never the address


# -- 2. expired delta links: 410 with Location, 404 and 400 with sync-state codes --------------


@pytest.mark.parametrize("status", [410, 404, 400])
async def test_an_expired_delta_link_asks_for_a_resync_whatever_4xx_it_is(
    outlook: OutlookWorld, status: int
) -> None:
    ops = [create(f"link-{i}", record(random.Random(i))) for i in range(3)]
    await outlook.connector.apply(outlook.customer, ops)
    _, _, cursor = await outlook.connector.changes(outlook.customer, None)

    outlook.sim.expire_delta_tokens(status)  # type: ignore[arg-type]
    with pytest.raises(ResyncRequired):
        await outlook.connector.changes(outlook.customer, cursor)
    full, removed, _ = await outlook.connector.changes(outlook.customer, None)
    assert len(full.records) == 3 and removed == []


# -- 3. the link marker: invisible, found by a filtered query; old markers migrated -----------


async def test_the_link_marker_is_invisible_and_survives_a_user_tidying_categories(
    outlook: OutlookWorld,
) -> None:
    op = create("link-1", record(random.Random(1)))
    (made,) = await outlook.connector.apply(outlook.customer, [op])
    (contact,) = outlook.contacts()
    assert contact["categories"] == []
    outlook.sim.patch_contact(outlook.mailbox, contact["id"], {"categories": []})  # a user
    (again,) = await outlook.connector.apply(outlook.customer, [op])  # a replay
    assert again.status is OpStatus.APPLIED and again.external_id == made.external_id
    assert len(outlook.contacts()) == 1 and outlook.links() == ["link-1"]
    assert outlook.sim.counters["GET /users/{user}/contactFolders/{cfolder}/contacts"] >= 1


async def test_category_markers_are_migrated_on_the_next_sync(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim)
    await world.connector.read(world.customer)  # the folder exists
    folder = world.folder_id()
    old = {
        link: graph_sim.add_contact(
            world.mailbox,
            folder,
            {"givenName": f"Kari {link}", "categories": [MARKER + link, "Kunde A"]},
        )
        for link in ("old-1", "old-2")
    }
    # A connector of this version, started after the upgrade: the next sync reads.
    fresh = outlook_connect(graph_sim, binding={"mailbox": world.mailbox})
    fresh.customer = world.customer
    result = await fresh.connector.read(world.customer)
    assert fresh.connector.contacts.migrated == 2
    assert [c["categories"] for c in world.contacts()] == [["Kunde A"], ["Kunde A"]]
    assert world.links() == ["old-1", "old-2"]
    versions = {r.external_id: r.version for r in result.records}
    now = {c["id"]: c["@odata.etag"] for c in world.contacts()}
    assert versions == now  # the records read carry the versions after the migration

    # A replayed create of an old link finds its contact: no duplicate.
    (replay,) = await fresh.connector.apply(
        world.customer, [create("old-1", record(random.Random(3)))]
    )
    assert replay.status is OpStatus.APPLIED and replay.external_id == old["old-1"]
    assert len(world.contacts()) == 2


async def test_many_creates_are_found_by_one_listing(outlook: OutlookWorld) -> None:
    ops = [create(f"many-{i}", record(random.Random(i))) for i in range(30)]
    first = await outlook.connector.apply(outlook.customer, ops)
    again = await outlook.connector.apply(outlook.customer, ops)
    assert [r.external_id for r in again] == [r.external_id for r in first]
    assert {r.status for r in again} == {OpStatus.APPLIED}
    assert len(outlook.contacts()) == 30


# -- 4. a certificate msal cannot use -------------------------------------------------------


async def test_a_certificate_msal_cannot_use_is_named_as_such(
    graph_sim: GraphSimulator, outlook_connect: Connect, tmp_path: Path
) -> None:
    world = outlook_connect(graph_sim)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pdsync")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    graph_sim.add_app(
        world.client_id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
    )
    path = tmp_path / "ec.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    ec_world = outlook_connect(graph_sim, certificate_file=path, client_id=world.client_id)
    with pytest.raises(FatalError) as raised:
        await ec_world.connector.read(ec_world.customer)
    message = str(raised.value)
    assert "RSA key" in message and str(path) in message
    assert "OIDC" not in message and "tenant_id" not in message


# -- 6. HTTP/2: the default, served by the simulator as by Graph; HTTP/1.1 when turned off ----


@pytest.mark.parametrize("http2", [True, False])
async def test_the_connector_speaks_http2_by_default_and_http1_when_told(
    graph_sim: GraphSimulator, outlook_connect: Connect, http2: bool
) -> None:
    assert OutlookSettings.model_fields["http2"].default is True
    world = outlook_connect(graph_sim, **({} if http2 else {"http2": False}))
    ops = [create(f"h{i}", record(random.Random(i))) for i in range(30)]  # $batch and paging
    await world.connector.apply(world.customer, ops)
    assert len((await world.connector.read(world.customer)).records) == 30
    assert (graph_sim.counters["http2_connections"] > 0) is http2


# -- 7. a search cut at 250 hits --------------------------------------------------------------


async def test_a_search_cut_at_250_leaves_nothing_behind_with_the_default_cap(
    outlook_connect: Connect,
) -> None:
    with GraphSimulator(seed=7, search_cap=250) as sim:
        world = outlook_connect(sim, page_size=200)
        naming = {world.message(subject=f"Ring Åse Bjørnstad #{i}", body="x") for i in range(300)}
        subject = Subject(names=("Åse Bjørnstad",))
        refs = await world.connector.locate_messages(world.customer, subject)
        assert world.ids(refs) == naming  # not the 250 the search returned
        assert world.connector.mail.scans >= 1
        await world.connector.erase(world.customer, refs)
        assert world.remaining() == set()
        assert await world.connector.verify_absent(world.customer, subject) == []
