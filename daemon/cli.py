"""The `pdsync` command line.

Exit codes: 0 done; 1 a run failed; 2 bad usage or configuration (an unknown id or
customer, a store that cannot be opened); 3 waiting for an approval (a run stopped at
the deletion threshold, an erasure waiting for a second admin); 4 an erasure whose
identifiers matched nothing in any system; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import os
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
    EXIT_INTERRUPTED,
    EXIT_NOTHING_MATCHED,
    ConfigOption,
    MessagesNotTracebacks,
    Verbosity,
    err,
    fail,
    known_customer,
    load_settings,
    open_store,
    operator,
    out,
    table,
    with_config,
)
from daemon.cli_common import (
    get_erasure as _get_erasure,
)
from daemon.cli_common import (
    query as _query,
)
from daemon.config import CONFIG_ENV, ConfigError, CustomerConfig, Settings
from daemon.domain import Subject
from daemon.entry import run_daemon

if TYPE_CHECKING:
    from daemon.store import Store

app = typer.Typer(
    name="pdsync",
    help="Keeps personal data in step, and deleted on time, across Zisson, Firestore and Outlook.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=MessagesNotTracebacks,
    # Plain help: paragraphs re-flowed to the terminal (never broken mid-sentence), no
    # type placeholders beside flags.
    rich_markup_mode=None,
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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pdsync {version('pdsync')}")
        except PackageNotFoundError:
            typer.echo("pdsync (not installed)")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log at the level the config sets (default: warnings only)."
        ),
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    Verbosity.verbose = verbose


WideOption = Annotated[
    bool, typer.Option("--wide", "-w", help="Full ids and every column (wider than 80).")
]
CustomerFilter = Annotated[
    str | None, typer.Option("--customer", metavar="ID", help="Only this customer.")
]


def _short(value: str, wide: bool) -> str:
    """An id as a table shows it: its first 8 characters (which every command taking an id
    accepts), in full with --wide."""
    return value if wide else value[:8]


def _table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], wide: bool = False
) -> None:
    shown = table(title, columns)
    for row in rows:
        shown.add_row(*row)
    _show(shown, wide)


def _show(shown: Table, wide: bool) -> None:
    """A table at the terminal's width; with --wide as wide as its cells need (ids whole,
    every column), however narrow the terminal."""
    if not wide:
        out.print(shown)
        return
    # Console.print never goes past the console's width: a console as wide as needed.
    from rich.console import Console

    Console(markup=False, highlight=False, emoji=False, width=max(out.width, WIDE_COLUMNS)).print(
        shown
    )


WIDE_COLUMNS = 200


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
    from daemon.config import SYSTEMS, exposed_secret_files, unreachable_secrets

    settings = load_settings(config)
    problems = unreachable_secrets(settings) + exposed_secret_files(settings)
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
    if not problems:
        problems += _store_problems(settings)
    if problems:
        err.print("\n".join(f"{config}: {p}" for p in problems))
        raise typer.Exit(2)
    out.print(
        f"{config}: OK — {len(settings.customers)} customers, systems: "
        + ", ".join(s for s in SYSTEMS if getattr(settings.systems, s))
    )


def _store_problems(settings: Settings) -> list[str]:
    """What the config asks of the store that the store cannot give: a customer erased
    as a whole (every sync of it would fail: it must leave the config), a Zisson token
    file named but neither readable nor imported into the store yet. A SQLite store not
    made yet is not made here (nothing was erased or imported into it)."""
    from sqlalchemy.engine import make_url

    from connectors.zisson.auth import token_account
    from daemon.store import StoreError

    url = make_url(settings.store.url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    fresh = url.get_backend_name() == "sqlite" and not (database and Path(database).exists())
    store = None if fresh else open_store(settings)
    problems = []
    try:
        for i, customer in enumerate(settings.customers):
            erased = [
                e
                for e in (store.list_erasures(customer_id=customer.id) if store else ())
                if e.scope == "customer" and e.state == "completed"
            ]
            if erased:
                problems.append(
                    f"customers[{i}] ({customer.id}): the customer was erased (erasure"
                    f" {erased[0].id}); remove it from the config"
                )
                continue
            binding = customer.zisson
            file = binding.refresh_token_file if binding is not None else None
            if binding is None or file is None or os.access(file, os.R_OK):
                continue
            account = token_account(binding)
            try:
                held = store is not None and store.connector_secret(account.system, account.key)
            except StoreError:
                held = None
            if not held:
                problems.append(
                    f"customers[{i}].zisson.refresh_token_file: file {file} cannot be read,"
                    " and the store holds no token for this account yet"
                )
    finally:
        if store is not None:
            store.close()
    return problems


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the daemon: sync every customer on its interval until SIGTERM."""
    # `pdsync run --config FILE` starts in daemon/entry.py without this module's
    # libraries; here when given more (`pdsync -v run`), the same way.
    raise typer.Exit(run_daemon(config))


