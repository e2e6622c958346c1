"""Connector secrets on the `pdsync` CLI: `pdsync zisson set-token`.

daemon/cli.py registers the commands with `cli_secrets.register(app)`.
Exit codes as in cli.py: 0 done; 1 the store is unavailable (try again); 2 bad usage,
configuration or an unknown customer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daemon.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    fail,
    load_settings,
    open_store,
    out,
)
from daemon.config import ConfigError

if TYPE_CHECKING:
    pass


zisson_app = typer.Typer(
    help="Zisson: `set-token` provisions a new refresh token for the JSON API.",
    no_args_is_help=True,
)


def _read_token(file: Path | None) -> str:
    """The token from `file`, a hidden prompt on a terminal, or standard input."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise fail(f"zisson set-token: cannot read {file} ({reason})") from None
    elif sys.stdin.isatty():
        text = typer.prompt("Refresh token", hide_input=True, err=True)
    else:
        text = sys.stdin.read()
    token = text.strip()
    # Never echoed, not even in part: it is the credential itself.
    if not token:
        raise fail("zisson set-token: the token is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise fail("zisson set-token: the token must be one word on one line")
    return token


def zisson_set_token(
    customer: Annotated[
        str, typer.Option(help="A customer whose Zisson account reads through the JSON API.")
    ],
    file: Annotated[
        Path | None,
        typer.Option(help="Read the token from this file; without it, from standard input."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Store a new refresh token for a customer's Zisson account (JSON API).

    For when Zisson refused the token pdsync held (spent elsewhere, or revoked): issue a
    new one in Zisson and give it here. It is stored encrypted in pdsync's store, and
    every instance spends it at its next exchange (one that is under way finishes
    first); the binding's refresh_token_file is not read again. The token is never
    printed or logged; the ledger, when configured, records that it was set and by whom.
    """
    from connectors.zisson.auth import token_account
    from daemon.proof import open_ledger
    from daemon.store import StoreError
    from daemon.sync import operator

    settings = load_settings(config)
    try:
        binding = settings.customer(customer).zisson
    except ConfigError as exc:
        raise fail(f"zisson set-token: {exc}") from None
    if binding is None:
        raise fail(f"zisson set-token: customer {customer!r} has no [customers.zisson] binding")
    if binding.api != "json":
        raise fail(
            f"zisson set-token: customer {customer!r} reads Zisson through the {binding.api} "
            "API, which has no refresh token (its password is a secret reference in the config)"
        )
    token = _read_token(file)
    account = token_account(binding)
    by = operator()
    store = open_store(settings)
    try:
        try:
            ledger = open_ledger(settings, store)
        except ConfigError as exc:
            raise fail(f"config error\n{exc}") from None
        try:
            version = store.set_connector_secret(account.system, account.key, token)
        except StoreError as exc:
            raise fail(f"zisson set-token: nothing stored: {exc}", code=1) from None
        if ledger is not None:
            try:
                ledger.record(
                    "connector.token_set",
                    customer_id=customer,
                    system=account.system,
                    account_id=account.key,
                    version=version,
                    by=by,
                )
            except StoreError as exc:
                raise fail(
                    f"zisson set-token: the token is stored (version {version}), but the "
                    f"ledger entry was not written: {exc}",
                    code=1,
                ) from None
    finally:
        store.close()
    out.print(
        f"zisson: a new refresh token for {account.key} (customer {customer}) is stored, "
        f"version {version}; every instance uses it from its next exchange",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the `zisson` command group to the `pdsync` app (idempotent)."""
    if any(group.name == "zisson" for group in app.registered_groups):
        return
    zisson_app.command("set-token")(zisson_set_token)
    app.add_typer(zisson_app, name="zisson")
