"""Erasing 5,000 messages from one Outlook mailbox when Graph's request budget is the limit.

Against the Graph simulator (in this process, TLS on loopback), its budget scaled down
so the run is rate-bound: by default 1,000 requests per 600 simulated seconds at time
scale 60, i.e. 1,000 per 10 s of wall time, 100 requests/s; 5,000 deletions are five
windows' worth, and either client is many times faster than that unbudgeted (on 2 cores
about 3,000 calls/s for pdsync and 1,300 for the baseline: `--budget 1000000 --window 1
--time-scale 1` shows it).

Two rows, each on a fresh mailbox of the same simulator, same budget, same messages:

pdsync    `OutlookConnector.locate_customer_mail`, then `erase` (permanentDelete in
          $batch envelopes, its own budget and concurrency limiter, the default retry
          policy), its limits set to the scaled budget. Only `erase` is timed; the
          requests `locate` spent are let out of the window before it starts.
baseline  plain httpx, one permanentDelete per request, sequentially, sleeping for
          Retry-After on a 429 and then sending the same request again.

Every figure is the simulator's count. "Calls" are Graph calls admitted against the
budget (each $batch item is one; envelopes and token requests are not budgeted).
The window starts empty, so any client gets one budget's worth at once; "use" is
therefore (calls - budget) / wall / rate: 1.0 is a client that keeps the budget fully
spent, whatever the first window gave it. "raw" is calls / wall / rate, as read off.
Target: use >= 0.85 for pdsync, with no concurrency violations.

    python -m bench.outlook_erase_bench [--messages 5000] [--budget 1000]
        [--window 600] [--time-scale 60] [--keep 100]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from connectors.outlook import OutlookBinding, OutlookConnector, OutlookSettings
from connectors.secrets import SecretRef
from daemon import logs
from daemon.domain import Customer, OpStatus
from sandbox.graph_sim import GraphSimulator

CLIENT_ID = "00000000-0000-4000-8000-0000000000b1"
SECRET = "bench-secret~æøå"
DOMAIN = "kunde-a.no"
PREFER = 'IdType="ImmutableId"'
TARGET = 0.85


@dataclass(frozen=True, kw_only=True)
class Row:
    label: str
    wall: float
    http_requests: int  # HTTP requests the simulator served ($batch envelopes count once)
    calls: int  # Graph calls admitted against the budget
    throttled: int  # 429s (envelopes and $batch items)
    violations: int  # requests beyond the mailbox's concurrency limit
    max_in_flight: int
    erased: int  # messages now in Recoverable Items/Purges


def seed(sim: GraphSimulator, mailbox: str, messages: int, keep: int) -> list[str]:
    """`messages` from the customer's domain (returned) and `keep` that must survive."""
    sim.add_mailbox(mailbox)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ids = []
    for i in range(messages):
        ids.append(
            sim.add_message(
                mailbox,
                "inbox",
                subject=f"Sak {i}: faktura",
                body=f"Hei, her er fakturaen for sak {i}. Hilsen Åse",
                sender=f"kontakt{i % 97}@{DOMAIN}",
                sender_name="Åse Bjørnstad",
                to=[mailbox],
                received=start + dt.timedelta(minutes=i),
            )
        )
    for i in range(keep):
        sim.add_message(
            mailbox,
            "inbox",
            subject=f"Annet {i}",
            sender=f"post{i}@annen-kunde.no",
            to=[mailbox],
            received=start + dt.timedelta(minutes=i),
        )
    return ids


def graph_calls(counters: Counter[str]) -> int:
    """Calls admitted against a mailbox's budget: every route below /users/{user}/
    (the user object itself is not throttled), less the ones refused at admission."""
    routed = sum(n for key, n in counters.items() if " /users/{user}/" in key)
    return routed - counters["throttled_budget"] - counters["throttled_concurrency"]


def observed(label: str, sim: GraphSimulator, mailbox: str, wall: float) -> Row:
    counters = sim.counters
    return Row(
        label=label,
        wall=wall,
        http_requests=counters["requests"],
        calls=graph_calls(counters),
        throttled=counters["429"],
        violations=counters["concurrency_violations"],
        max_in_flight=counters["max_in_flight"],
        erased=len(sim.purged(mailbox)),
    )


def check_outcome(label: str, sim: GraphSimulator, mailbox: str, ids: list[str], keep: int) -> None:
    purged = {m["id"] for m in sim.purged(mailbox)}
    left = sim.messages(mailbox)
    if purged != set(ids) or len(left) != keep:
        raise SystemExit(
            f"{label}: {len(set(ids) - purged)} messages not erased, {len(purged - set(ids))}"
            f" erased that should not be, {len(left)} left (expected {keep})"
        )


