"""A bad config stops at start with the file, the key and the reason; secrets stay out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from daemon import config, service
from daemon.config import ConfigError

GOOD = """
[store]
url = "sqlite:///{tmp}/pdsync.db"
master_key = {{ file = "{tmp}/master.key" }}

[sync]
interval_seconds = 60

[systems.firestore]
project = "we4you"

[systems.zisson]
base_url = "https://zisson.example"

[[customers]]
id = "kunde-01"
name = "Fjord Ærlig AS"
[customers.firestore]
customer_id = "kunde-01"
[customers.zisson]
api = "json"
user_id = "u1"
customer_guid = "g1"
refresh_token_file = "{tmp}/token"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pdsync.toml"
    path.write_text(text.format(tmp=tmp_path), encoding="utf-8")
    (tmp_path / "master.key").write_text("ab" * 32)
    (tmp_path / "master.key").chmod(0o600)  # a secret others can read is refused
    (tmp_path / "token").write_text("t")  # the Zisson refresh token file it names
    (tmp_path / "token").chmod(0o600)
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD))
    assert settings.customers[0].to_customer().name == "Fjord Ærlig AS"
    assert settings.store.master_key_bytes() == bytes.fromhex("ab" * 32)
    assert settings.sync.policy().authority == "firestore"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('api = "json"', 'api = "soap"'),
            "customers[0].zisson.api: Input should be 'json' or 'xml'",
        ),
        (
            ("interval_seconds = 60", "interval_seconds = 1"),
            "sync.interval_seconds: Input should be greater than or equal to 5",
        ),
        (('id = "kunde-01"', 'id = "Kunde 01!"'), "customers[0].id: String should match pattern"),
        (('customer_guid = "g1"\n', ""), "customers[0].zisson: api = 'json' needs customer_guid"),
        (
            ('[systems.zisson]\nbase_url = "https://zisson.example"\n', ""),
            "customers[0].zisson: binds to zisson but [systems.zisson] is not configured",
        ),
        (("[sync]\n", "[sync]\nbogus = 1\n"), "sync.bogus: Extra inputs are not permitted"),
        (
            ("[sync]\n", '[api]\ntrusted_proxies = ["10.0.0.0/8", "*"]\n[sync]\n'),
            "api.trusted_proxies: '*' is not an IP address or network",
        ),
        (
            ("[sync]\n", '[sync.fields.shoe_size]\nauthority = "zisson"\n[sync]\n'),
            "unknown field 'shoe_size'",
        ),
    ],
)
def test_a_bad_file_names_the_key_and_the_reason(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, text))
    assert str(tmp_path / "pdsync.toml") in str(error.value)
    assert expected in str(error.value)


def test_a_secret_written_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = GOOD.replace(
        'api = "json"\nuser_id = "u1"\ncustomer_guid = "g1"\nrefresh_token_file = "{tmp}/token"',
        'api = "xml"\nusername = "ops"\npassword = "hunter2-secret"',
    )
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, text))
    assert "customers[0].zisson.password: a secret may not be written in the config file" in str(
        error.value
    )
    assert "hunter2" not in str(error.value)


