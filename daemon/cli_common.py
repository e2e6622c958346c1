"""What every part of the `pdsync` CLI shares: consoles, the --config option, loading the
config, opening the store, and failing with a clear message and exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from daemon import config as config_module
from daemon import logs
from daemon.config import CONFIG_ENV, ConfigError, Settings

if TYPE_CHECKING:
    from daemon.store import Store

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar=CONFIG_ENV, help="The TOML config file.", show_default=True
    ),
]
DEFAULT_CONFIG = Path("pdsync.toml")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Say `message` on stderr (as is: no markup) and return the Exit to raise."""
    err.print(message, highlight=False, markup=False)
    return typer.Exit(code)


def load_settings(path: Path) -> Settings:
    """The config at `path`, with logging set up as it says; exit 2 naming key and reason."""
    try:
        settings = config_module.load(path)
    except ConfigError as exc:
        raise fail(f"config error\n{exc}") from None
    logs.configure(format=settings.log.format, level=settings.log.level)
    return settings


def open_store(settings: Settings) -> Store:
    """The configured store, migrated; exit 2 when the config cannot open it."""
    from daemon.store import Store

    try:
        return Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    except ConfigError as exc:
        raise fail(f"config error\n{exc}") from None


def operator() -> str:
    """Who is at the keyboard, for approvals and audit records."""
    from daemon.sync import operator as who

    return who()


T = TypeVar("T")


def query(config: Path, read: Callable[[Any], T]) -> T:
    """Open the configured store, read from it, close it."""
    store = open_store(load_settings(config))
    try:
        return read(store)
    finally:
        store.close()


def get_erasure(store: Any, request_id: str) -> Any:
    from daemon.store import NotFound

    try:
        return store.get_erasure(request_id)
    except NotFound as exc:
        err.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(2) from None