async def run_pdsync(
    sim: GraphSimulator, secret_file: Path, args: argparse.Namespace, window_wall: float
) -> tuple[Row, float]:
    mailbox = "pdsync@we4you.no"
    ids = seed(sim, mailbox, args.messages, args.keep)
    settings = OutlookSettings(
        tenant_id=sim.tenant_id,
        client_id=CLIENT_ID,
        authority_host=sim.url,
        graph_url=sim.graph_url,
        ca_bundle=sim.ca_file,
        client_secret=SecretRef(file=secret_file),
        request_budget=args.budget,
        budget_window_seconds=window_wall,
    )
    binding = OutlookBinding(
        mailbox=mailbox, contact_folder="Kunde A – kontakter", domains=(DOMAIN,)
    )
    customer = Customer(id="kunde-a", name="Kunde A", bindings={"outlook": binding})
    connector = OutlookConnector(settings)
    try:
        started = time.perf_counter()
        refs = await connector.locate_customer_mail(customer)
        located = time.perf_counter() - started
        if {ref.id for ref in refs} != set(ids):
            raise SystemExit(f"pdsync: located {len(refs)} messages, seeded {len(ids)}")
        # locate's requests leave the window (the simulator's and the connector's) first.
        await asyncio.sleep(window_wall + 1.0)
        sim.reset_counters()
        started = time.perf_counter()
        statuses = await connector.erase(customer, refs)
        wall = time.perf_counter() - started
    finally:
        await connector.aclose()
    failed = sum(1 for _, status in statuses if status is not OpStatus.APPLIED)
    if failed:
        raise SystemExit(f"pdsync: {failed} of {len(refs)} refs not APPLIED")
    check_outcome("pdsync", sim, mailbox, ids, args.keep)
    return observed("pdsync", sim, mailbox, wall), located


def run_baseline(sim: GraphSimulator, args: argparse.Namespace) -> Row:
    mailbox = "baseline@we4you.no"
    ids = seed(sim, mailbox, args.messages, args.keep)
    verify = ssl.create_default_context(cafile=str(sim.ca_file))
    token = httpx.post(
        f"{sim.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=verify,
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}", "Prefer": PREFER}
    with httpx.Client(base_url=sim.graph_url, verify=verify, headers=headers, timeout=30) as client:
        sim.reset_counters()
        started = time.perf_counter()
        for message_id in ids:
            url = f"/users/{mailbox}/messages/{quote(message_id, safe='')}/permanentDelete"
            while True:
                response = client.post(url)
                if response.status_code != 429:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
            if response.status_code not in (204, 404):
                response.raise_for_status()
        wall = time.perf_counter() - started
    check_outcome("baseline", sim, mailbox, ids, args.keep)
    return observed("baseline", sim, mailbox, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages to erase")
    parser.add_argument("--budget", type=int, default=1000, help="requests per window")
    parser.add_argument("--window", type=float, default=600.0, help="window, simulated s")
    parser.add_argument("--time-scale", type=float, default=60.0, help="simulated s per wall s")
    parser.add_argument("--keep", type=int, default=100, help="other mail that must survive")
    args = parser.parse_args()
    logs.configure(format="json", level="warning")
    window_wall = args.window / args.time_scale
    rate = args.budget / window_wall
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = Path(tmp) / "outlook.secret"
        secret_file.write_text(SECRET, encoding="utf-8")
        with GraphSimulator(
            seed=0,
            request_budget=args.budget,
            budget_window_seconds=args.window,
            time_scale=args.time_scale,
        ) as sim:
            sim.add_app(CLIENT_ID, secret=SECRET)
            pdsync, located = asyncio.run(run_pdsync(sim, secret_file, args, window_wall))
            baseline = run_baseline(sim, args)
    leftover = [t.name for t in threading.enumerate() if t is not threading.current_thread()]

    ideal = max(0, args.messages - args.budget) / rate
    print(
        f"erase {args.messages:,} messages from one mailbox; budget {args.budget:,} requests per"
        f" {window_wall:g} s wall ({args.window:g} simulated s at time scale {args.time_scale:g})"
        f" = {rate:.0f} requests/s"
    )
    print(
        f"a client keeping the budget fully spent needs {ideal:.1f} s (the first window's"
        f" {args.budget:,} go at once); pdsync's locate beforehand took {located:.1f} s, untimed"
    )
    columns = (
        ("row", 9), ("wall s", 7), ("HTTP req", 9), ("calls", 6), ("calls/s", 8), ("raw", 5),
        ("use", 5), ("429s", 5), ("conc viol", 9), ("max inflight", 12),
    )  # fmt: skip
    print(" ".join(f"{h:>{w}}" for h, w in columns))
    for row in (pdsync, baseline):
        per_second = row.calls / row.wall
        use = max(0, row.calls - args.budget) / row.wall / rate
        print(
            f"{row.label:>9} {row.wall:>7.2f} {row.http_requests:>9,} {row.calls:>6,}"
            f" {per_second:>8.1f} {per_second / rate:>5.2f} {use:>5.2f} {row.throttled:>5}"
            f" {row.violations:>9} {row.max_in_flight:>12}"
        )
    print(f"erased (in Purges): pdsync {pdsync.erased:,}, baseline {baseline.erased:,}")
    print(f"wall baseline / pdsync: {baseline.wall / pdsync.wall:.2f}")
    use = max(0, pdsync.calls - args.budget) / pdsync.wall / rate
    ok = use >= TARGET and pdsync.violations == 0
    print(
        f"target pdsync use >= {TARGET} with no concurrency violations:"
        f" {'met' if ok else 'NOT met'} ({use:.2f}, {pdsync.violations} violations)"
    )
    if leftover:
        print(f"threads still running after the simulator stopped: {', '.join(leftover)}")


if __name__ == "__main__":
    main()