@app.command()
def sync(
    config: ConfigOption = DEFAULT_CONFIG,
    customer: CustomerFilter = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show what would change; change nothing.")
    ] = False,
    approve_deletions: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Approve a run deleting up to N contacts (past the threshold)."
        ),
    ] = None,
    approve_creations: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Approve a run creating up to N contacts (past the threshold)."
        ),
    ] = None,
    approve_shrink: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Approve a run although a system read N records fewer than it held"
            " (empty, or far fewer: an outage looks the same).",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (recorded with the approval).")
    ] = None,
    wide: WideOption = False,
) -> None:
    """Run one sync cycle now and print what changed (or, with --plan, would change)."""
    from daemon.collector import collector_thresholds
    from daemon.proof import open_ledger
    from daemon.store import RunStatus
    from daemon.sync import SyncService
    from daemon.wiring import open_connectors

    # Logging as for every command (load_settings): warnings only unless -v, so the
    # table says what each run did without per-read info lines ahead of it.
    settings = load_settings(config)
    known_customer(settings, customer)
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
        raise fail(
            "--approve-deletions, --approve-creations and --approve-shrink need"
            " --customer and --reason"
        )
    if reason and (logs.EMAIL.search(reason) or logs.PHONE.search(reason)):
        raise fail("--reason must not hold e-mail addresses or phone numbers (it is on the ledger)")

    async def go() -> list[tuple[str, str, str, dict[str, Any]]]:
        """(customer, run id, status, summary) per customer."""
        store = open_store(settings)
        try:
            # As the daemon does: every change and approval is on the ledger.
            ledger = open_ledger(settings, store)
            for kind, count in approvals.items():
                assert customer is not None
                by = operator()
                approval_id = store.approve_deletions(
                    customer, count, by=by, reason=reason or "", kind=kind
                )
                if ledger is not None:
                    ledger.record(
                        "sync.approved",
                        customer_id=customer,
                        approval_id=approval_id,
                        threshold=kind,
                        max_count=count,
                        by=by,
                        reason=reason or "",
                    )
            if not plan and _daemon_running(store, settings):
                return await _queued_syncs(store, customers)
            async with AsyncExitStack() as stack:
                connectors = await open_connectors(settings, stack, store=store)
                service = SyncService(settings, store, connectors, ledger=ledger)
                reports = [await service.sync(c, trigger="cli", plan_only=plan) for c in customers]
            return [(r.customer_id, r.run_id, str(r.status), r.summary()) for r in reports]
        finally:
            store.close()

    try:
        # As the daemon runs its syncs: CPython's thresholds made a 5,000-contact first
        # sync 13 full collections of the whole heap (13.6 s against 12.6 s).
        with collector_thresholds():
            outcomes = asyncio.run(go())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    shown = table(
        "Planned changes" if plan else "Sync",
        ("customer", "run", "status", "system", "create", "update", "delete", "disputes", "manual"),
        ids=2,
    )
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
            shown.add_row(
                customer_id if i == 0 else "",
                _short(run_id, wide) if i == 0 else "",
                status if i == 0 else "",
                system,
                str(counts.get(f"{system}.create", 0)),
                str(counts.get(f"{system}.update", 0)),
                str(counts.get(f"{system}.delete", 0)),
                str(counts.get("disputes", 0)) if i == 0 else "",
                str(manual),
            )
        if summary.get("error"):
            err.print(f"{customer_id}: {summary['error']}")
    _show(shown, wide)
    statuses = {status for _, _, status, _ in outcomes}
    if RunStatus.FAILED in statuses or "not_run" in statuses:
        raise typer.Exit(1)
    if RunStatus.AWAITING_APPROVAL in statuses:
        for customer_id, _, status, summary in outcomes:
            if status == RunStatus.AWAITING_APPROVAL:
                err.print(_held_hint(customer_id, dict(summary.get("held") or {}), config))
        raise typer.Exit(3)


