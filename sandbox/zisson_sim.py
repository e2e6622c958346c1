"""The Zisson simulator (see `sandbox.zisson` for what it serves).

Run it by hand with `python -m sandbox.zisson_sim [--port P] [--seed N]`; seed it over
HTTP through /_sim/.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from sandbox.zisson import Faults, ZissonSimulator

__all__ = ["Faults", "ZissonSimulator", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jwt-ttl", type=float, default=300.0)
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with ZissonSimulator(args.host, args.port, seed=args.seed, jwt_ttl_seconds=args.jwt_ttl) as sim:
        print(f"zisson simulator on {sim.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()


if __name__ == "__main__":
    main()
