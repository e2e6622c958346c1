"""What every part of the `pdsync` CLI shares: consoles, the --config option, loading the
config, opening the store, failing with a clear message and exit code 2, and turning
the errors a user can cause into one line instead of a traceback."""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from daemon import logs
from daemon.config import CONFIG_ENV, ConfigError, Settings
from daemon.entry import DEFAULT_CONFIG as DEFAULT_CONFIG_FILE
from daemon.entry import read_settings

if TYPE_CHECKING:
    from daemon.store import Store

# Text from outside (names, vendor fields, event details) is printed as it is: never read
# as markup or emoji codes. Messages on stderr are never hard-wrapped: a hint in one can
# be pasted as it stands, and a file gets one problem a line.
out = Console(markup=False, highlight=False, emoji=False)
err = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        metavar="FILE",
        help="The TOML config file.",
        show_default=True,
    ),
]
DEFAULT_CONFIG = Path(DEFAULT_CONFIG_FILE)

# Exit codes (documented in daemon/cli.py).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WAITING = 3
EXIT_NOTHING_MATCHED = 4
EXIT_INTERRUPTED = 130


class Verbosity:
    """`pdsync -v`: the configured log level on stderr; without it, warnings and errors
    only (a command's output is its own, not its libraries')."""

    verbose = False


def table(title: str | None, columns: Sequence[str], *, ids: int = 1) -> Table:
    """A table for 80 columns (the callers choose few enough columns): its first `ids`
    columns (ids to copy) are never wrapped or cut; the others wrap rather than lose
    their ends."""
    shown = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        shown.add_column(column, no_wrap=i < ids, overflow="fold")
    return shown


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Say `message` on stderr (as is: no markup) and return the Exit to raise."""
    err.print(message)
    return typer.Exit(code)


def with_config(config: Path) -> str:
    """` --config FILE` for a hint that names a command, when one was given (empty for the
    default file), so that the hint runs as it stands."""
    if config == DEFAULT_CONFIG:
        return ""
    return f" --config {shlex.quote(str(config))}"


def load_settings(path: Path, *, daemon: bool = False) -> Settings:
    """The config at `path`, with logging set up as it says; exit 2 naming key and reason.

    `daemon`: log at the configured level (the daemon's log is its output); a command
    logs warnings and errors only unless `-v` is given."""
    try:
        settings = read_settings(path)
    except ConfigError as exc:
        raise fail(f"config error\n{exc}") from None
    logs.configure(
        format=settings.log.format,
        level=settings.log.level,
        command=not (daemon or Verbosity.verbose),
    )
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


def query(config: Path, read: Callable[[Any], T], *, customer: str | None = None) -> T:
    """Open the configured store, read from it, close it. With `customer` (a --customer
    filter), exit 2 first unless it is configured: the config is read once for both."""
    settings = load_settings(config)
    known_customer(settings, customer)
    store = open_store(settings)
    try:
        return read(store)
    finally:
        store.close()


def get_erasure(store: Any, request_id: str) -> Any:
    from daemon.store import NotFound

    try:
        return store.get_erasure(request_id)
    except NotFound as exc:
        raise fail(str(exc)) from None


def known_customer(settings: Settings, customer_id: str | None) -> str | None:
    """`customer_id` when configured (or None for all); else exit 2 naming the
    configured customers."""
    if customer_id is not None:
        try:
            settings.customer(customer_id)
        except ConfigError as exc:
            raise fail(f"--customer: {exc}") from None
    return customer_id


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one line (and exit code) for an error a user can cause, or None for a bug."""
    from connectors.base import ConnectorError, RetriableError
    from daemon.store import KeyDestroyed, NotFound, StoreError, StoreUnavailable
    from daemon.store.errors import WrongMasterKey

    if isinstance(exc, KeyDestroyed):
        return (
            f"customer {exc.customer_id!r} was erased (its key is destroyed): nothing of"
            " it can be read or written any more; remove it from the config",
            EXIT_USAGE,
        )
    if isinstance(exc, WrongMasterKey):
        return (
            f"store.master_key: {exc} (check the key file or PDSYNC_STORE__MASTER_KEY)",
            EXIT_USAGE,
        )
    if isinstance(exc, StoreUnavailable):
        return f"store.url: {' '.join(str(exc).split())}", EXIT_USAGE
    if isinstance(exc, NotFound):
        return str(exc), EXIT_USAGE
    if isinstance(exc, StoreError):
        return f"store: {exc}", EXIT_USAGE
    if isinstance(exc, ConfigError):
        return f"config error\n{exc}", EXIT_USAGE
    if isinstance(exc, ConnectorError):
        # Unreachable now: try again later (1); refused or misconfigured: fix it (2).
        return str(exc), EXIT_FAILED if isinstance(exc, RetriableError) else EXIT_USAGE
    return None


class MessagesNotTracebacks(TyperGroup):
    """The root command group: an error a user can cause ends the command with one line
    on stderr and its exit code; Ctrl-C with one line and 130. Command lists show each
    command's first sentence whole (wrapped), never cut off with "..."."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _whole_first_sentences(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # typer's Exit, Abort and usage errors are not explained
            explained = explain(exc)
            if explained is None:
                raise
            message, code = explained
            err.print(message)
            raise typer.Exit(code) from None


def _first_sentence(help_text: str) -> str:
    paragraph = inspect.cleandoc(help_text).partition("\f")[0].split("\n\n")[0]
    words = paragraph.split()
    for i, word in enumerate(words):
        if word.endswith("."):
            return " ".join(words[: i + 1])
    return " ".join(words)


def _whole_first_sentences(group: Any) -> None:
    """Give every command below `group` its first sentence as short help (click would
    cut it at the column's width, mid-sentence)."""
    for command in getattr(group, "commands", {}).values():
        if not command.short_help and command.help:
            command.short_help = _first_sentence(command.help)
        _whole_first_sentences(command)