def _held_hint(customer_id: str, held: dict[str, Any], config: Path = DEFAULT_CONFIG) -> str:
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
    also = with_config(config)
    return (
        f"{customer_id}: waiting for an approval: {what}. Look first"
        f" (pdsync sync --plan --customer {customer_id}{also}), then:\n"
        f"  pdsync sync --customer {customer_id} {option} --reason TEXT{also}"
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
    customer: CustomerFilter = None,
    since: Annotated[str | None, typer.Option(metavar="AGE", help="e.g. 24h, 30m, 7d")] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most N runs.")] = 20,
    wide: WideOption = False,
) -> None:
    """List recent runs, newest first (`pdsync runs show ID` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config,
        lambda store: store.list_runs(customer_id=customer, since=_since(since), limit=limit),
        customer=customer,
    )
    columns = ["run", "kind", "customer", "status", "started", "changes"]
    if wide:
        columns[4:4] = ["trigger"]
        columns[-1:-1] = ["seconds"]
    shown = table("Runs", columns)
    for row in rows:
        seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at else None
        cells = [
            _short(row.id, wide),
            row.kind,
            row.customer_id or "-",
            row.status,
            row.started_at.strftime("%Y-%m-%d %H:%M"),
            str(row.changes),
        ]
        if wide:
            cells[4:4] = [row.trigger]
            cells[-1:-1] = [f"{seconds:.1f}" if seconds is not None else "-"]
        shown.add_row(*cells)
    _show(shown, wide)


@runs_app.command("show")
def runs_show(run_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """One run with its events."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        matches = store.find_runs(run_id, limit=2) if run_id else []
        row = store.get_run(matches[0]) if len(matches) == 1 else None
        if row is None:
            raise fail(f"no single run matches {run_id!r} (`pdsync runs` lists them)")
        events = store.run_events(run_id=row.id)
    finally:
        store.close()
    out.print(
        f"run {row.id} {row.kind} {row.customer_id} {row.status} {row.started_at:%Y-%m-%d %H:%M:%S}"
    )
    out.print(row.summary)
    shown = table(None, ("time", "level", "system", "event", "detail"))
    for event in events:
        shown.add_row(
            event.ts.strftime("%H:%M:%S"),
            event.level,
            event.system or "-",
            event.event,
            str(event.detail or ""),
        )
    out.print(shown)


@disputes_app.callback(invoke_without_command=True)
def disputes_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: CustomerFilter = None,
    wide: WideOption = False,
) -> None:
    """List open disputes (field names only; the values stay in the systems)."""
    if ctx.invoked_subcommand is not None:
        return
    # Here, not at the top: reconcile brings the crypto stack, which other commands
    # (and `pdsync --help`) do without.
    from daemon.reconcile import AMBIGUOUS_MATCH, POSSIBLE_DUPLICATE, SEPARATE

    review_labels = {AMBIGUOUS_MATCH: "ambiguous match", POSSIBLE_DUPLICATE: "possible duplicate"}
    rows = _query(
        config,
        lambda store: store.list_disputes(customer_id=customer, open_only=True),
        customer=customer,
    )
    _table(
        "Open disputes",
        ("id", "customer", "link", "field", "systems or answers", "opened"),
        (
            (
                str(row.id),
                row.customer_id,
                _short(row.link_id, wide),
                review_labels.get(row.field, row.field),
                ", ".join(sorted(row.fingerprints)),
                row.opened_at.strftime("%Y-%m-%d %H:%M"),
            )
            for row in rows
        ),
        wide,
    )
    for row in rows:
        if row.field not in review_labels:
            continue
        # Who the held record might be, by ids only, and the commands that answer.
        also = with_config(config)
        err.print(f"{row.id}: {review_labels[row.field]}, held: {row.fingerprints[SEPARATE]}")
        err.print(
            f"  a contact of its own:  pdsync disputes resolve {row.id} --winner {SEPARATE}{also}"
        )
        for answer, records in sorted(row.fingerprints.items()):
            if answer != SEPARATE:
                err.print(f"  the contact {records}:")
                err.print(f"    pdsync disputes resolve {row.id} --winner {answer}{also}")


