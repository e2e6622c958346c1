"""Erasing a whole customer (2,000 contacts, 20,000 messages) from every system at once.

The sandbox (Firestore emulator, Zisson and Graph simulators) with one customer of
`--contacts` contacts: all of them on the card, most in Zisson. One sync (SyncService,
untimed) puts them into the customer's Outlook contact folder as well; then
`--messages` messages are delivered to the service mailbox, half into the customer's
own mail folder, half into the inbox from addresses in its domain, plus `--keep`
messages of someone else that must survive. Zisson gets `--zisson-latency-ms` of
service time per request.

Timed: ErasureService.request(scope="customer") by one admin, advance (plan, then it
waits), approve by a second admin, advance to `completed` (execute, sweep, verify,
purge our own state, certificate) -- the daemon's own wiring (open_connectors,
erasers_for, open_ledger, certifier_for) from the config the sandbox wrote.

Graph is the limit. The simulator's budget is scaled down: by default 1,500 requests
per 600 simulated s at time scale 120, i.e. 1,500 per 5 s of wall time, 300 calls/s
(Graph's own 10,000 per 10 min would make the first window's free burst half the run,
and the sliding window's steps, not the rate, the bound). The connector is told the
same limits in the written config (request_budget, budget_window_seconds in wall s),
and `--page-size` as its $top: Graph's largest, 1000, by default (the written config
says 100; `--page-size 100` shows what that costs). `running` has no knob for Graph's
limits, so it is handed a GraphSimulator that has them.
Zisson's and Firestore's work runs at the same time as Graph's.

Lower bound (the systems run concurrently, so it is the largest of):

graph      C = the budget-charged calls the erasure cannot do without: one per message
           and contact deleted (the simulator's counts) plus the listing pages that find
           them at Graph's largest page ($top=1000): ceil(messages in the mailbox /
           1000) + ceil(contacts / 1000). With an empty window at the start, call k > B
           cannot be admitted before call k - B plus the window W, so the last call comes
           no sooner than floor((C - 1) / B) * W. (The rate formula (C - B) / (B / W),
           which counts the first window's burst as free, is printed beside it; the two
           differ by less than one window.)
zisson     deletes (simulator count) * latency / the connector's concurrency.
firestore  the measured time of FirestoreConnector.delete_card (recursive_delete) of a
           scratch card with as many contacts, before the run: its own floor.

Target: wall / bound <= 1.2. Also printed: the same ratio from the approval on (against
the deletions' bound alone: with a real second admin the plan is done long before); peak
RSS of this process (ru_maxrss; the simulators live in it, the Firestore emulator does
not); per-system counts from the simulators; where the time went per system and step;
the longest the event loop went without running a task that asked to wake every 10 ms
(the daemon's syncs and API share that loop); and the certificate's offline check.

    python -m bench.customer_erase_bench [--contacts 2000] [--messages 20000]
        [--keep 200] [--budget 1500] [--window 600] [--time-scale 120]
        [--zisson-latency-ms 25] [--page-size 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import math
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import sandbox.up
from bench.loop import LoopStalls
from connectors.firestore.connector import FirestoreConnector
from connectors.firestore.settings import FirestoreBinding
from daemon import config, logs
from daemon.certificate.verify import verify_certificate
from daemon.domain import Customer, ItemRef
from daemon.erasure import Erased, Eraser, ErasureService
from daemon.proof import certifier_for, open_ledger
from daemon.store import ErasureState, Store
from daemon.sync import SyncService
from daemon.wiring import erasers_for, open_connectors
from sandbox.graph_sim import GraphSimulator
from sandbox.up import SERVICE_MAILBOX, Sandbox, running

TARGET = 1.2
MAX_TOP = 1000  # Graph's largest page ($top) for messages and contacts
OTHER_DOMAIN = "annen-kunde.no"


# -- where the time goes ------------------------------------------------------------------


@dataclass
class Timeline:
    """(system, step, start, end) of every eraser call, seconds from the start."""

    origin: float = field(default_factory=time.perf_counter)
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)

    def add(self, system: str, step: str, started: float) -> None:
        now = time.perf_counter()
        self.spans.append((system, step, started - self.origin, now - self.origin))


class TimedEraser:
    """An Eraser that notes how long each of its calls took (nothing else changes)."""

    def __init__(self, inner: Eraser, timeline: Timeline) -> None:
        self.inner = inner
        self.system = inner.system
        self.timeline = timeline
        self.locates = 0

    async def locate(self, customer: Customer, subject: Any) -> list[ItemRef]:
        return await self.inner.locate(customer, subject)

    async def locate_customer(
        self, customer: Customer, *, neighbours: Sequence[Customer] = ()
    ) -> list[ItemRef]:
        started = time.perf_counter()
        self.locates += 1
        step = {1: "locate (plan)", 2: "locate (sweep)"}.get(self.locates, "locate (verify)")
        try:
            return await self.inner.locate_customer(customer, neighbours=neighbours)
        finally:
            self.timeline.add(self.system, step, started)

    async def erase(self, customer: Customer, refs: Sequence[ItemRef]) -> list[Erased]:
        started = time.perf_counter()
        try:
            return await self.inner.erase(customer, refs)
        finally:
            self.timeline.add(self.system, "erase", started)

    def residuals(self) -> Any:
        return self.inner.residuals()


def summarise(timeline: Timeline) -> list[tuple[str, str, int, float, float, float]]:
    """Per system and step: calls, first start, last end, busy seconds."""
    rows: dict[tuple[str, str], list[float]] = {}
    for system, step, start, end in timeline.spans:
        row = rows.setdefault((system, step), [0, math.inf, 0.0, 0.0])
        row[0] += 1
        row[1] = min(row[1], start)
        row[2] = max(row[2], end)
        row[3] += end - start
    return [
        (system, step, int(r[0]), r[1], r[2], r[3])
        for (system, step), r in sorted(rows.items(), key=lambda kv: (kv[1][1], kv[0]))
    ]


# -- setting the stage --------------------------------------------------------------------


def set_outlook_limits(path: Path, args: argparse.Namespace, window_wall: float) -> None:
    """The connector's limits in the written config: the simulator's, in wall seconds."""
    wanted = {
        "request_budget": str(args.budget),
        "budget_window_seconds": repr(window_wall),
        "page_size": str(args.page_size),
    }
    head, found, rest = path.read_text(encoding="utf-8").partition("[systems.outlook]\n")
    if not found:
        raise SystemExit(f"{path}: no [systems.outlook] section to set the limits in")
    section, next_table, tail = rest.partition("\n[")
    lines = [line for line in section.splitlines() if line.split("=")[0].strip() not in wanted]
    lines += [f"{key} = {value}" for key, value in wanted.items()]
    path.write_text(head + found + "\n".join(lines) + next_table + tail, encoding="utf-8")


def customer_folder(sim: GraphSimulator, customer_id: str) -> str:
    """The id of the customer's own mail folder (the sandbox filed messages there)."""
    subject = "Beskjed til "
    for message in sim.messages(SERVICE_MAILBOX):
        if message["subject"].startswith(subject):
            return str(message["parentFolderId"])
    raise SystemExit(f"no mail folder of customer {customer_id} in the service mailbox")


