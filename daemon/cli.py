"""The `pdsync` command line.

Exit codes: 0 done; 1 a run failed; 2 bad usage or configuration; 3 waiting for an
approval (a run stopped at the deletion threshold).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from daemon import cli_ops, cli_proof, cli_secrets, logs
from daemon.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    err,
    fail,
    load_settings,
    open_store,
    operator,
    out,
)
from daemon.cli_common import (
    get_erasure as _get_erasure,
)
from daemon.cli_common import (
    query as _query,
)
from daemon.config import CONFIG_ENV, ConfigError, CustomerConfig, Settings
from daemon.domain import Subject
from daemon.reconcile import AMBIGUOUS_MATCH, POSSIBLE_DUPLICATE, SEPARATE

if TYPE_CHECKING:
    from daemon.store import Store

app = typer.Typer(
    name="pdsync",
    help="Keeps personal data in step, and deleted on time, across Zisson, Firestore and Outlook.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
runs_app = typer.Typer(help="Recent runs: `pdsync runs` lists, `pdsync runs show ID` details.")
disputes_app = typer.Typer(
    help="Conflicting edits, and records whose identity is in doubt, waiting for a person."
)
tasks_app = typer.Typer(help="Manual tasks for an operator (Zisson in manual write mode).")
quarantine_app = typer.Typer(help="Records a system returned that could not be read.")
sandbox_app = typer.Typer(help="The outside world on loopback, for trying pdsync out.")
erase_app = typer.Typer(help="Erase one data subject or a whole customer.", no_args_is_help=True)
erasures_app = typer.Typer(help="Erasure requests: `pdsync erasures` lists them.")
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")
app.add_typer(disputes_app, name="disputes")
app.add_typer(tasks_app, name="tasks")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(erase_app, name="erase")
app.add_typer(erasures_app, name="erasures")
cli_ops.register(app)
cli_secrets.register(app)
cli_proof.register(app)

T = TypeVar("T")


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@config_app.command("check")
def config_check(
    config: ConfigOption = DEFAULT_CONFIG,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Do not ask Outlook whether the mail folders the file names exist."
        ),
    ] = False,
) -> None:
    """Validate the config file: name the bad key and why, exit non-zero if anything is wrong.

    Unless --offline, every mail folder a customer's Outlook binding names (its folders and
    retention rules) is looked up in its mailbox."""
    from daemon.config import SYSTEMS, unreachable_secrets

    settings = load_settings(config)
    problems = unreachable_secrets(settings)
    if not problems:
        try:
            settings.store.master_key_bytes()
        except ConfigError as exc:
            problems.append(str(exc))
    outlook = settings.systems.outlook
    if not problems and outlook is not None and not offline:
        from connectors.outlook.check import check_mail_folders

        bindings = [
            (f"customers[{i}].outlook", c.outlook)
            for i, c in enumerate(settings.customers)
            if c.outlook is not None
        ]
        checked = asyncio.run(check_mail_folders(outlook, bindings))
        problems += checked.problems
        for line in checked.unchecked:
            err.print(f"{config}: not checked: {line}", highlight=False, markup=False)
    if problems:
        err.print("\n".join(f"{config}: {p}" for p in problems), highlight=False, markup=False)
        raise typer.Exit(2)
    out.print(
        f"{config}: OK — {len(settings.customers)} customers, systems: "
        + ", ".join(s for s in SYSTEMS if getattr(settings.systems, s))
    )


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the daemon: sync every customer on its interval until SIGTERM."""
    from daemon.service import serve

    settings = load_settings(config)
    try:
        code = asyncio.run(serve(settings))
    except ConfigError as exc:  # a secret missing, the store taken: before any work
        err.print(f"config error\n{exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def sync(
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show what would change; change nothing.")
    ] = False,
    approve_deletions: Annotated[
        int | None,
        typer.Option(help="Approve a run deleting up to N contacts (past the threshold)."),
    ] = None,
    approve_creations: Annotated[
        int | None,
        typer.Option(help="Approve a run creating up to N contacts (past the threshold)."),
    ] = None,
    approve_shrink: Annotated[
        int | None,
        typer.Option(
            help="Approve a run although a system read N records fewer than it held"
            " (empty, or far fewer: an outage looks the same)."
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded with the approval).")] = None,
) -> None:
    """Run one sync cycle now and print what changed (or, with --plan, would change)."""
    from daemon.store import RunStatus
    from daemon.sync import SyncService
    from daemon.wiring import open_connectors

    settings = load_settings(config)
    customers = [settings.customer(customer)] if customer else list(settings.customers)
    approvals = {
        kind: count
        for kind, count in (
            ("deletions", approve_deletions),
            ("creations", approve_creations),
            ("shrink", approve_shrink),
        )
        if count is not None
    }
    if approvals and not (customer and reason):
        err.print("--approve-deletions, --approve-creations and --approve-shrink need")
        err.print("--customer and --reason")
        raise typer.Exit(2)

    async def go() -> list[tuple[str, str, str, dict[str, Any]]]:
        """(customer, run id, status, summary) per customer."""
        store = open_store(settings)
        try:
            for kind, count in approvals.items():
                assert customer is not None
                store.approve_deletions(
                    customer, count, by=operator(), reason=reason or "", kind=kind
                )
            if not plan and _daemon_running(store, settings):
                return await _queued_syncs(store, customers)
            async with AsyncExitStack() as stack:
                connectors = await open_connectors(settings, stack, store=store)
                service = SyncService(settings, store, connectors)
                reports = [await service.sync(c, trigger="cli", plan_only=plan) for c in customers]
            return [(r.customer_id, r.run_id, str(r.status), r.summary()) for r in reports]
        finally:
            store.close()

    try:
        outcomes = asyncio.run(go())
    except ConfigError as exc:
        err.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(2) from None
    table = Table(title="Planned changes" if plan else "Sync")
    for column in (
        "customer",
        "run",
        "status",
        "system",
        "create",
        "update",
        "delete",
        "disputes",
        "manual",
    ):
        table.add_column(column)
    for customer_id, run_id, status, summary in outcomes:
        counts = dict(summary.get("planned") or {})
        applied = dict(summary.get("applied") or {})
        systems = sorted({k.split(".")[0] for k in counts if "." in k}) or ["-"]
        for i, system in enumerate(systems):
            manual = sum(
                v
                for k, v in applied.items()
                if k.startswith(system + ".") and k.endswith(".manual")
            )
            table.add_row(
                customer_id if i == 0 else "",
                run_id[:8] if i == 0 else "",
                status if i == 0 else "",
                system,
                str(counts.get(f"{system}.create", 0)),
                str(counts.get(f"{system}.update", 0)),
                str(counts.get(f"{system}.delete", 0)),
                str(counts.get("disputes", 0)) if i == 0 else "",
                str(manual),
            )
        if summary.get("error"):
            err.print(f"{customer_id}: {summary['error']}", highlight=False, markup=False)
    out.print(table)
    statuses = {status for _, _, status, _ in outcomes}
    if RunStatus.FAILED in statuses or "not_run" in statuses:
        raise typer.Exit(1)
    if RunStatus.AWAITING_APPROVAL in statuses:
        for customer_id, _, status, summary in outcomes:
            if status == RunStatus.AWAITING_APPROVAL:
                err.print(_held_hint(customer_id, dict(summary.get("held") or {})))
        raise typer.Exit(3)