@tasks_app.callback(invoke_without_command=True)
def tasks_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: CustomerFilter = None,
    wide: WideOption = False,
) -> None:
    """List open manual tasks; `pdsync tasks show ID` prints one's instruction."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config,
        lambda store: store.list_tasks(customer_id=customer, open_only=True),
        customer=customer,
    )
    _table(
        "Open manual tasks",
        ("id", "customer", "system", "operation", "link", "created"),
        (
            (
                str(row.id),
                row.customer_id,
                row.system,
                row.op_kind,
                _short(row.link_id, wide),
                row.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for row in rows
        ),
        wide,
    )


@tasks_app.command("show")
def tasks_show(task_id: int, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a task's instruction for the operator (it holds personal data: not logged)."""
    from daemon.store import NotFound

    def read(store: Store) -> str:
        try:
            return str(store.task_instruction(task_id))
        except NotFound:
            raise fail(f"no manual task {task_id} (`pdsync tasks` lists the open ones)") from None

    out.print(_query(config, read))


@quarantine_app.callback(invoke_without_command=True)
def quarantine_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: CustomerFilter = None,
) -> None:
    """List quarantined records (the reason names the field; the payload stays encrypted)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config,
        lambda store: store.list_quarantine(customer_id=customer, open_only=True),
        customer=customer,
    )
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
        raise fail("give exactly one of --plan (show) or --execute (erase)")
    if execute and not reason:
        raise fail("--execute needs --reason TEXT (it goes on the certificate)")
    if execute and not yes and not sys.stdin.isatty():
        # Nobody can confirm: a destructive command goes on only when told to.
        raise fail("--execute erases for good: without a terminal to confirm on, give --yes")
    try:
        included = check_item_ids(include)
    except ErasureError as exc:
        raise fail(f"--include: {exc}") from None
    settings = load_settings(config)
    known_customer(settings, customer_id)
    received: list[str] = []  # the request, once made: Ctrl-C leaves it to be resumed

    async def go() -> int:
        store = open_store(settings)
        try:
            async with AsyncExitStack() as stack:
                service = await _erasure_service(settings, store, stack)
                if plan:
                    preview = await service.preview(customer_id, scope=scope, subject=subject)
                    return _print_plan(preview, included)
                if not yes:
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
                received.append(request_id)
                out.print(f"erasure {request_id} received")
                row = await service.advance(request_id)
                _print_erasure(row, store.erasure_items(row.id), config=config)
                if row.state == "cancelled":
                    return 2  # an --include the plan did not have: the error says which
                if row.state in ("awaiting_approval", "verifying"):
                    return 3
                if row.state == "failed":
                    return 1
                if _matched_nothing(row):
                    err.print(
                        "nothing matched: no system holds anything these identifiers find"
                        " (a typo?); the request is completed and its certificate says so"
                    )
                    return EXIT_NOTHING_MATCHED
                return 0
        finally:
            store.close()

    try:
        code = asyncio.run(go())
    except ErasureError as exc:
        raise fail(f"erasure refused: {exc}") from None
    except KeyboardInterrupt:
        if not received:
            raise fail("interrupted: nothing was requested", EXIT_INTERRUPTED) from None
        raise fail(
            f"interrupted: erasure {received[0]} stays open and nothing is done twice; the"
            f" daemon finishes it, or now: pdsync erasures resume {received[0]}"
            + with_config(config),
            EXIT_INTERRUPTED,
        ) from None
    raise typer.Exit(code)


def _matched_nothing(row: Any) -> bool:
    """A completed subject erasure that found nothing anywhere: every system no_match,
    and no ambiguous item left alone either."""
    results = list((row.outcome or {}).values())
    return (
        row.scope == "subject"
        and bool(results)
        and all(r.get("outcome") == "no_match" and not r.get("left_alone") for r in results)
    )


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


# Why a whole-customer erasure left an item alone (it has no identifiers to show).
HELD_BY_OTHERS = "another customer's too"


def _matched_text(evidence: Any, masked: Any, *, scope: str = "subject") -> str:
    """The identifiers an item matched, masked, each with its strength: one a line, so
    that a narrow column never breaks one in two. (A whole-customer erasure's
    ambiguous item matched no identifier: it is another customer's too.)"""
    from daemon.certificate.evidence import STRENGTH_LABELS, masked_matches

    if scope == "customer":
        return HELD_BY_OTHERS
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

    found_ids = {found.item for found in preview.located}
    unknown = [i for i in include if i not in found_ids]
    if preview.scope == "customer":
        shown = table(
            f"Erasure plan for the whole customer {preview.customer_id} (nothing changed)",
            ("system", "what", "count"),
        )
        for system, kinds in preview.counts().items():
            found = {kind: n for kind, n in sorted(kinds.items()) if n}
            if system == "pdsync":
                for kind, n in found.items():
                    shown.add_row("pdsync (its own store)", kind, str(n))
                continue
            if not found:
                shown.add_row(system, "nothing found", "0")
            for kind, n in found.items():
                shown.add_row(system, kind, str(n))
        out.print(shown)
        err.print(
            "pdsync's own records of the customer go too, and its key is destroyed at the end."
        )
        shared = sorted(
            (f for f in preview.located if f.ambiguous),
            key=lambda f: (f.ref.system, f.ref.kind, f.item),
        )
        if shared:
            _items_table(
                f"Left alone unless included: {len(shared)} another customer holds too",
                (
                    (
                        f.item,
                        f.ref.kind,
                        HELD_BY_OTHERS,
                        "include" if f.item in include else "ambiguous",
                    )
                    for f in shared
                ),
                "plan",
            )
            err.print(
                "Items another customer holds too (mail between the two in the shared"
                " mailbox, or in that customer's folders) are that customer's data as well:"
                " they are left alone unless you include them by their id (--include ITEM"
                " with --execute).",
                highlight=False,
                markup=False,
            )
        return _unknown_included(unknown)
    masked = preview.identifiers.to_dict()
    out.print(
        f"Erasure plan for a data subject of customer {preview.customer_id} (nothing changed)"
    )
    _print_identifiers(masked, strengths_to_list(preview.strengths))
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
    return _unknown_included(unknown)


def _unknown_included(unknown: Sequence[str]) -> int:
    """The exit code of a plan shown with `--include`: 2 if one of them is no item of it."""
    if unknown:
        err.print(
            f"--include {unknown[0]}: no item of this plan has that id",
            highlight=False,
            markup=False,
        )
        return 2
    return 0


def _print_erasure(row: Any, items: Sequence[Any] = (), *, config: Path = DEFAULT_CONFIG) -> None:
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
        shown = table(None, ("system", "outcome", "deleted", "verified absent"))
        for system, result in sorted(row.outcome.items()):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())) or "-"
            shown.add_row(
                system, result["outcome"], counts, "yes" if result["verified_absent"] else "NO"
            )
        out.print(shown)
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
                _matched_text(i.evidence, row.masked or {}, scope=row.scope),
                f"included by {i.included_by}" if i.included_by else "left alone",
            )
            for i in sorted(decided, key=lambda i: (i.system, bool(i.included_by), i.kind))
        ]
        _items_table(
            "Ambiguous items (another customer's too)"
            if row.scope == "customer"
            else "Ambiguous items (found only by shared identifiers or a name)",
            rows,
            "decision",
        )
    if row.includes and row.state == "received":
        out.print(
            "to include when planned: " + ", ".join(str(i["item"]) for i in row.includes),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    # Hints to paste and ids to copy: never broken over lines, with the --config given.
    also = with_config(config)
    if row.state == "awaiting_approval":
        out.print(
            f"waiting for a second admin: pdsync erasures approve {row.id}{also}", soft_wrap=True
        )
    if row.error:
        err.print(f"error: {row.error}")
    if row.certificate:
        out.print(
            f"certificate issued: pdsync certificate export {row.id} --format pdf -o FILE{also}",
            soft_wrap=True,
        )


@erase_app.command("subject")
def erase_subject(
    customer: Annotated[
        str, typer.Option(metavar="ID", help="The customer the subject belongs to.")
    ],
    email: Annotated[
        list[str] | None,
        typer.Option(metavar="ADDRESS", help="An e-mail address (repeatable)."),
    ] = None,
    phone: Annotated[
        list[str] | None, typer.Option(metavar="NUMBER", help="A phone number (repeatable).")
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option(metavar="NAME", help="A full name (repeatable).")
    ] = None,
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
        raise fail(f"erasure refused: {exc}") from None
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
    include: IncludeOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Erase everything of a customer in every system and in pdsync's own store.

    What another customer holds too (mail between the two in a shared service mailbox,
    or in the other customer's folders) is that customer's data as well: the plan lists
    it with an id, and it is left alone unless you include it (--include ITEM).
    """
    _erase(
        config,
        customer_id,
        scope="customer",
        subject=None,
        plan=plan,
        execute=execute,
        reason=reason,
        yes=yes,
        include=include or (),
    )


@erasures_app.callback(invoke_without_command=True)
def erasures_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: CustomerFilter = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only open requests.")] = False,
    wide: WideOption = False,
) -> None:
    """List erasure requests, newest first, with their deadlines."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _query(
        config,
        lambda store: store.list_erasures(customer_id=customer, open_only=open_only),
        customer=customer,
    )
    columns = ["id", "customer", "scope", "state", "deadline"]
    if wide:
        columns[4:4] = ["requested", "by"]
    shown = table("Erasure requests", columns)
    now = datetime.now(UTC)
    for row in rows:
        late = row.deadline < now and row.state not in ("completed", "cancelled")
        cells = [
            _short(row.id, wide),
            row.customer_id,
            row.scope,
            row.state,
            row.deadline.strftime("%Y-%m-%d %H:%M") + (" LATE" if late else ""),
        ]
        if wide:
            cells[4:4] = [row.requested_at.strftime("%Y-%m-%d %H:%M"), row.requested_by]
        shown.add_row(*cells)
    _show(shown, wide)


@erasures_app.command("show")
def erasures_show(request_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """One erasure request: plan, outcome per system, certificate."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        row = _get_erasure(store, request_id)
        _print_erasure(row, store.erasure_items(row.id), config=config)
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
        raise fail(f"refused: {exc}") from None
    except KeyboardInterrupt:
        raise fail(
            "interrupted: the request stays open and nothing is done twice; the daemon"
            " finishes it, or run this again",
            EXIT_INTERRUPTED,
        ) from None
    _print_erasure(row, items, config=config)
    raise typer.Exit(1 if row.state == "failed" else 0)


@erasures_app.command("approve")
def erasures_approve(
    request_id: str,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            dir_okay=False,
            help="A file holding the approving admin's API token (not the requester's).",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Approve a whole-customer erasure as a second admin, then carry it out.

    Approving takes the second admin's API token, from --token-file, else the
    PDSYNC_APPROVER_TOKEN variable, else a hidden prompt on a terminal: an active admin
    token other than the one that asked. Who is logged in here counts for nothing."""
    from daemon.erasure import ErasureError
    from daemon.store import Role

    if token_file is not None:
        try:
            token = token_file.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"--token-file: cannot read {token_file}: {type(exc).__name__}") from None
    elif os.environ.get("PDSYNC_APPROVER_TOKEN", "").strip():
        token = os.environ["PDSYNC_APPROVER_TOKEN"].strip()
    elif sys.stdin.isatty():
        token = typer.prompt("The approving admin's API token", hide_input=True).strip()
    else:
        raise fail(
            "approving needs a second admin's API token: --token-file FILE, or the"
            " PDSYNC_APPROVER_TOKEN variable, or run it on a terminal to be asked"
        )

    def approve(service: Any) -> str:
        row = service.store.authenticate_token(token)
        if row is None:
            raise ErasureError("the approver's token is unknown or revoked")
        if row.role is not Role.ADMIN:
            raise ErasureError(f"the approver's token is an {row.role} token, not an admin's")
        return str(service.approve(request_id, approver=row.name).id)

    _advance(config, approve)


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
    _print_erasure(row, found, config=config)
    err.print(
        f"the daemon carries it out; or now: pdsync erasures resume {row.id}{with_config(config)}"
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


# `pdsync GROUP list` as well as `pdsync GROUP`: the form other CLIs teach.
for _group, _listing in (
    (runs_app, runs_list),
    (disputes_app, disputes_list),
    (tasks_app, tasks_list),
    (quarantine_app, quarantine_list),
    (erasures_app, erasures_list),
):
    _group.command("list")(_listing)


def main() -> None:
    """`pdsync`: an error a user can cause (a system that cannot be set up or reached, a
    store that does not open, an unknown id) ends the command with its message, naming
    the system, never a secret, not a traceback (see MessagesNotTracebacks)."""
    app(prog_name="pdsync")


if __name__ == "__main__":
    main()