def deliver_mail(box: Sandbox, args: argparse.Namespace) -> tuple[int, int]:
    """`messages` of the customer (half in its folder, half from its domain in the inbox)
    and `keep` of another customer. Returns (customer messages, kept) in the mailbox."""
    sim, customer = box.graph, box.customers[0]
    folder = customer_folder(sim, customer.id)
    domain = customer.domains[0]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for i in range(args.messages):
        when = start + dt.timedelta(minutes=i)
        if i % 2:
            sim.add_message(
                SERVICE_MAILBOX,
                "inbox",
                subject=f"Sak {i}: spørsmål om faktura",
                body=f"Hei, gjelder sak {i}. Ring meg på 912 34 {i % 1000:03d}. Hilsen Åse",
                sender=f"kontakt{i % 97}@{domain}",
                sender_name="Åse Bjørnstad",
                to=[SERVICE_MAILBOX],
                received=when,
            )
        else:
            sim.add_message(
                SERVICE_MAILBOX,
                folder,
                subject=f"Beskjed {i}",
                body=f"Beskjed nr. {i} til kunden, lagt i kundens mappe.",
                sender=SERVICE_MAILBOX,
                to=[f"resepsjon@{domain}"],
                received=when,
            )
    for i in range(args.keep):
        sim.add_message(
            SERVICE_MAILBOX,
            "inbox",
            subject=f"Annet {i}",
            body="Gjelder ikke denne kunden.",
            sender=f"post{i}@{OTHER_DOMAIN}",
            to=[SERVICE_MAILBOX],
            received=start + dt.timedelta(minutes=i),
        )
    everything = sim.messages(SERVICE_MAILBOX)
    kept = sum(1 for m in everything if _is_kept(m))
    return len(everything) - kept, kept


def _is_kept(message: dict[str, Any]) -> bool:
    return str(message["from"]["emailAddress"]["address"]).endswith("@" + OTHER_DOMAIN)


