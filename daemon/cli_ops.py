"""Ops commands of the `pdsync` CLI: `log`, `tokens`, `disputes resolve`, `tasks done`.

daemon/cli.py registers them with `cli_ops.register(app)`; `python -m daemon.cli_ops`
runs the whole CLI with them registered (for tests, and until cli.py does).
Exit codes as in cli.py: 0 done, 2 bad usage, configuration or unknown item.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daemon import logs
from daemon.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    err,
    fail,
    known_customer,
    load_settings,
    open_store,
    operator,
    out,
    table,
)
from daemon.config import ConfigError, Settings

if TYPE_CHECKING:
    from daemon.store import Store

FOLLOW_SECONDS = 1.0

tokens_app = typer.Typer(
    help="API tokens: `create NAME --role ROLE` (shown once), `list`, `revoke NAME`.",
    no_args_is_help=True,
)


def _record(settings: Settings, store: Store, kind: str, customer_id: str, **payload: Any) -> None:
    """Into the ledger, when one is configured (decisions are proof, like approvals)."""
    from daemon.proof import open_ledger

    ledger = open_ledger(settings, store)
    if ledger is not None:
        ledger.record(kind, customer_id=customer_id, **payload)


# -- pdsync log --------------------------------------------------------------------------


def _run_id(store: Store, prefix: str) -> str:
    matches = store.find_runs(prefix, limit=2)
    if len(matches) != 1:
        raise fail(f"no single run matches {prefix!r} (`pdsync runs` lists them)")
    return matches[0]


# How many ledger entries `pdsync log` reads back at a time looking for fingerprints.
_LEDGER_CHUNK = 2000


def _with_fingerprints(store: Store, lines: list[Any]) -> list[Any]:
    """The lines, with the fingerprints of changes as the ledger holds them.

    A run event's detail is redacted like a log line when stored, and the field names
    that key its fingerprints (name, emails, ...) make them look like personal data; the
    ledger entry of the same change (run, system, link) holds them as they are (keyed
    digests, no personal data)."""
    wanted = [
        line
        for line in lines
        if isinstance(line.detail.get("fingerprints"), dict) and line.detail.get("link")
    ]
    if not wanted:
        return lines
    keys = {(line.run_id, line.system, line.detail["link"]) for line in wanted}
    earliest = min(line.ts for line in wanted)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    stop = store.ledger_size()
    while stop > 0 and len(found) < len(keys):
        start = max(0, stop - _LEDGER_CHUNK)
        entries = store.ledger_entries(start, stop)
        for entry in entries:
            if not entry.kind.startswith("sync."):
                continue
            payload = entry.payload
            key = (payload.get("run_id"), payload.get("system"), payload.get("link_id"))
            if key in keys and isinstance(payload.get("fingerprints"), dict):
                found[key] = payload["fingerprints"]
        if entries and entries[0].ts < earliest:
            break
        stop = start
    shown = []
    for line in lines:
        key = (line.run_id, line.system, line.detail.get("link"))
        if key in found:
            line = dataclasses.replace(line, detail={**line.detail, "fingerprints": found[key]})
        shown.append(line)
    return shown


def log_command(
    config: ConfigOption = DEFAULT_CONFIG,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    since: Annotated[str, typer.Option(help="24h, 30m, 7d, or an ISO 8601 time.")] = "24h",
    level: Annotated[str, typer.Option(help="Lowest level: debug, info, warning, error.")] = "info",
    run: Annotated[str | None, typer.Option("--run", help="Only this run (id or prefix).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000,
            metavar="N",
            help="The newest N lines (with --follow: to begin with, then every new one).",
        ),
    ] = 1000,
) -> None:
    """What the daemon did: runs and their events from the store, oldest first.

    Fingerprints of changed fields are shown as the ledger holds them."""
    from daemon.api import eventlog
    from daemon.api.filters import parse_level, parse_since

    try:
        start, min_level = parse_since(since), parse_level(level)
    except ValueError as exc:
        raise fail(f"pdsync log: {exc}") from None
    settings = load_settings(config)
    known_customer(settings, customer)
    store = open_store(settings)
    try:
        query = eventlog.LogQuery(
            store=store,
            customer=customer,
            since=start,
            level=min_level,
            run_id=_run_id(store, run) if run else None,
            limit=limit,
        )
        newest = limit
        while True:
            lines = query.read()
            if newest:  # the first read: run starts and ends come on top of the events
                lines, newest = lines[-newest:], 0
            for line in _with_fingerprints(store, lines):
                typer.echo(line.json() if as_json else line.text())
            if not follow:
                return
            sys.stdout.flush()
            time.sleep(FOLLOW_SECONDS)
    except KeyboardInterrupt:
        return
    finally:
        store.close()


# -- pdsync tokens ---------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what holds it: a-z, 0-9, _ and -.")],
    role: Annotated[str, typer.Option(help="admin, operator or auditor.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Make an API token and print it: the only time it is shown (only its hash is kept)."""
    from daemon.store import Role, TokenNameTaken

    if role not in {r.value for r in Role}:
        raise fail("--role is admin, operator or auditor")
    settings = load_settings(config)
    store = open_store(settings)
    try:
        token = store.create_token(name, role, created_by=operator())
    except (TokenNameTaken, ValueError) as exc:
        raise fail(f"tokens create: {exc}") from None
    finally:
        store.close()
    err.print(f"token {name} ({role}) made; it is shown once, here:", highlight=False)
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    config: ConfigOption = DEFAULT_CONFIG,
    all_tokens: Annotated[
        bool, typer.Option("--all/--no-all", help="Revoked ones too (--no-all: active only).")
    ] = True,
) -> None:
    """Tokens: name, role, created, last used, revoked (never the token itself)."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        rows = store.list_tokens(include_revoked=all_tokens)
    finally:
        store.close()
    shown = table("API tokens", ("name", "role", "created", "by", "last used", "revoked"))

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d") if value else "-"  # a day: the table fits 80

    for row in rows:
        revoked = f"{when(row.revoked_at)} by {row.revoked_by}" if row.revoked_at else "-"
        shown.add_row(
            row.name,
            row.role.value,
            when(row.created_at),
            row.created_by,
            when(row.last_used_at),
            revoked,
        )
    out.print(shown)


@tokens_app.command("revoke")
def tokens_revoke(name: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Revoke the active token of this name: its next request gets 401."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        revoked = store.revoke_token(name, by=operator())
    finally:
        store.close()
    if not revoked:
        raise fail(f"no active token named {name!r}")
    out.print(f"token {name} revoked")


# -- pdsync disputes resolve, pdsync tasks done -------------------------------------------


def disputes_resolve(
    dispute_id: int,
    winner: Annotated[
        str,
        typer.Option(
            help="The system whose value stands; for a review of who a record is,"
            " `separate` or `same:XXXXXXXX` (as `pdsync disputes` lists them)."
        ),
    ],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Decide a dispute: which system's value stands (the next sync carries it into every
    other system), and who decided."""
    settings = load_settings(config)
    store = open_store(settings)
    try:
        found = [d for d in store.list_disputes(open_only=False) if d.id == dispute_id]
        if not found:
            raise fail(f"no dispute {dispute_id}")
        dispute = found[0]
        if winner not in dispute.fingerprints:
            raise fail(f"--winner is one of: {', '.join(sorted(dispute.fingerprints))}")
        by = operator()
        if not store.resolve_dispute(dispute_id, winner=winner, by=by):
            raise fail(f"dispute {dispute_id} was already resolved")
        _record(
            settings,
            store,
            "dispute.resolved",
            dispute.customer_id,
            dispute_id=dispute_id,
            link_id=dispute.link_id,
            field=dispute.field,
            winner=winner,
            by=by,
        )
    finally:
        store.close()
    out.print(f"dispute {dispute_id} resolved: {winner}; the next sync carries it out")


