"""What the daemon keeps in memory: libraries it needs only now and then are imported
when needed, not at start (issue 15: an idle daemon under 120 MB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from daemon.store import _db

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running `code`."""
    script = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=True,
    )
    return set(done.stdout.split())


# The certificate PDF (fpdf, fontTools, PIL) and the migrations (alembic, mako): about
# 25 MB of a daemon that uses them rarely.
RARELY_NEEDED = {"fpdf", "fontTools", "PIL", "alembic", "mako"}


def test_the_daemon_starts_without_the_libraries_it_needs_only_now_and_then() -> None:
    loaded = loaded_after("import daemon.cli, daemon.service")
    assert "daemon" in loaded
    assert loaded & RARELY_NEEDED == set()


def test_a_sqlite_daemon_does_not_load_the_postgresql_driver() -> None:
    # psycopg is ~9 MB; the modules that LISTEN on PostgreSQL import it when they do.
    assert "psycopg" not in loaded_after("import daemon.cli, daemon.service")


def test_opening_a_store_at_the_newest_revision_does_not_load_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    key = "bytes(32)"
    opened = f"from daemon.store import Store\nStore.open({url!r}, master_key={key}).close()"
    assert "alembic" in loaded_after(opened)  # a new database is migrated by alembic
    assert "alembic" not in loaded_after(opened)  # one at head is told apart without it


def test_the_newest_revision_is_the_one_alembic_finds() -> None:
    config = Config()
    config.set_main_option("script_location", str(_db.MIGRATIONS_DIR).replace("%", "%%"))
    assert _db.head_revision() == ScriptDirectory.from_config(config).get_current_head()
