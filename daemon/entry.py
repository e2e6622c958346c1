"""The `pdsync` program. `pdsync run`, the daemon, starts here without the command line's
own libraries; every other command goes on to daemon.cli.

A daemon prints no tables, yet typer, and rich with the pygments it brings (imported by
structlog and httpx too whenever they are installed), stayed in its memory for as long as
it ran: 8 MB of an idle daemon's 153 MB, measured with 20 customers. So `pdsync run`
with at most `--config FILE` (or `-c FILE`, `--config=FILE`) is told apart by hand,
before anything else is imported; with anything more (`--help`, a mistake) it goes to
daemon.cli, which runs the daemon the same way (`run_daemon`) or says what is wrong.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.config import Settings

# The command line's libraries, kept out of the daemon's process. A module set to None in
# sys.modules cannot be imported (ModuleNotFoundError): structlog and httpx then go
# without rich, as they do where it is not installed (plain tracebacks on a console).
CLI_ONLY = ("typer", "rich", "pygments", "shellingham")
# daemon.cli_common's default (--config, or PDSYNC_CONFIG, or this file).
DEFAULT_CONFIG = "pdsync.toml"
EXIT_USAGE = 2
# How the daemon starts its worker process: `python -m daemon _worker ...`.
WORKER_COMMAND = "_worker"


def daemon_config(args: list[str]) -> str | None:
    """The config file of a plain `run` (its --config, else PDSYNC_CONFIG, else the
    default); None for any other command line."""
    if not args or args[0] != "run":
        return None
    rest = args[1:]
    if not rest:
        return os.environ.get("PDSYNC_CONFIG") or DEFAULT_CONFIG
    if len(rest) == 2 and rest[0] in ("--config", "-c") and not rest[1].startswith("-"):
        return rest[1]
    if len(rest) == 1 and rest[0].startswith("--config=") and len(rest[0]) > len("--config="):
        return rest[0].removeprefix("--config=")
    return None


def read_settings(path: Path) -> Settings:
    """The config at `path`; ConfigError naming the key and reason, and how to give
    another file when there is none at `path`."""
    from daemon.config import CONFIG_ENV, ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        message = str(exc)
        if not path.exists():
            message += f" (give one with --config FILE or the environment variable {CONFIG_ENV})"
        raise ConfigError(message) from None


def run_daemon(path: Path) -> int:
    """Run the daemon with the config at `path` until SIGTERM; its exit code. A config
    that cannot be read, or a secret or store the daemon cannot have at start, is said
    on stderr ("config error" and the key) with exit code 2, before any work."""
    import asyncio

    from daemon import logs
    from daemon.config import ConfigError

    try:
        settings = read_settings(path)
    except ConfigError as exc:
        return config_error(exc)
    logs.configure(format=settings.log.format, level=settings.log.level, command=False)
    from daemon.service import serve

    try:
        return asyncio.run(serve(settings, config_path=path))
    except ConfigError as exc:  # a secret missing, the store taken: before any work
        return config_error(exc)


def config_error(exc: Exception) -> int:
    """Say on stderr that the config is wrong and how (key and reason); the exit code."""
    print(f"config error\n{exc}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main() -> None:
    if sys.argv[1:2] == [WORKER_COMMAND]:  # the daemon's worker process (daemon/worker.py)
        for name in CLI_ONLY:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
        from daemon.worker import main as worker_main

        raise SystemExit(worker_main(sys.argv[2:]))
    config = daemon_config(sys.argv[1:])
    if config is None:
        from daemon.cli import main as cli_main

        cli_main()
        return
    for name in CLI_ONLY:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    raise SystemExit(run_daemon(Path(config)))


if __name__ == "__main__":
    main()
