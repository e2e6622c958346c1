"""`make run`: the sandbox and the daemon against it, in one process, until Ctrl-C.

python -m sandbox.run --data-dir .sandbox [--seed 1] [--customers 3] [--contacts 40]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from daemon import config, logs
from daemon.service import serve
from sandbox.up import SandboxError, running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".sandbox"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=3)
    parser.add_argument("--contacts", type=int, default=40)
    args = parser.parse_args(argv)
    logs.configure(format="auto", level="info")
    try:
        with running(
            args.data_dir, seed=args.seed, customers=args.customers, contacts=args.contacts
        ) as box:
            settings = config.load(box.config_path)
            logs.configure(format=settings.log.format, level=settings.log.level)
            print(
                f"\nsandbox up: config {box.config_path}\n"
                f"  try, in another terminal:\n"
                f"    .venv/bin/pdsync runs --config {box.config_path}\n"
                f"    .venv/bin/pdsync sync --plan --config {box.config_path}\n"
                f"    .venv/bin/pdsync report {box.customers[0].id} --config {box.config_path}\n"
                f"  Ctrl-C stops the daemon and the sandbox.\n",
                file=sys.stderr,
            )
            return asyncio.run(serve(settings))
    except SandboxError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
