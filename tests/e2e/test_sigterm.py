"""SIGTERM during a sync: the step in flight finishes, the daemon exits 0, and nothing is
left half-applied — the next sync completes the rest without duplicates."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from daemon import config
from daemon.entry import CLI_ONLY
from daemon.store import Store
from daemon.sync import SyncService
from daemon.wiring import open_connectors
from sandbox.up import SERVICE_MAILBOX, running

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def test_sigterm_mid_sync_exits_cleanly_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    with running(tmp_path / "sandbox", seed=6, customers=1, contacts=30) as box:
        box.zisson.set_faults(latency_ms=120)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
        env["PYTHONVERBOSE"] = "1"  # "import 'NAME' # loader" on stderr: each module loaded
        with open(tmp_path / "daemon.log", "w") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(box.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            deadline = time.monotonic() + 60
            while box.zisson.counters["creates"] + box.zisson.counters["updates"] < 1:
                assert daemon.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=90) == 0
        output = (tmp_path / "daemon.log").read_text(encoding="utf-8")
        assert '"daemon_stopped"' in output
        # The command line's libraries stay out of the daemon's memory (daemon/entry.py).
        loaded = {name.split(".")[0] for name in re.findall(r"^import '([^']+)' #", output, re.M)}
        assert {"daemon", "structlog", "httpx"} <= loaded
        assert loaded.isdisjoint(CLI_ONLY), loaded & set(CLI_ONLY)

        settings = config.load(box.config_path)
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        try:
            [customer] = settings.customers
            runs = store.list_runs(customer_id=customer.id)
            assert runs and all(r.status in ("completed", "interrupted") for r in runs)
            assert store.pending_ops(customer.id) == []  # every begun change was settled

            async def settle() -> int:
                async with AsyncExitStack() as stack:
                    service = SyncService(
                        settings, store, await open_connectors(settings, stack, store=store)
                    )
                    for run in range(1, 5):
                        report = await service.sync(customer, trigger="test")
                        assert report.status == "completed", report.error
                        assert report.plan is not None
                        if not report.plan.ops and not report.plan.members:
                            return run
                raise AssertionError("did not settle")

            box.zisson.set_faults()
            asyncio.run(settle())
        finally:
            store.close()
        card = [c.card for c in box.customers[0].contacts]
        zisson = Counter(
            e for u in box.zisson.users(box.zisson_accounts[customer.id]) for e in u["emails"]
        )
        assert set(zisson.values()) == {1} and len(zisson) == len({c.emails[0] for c in card})
        outlook = Counter(
            a["address"]
            for c in box.graph.contacts(SERVICE_MAILBOX, box.contact_folders[customer.id])
            for a in c["emailAddresses"]
        )
        assert set(outlook.values()) == {1} and len(outlook) == len(zisson)
