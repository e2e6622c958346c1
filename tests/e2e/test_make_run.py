"""`make run` end to end: sandbox plus daemon in one process, as a user starts it.

It syncs every customer, linking each contact Zisson holds to its card however messy
the directory (a switchboard number on many, role addresses, extensions, namesakes,
decomposed names), stops cleanly on SIGTERM, and none of the seeded e-mail addresses or
phone numbers appears in its log output or in the store's files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.reconcile import REVIEWS
from daemon.store import Store

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


def test_make_run_syncs_every_customer_stops_on_sigterm_and_leaks_nothing(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
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
