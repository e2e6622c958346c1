"""The `pdsync` command line.

Exit codes: 0 done; 1 a run failed; 2 bad usage or configuration; 3 waiting for an
approval (a run stopped at the deletion threshold).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon import config as config_module
from daemon import logs
from daemon.config import CONFIG_ENV, ConfigError, Settings

app = typer.Typer(
    name="pdsync",
    help="Keeps personal data in step, and deleted on time, across Zisson, Firestore and Outlook.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
runs_app = typer.Typer(help="Recent runs: `pdsync runs` lists, `pdsync runs show ID` details.")
disputes_app = typer.Typer(help="Conflicting edits waiting for a person.")
tasks_app = typer.Typer(help="Manual tasks for an operator (Zisson in manual write mode).")
quarantine_app = typer.Typer(help="Records a system returned that could not be read.")
sandbox_app = typer.Typer(help="The outside world on loopback, for trying pdsync out.")
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")
app.add_typer(disputes_app, name="disputes")
app.add_typer(tasks_app, name="tasks")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(sandbox_app, name="sandbox")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar=CONFIG_ENV, help="The TOML config file.", show_default=True
    ),
]
DEFAULT_CONFIG = Path("pdsync.toml")


def _load(path: Path) -> Settings:
    try:
        settings = config_module.load(path)
    except ConfigError as exc:
        err.print(f"[red]config error[/red]\n{exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    logs.configure(format=settings.log.format, level=settings.log.level)
    return settings


def _open_store(settings: Settings):  # type: ignore[no-untyped-def]
    from daemon.store import Store

    try:
        return Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    except ConfigError as exc:
        err.print(f"config error\n{exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None


@config_app.command("check")
def config_check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate the config file: name the bad key and why, exit non-zero if anything is wrong."""
    settings = _load(config)
    problems = []
    try:
        settings.store.master_key_bytes()
    except (ConfigError, LookupError) as exc:
        problems.append(f"store.master_key: {exc}")
    if problems:
        err.print("\n".join(f"{config}: {p}" for p in problems), highlight=False, markup=False)
        raise typer.Exit(2)
    out.print(
        f"{config}: OK — {len(settings.customers)} customers, systems: "
        + ", ".join(s for s in ("firestore", "zisson") if getattr(settings.systems, s))
    )


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the daemon: sync every customer on its interval until SIGTERM."""
    from daemon.service import serve

    settings = _load(config)
    raise typer.Exit(asyncio.run(serve(settings)))


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
    reason: Annotated[str | None, typer.Option(help="Why (recorded with the approval).")] = None,
) -> None:
    """Run one sync cycle now and print what changed (or, with --plan, would change)."""
    from daemon.store import RunStatus
    from daemon.sync import SyncService, operator
    from daemon.wiring import open_connectors

    settings = _load(config)
    customers = [settings.customer(customer)] if customer else list(settings.customers)
    if approve_deletions is not None and not (customer and reason):
        err.print("--approve-deletions needs --customer and --reason")
        raise typer.Exit(2)

    async def go() -> list:  # type: ignore[type-arg]
        store = _open_store(settings)
        try:
            if approve_deletions is not None and customer:
                store.approve_deletions(
                    customer, approve_deletions, by=operator(), reason=reason or ""
                )
            async with AsyncExitStack() as stack:
                connectors = await open_connectors(settings, stack)
                service = SyncService(settings, store, connectors)
                return [await service.sync(c, trigger="cli", plan_only=plan) for c in customers]
        finally:
            store.close()

    try:
        reports = asyncio.run(go())
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
    for report in reports:
        counts = report.plan.counts() if report.plan else {}
        systems = sorted({k.split(".")[0] for k in counts if "." in k}) or ["-"]
        for i, system in enumerate(systems):
            manual = sum(
                v
                for k, v in report.applied.items()
                if k.startswith(system + ".") and k.endswith(".manual")
            )
            table.add_row(
                report.customer_id if i == 0 else "",
                report.run_id[:8] if i == 0 else "",
                report.status if i == 0 else "",
                system,
                str(counts.get(f"{system}.create", 0)),
                str(counts.get(f"{system}.update", 0)),
                str(counts.get(f"{system}.delete", 0)),
                str(counts.get("disputes", 0)) if i == 0 else "",
                str(manual),
            )
        if report.error:
            err.print(f"{report.customer_id}: {report.error}", highlight=False, markup=False)
    out.print(table)
    if any(r.status == RunStatus.FAILED for r in reports):
        raise typer.Exit(1)
    if any(r.status == RunStatus.AWAITING_APPROVAL for r in reports):
        err.print(
            "a run stopped at the deletion threshold: review with `pdsync sync --plan`, "
            "then approve with --approve-deletions N --reason TEXT"
        )
        raise typer.Exit(3)


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
    settings = _load(config)
    store = _open_store(settings)
    try:
        rows = store.list_runs(customer_id=customer, since=_since(since), limit=limit)
    finally:
        store.close()
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
    settings = _load(config)
    store = _open_store(settings)
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
    settings = _load(config)
    store = _open_store(settings)
    try:
        rows = store.list_disputes(customer_id=customer, open_only=True)
    finally:
        store.close()
    table = Table(title="Open disputes")
    for column in ("id", "customer", "link", "field", "systems", "opened"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.customer_id,
            row.link_id[:8],
            row.field,
            ", ".join(sorted(row.fingerprints)),
            row.opened_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@tasks_app.callback(invoke_without_command=True)
def tasks_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List open manual tasks; `pdsync tasks show ID` prints one's instruction."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _load(config)
    store = _open_store(settings)
    try:
        rows = store.list_tasks(customer_id=customer, open_only=True)
    finally:
        store.close()
    table = Table(title="Open manual tasks")
    for column in ("id", "customer", "system", "operation", "link", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.customer_id,
            row.system,
            row.op_kind,
            row.link_id[:8],
            row.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@tasks_app.command("show")
def tasks_show(task_id: int, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a task's instruction for the operator (it holds personal data: not logged)."""
    settings = _load(config)
    store = _open_store(settings)
    try:
        out.print(store.task_instruction(task_id), highlight=False, markup=False)
    finally:
        store.close()


@quarantine_app.callback(invoke_without_command=True)
def quarantine_list(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List quarantined records (the reason names the field; the payload stays encrypted)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _load(config)
    store = _open_store(settings)
    try:
        rows = store.list_quarantine(customer_id=customer, open_only=True)
    finally:
        store.close()
    table = Table(title="Quarantined records")
    for column in ("id", "customer", "system", "external id", "reason", "seen"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.customer_id,
            row.system,
            row.external_id or "-",
            row.reason,
            str(row.count),
        )
    out.print(table)


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
    app()


if __name__ == "__main__":
    main()
