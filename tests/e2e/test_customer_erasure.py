"""A contract ends: the whole customer is erased from the card, Zisson, Outlook and the
store through the CLI, and neither the store's files nor any log line holds a trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config
from daemon.certificate import verify_certificate
from daemon.store import KeyDestroyed, Store
from sandbox.up import SERVICE_MAILBOX, running
from tests.e2e.test_make_run import seeded_identifiers

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def cli(config_path: Path, *args: str, user: str = "anne") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    env["USER"] = env["LOGNAME"] = user
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_a_customer_erased_through_the_cli_leaves_nothing_anywhere(tmp_path: Path) -> None:
    with running(tmp_path / "sandbox", seed=8, customers=2, contacts=15) as box:
        path = box.config_path
        logs = []
        first = cli(path, "sync")
        logs.append(first.stderr)
        assert first.returncode == 0, first.stderr[-2000:]
        gone, kept = box.customers
        folder = box.contact_folders[gone.id]
        assert box.graph.contacts(SERVICE_MAILBOX, folder)

        asked = cli(
            path,
            "erase",
            "customer",
            gone.id,
            "--execute",
            "--reason",
            "kontrakten er avsluttet",
            "--yes",
        )
        logs.append(asked.stdout + asked.stderr)
        assert asked.returncode == 3, asked.stdout  # waits for a second admin
        request_id = asked.stdout.split("erasure ")[1].split()[0]
        # Four eyes: the approval takes a second admin's token; anne's own does not count.
        tokens = {}
        for name in ("anne", "bjorn"):
            made = cli(path, "tokens", "create", name, "--role", "admin")
            assert made.returncode == 0, made.stderr
            tokens[name] = tmp_path / f"{name}.token"
            tokens[name].write_text(made.stdout.strip())
            tokens[name].chmod(0o600)
        same = cli(path, "erasures", "approve", request_id, "--token-file", str(tokens["anne"]))
        assert same.returncode == 2 and "cannot approve" in same.stderr
        approved = cli(
            path, "erasures", "approve", request_id, "--token-file", str(tokens["bjorn"])
        )
        logs.append(approved.stdout + approved.stderr)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "completed" in approved.stdout

        # Firestore: no card, no subcollection.
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        client = firestore.Client(project="pdsync-sandbox", credentials=AnonymousCredentials())
        client._emulator_host = box.emulator.host  # type: ignore[attr-defined]
        card = client.collection("customers").document(gone.id)
        assert not card.get().exists and list(card.collections()) == []
        assert client.collection("customers").document(kept.id).get().exists
        client.close()
        # Zisson: the account is empty; the other customer's is not.
        assert box.zisson.users(box.zisson_accounts[gone.id]) == []
        assert box.zisson.users(box.zisson_accounts[kept.id])
        # Outlook: no contact, no message in its folder, none from or to its domain but
        # the mail between the two customers: the other customer's data too, left alone.
        assert box.graph.contacts(SERVICE_MAILBOX, folder) == []
        domain = gone.domains[0]
        messages = [json.dumps(m, ensure_ascii=False) for m in box.graph.messages(SERVICE_MAILBOX)]
        between = [m for m in messages if f"@{domain}" in m]
        assert between and all(f"@{kept.domains[0]}" in m for m in between)
        assert any(f"@{kept.domains[0]}" in m for m in messages if m not in between)

        # The store: nothing of the customer but the proof; its key is gone.
        settings = config.load(path)
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        try:
            assert store.load_state(gone.id).links == {}
            with pytest.raises(KeyDestroyed):
                store.customer_key(gone.id)
            certificate = store.get_erasure(request_id).certificate
            assert certificate is not None
            assert verify_certificate(certificate.encode()) == []
            [left] = [g for g in json.loads(certificate)["left_alone"] if g["system"] == "outlook"]
            assert left["counts"] == {"message": len(between)} and left["matched"] == []
        finally:
            store.close()
        later = cli(path, "sync", "--customer", kept.id)
        logs.append(later.stderr)
        assert later.returncode == 0

        seed = json.loads((box.data_dir / "seed.json").read_text(encoding="utf-8"))
        mine = {"customers": [c for c in seed["customers"] if c["id"] == gone.id]}
        identifiers = seeded_identifiers(mine)
        names = {c["card"]["display_name"] for c in mine["customers"][0]["contacts"]}
        stored = b"".join(p.read_bytes() for p in box.data_dir.glob("pdsync.db*"))
        everything = "".join(logs)
        assert len(identifiers) > 20
        assert [v for v in identifiers if v.encode() in stored or v in everything] == []
        assert [n for n in names if len(n) > 6 and (n.encode() in stored or n in everything)] == []
