"""The Microsoft Graph + Entra ID simulator (see `sandbox.graph` for what it serves).

Run it by hand with `python -m sandbox.graph_sim [--port P] [--seed N]`; it prints its
URL and the CA file to trust, and is seeded over HTTPS through /_sim/.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from sandbox.graph import Faults, GraphError, GraphSimulator

__all__ = ["Faults", "GraphError", "GraphSimulator", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tenant", default="pdsync-sandbox-tenant")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with GraphSimulator(
        args.host, args.port, tenant_id=args.tenant, seed=args.seed, time_scale=args.time_scale
    ) as sim:
        print(f"graph simulator on {sim.url} (authority {sim.authority})", flush=True)
        print(f"trust {sim.ca_file}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()


if __name__ == "__main__":
    main()
