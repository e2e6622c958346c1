"""A whole customer's erasure in ONE service mailbox shared by every customer: the sandbox
(Firestore emulator, Zisson and Graph simulators), two customers.

The erasure of customer A's contract end took everything of A's domains and folders,
also mail that is customer B's data as much: mail between the two in the shared inbox,
and mail in B's own folder that copies A. One customer's erasure is no instruction
about another customer's data: such mail is listed, left alone unless an admin includes
it by its id, and the certificate counts it. A's own folder stays A's alone.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pypdf
import pytest
from typer.testing import CliRunner

from daemon.certificate import Certificate, verify_certificate
from daemon.certificate.pdf import render_pdf
from daemon.cli import app as cli
from daemon.erasure import item_id
from daemon.proof import open_ledger
from daemon.store import ErasureState
from sandbox.up import SERVICE_MAILBOX, Sandbox, running
from tests.e2e import test_identity_mailbox as shared
from tests.e2e.test_identity_mailbox import Two

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

two = shared.two  # the fixture, over this module's own sandbox (A is erased here)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running(tmp_path_factory.mktemp("sandbox"), seed=6, customers=2, contacts=6) as box:
        yield box


async def test_a_customers_erasure_leaves_mail_that_is_another_customers_too(
    two: Two, cli_logging_restored: None
) -> None:
    a, b = two.box.customers
    at_a, at_b = f"post@{a.domains[0]}", f"post@{b.domains[0]}"

    def inbox(**message: Any) -> str:
        return two.box.graph.add_message(SERVICE_MAILBOX, "inbox", **message)

    a_alone = {
        inbox(subject="Fra A", body="Hei", sender=at_a),
        # A's own folder is A's alone, whoever else the mail names.
        two.deliver(0, subject="Fra B", body="Hei", sender=at_b),
    }
    between = inbox(subject="Mellom A og B", body="Hei", sender=at_a, to=[at_b])
    in_b_folder = two.deliver(1, subject="Kopi til A", body="Hei", sender=at_b, cc=[at_a])
    b_alone = inbox(subject="Fra B", body="Hei", sender=at_b)

    # The sandbox seeds mail between the two as well (sandbox/up.py).
    seeded = {
        m["id"]
        for m in two.box.graph.messages(SERVICE_MAILBOX)
        if at_a.split("@")[1] in str(m) and at_b.split("@")[1] in str(m)
    } - {between, in_b_folder}
    assert seeded

    preview = await two.erasure.preview(a.id, scope="customer", subject=None)
    outlook = {f.ref.id: f for f in preview.located if f.ref.kind == "message"}
    assert a_alone | {between, in_b_folder} <= set(outlook) and b_alone not in outlook
    shared_ids = {m for m, f in outlook.items() if f.ambiguous}
    assert shared_ids == {between, in_b_folder} | seeded
    assert preview.counts(ambiguous=True)["outlook"] == {"message": len(shared_ids)}

    # The plan a person reads lists both with their ids, and says why.
    plan = await asyncio.to_thread(  # the CLI runs its own event loop
        CliRunner().invoke,
        cli,
        ["erase", "customer", a.id, "--plan", "--config", str(two.box.config_path)],
    )
    assert plan.exit_code == 0, plan.output
    assert "another customer's too" in plan.output
    for message in (between, in_b_folder):
        assert item_id("outlook", "message", message) in plan.output

    # The admin includes the mail between the two; the copy in B's folder stays B's.
    include = item_id("outlook", "message", between)
    request = two.erasure.request(
        a.id,
        scope="customer",
        subject=None,
        requested_by="anne",
        reason="contract ended",
        include=[include],
    )
    row = await two.erasure.advance(request)
    assert row.state is ErasureState.AWAITING_APPROVAL
    two.erasure.approve(request, approver="bjørn")
    row = await two.erasure.advance(request)
    assert row.state is ErasureState.COMPLETED, row.error

    after = two.message_ids()
    assert not (a_alone | {between}) & after
    assert {in_b_folder, b_alone} | seeded <= after
    result = row.outcome["outlook"]
    assert result["left_alone"] == {"message": 1 + len(seeded)}
    assert result["verified_absent"] is True and result["included"] == 1

    assert row.certificate is not None
    key_id = next(iter(open_ledger(two.settings, two.store).verifiers))
    assert verify_certificate(row.certificate.encode(), trusted_key_id=key_id) == []
    document = json.loads(row.certificate)
    [left] = [g for g in document["left_alone"] if g["system"] == "outlook"]
    assert left["matched"] == [] and left["counts"] == {"message": 1 + len(seeded)}
    kept = {in_b_folder} | seeded
    assert left["items"] == sorted(item_id("outlook", "message", m) for m in kept)
    assert document["included"] == {"outlook": 1}
    pdf = render_pdf(Certificate.from_json(row.certificate.encode()))
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    text = " ".join(text.split())
    assert "Left alone: another customer's too" in text and "ambiguous matches" not in text
    assert "outlook: message: " + str(1 + len(seeded)) in text