def _held_hint(customer_id: str, held: dict[str, Any]) -> str:
    """What held a run, and the command that lets it go on (after a look)."""
    incident = held.get("incident", "")
    if incident == "incident_source_shrunk":
        what = (
            f"{held.get('system')} read {held.get('read')} records where it held"
            f" {held.get('held')} ({held.get('missing')} missing)"
        )
        option = f"--approve-shrink {held.get('missing')}"
    elif incident == "incident_mass_creation_held":
        what = f"the run would create {held.get('creations')} contacts"
        option = f"--approve-creations {held.get('creations')}"
    else:
        what = f"the run would delete {held.get('deletions')} contacts"
        option = f"--approve-deletions {held.get('deletions')}"
    return (
        f"{customer_id}: waiting for an approval: {what}. Look first"
        f" (pdsync sync --plan --customer {customer_id}), then:\n"
        f"  pdsync sync --customer {customer_id} {option} --reason TEXT"
    )


# How long `pdsync sync` waits for a running daemon to claim the sync it queued.
CLAIM_TIMEOUT_SECONDS = 30.0


def _daemon_running(store: Store, settings: Settings) -> bool:
    """Whether a daemon (any instance) is alive on this store, by its heartbeats."""
    alive = timedelta(seconds=3 * settings.daemon.leader_poll_seconds + 5)
    return bool(store.instances(seen_within=alive))


