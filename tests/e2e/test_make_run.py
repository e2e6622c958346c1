"""`make run` end to end: sandbox plus daemon in one process, as a user starts it.

It syncs every customer, linking each contact Zisson holds to its card however messy
the directory (a switchboard number on many, role addresses, extensions, namesakes,
decomposed names), serves the admin API and the dashboard on loopback with the admin
token its banner prints, keeps the store of the run before in DATA_DIR/previous/ (and
says so), stops cleanly on SIGTERM, and none of the seeded e-mail addresses or phone
numbers appears in its log output or in the store's files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import config
from daemon.reconcile import REVIEWS
from daemon.store import Store
from sandbox.configfile import CustomerEntry, render

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def seeded_identifiers(seed: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for customer in seed["customers"]:
        for contact in customer["contacts"]:
            for side in (contact["card"], contact["zisson"]):
                if side is None:
                    continue
                found.update(side["emails"])
                for phone in side["phones"]:
                    found.add(phone["number"])
                    if phone["e164"]:
                        found.add(phone["e164"])
                        found.add(phone["e164"].removeprefix("+47"))
    return {value for value in found if len(value) >= 8}


def assert_linked_as_seeded(config_path: Path, seed: dict[str, Any]) -> None:
    """Every card contact Zisson held when seeded shares one link with that very Zisson
    record (the switchboard with the switchboard, each namesake with its own), and no
    review item is open: nothing was joined on a shared number, a role address or a name."""
    settings = config.load(config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        for customer in seed["customers"]:
            links = store.load_state(customer["id"]).links.values()
            zisson_of = {
                link.members["firestore"].external_id: link.members["zisson"].external_id
                for link in links
                if {"firestore", "zisson"} <= set(link.members)
            }
            seeded = {
                c["card"]["id"]: c["zisson"]["id"] for c in customer["contacts"] if c["zisson"]
            }
            assert {card: zisson_of.get(card) for card in seeded} == seeded, customer["id"]
            roles = customer["roles"]
            named = [roles["switchboard_department"], roles["extension_holder"]]
            named += [roles["role_address_holder"], *roles["namesakes"]]
            assert all(card in seeded for card in named)
            reviews = store.list_disputes(customer_id=customer["id"])
            assert [d.field for d in reviews if d.field in REVIEWS] == []
    finally:
        store.close()


def a_store_from_before(data: Path) -> None:
    """What an earlier `make run` leaves: a store, its master key and a config naming both."""
    key = data.resolve() / "secrets" / "master.key"
    key.parent.mkdir(parents=True)
    key.write_text(secrets.token_hex(32))
    url = f"sqlite:///{data.resolve() / 'pdsync.db'}"
    store = Store.open(url, master_key=bytes.fromhex(key.read_text()))
    store.create_token("from-before", "auditor", created_by="test")
    store.close()
    (data / "pdsync.toml").write_text(
        render(
            store_url=url,
            master_key_file=key,
            firestore_project="gone",
            firestore_host="127.0.0.1:9",
            zisson_url=None,
            customers=[CustomerEntry(id="old", name="Old", firestore_id="old", zisson=None)],
        )
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_make_run_syncs_every_customer_stops_on_sigterm_and_leaks_nothing(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    a_store_from_before(data)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.run",
            "--data-dir",
            str(data),
            "--customers",
            "3",
            "--contacts",
            "25",
            "--api-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    finished: dict[str, str] = {}
    deadline = time.monotonic() + 120
    try:
        assert process.stdout is not None
        while len(finished) < 3 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if '"sync_finished"' in line:
                event = json.loads(line)
                finished[event["customer"]] = event["status"]
        assert finished == {f"kunde-0{i}": "completed" for i in (1, 2, 3)}, "".join(lines[-20:])
        assert (data / "ready").exists()
        banner = "".join(line for line in lines if not line.startswith("{"))
        assert f"dashboard: http://127.0.0.1:{port}/dashboard" in banner, banner
        token = re.findall(r"pds_[\w-]+", banner)[0]
        assert (data / "admin.token").read_text().strip() == token
        assert (data / "admin.token").stat().st_mode & 0o077 == 0
        assert f"{data}/previous/" in banner  # the store before is not wiped unsaid
        api = (data / "api").read_text().strip()
        assert api == f"http://127.0.0.1:{port}"
        runs = httpx.get(f"{api}/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
        assert runs.status_code == 200
        assert {r["customer"] for r in runs.json() if r["kind"] == "sync"} == set(finished)
        assert httpx.get(f"{api}/api/v1/runs").status_code == 401
        dashboard = httpx.get(f"{api}/dashboard", follow_redirects=True)
        assert dashboard.status_code == 200 and "<form" in dashboard.text
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        lines.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    assert process.returncode == 0, output[-2000:]
    assert '"daemon_stopped"' in output
    assert not (data / "ready").exists()

    before = config.load(data / "previous" / "pdsync.toml")
    kept = Store.open(before.store.url, master_key=before.store.master_key_bytes())
    try:
        assert [t.name for t in kept.list_tokens()] == ["from-before"]
    finally:
        kept.close()

    seed = json.loads((data / "seed.json").read_text(encoding="utf-8"))
    assert_linked_as_seeded(data / "pdsync.toml", seed)
    identifiers = seeded_identifiers(seed)
    assert len(identifiers) > 100
    leaked = sorted(value for value in identifiers if value in output)
    assert leaked == []
    store_bytes = b"".join(p.read_bytes() for p in data.glob("pdsync.db*"))
    assert store_bytes, "the store was written"
    assert [v for v in identifiers if v.encode() in store_bytes] == []
    names = {c["card"]["display_name"] for cust in seed["customers"] for c in cust["contacts"]}
    assert [n for n in names if len(n) > 6 and n.encode() in store_bytes] == []
