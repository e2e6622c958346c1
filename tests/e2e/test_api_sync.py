""" "Sync now" through the admin API on two daemons sharing one PostgreSQL: the request
becomes a work item that either daemon may carry out, the run it starts carries the
caller's trigger and starts after the request, and no customer is ever synced twice at
once, however the requests and the schedule collide."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from daemon import config
from daemon.store import Store
from sandbox.up import running
from tests.e2e.cluster import (
    ON_POSTGRES,
    Daemons,
    assert_no_sync_overlapped,
    cluster_config,
    wait_for,
)

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@ON_POSTGRES
def test_sync_now_is_queued_and_never_overlaps(store_url: str, tmp_path: Path) -> None:
    with running(tmp_path / "sandbox", seed=9, customers=2, contacts=6) as box:
        path = cluster_config(box, store_url, tmp_path / "two.toml")
        settings = config.load(path)
        store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
        token = store.create_token("ops", "operator", created_by="test")
        port = free_port()
        # Only the first serves the API; both claim work.
        daemons = Daemons(path, tmp_path, [{"PDSYNC_API__LISTEN": f"127.0.0.1:{port}"}, {}])
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        customers = [c.id for c in settings.customers]
        try:
            wait_for(lambda: _ready(api), 60, "the API")
            wait_for(
                lambda: (
                    {
                        r.customer_id
                        for r in store.list_runs(limit=100)
                        if r.kind == "sync" and r.status == "completed"
                    }
                    == set(customers)
                ),
                60,
                "a first sync of every customer",
            )
            box.zisson.set_faults(latency_ms=60)  # syncs long enough to collide
            asked = datetime.now(UTC)
            with ThreadPoolExecutor(4) as pool:
                answers = list(
                    pool.map(
                        lambda body: api.post("/api/v1/sync", json=body),
                        [
                            {"customer": customers[0], "wait": True},
                            {"customer": customers[0], "wait": True},
                            {"wait": True},
                            {"customer": customers[1]},  # not waited for
                        ],
                    )
                )
            assert [a.status_code for a in answers] == [200, 200, 200, 202]
            waited = [a.json() for a in answers[:3]]
            for body in waited:
                assert body["trigger"].startswith("api:ops:")
                for run in body["runs"]:
                    assert run["status"] == "completed", body
                    row = store.get_run(run["run_id"])
                    assert row is not None
                    assert row.trigger == body["trigger"] and row.customer_id == run["customer"]
                    assert row.started_at >= asked - timedelta(seconds=1)
            # Each request got runs of its own: four for the three waited-for requests.
            assert len({r["run_id"] for b in waited for r in b["runs"]}) == 4
            late = answers[3].json()
            wait_for(
                lambda: any(
                    w.trigger == late["trigger"] and w.state == "done"
                    for w in store.work_items(kind="sync", limit=100)
                ),
                60,
                "the request not waited for to be carried out",
            )
            api_items = [
                w
                for w in store.work_items(kind="sync", limit=200)
                if (w.trigger or "").startswith("api:")
            ]
            assert len(api_items) == 5 and {w.state for w in api_items} == {"done"}
            # `pdsync sync` beside running daemons hands them the sync, too.
            cli = subprocess.run(
                [
                    *(sys.executable, "-m", "daemon.cli", "sync"),
                    *("--customer", customers[1], "--config", str(path)),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")},
                    "COLUMNS": "200",  # the table whole
                },
            )
            assert cli.returncode == 0, cli.stderr
            assert "the sync is queued for it" in cli.stderr
            [by_cli] = [
                r
                for r in store.list_runs(customer_id=customers[1], limit=100)
                if r.trigger.startswith("cli:")
            ]
            assert by_cli.status == "completed" and by_cli.id[:8] in cli.stdout
            # The daemon's own connectors are counted in /metrics.
            metrics = api.get("/metrics").text
            for system in ("firestore", "zisson", "outlook"):
                assert f'pdsync_connector_requests_total{{connector="{system}"}}' in metrics
        finally:
            api.close()
            codes = list(daemons.stop().values())
        assert codes == [0, 0]

        assert assert_no_sync_overlapped(store) == set(customers)
        store.close()


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/readyz").status_code == 200
    except httpx.TransportError:
        time.sleep(0.2)
        return False