async def _queued_syncs(
    store: Store, customers: Sequence[CustomerConfig]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Syncs carried out by the running daemon, as work items (never beside its own
    sync of the same customer); waits for each."""
    import secrets

    from daemon.service import NotClaimed, QueuedSync

    trigger = f"cli:{operator()}:{secrets.token_hex(4)}"
    err.print("a daemon runs on this store: the sync is queued for it", highlight=False)
    queue = QueuedSync(store, claim_timeout=CLAIM_TIMEOUT_SECONDS)
    outcomes = []
    for customer in customers:
        try:
            await queue.sync(customer, trigger=trigger)
        except NotClaimed as exc:
            err.print(
                f"{exc}: the daemon seen on this store may have stopped; run"
                " `pdsync sync` again (without a live daemon it syncs here)",
                highlight=False,
                markup=False,
            )
            raise typer.Exit(1) from None
        runs = [
            r for r in store.list_runs(customer_id=customer.id, limit=50) if r.trigger == trigger
        ]
        if runs:
            run = runs[0]
            outcomes.append((customer.id, run.id, str(run.status), dict(run.summary)))
        else:  # the item ended without a run (the daemon does not know the customer)
            outcomes.append((customer.id, "-", "not_run", {"error": "the daemon ran no sync"}))
    return outcomes


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError):
        err.print(f"--since {text!r}: use a number and s, m, h or d (e.g. 24h)")
        raise typer.Exit(2) from None


@runs_app.callback(invoke_without_command=True)
def runs_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="e.g. 24h, 30m, 7d")] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """List recent runs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config,
        lambda store: store.list_runs(customer_id=customer, since=_since(since), limit=limit),
    )
    table = Table(title="Runs")
    for column in ("run", "kind", "customer", "trigger", "status", "started", "seconds", "changes"):
        table.add_column(column)
    for row in rows:
        applied = (row.summary or {}).get("applied", {})
        seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at else None
        table.add_row(
            row.id[:8],
            row.kind,
            row.customer_id or "-",
            row.trigger,
            row.status,
            row.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{seconds:.1f}" if seconds is not None else "-",
            str(sum(v for k, v in applied.items() if k.endswith(".applied"))),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """One run with its events."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        runs = [r for r in store.list_runs(limit=10_000) if r.id.startswith(run_id)]
        if len(runs) != 1:
            err.print(f"no single run matches {run_id!r}")
            raise typer.Exit(2)
        row = runs[0]
        events = store.run_events(run_id=row.id)
    finally:
        store.close()
    out.print(
        f"run {row.id} {row.kind} {row.customer_id} {row.status} {row.started_at:%Y-%m-%d %H:%M:%S}"
    )
    out.print(row.summary, highlight=False)
    table = Table()
    for column in ("time", "level", "system", "event", "detail"):
        table.add_column(column)
    for event in events:
        table.add_row(
            event.ts.strftime("%H:%M:%S"),
            event.level,
            event.system or "-",
            event.event,
            str(event.detail or ""),
        )
    out.print(table)


@disputes_app.callback(invoke_without_command=True)
def disputes_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List open disputes (field names only; the values stay in the systems)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(config, lambda store: store.list_disputes(customer_id=customer, open_only=True))
    _table(
        "Open disputes",
        ("id", "customer", "link", "field", "systems or answers", "opened"),
        (
            (
                str(row.id),
                row.customer_id,
                row.link_id[:8],
                REVIEW_LABELS.get(row.field, row.field),
                ", ".join(sorted(row.fingerprints)),
                row.opened_at.strftime("%Y-%m-%d %H:%M"),
            )
            for row in rows
        ),
    )
    for row in rows:
        if row.field not in REVIEW_LABELS:
            continue
        # Who the held record might be, by ids only, and the commands that answer.
        err.print(f"{row.id}: {REVIEW_LABELS[row.field]}, held: {row.fingerprints[SEPARATE]}")
        err.print(f"  a contact of its own:  pdsync disputes resolve {row.id} --winner {SEPARATE}")
        for answer, records in sorted(row.fingerprints.items()):
            if answer != SEPARATE:
                err.print(f"  the contact {records}:")
                err.print(f"    pdsync disputes resolve {row.id} --winner {answer}")


REVIEW_LABELS = {AMBIGUOUS_MATCH: "ambiguous match", POSSIBLE_DUPLICATE: "possible duplicate"}


@tasks_app.callback(invoke_without_command=True)
def tasks_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List open manual tasks; `pdsync tasks show ID` prints one's instruction."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(config, lambda store: store.list_tasks(customer_id=customer, open_only=True))
    _table(
        "Open manual tasks",
        ("id", "customer", "system", "operation", "link", "created"),
        (
            (
                str(row.id),
                row.customer_id,
                row.system,
                row.op_kind,
                row.link_id[:8],
                row.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for row in rows
        ),
    )


@tasks_app.command("show")
def tasks_show(task_id: int, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a task's instruction for the operator (it holds personal data: not logged)."""
    instruction = _query(config, lambda store: store.task_instruction(task_id))
    out.print(instruction, highlight=False, markup=False)


@quarantine_app.callback(invoke_without_command=True)
def quarantine_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List quarantined records (the reason names the field; the payload stays encrypted)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(config, lambda store: store.list_quarantine(customer_id=customer, open_only=True))
    _table(
        "Quarantined records",
        ("id", "customer", "system", "external id", "reason", "seen"),
        (
            (
                str(row.id),
                row.customer_id,
                row.system,
                row.external_id or "-",
                row.reason,
                str(row.count),
            )
            for row in rows
        ),
    )


PlanOption = Annotated[
    bool, typer.Option("--plan", help="Show what would be erased; change nothing.")
]
ExecuteOption = Annotated[bool, typer.Option("--execute", help="Erase (needs --reason).")]
ReasonOption = Annotated[str | None, typer.Option(help="Why: goes on the certificate.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
IncludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="ITEM",
        help="Erase this ambiguous item too, by the id the plan printed (repeatable).",
    ),
]


def _erase(
    config: Path,
    customer_id: str,
    *,
    scope: str,
    subject: Subject | None,
    plan: bool,
    execute: bool,
    reason: str | None,
    yes: bool,
    include: Sequence[str] = (),
) -> None:
    from daemon.erasure import ErasureError, check_item_ids

    if plan == execute:
        err.print("give exactly one of --plan (show) or --execute (erase)")
        raise typer.Exit(2)
    if execute and not reason:
        err.print("--execute needs --reason TEXT (it goes on the certificate)")
        raise typer.Exit(2)
    try:
        included = check_item_ids(include)
    except ErasureError as exc:
        raise fail(f"--include: {exc}") from None
    if included and scope == "customer":
        raise fail("--include: a whole-customer erasure erases every item; nothing to include")
    settings = load_settings(config)

    async def go() -> int:
        store = open_store(settings)
        try:
            async with AsyncExitStack() as stack:
                service = await _erasure_service(settings, store, stack)
                if plan:
                    preview = await service.preview(customer_id, scope=scope, subject=subject)
                    return _print_plan(preview, included)
                if not yes and sys.stdin.isatty():
                    what = f"customer {customer_id}" if scope == "customer" else "this subject"
                    typer.confirm(f"Erase {what} in every system, for good?", abort=True)
                request_id = service.request(
                    customer_id,
                    scope=scope,
                    subject=subject,
                    requested_by=operator(),
                    reason=reason or "",
                    include=included,
                )
                out.print(f"erasure {request_id} received")
                row = await service.advance(request_id)
                _print_erasure(row, store.erasure_items(row.id))
                if row.state == "cancelled":
                    return 2  # an --include the plan did not have: the error says which
                return (
                    3
                    if row.state in ("awaiting_approval", "verifying")
                    else (1 if row.state == "failed" else 0)
                )
        finally:
            store.close()

    try:
        code = asyncio.run(go())
    except ErasureError as exc:
        err.print(f"erasure refused: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


async def _erasure_service(settings: Settings, store: Any, stack: AsyncExitStack) -> Any:
    from daemon.erasure import ErasureService
    from daemon.proof import certifier_for, open_ledger
    from daemon.wiring import erasers_for, open_connectors

    connectors = await open_connectors(settings, stack, store=store)
    ledger = open_ledger(settings, store)
    return ErasureService(
        settings,
        store,
        erasers_for(connectors),
        recorder=ledger,
        certify=certifier_for(settings, ledger),
        progress=_progress_printer(),
    )


def _progress_printer() -> Any:
    """Progress of long erasures: a bar on a terminal, plain lines elsewhere."""
    if out.is_terminal:
        from rich.progress import Progress

        progress = Progress(console=err, transient=True)
        tasks: dict[str, Any] = {}

        def bar(system: str, done: int, total: int) -> None:
            if system not in tasks:
                progress.start()
                tasks[system] = progress.add_task(f"erasing in {system}", total=total)
            progress.update(tasks[system], completed=done)
            if all(t.finished for t in progress.tasks):
                progress.stop()

        return bar

    def line(system: str, done: int, total: int) -> None:
        err.print(f"{system}: {done}/{total} erased", highlight=False)

    return line


def _matched_text(evidence: Any, masked: Any) -> str:
    """The identifiers an item matched, masked, each with its strength: one a line, so
    that a narrow column never breaks one in two."""
    from daemon.certificate.evidence import STRENGTH_LABELS, masked_matches

    return "\n".join(
        f"{shown} {STRENGTH_LABELS.get(strength, strength)}"
        for _, shown, strength in masked_matches(evidence or (), masked)
    )


def _items_table(title: str, rows: Iterable[Sequence[str]], last: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("item", no_wrap=True)  # copyable in full: --include takes it
    table.add_column("what", no_wrap=True)
    table.add_column("matched")
    table.add_column(last, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _print_identifiers(masked: Any, strengths: Any) -> None:
    """The request's identifiers, masked, each with what it is worth here."""
    from daemon.certificate.evidence import STRENGTH_LABELS

    weighed = {(str(s["kind"]), int(s["position"])): str(s["strength"]) for s in strengths}
    parts = []
    for kind in ("email", "phone", "name"):
        for position, shown in enumerate(masked.get(f"{kind}s", ())):
            strength = weighed.get((kind, position), "name" if kind == "name" else "")
            parts.append(f"{shown} {STRENGTH_LABELS.get(strength, strength)}".strip())
    if parts:
        out.print("identifiers: " + ", ".join(parts), highlight=False, markup=False)


def _print_plan(preview: Any, include: Sequence[str]) -> int:
    """A preview: per system the items to erase and the ambiguous ones, with evidence
    (data, stdout); what it means (messages, stderr). Returns the exit code."""
    from daemon.erasure import strengths_to_list

    title = f"Erasure plan: {preview.scope} of {preview.customer_id} (nothing changed)"
    if preview.scope == "customer":
        table = Table(title=title)
        for column in ("system", "what", "count"):
            table.add_column(column)
        for system, kinds in preview.counts().items():
            if not kinds:
                table.add_row(system, "-", "0")
            for kind, n in sorted(kinds.items()):
                table.add_row(system, kind, str(n))
        out.print(table)
        return 0
    masked = preview.identifiers.to_dict()
    out.print(title, highlight=False, markup=False)
    _print_identifiers(masked, strengths_to_list(preview.strengths))
    found_ids = {found.item for found in preview.located}
    unknown = [i for i in include if i not in found_ids]
    for system in preview.systems:
        located = sorted(
            (f for f in preview.located if f.ref.system == system),
            key=lambda f: (f.ambiguous, f.ref.kind, f.item),
        )
        if not located:
            out.print(f"{system}: nothing found", highlight=False, markup=False)
            continue
        erase = sum(1 for f in located if not f.ambiguous)
        ambiguous = len(located) - erase
        rows = []
        for found in located:
            plan = "erase"
            if found.ambiguous:
                plan = "include" if found.item in include else "ambiguous"
            evidence = found.evidence.to_list() if found.evidence is not None else ()
            rows.append((found.item, found.ref.kind, _matched_text(evidence, masked), plan))
        _items_table(f"{system}: {erase} to erase, {ambiguous} ambiguous", rows, "plan")
    weights = {str(s) for s in preview.strengths.values()}
    if preview.nothing_personal:
        given = {
            frozenset({"shared"}): "every identifier given is shared by several records, a"
            " department or a role address",
            frozenset({"name"}): "only names were given, and a name is no proof of who someone is",
        }.get(
            frozenset(weights),
            "every identifier given is shared (by several records, a department or a role"
            " address) or a name",
        )
        err.print(
            f"Nothing personal: {given}. The erasure would erase nothing unless you include"
            " items by their id (--include ITEM with --execute).",
            highlight=False,
            markup=False,
        )
    elif any(f.ambiguous for f in preview.located):
        err.print(
            "Ambiguous items were found only by shared identifiers or a name: they are left"
            " alone unless you include them by their id (--include ITEM with --execute).",
            highlight=False,
            markup=False,
        )
    if unknown:
        err.print(
            f"--include {unknown[0]}: no item of this plan has that id",
            highlight=False,
            markup=False,
        )
        return 2
    return 0


def _print_erasure(row: Any, items: Sequence[Any] = ()) -> None:
    from daemon.erasure import item_id

    out.print(
        f"erasure {row.id}  customer {row.customer_id}  scope {row.scope}  state {row.state}\n"
        f"requested by {row.requested_by} at {row.requested_at:%Y-%m-%d %H:%M} UTC, "
        f"deadline {row.deadline:%Y-%m-%d %H:%M} UTC; reason: {row.reason}",
        highlight=False,
        markup=False,
    )
    if row.masked and any(row.masked.values()):
        _print_identifiers(row.masked, row.strengths)
    if row.outcome:
        table = Table()
        for column in ("system", "outcome", "deleted", "verified absent"):
            table.add_column(column)
        for system, result in sorted(row.outcome.items()):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())) or "-"
            table.add_row(
                system, result["outcome"], counts, "yes" if result["verified_absent"] else "NO"
            )
        out.print(table)
    elif row.plan:
        out.print(
            "plan: "
            + "; ".join(
                f"{s}: " + ", ".join(f"{k} {v}" for k, v in kinds.items())
                for s, kinds in sorted(row.plan.items())
            ),
            highlight=False,
            markup=False,
        )
    # The decisions: what was left alone as ambiguous, and what an admin included.
    decided = [i for i in items if i.status == "ambiguous" or i.included_by]
    if decided:
        rows = [
            (
                item_id(i.system, i.kind, i.item_id),
                i.kind,
                _matched_text(i.evidence, row.masked or {}),
                f"included by {i.included_by}" if i.included_by else "left alone",
            )
            for i in sorted(decided, key=lambda i: (i.system, bool(i.included_by), i.kind))
        ]
        _items_table(
            "Ambiguous items (found only by shared identifiers or a name)", rows, "decision"
        )
    if row.includes and row.state == "received":
        out.print(
            "to include when planned: " + ", ".join(str(i["item"]) for i in row.includes),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    # Hints to paste and ids to copy: never broken over lines.
    if row.state == "awaiting_approval":
        out.print(f"waiting for a second admin: pdsync erasures approve {row.id}", soft_wrap=True)
    if row.error:
        err.print(f"error: {row.error}", highlight=False, markup=False, soft_wrap=True)
    if row.certificate:
        out.print(
            f"certificate issued: pdsync certificate export {row.id} --format pdf -o FILE",
            soft_wrap=True,
        )


@erase_app.command("subject")
def erase_subject(
    customer: Annotated[str, typer.Option(help="The customer the subject belongs to.")],
    email: Annotated[list[str] | None, typer.Option(help="An e-mail address (repeatable).")] = None,
    phone: Annotated[list[str] | None, typer.Option(help="A phone number (repeatable).")] = None,
    name: Annotated[list[str] | None, typer.Option(help="A full name (repeatable).")] = None,
    plan: PlanOption = False,
    execute: ExecuteOption = False,
    reason: ReasonOption = None,
    yes: YesOption = False,
    include: IncludeOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Erase one person's data in every system: `--plan` shows, `--execute` erases.

    What holds a personal identifier of the person is erased. What was found only by
    identifiers several people share (a switchboard number, post@) or by a name is
    ambiguous: the plan lists it with an id, and it is left alone unless you include
    it (`--include ID`, repeatable; `--yes` never includes anything)."""
    from daemon.normalize import BadIdentifier, parse_subject

    try:
        subject = parse_subject(emails=email or [], phones=phone or [], names=name or [])
    except BadIdentifier as exc:
        err.print(f"erasure refused: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    _erase(
        config,
        customer,
        scope="subject",
        subject=subject,
        plan=plan,
        execute=execute,
        reason=reason,
        yes=yes,
        include=include or (),
    )


@erase_app.command("customer")
def erase_customer(
    customer_id: Annotated[str, typer.Argument(help="The customer whose contract ended.")],
    plan: PlanOption = False,
    execute: ExecuteOption = False,
    reason: ReasonOption = None,
    yes: YesOption = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Erase everything of a customer in every system and in pdsync's own store."""
    _erase(
        config,
        customer_id,
        scope="customer",
        subject=None,
        plan=plan,
        execute=execute,
        reason=reason,
        yes=yes,
    )


@erasures_app.callback(invoke_without_command=True)
def erasures_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only open requests.")] = False,
) -> None:
    """List erasure requests, newest first, with their deadlines."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config, lambda store: store.list_erasures(customer_id=customer, open_only=open_only)
    )
    table = Table(title="Erasure requests")
    for column in ("id", "customer", "scope", "state", "requested", "by", "deadline"):
        table.add_column(column)
    now = datetime.now(UTC)
    for row in rows:
        late = row.deadline < now and row.state not in ("completed", "cancelled")
        table.add_row(
            row.id[:8],
            row.customer_id,
            row.scope,
            row.state,
            row.requested_at.strftime("%Y-%m-%d %H:%M"),
            row.requested_by,
            row.deadline.strftime("%Y-%m-%d %H:%M") + (" LATE" if late else ""),
        )
    out.print(table)


@erasures_app.command("show")
def erasures_show(request_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """One erasure request: plan, outcome per system, certificate."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        row = _get_erasure(store, request_id)
        _print_erasure(row, store.erasure_items(row.id))
    finally:
        store.close()


def _advance(config: Path, action: Any) -> None:
    """Apply `action(service) -> request id` and move that request on."""
    from daemon.erasure import ErasureError
    from daemon.store import NotFound

    settings = load_settings(config)

    async def go() -> Any:
        store = open_store(settings)
        try:
            async with AsyncExitStack() as stack:
                service = await _erasure_service(settings, store, stack)
                request_id = action(service)
                row = await service.advance(request_id)
                return row, store.erasure_items(row.id)
        finally:
            store.close()

    try:
        row, items = asyncio.run(go())
    except (ErasureError, NotFound) as exc:
        err.print(f"refused: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    _print_erasure(row, items)
    raise typer.Exit(1 if row.state == "failed" else 0)


@erasures_app.command("approve")
def erasures_approve(
    request_id: str,
    by: Annotated[str | None, typer.Option(help="The approving admin (default: you).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Approve a whole-customer erasure (not by the admin who asked), then carry it out."""
    _advance(config, lambda service: service.approve(request_id, approver=by or operator()).id)


@erasures_app.command("resume")
def erasures_resume(request_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Move an open request on now (the daemon does this on its own, too)."""
    _advance(config, lambda service: service.store.get_erasure(request_id).id)


@erasures_app.command("cancel")
def erasures_cancel(
    request_id: str,
    by: Annotated[str | None, typer.Option(help="Who cancels (default: you).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Cancel a request that has not started erasing."""
    _advance(config, lambda service: service.cancel(request_id, by=by or operator()).id)


@erasures_app.command("include")
def erasures_include(
    request_id: str,
    items: Annotated[list[str], typer.Argument(metavar="ITEM...", help="Ids from its plan.")],
    by: Annotated[str | None, typer.Option(help="The deciding admin (default: you).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Erase ambiguous items of a request not yet executing, by their ids in its plan."""
    from daemon.erasure import ErasureError
    from daemon.store import NotFound

    settings = load_settings(config)

    async def go() -> Any:
        store = open_store(settings)
        try:
            async with AsyncExitStack() as stack:
                service = await _erasure_service(settings, store, stack)
                row = service.include(request_id, items, by=by or operator())
                return row, store.erasure_items(row.id)
        finally:
            store.close()

    try:
        row, found = asyncio.run(go())
    except (ErasureError, NotFound) as exc:
        raise fail(f"refused: {exc}") from None
    _print_erasure(row, found)
    err.print(
        f"the daemon carries it out; or now: pdsync erasures resume {row.id}",
        highlight=False,
        soft_wrap=True,  # a command to paste: never broken over lines
    )


@sandbox_app.command("up")
def sandbox_up(
    data_dir: Annotated[Path, typer.Option(help="Where config, seed data and the store go.")],
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 1,
    customers: Annotated[int, typer.Option(help="How many customers.")] = 3,
    contacts: Annotated[int, typer.Option(help="Contacts per customer.")] = 40,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar=CONFIG_ENV, hidden=True)
    ] = None,
) -> None:
    """Start the Zisson simulator and the Firestore emulator with seeded data, write
    DATA_DIR/pdsync.toml, seed.json and ready, and stay up until interrupted."""
    from sandbox.up import SandboxError, run_foreground

    logs.configure(format="auto", level="info")
    try:
        run_foreground(data_dir, seed=seed, customers=customers, contacts=contacts)
    except SandboxError as exc:
        err.print(f"sandbox: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None


def main() -> None:
    """`pdsync`: a system that cannot be set up or reached ends the command with its
    message (naming the system, never a secret), not a traceback."""
    from connectors.base import ConnectorError, RetriableError

    try:
        app()
    except ConnectorError as exc:
        err.print(str(exc), highlight=False, markup=False)
        # Unreachable now: try again later (1); refused or misconfigured: fix it (2).
        sys.exit(1 if isinstance(exc, RetriableError) else 2)


if __name__ == "__main__":
    main()
