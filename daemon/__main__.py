"""`python -m daemon`: the `pdsync` program (daemon/entry.py)."""

from daemon.entry import main

main()
