"""`pdsync run` is told apart before anything is imported (daemon/entry.py): a plain
`run` starts the daemon without the command line's libraries; anything more goes to the
full command line, which says what is wrong or shows the help. Either way a config that
cannot be read ends the command with "config error", the reason and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.entry import DEFAULT_CONFIG, daemon_config


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["run", "--config", "a.toml"], "a.toml"),
        (["run", "-c", "/etc/pdsync/b.toml"], "/etc/pdsync/b.toml"),
        (["run", "--config=c.toml"], "c.toml"),
        (["run", "--help"], None),
        (["run", "--config"], None),  # the command line says the value is missing
        (["run", "--config="], None),
        (["run", "--config", "--help"], None),
        (["run", "--config", "a.toml", "--extra"], None),
        (["-v", "run", "--config", "a.toml"], None),
        (["runs"], None),
        (["sync", "--config", "a.toml"], None),
        ([], None),
    ],
)
def test_only_a_plain_run_starts_the_daemon_directly(args: list[str], config: str | None) -> None:
    assert daemon_config(args) == config


def test_a_plain_run_takes_the_config_from_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PDSYNC_CONFIG", raising=False)
    assert daemon_config(["run"]) == DEFAULT_CONFIG == "pdsync.toml"
    monkeypatch.setenv("PDSYNC_CONFIG", "/srv/pdsync.toml")
    assert daemon_config(["run"]) == "/srv/pdsync.toml"


def pdsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_config_that_cannot_be_read_is_named_with_exit_code_2(
    tmp_path: Path, verbose: list[str]
) -> None:
    (tmp_path / "bad.toml").write_text("[sync]\ninterval_seconds = -5\n", encoding="utf-8")
    missing = pdsync(*verbose, "run", "--config", "nowhere.toml", cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith("config error\nnowhere.toml: no such config file")
    assert "--config FILE or the environment variable PDSYNC_CONFIG" in missing.stderr
    bad = pdsync(*verbose, "run", "-c", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("config error\n") and "interval_seconds" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


def test_anything_more_goes_to_the_command_line(tmp_path: Path) -> None:
    shown = pdsync("run", "--help", cwd=tmp_path)
    assert shown.returncode == 0 and "Run the daemon" in shown.stdout
    wrong = pdsync("run", "--config", cwd=tmp_path)
    assert wrong.returncode == 2 and "requires an argument" in wrong.stderr


def test_a_worker_process_whose_config_cannot_be_read_says_so_with_exit_code_2(
    tmp_path: Path,
) -> None:
    # The daemon read the file a moment before; it may have changed since.
    (tmp_path / "bad.toml").write_text("[sync]\ninterval_seconds = -5\n", encoding="utf-8")
    worker = pdsync(
        "_worker", "--config", "bad.toml", "--report-fd", "1",
        "--parent", str(os.getpid()), "--instance-of", "daemon-1", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 2, worker.stderr
    assert worker.stderr.startswith("config error\n") and "interval_seconds" in worker.stderr
    assert "Traceback" not in worker.stderr