def tasks_done(
    task_id: int,
    note: Annotated[str | None, typer.Option(help="For ops; no personal data.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Mark a manual task done (a sync that still finds the change missing opens a new one)."""
    from daemon.store import NotFound

    if note and (logs.EMAIL.search(note) or logs.PHONE.search(note)):
        raise fail("--note must not hold e-mail addresses or phone numbers")
    settings = load_settings(config)
    store = open_store(settings)
    try:
        tasks = [t for t in store.list_tasks(open_only=False) if t.id == task_id]
        by = operator()
        try:
            closed = store.close_task(task_id, f"{note} (by {by})" if note else f"by {by}")
        except NotFound:
            raise fail(f"no manual task {task_id}") from None
        if not closed:
            raise fail(f"task {task_id} was already done")
        task = tasks[0]
        _record(
            settings,
            store,
            "task.done",
            task.customer_id,
            task_id=task_id,
            system=task.system,
            link_id=task.link_id,
            by=by,
        )
    finally:
        store.close()
    out.print(f"task {task_id} done")


def _group(app: typer.Typer, name: str) -> typer.Typer:
    for group in app.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    raise LookupError(f"the CLI has no `{name}` command group to extend")


# -- pdsync report ------------------------------------------------------------------------


def report_command(
    customer: Annotated[str, typer.Argument(help="The customer id.")],
    language: Annotated[
        str, typer.Option("--lang", help="en or no (the text; JSON keys stay English).")
    ] = "en",
    as_json: Annotated[bool, typer.Option("--json", help="Canonical JSON instead.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """How the customer's personal data is processed, per system and subprocessor.

    The categories, how many contacts, since when, the rules that delete them, what each
    system keeps after a deletion, and the last 30 days of syncs, retention runs and
    erasures. Counts and rules only: it names no person."""
    import asyncio
    from contextlib import AsyncExitStack

    from connectors.base import ConnectorError
    from daemon.report import build_report, render_text
    from daemon.wiring import erasers_for, open_connectors

    if language not in ("en", "no"):
        raise fail("--lang is en or no")
    settings = load_settings(config)
    try:
        settings.customer(customer)
    except ConfigError as exc:
        raise fail(f"report: {exc}") from None
    store = open_store(settings)

    async def residuals() -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            try:
                connectors = await open_connectors(settings, stack, store=store)
            except ConnectorError as exc:  # the report goes on without the windows
                err.print(
                    f"report: residual windows left out: {exc}", highlight=False, markup=False
                )
                return {}
            return {s: e.residuals() for s, e in erasers_for(connectors).items()}

    try:
        report = build_report(settings, store, customer, residuals=asyncio.run(residuals()))
    finally:
        store.close()
    text = report.to_json() if as_json else render_text(report, language)  # type: ignore[arg-type]
    if output is None:
        out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"report written to {output}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ops commands to the `pdsync` app (idempotent)."""
    if any(group.name == "tokens" for group in app.registered_groups):
        return
    app.command("log")(log_command)
    app.command("report")(report_command)
    app.add_typer(tokens_app, name="tokens")
    _group(app, "disputes").command("resolve")(disputes_resolve)
    _group(app, "tasks").command("done")(tasks_done)


def main() -> None:
    from daemon.cli import app

    register(app)
    app()


if __name__ == "__main__":
    main()
