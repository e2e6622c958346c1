"""`make run`: the sandbox and the daemon against it (its syncs in the daemon's worker process,
as under `pdsync run`), until Ctrl-C.

python -m sandbox.run --data-dir .sandbox [--seed 1] [--customers 3] [--contacts 40]
                      [--api-port 8787]

The daemon serves the admin API and the dashboard on loopback; a sandbox admin token is
made at each start. Besides what `sandbox up` writes, DATA_DIR gets `api` (the API's
base URL) and `admin.token` (that token), so the README's examples can read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

from daemon import config, logs
from daemon.service import serve
from daemon.store import Store
from sandbox.up import Sandbox, SandboxError, running

ADMIN_TOKEN_NAME = "sandbox-admin"


def _api_port(wanted: int) -> int:
    """`wanted` when it is free on loopback, else a free port (said in the banner)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _admin_token(settings: config.Settings, data_dir: Path) -> str:
    """A fresh admin token for the sandbox, also written to DATA_DIR/admin.token (0600)."""
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    try:
        if any(t.name == ADMIN_TOKEN_NAME for t in store.list_tokens(include_revoked=False)):
            store.revoke_token(ADMIN_TOKEN_NAME, by="make run")
        token = store.create_token(ADMIN_TOKEN_NAME, "admin", created_by="make run")
    finally:
        store.close()
    path = data_dir / "admin.token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def _banner(box: Sandbox, api: str, token: str, wanted_port: int) -> str:
    data = box.data_dir
    lines = [
        "",
        f"sandbox up: config {box.config_path}",
        f"  dashboard: {api}/dashboard",
        f"  admin token (for the dashboard's login and the API; also in {data}/admin.token):",
        f"    {token}",
    ]
    if not api.endswith(f":{wanted_port}"):
        lines.append(f"  (port {wanted_port} was taken: the API is on {api})")
    if box.previous is not None:
        kept = data / box.previous.name
        lines += [
            "  a fresh store, as the simulators start empty every time; the previous run's",
            f"  store is kept in {kept}/ (.venv/bin/pdsync runs --config {kept}/pdsync.toml)",
        ]
    lines += [
        "  try, in another terminal (README: 'While make run is up'):",
        f"    export PDSYNC_CONFIG={box.config_path}",
        "    .venv/bin/pdsync runs",
        "    .venv/bin/pdsync sync --plan",
        f"    .venv/bin/pdsync report {box.customers[0].id}",
        "  Ctrl-C stops the daemon and the sandbox.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".sandbox"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=3)
    parser.add_argument("--contacts", type=int, default=40)
    parser.add_argument(
        "--api-port", type=int, default=8787, help="loopback port of the API and dashboard"
    )
    args = parser.parse_args(argv)
    logs.configure(format="auto", level="info")
    port = _api_port(args.api_port)
    api = f"http://127.0.0.1:{port}"
    try:
        with running(
            args.data_dir,
            seed=args.seed,
            customers=args.customers,
            contacts=args.contacts,
            api_listen=f"127.0.0.1:{port}",
        ) as box:
            settings = config.load(box.config_path)
            logs.configure(format=settings.log.format, level=settings.log.level)
            token = _admin_token(settings, box.data_dir)
            (box.data_dir / "api").write_text(api + "\n", encoding="utf-8")
            print(_banner(box, api, token, args.api_port), file=sys.stderr)
            try:
                # As `pdsync run`: the syncs in the daemon's worker process (daemon/worker.py).
                return asyncio.run(serve(settings, config_path=box.config_path))
            finally:
                (box.data_dir / "api").unlink(missing_ok=True)
    except SandboxError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