async def first_sync(config_path: Path) -> dict[str, int]:
    settings = config.load(config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        async with AsyncExitStack() as stack:
            connectors = await open_connectors(settings, stack, store=store)
            ledger = open_ledger(settings, store)
            report = await SyncService(settings, store, connectors, ledger=ledger).sync(
                settings.customers[0], trigger="bench"
            )
    finally:
        store.close()
    if report.error or report.status != "completed":
        raise SystemExit(f"the first sync ended {report.status}: {report.error}")
    return {k: v for k, v in report.applied.items() if v}


async def firestore_floor(box: Sandbox) -> tuple[float, int]:
    """Seconds FirestoreConnector.delete_card takes for a scratch card with as many
    contacts as the customer's: the emulator's own floor for the same documents."""
    connector = FirestoreConnector(box.firestore_settings)
    scratch = Customer(
        id="bench-floor",
        name="Floor",
        bindings={"firestore": FirestoreBinding(customer_id="bench-floor")},
    )
    try:
        await connector.write_card(scratch, {"name": "Floor", "instructions": "", "domains": []})
        await connector.put_contacts(scratch, [c.card for c in box.customers[0].contacts])
        started = time.perf_counter()
        deleted = await connector.delete_card(scratch)
        return time.perf_counter() - started, deleted
    finally:
        await connector.aclose()


# -- the erasure ----------------------------------------------------------------------------


@dataclass
class Outcome:
    wall: float
    phases: dict[str, float]
    state: str
    outcome: dict[str, Any]
    certificate: str | None
    timeline: Timeline
    error: str | None
    budget_waited: float  # seconds the Outlook connector waited for its own budget
    longest_stall: float  # seconds the event loop ran something without yielding, at most


async def erase_customer(config_path: Path, customer_id: str) -> Outcome:
    settings = config.load(config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        async with AsyncExitStack() as stack:
            connectors = await open_connectors(settings, stack, store=store)
            ledger = open_ledger(settings, store)
            timeline = Timeline()
            erasers = {s: TimedEraser(e, timeline) for s, e in erasers_for(connectors).items()}
            service = ErasureService(
                settings,
                store,
                erasers,
                recorder=ledger,
                certify=certifier_for(settings, ledger),
            )
            phases: dict[str, float] = {}
            stalls = stack.enter_context(LoopStalls())
            started = timeline.origin = time.perf_counter()
            request_id = service.request(
                customer_id,
                scope="customer",
                subject=None,
                requested_by="admin-kari",
                reason="Avtalen er sagt opp (benchmark)",
            )
            row = await service.advance(request_id)
            phases["request + plan"] = time.perf_counter() - started
            if row.state is ErasureState.AWAITING_APPROVAL:
                mark = time.perf_counter()
                service.approve(request_id, approver="admin-ola")
                phases["approve"] = time.perf_counter() - mark
            mark = time.perf_counter()
            for _ in range(5):
                row = await service.advance(request_id)
                if row.state not in (ErasureState.EXECUTING, ErasureState.VERIFYING):
                    break
            phases["execute + verify + certify"] = time.perf_counter() - mark
            wall = time.perf_counter() - started
            waited = float(getattr(getattr(connectors.get("outlook"), "budget", None), "waited", 0))
    finally:
        store.close()
    return Outcome(
        wall=wall,
        phases=phases,
        state=str(row.state),
        outcome=dict(row.outcome or {}),
        certificate=row.certificate,
        timeline=timeline,
        error=row.error,
        budget_waited=waited,
        longest_stall=stalls.longest,
    )


def graph_calls(counters: Counter[str]) -> int:
    """Calls admitted against the mailbox's budget (as bench.outlook_erase_bench counts)."""
    routed = sum(n for key, n in counters.items() if " /users/{user}/" in key)
    return routed - counters["throttled_budget"] - counters["throttled_concurrency"]


def graph_breakdown(counters: Counter[str]) -> dict[str, int]:
    listing = deletes = other = 0
    for key, n in counters.items():
        if " /users/{user}/" not in key:
            continue
        if key.startswith("GET "):
            listing += n
        elif key.endswith("/permanentDelete") or key.startswith("DELETE "):
            deletes += n
        else:
            other += n
    return {"GET": listing, "deletes": deletes, "other": other}


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000, help="contacts of the customer")
    parser.add_argument("--messages", type=int, default=20000, help="its messages to add")
    parser.add_argument("--keep", type=int, default=200, help="other mail that must survive")
    parser.add_argument("--budget", type=int, default=1500, help="Graph requests per window")
    parser.add_argument("--window", type=float, default=600.0, help="window, simulated s")
    parser.add_argument("--time-scale", type=float, default=120.0, help="simulated s per wall s")
    parser.add_argument("--zisson-latency-ms", type=float, default=25.0)
    parser.add_argument(
        "--page-size", type=int, default=MAX_TOP, help="the connector's $top (config: 100)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logs.configure(format="json", level="error")
    window_wall = args.window / args.time_scale
    rate = args.budget / window_wall
    bench_started = time.perf_counter()

    limited = functools.partial(
        GraphSimulator,
        request_budget=args.budget,
        budget_window_seconds=args.window,
        time_scale=args.time_scale,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        # `running` has no knob for Graph's limits: give it a simulator that has them.
        mock.patch.object(sandbox.up, "GraphSimulator", limited),
        running(Path(tmp), seed=args.seed, customers=1, contacts=args.contacts) as box,
    ):
        setup = time.perf_counter() - bench_started
        zisson_settings = config.load(box.config_path).systems.zisson
        concurrency = zisson_settings.concurrency if zisson_settings else 1
        customer = box.customers[0]
        sim, zisson = box.graph, box.zisson
        guid = box.zisson_accounts[customer.id]
        contact_folder = box.contact_folders[customer.id]
        set_outlook_limits(box.config_path, args, window_wall)

        mark = time.perf_counter()
        synced = asyncio.run(first_sync(box.config_path))
        sync_wall = time.perf_counter() - mark
        mailbox_msgs, kept = deliver_mail(box, args)
        outlook_contacts = len(sim.contacts(SERVICE_MAILBOX, contact_folder))
        zisson_users = len(zisson.users(guid))
        fs_floor, fs_floor_docs = asyncio.run(firestore_floor(box))

        zisson.set_faults(latency_ms=args.zisson_latency_ms)
        time.sleep(window_wall + 1.0)  # the sync's Graph calls leave the window first
        sim.reset_counters()
        zisson.reset_counters()
        result = asyncio.run(erase_customer(box.config_path, customer.id))
        zisson.set_faults()

        counters, zcounters = sim.counters, zisson.counters
        left = sim.messages(SERVICE_MAILBOX)
        left_customer = [m for m in left if not _is_kept(m)]
        purged = len(sim.purged(SERVICE_MAILBOX))
        contacts_left = len(sim.contacts(SERVICE_MAILBOX, contact_folder))
        zisson_left = len(zisson.users(guid))
        fs_left = asyncio.run(card_left(box, customer.id))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = time.perf_counter() - bench_started

    # -- lower bounds
    contacts_deleted = outlook_contacts - contacts_left
    graph_deleted = purged + contacts_deleted
    pages = math.ceil((mailbox_msgs + kept) / MAX_TOP) + math.ceil(outlook_contacts / MAX_TOP)
    needed = graph_deleted + pages
    graph_window_bound = ((needed - 1) // args.budget) * window_wall if needed else 0.0
    graph_rate_bound = max(0, needed - args.budget) / rate
    zisson_deletes = zcounters["deletes"]
    zisson_bound = zisson_deletes * args.zisson_latency_ms / 1000 / concurrency
    bounds = {
        "graph": graph_window_bound,
        "zisson": zisson_bound,
        "firestore": fs_floor,
    }
    limit = max(bounds, key=lambda system: bounds[system])
    bound = bounds[limit]
    ratio = result.wall / bound if bound else math.inf
    # Once approved, only the deletions are left (the plan's pages are spent already).
    after_approval = result.phases["execute + verify + certify"]
    deletions_bound = ((graph_deleted - 1) // args.budget) * window_wall if graph_deleted else 0.0
    calls = graph_calls(counters)
    breakdown = graph_breakdown(counters)

    # -- report
    print(
        f"whole-customer erasure: {args.contacts:,} contacts on the card ({zisson_users:,} in"
        f" Zisson, {outlook_contacts:,} in Outlook after one sync), {mailbox_msgs:,} messages"
        f" of the customer in the mailbox (+{kept} of another, to keep)"
    )
    print(
        f"Graph budget {args.budget:,} requests per {window_wall:g} s wall ({args.window:g}"
        f" simulated s at time scale {args.time_scale:g}) = {rate:.0f} calls/s; connector"
        f" page size {args.page_size}; Zisson latency {args.zisson_latency_ms:g} ms,"
        f" concurrency {concurrency}"
    )
    print(
        f"setup {setup:.1f} s, first sync {sync_wall:.1f} s ({_fmt(synced)}), whole"
        f" benchmark {total:.1f} s"
    )
    print()
    print(f"{'system':<10} {'lower bound s':>13}  how")
    print(
        f"{'graph':<10} {graph_window_bound:>13.1f}  C = {graph_deleted:,} deletions + {pages}"
        f" pages at $top={MAX_TOP} = {needed:,}; floor((C-1)/{args.budget:,}) x"
        f" {window_wall:g} s  (rate formula (C-B)/rate: {graph_rate_bound:.1f} s)"
    )
    print(
        f"{'zisson':<10} {zisson_bound:>13.1f}  {zisson_deletes:,} deletes x"
        f" {args.zisson_latency_ms:g} ms / {concurrency}"
    )
    print(
        f"{'firestore':<10} {fs_floor:>13.1f}  delete_card of a scratch card with"
        f" {fs_floor_docs:,} documents, measured"
    )
    print()
    print(f"{'phase':<28} {'wall s':>7}")
    for phase, seconds in result.phases.items():
        print(f"{phase:<28} {seconds:>7.2f}")
    print(
        f"longest event-loop stall {result.longest_stall:.2f} s (the simulators' threads"
        " share this process's interpreter, and hold it at times)"
    )
    print()
    print(f"{'system':<10} {'step':<16} {'calls':>5} {'from s':>7} {'to s':>7} {'busy s':>7}")
    for system, step, n, start, end, busy in summarise(result.timeline):
        print(f"{system:<10} {step:<16} {n:>5} {start:>7.2f} {end:>7.2f} {busy:>7.2f}")
    print()
    print(
        f"Graph: {calls:,} budgeted calls ({breakdown['GET']:,} GET, {breakdown['deletes']:,}"
        f" deletes, {breakdown['other']:,} other), {counters['requests']:,} HTTP requests,"
        f" {counters['batch_items']:,} $batch items, {counters['429']} 429s,"
        f" {counters['concurrency_violations']} concurrency violations; calls/s over the run"
        f" {calls / result.wall:.0f} (budget {rate:.0f}); the connector waited"
        f" {result.budget_waited:.1f} s for its own budget"
    )
    contact_purges = counters["contact_permanent_deletes"]
    refused = counters["batch_items"] - counters["permanent_deletes"] - contact_purges
    refused -= counters["deletes"]
    print(
        f"  $batch items: {counters['permanent_deletes']:,} permanentDelete (messages),"
        f" {contact_purges:,} permanentDelete (contacts), {counters['deletes']:,} DELETE,"
        f" {refused:,} refused"
    )
    print(
        f"erased: Outlook {purged:,} messages purged, {contacts_deleted:,} contacts deleted"
        f" ({len(left_customer)} of the customer's messages and {contacts_left} contacts left,"
        f" {len(left) - len(left_customer)}/{kept} other messages kept); Zisson"
        f" {zisson_deletes:,} deletes ({zisson_left} users left); Firestore"
        f" {'something' if fs_left else 'nothing'} left under the card"
    )
    systems = ", ".join(
        f"{s} {o.get('outcome')} {_fmt(o.get('counts', {}))}"
        for s, o in sorted(result.outcome.items())
    )
    print(f"request {result.state}: {systems}")
    if result.certificate:
        problems = verify_certificate(result.certificate.encode("utf-8"))
        verdict = "verifies" if not problems else "DOES NOT verify: " + "; ".join(problems)
        print(f"certificate issued ({len(result.certificate):,} bytes), {verdict}")
    else:
        print(f"NO certificate issued ({result.error or 'no error recorded'})")
    print(f"peak RSS of this process: {rss:.0f} MB")
    print()
    ok = (
        result.state == str(ErasureState.COMPLETED)
        and not left_customer
        and contacts_left == 0
        and zisson_left == 0
        and not fs_left
        and len(left) - len(left_customer) == kept
        and result.certificate is not None
    )
    print(
        f"wall {result.wall:.1f} s / lower bound {bound:.1f} s ({limit})"
        f" = {ratio:.2f}; target <= {TARGET}: {'met' if ratio <= TARGET and ok else 'NOT met'}"
        + ("" if ok else " (and the erasure is INCOMPLETE: see above)")
    )
    print(
        f"after approval only: {after_approval:.1f} s / {deletions_bound:.1f} s (Graph, the"
        f" {graph_deleted:,} deletions alone) = {after_approval / max(deletions_bound, 1e-9):.2f}"
    )


async def card_left(box: Sandbox, customer_id: str) -> bool:
    connector = FirestoreConnector(box.firestore_settings)
    bound = Customer(
        id=customer_id,
        name=customer_id,
        bindings={"firestore": FirestoreBinding(customer_id=customer_id)},
    )
    try:
        return await connector.has_card(bound)
    finally:
        await connector.aclose()


def _fmt(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "nothing"


if __name__ == "__main__":
    main()