def test_missing_file_and_broken_toml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[store\n"))


def test_the_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    read = counting_reads(monkeypatch)
    config.load(path)
    assert read == [str(path)]


@pytest.mark.usefixtures("cli_logging_restored")
def test_a_command_with_a_customer_filter_reads_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from daemon.cli import app

    path = write(tmp_path, GOOD)
    read = counting_reads(monkeypatch)
    done = CliRunner().invoke(app, ["runs", "--customer", "kunde-01", "--config", str(path)])
    assert done.exit_code == 0, done.output
    assert read == [str(path)]


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The TOML files read from now on (pydantic-settings' TOML source reads with
    tomllib.load too)."""
    read: list[str] = []
    load = tomllib.load

    def counted(handle: BinaryIO) -> dict[str, Any]:
        read.append(str(getattr(handle, "name", "?")))
        return load(handle)

    monkeypatch.setattr(tomllib, "load", counted)
    return read


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSYNC_SYNC__INTERVAL_SECONDS", "90")
    assert config.load(write(tmp_path, GOOD)).sync.interval_seconds == 90


def test_config_check_exits_non_zero_and_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('api = "json"', 'api = "soap"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "customers[0].zisson.api" in result.stderr
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "config",
            "check",
            "--config",
            str(write(tmp_path, GOOD)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout


def test_every_unreachable_secret_and_missing_file_is_named_before_start(tmp_path: Path) -> None:
    text = GOOD.replace(
        'project = "we4you"',
        'project = "we4you"\ncredentials_file = "{tmp}/gcp.json"',
    ) + (
        '\n[[customers]]\nid = "kunde-02"\nname = "B"\n[customers.firestore]\n'
        'customer_id = "kunde-02"\n[customers.zisson]\napi = "xml"\nusername = "u"\n'
        'password = {{ env = "PDSYNC_TEST_ABSENT_PASSWORD" }}\n'
    )
    path = write(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            env={**env, "COLUMNS": "300"},
            timeout=60,
        )

    expected = [
        f"systems.firestore.credentials_file: file {tmp_path}/gcp.json cannot be read",
        "customers[1].zisson.password: environment variable PDSYNC_TEST_ABSENT_PASSWORD is not set",
    ]
    check = cli("config", "check")
    assert check.returncode == 2
    assert all(line in check.stderr for line in expected), check.stderr
    run = cli("run")  # the daemon stops before any work, naming the same keys
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert all(line in run.stderr for line in expected), run.stderr
    assert not (tmp_path / "pdsync.db").exists()

    (tmp_path / "gcp.json").write_text("{}")
    (tmp_path / "gcp.json").chmod(0o600)
    env["PDSYNC_TEST_ABSENT_PASSWORD"] = "s3cret"
    again = cli("config", "check")
    assert again.returncode == 0, again.stderr
    assert "s3cret" not in again.stdout + again.stderr
    assert "systems: firestore, zisson" in again.stdout


def test_a_system_that_cannot_be_set_up_ends_the_command_with_its_message(
    tmp_path: Path,
) -> None:
    text = GOOD.replace(
        'base_url = "https://zisson.example"',
        'base_url = "https://zisson.example"\nca_bundle = "{tmp}/ca.pem"',
    )
    path = write(tmp_path, text)
    (tmp_path / "ca.pem").write_text("not a certificate")  # there, but not a CA bundle
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "sync", "--plan", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "300"},
        timeout=60,
    )
    assert result.returncode == 2
    assert f"zisson: ca_bundle {tmp_path}/ca.pem cannot be loaded" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_master_key_of_the_wrong_size_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "master.key").write_text("abcd")
    with pytest.raises(ConfigError, match=r"store\.master_key .*not 32 bytes"):
        config.load(path).store.master_key_bytes()


def test_a_master_key_that_cannot_be_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.load(write(tmp_path, GOOD))
    (tmp_path / "master.key").unlink()
    with pytest.raises(ConfigError, match=rf"store\.master_key: secret file {tmp_path}/master.key"):
        settings.store.master_key_bytes()
    by_env = GOOD.replace('{{ file = "{tmp}/master.key" }}', '{{ env = "PDSYNC_TEST_KEY" }}')
    monkeypatch.delenv("PDSYNC_TEST_KEY", raising=False)
    settings = config.load(write(tmp_path, by_env))
    with pytest.raises(ConfigError, match=r"store\.master_key: .*PDSYNC_TEST_KEY is not set"):
        settings.store.master_key_bytes()


def test_an_override_from_the_environment_replaces_a_secret_reference_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDSYNC_STORE__MASTER_KEY", '{"env": "PDSYNC_TEST_KEY"}')
    monkeypatch.setenv("PDSYNC_TEST_KEY", "cd" * 32)
    settings = config.load(write(tmp_path, GOOD))  # the file says { file = ... }
    assert settings.store.master_key.env == "PDSYNC_TEST_KEY"
    assert settings.store.master_key.file is None
    assert settings.store.master_key_bytes() == bytes.fromhex("cd" * 32)


def test_the_example_config_in_the_repository_is_valid() -> None:
    settings = config.load(Path(__file__).parents[2] / "config" / "example.toml")
    assert [c.id for c in settings.customers] == ["acme", "fjordbakst"]
    assert settings.systems.zisson is not None and settings.systems.zisson.write_mode == "manual"


def test_the_deploy_configs_are_valid() -> None:
    deploy = Path(__file__).parents[2] / "deploy" / "config"
    files = sorted(deploy.glob("*.toml"))
    assert len(files) == 3
    for path in files:
        settings = config.load(path)
        assert settings.store.url.startswith(("sqlite:///", "postgresql+psycopg://"))
        assert settings.ledger.signing_key is not None


def test_the_deploy_files_let_a_stop_finish_before_they_kill() -> None:
    """systemd, compose and Kubernetes send SIGKILL after their stop timeout: it must
    outlast the daemon's drain and the grace its cancelled work gets to record its end,
    or a run is killed half-recorded."""
    deploy = Path(__file__).parents[2] / "deploy"
    timeouts = {
        "pdsync.service": r"(?m)^TimeoutStopSec=(\d+)s$",
        "compose.yaml": r"(?m)^  stop_grace_period: (\d+)s",  # the daemons' (anchor)
        "k8s/deployment.yaml": r"(?m)^\s+terminationGracePeriodSeconds: (\d+)$",
    }
    needed = service.DRAIN_SECONDS + service.CANCEL_GRACE_SECONDS
    for name, pattern in timeouts.items():
        found = re.findall(pattern, (deploy / name).read_text(encoding="utf-8"))
        assert found, f"{name}: no stop timeout"
        assert all(int(seconds) > needed for seconds in found), (name, found, needed)
