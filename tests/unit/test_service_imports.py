"""What the daemon keeps in memory: libraries it needs only now and then are imported
when needed, not at start (issue 15: an idle daemon under 120 MB); and what `pdsync`
loads before it can answer (`pdsync --help`, `pdsync log`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prometheus_client
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from daemon.api import probes
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


# Each connector's client stack: google-cloud-firestore with grpc and protobuf (~25 MB),
# msal with requests (Outlook).
CLIENT_STACKS = {"google", "grpc", "msal", "requests"}


def test_reading_the_config_does_not_load_the_connectors_client_libraries() -> None:
    for code in (
        "import connectors.firestore.settings",
        "import connectors.outlook.settings, connectors.zisson.settings",
        "import daemon.config",
    ):
        loaded = loaded_after(code)
        assert "connectors" in loaded
        assert loaded & CLIENT_STACKS == set(), code
        assert loaded & {"httpx", "tenacity"} == set(), code  # the HTTP stack: connectors.base


def test_pdsync_help_loads_neither_a_connector_nor_the_store() -> None:
    code = (
        "import sys\nfrom daemon.cli import app\nsys.argv = ['pdsync', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    loaded = loaded_after(code)
    assert "typer" in loaded
    assert loaded & (CLIENT_STACKS | {"sqlalchemy", "cryptography", "fastapi"}) == set()


def test_pdsync_log_reads_the_store_without_the_http_stack(tmp_path: Path) -> None:
    # The ledger's HTTP witness is imported with the store; httpx only once it is used.
    key = tmp_path / "master.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    config = tmp_path / "pdsync.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/pdsync.db"\nmaster_key = {{ file = "{key}" }}\n'
        '[systems.firestore]\nproject = "p"\n[sync]\nauthority = "firestore"\n',
        encoding="utf-8",
    )
    code = (
        "import sys\nfrom daemon.cli import app\n"
        f"sys.argv = ['pdsync', 'log', '--config', {str(config)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code"
    )
    loaded = loaded_after(code)
    assert "sqlalchemy" in loaded  # it did read the store
    assert loaded & {"httpx", "httpcore", "h2"} == set()


def test_the_daemon_starts_without_the_dashboard_templates_and_the_metrics_library() -> None:
    # Jinja2 for the first dashboard page, prometheus_client for the first scrape; the
    # connectors' stacks for the systems the config names (below).
    loaded = loaded_after("import daemon.cli, daemon.service")
    assert "fastapi" in loaded
    assert loaded & ({"jinja2", "prometheus_client"} | CLIENT_STACKS) == set()


ZISSON_ONLY = """
[store]
url = "sqlite:///{tmp}/pdsync.db"
master_key = {{ file = "{tmp}/master.key" }}

[sync]
authority = "zisson"

[systems.zisson]
base_url = "https://zisson.example"
{firestore}
[[customers]]
id = "kunde-01"
name = "Fjord AS"
[customers.zisson]
api = "xml"
username = "ops"
password = {{ file = "{tmp}/password" }}
"""
FIRESTORE = """
[systems.firestore]
project = "we4you"
"""


@pytest.mark.parametrize(
    ("firestore", "loads_grpc"), [("", False), (FIRESTORE, True)], ids=["zisson", "and-firestore"]
)
def test_a_backend_is_loaded_only_when_the_config_names_its_system(
    tmp_path: Path, firestore: str, loads_grpc: bool
) -> None:
    for secret, value in (("master.key", "ab" * 32), ("password", "pw")):
        (tmp_path / secret).write_text(value)
        (tmp_path / secret).chmod(0o600)
    path = tmp_path / "pdsync.toml"
    path.write_text(ZISSON_ONLY.format(tmp=tmp_path, firestore=firestore))
    systems = ["firestore", "zisson"] if firestore else ["zisson"]
    code = f"""
import asyncio
from contextlib import AsyncExitStack
from daemon import config
from daemon.wiring import erasers_for, open_connectors

async def main() -> None:
    async with AsyncExitStack() as stack:
        connectors = await open_connectors(config.load({str(path)!r}), stack)
        assert sorted(erasers_for(connectors)) == {systems!r}

asyncio.run(main())
"""
    loaded = loaded_after(code)
    assert ("grpc" in loaded) is loads_grpc
    assert "msal" not in loaded  # no Outlook either way


def test_the_metrics_content_type_is_prometheus_clients() -> None:
    # Named in probes.py without importing prometheus_client (loaded at the first scrape).
    assert probes.METRICS_CONTENT_TYPE == prometheus_client.CONTENT_TYPE_LATEST
