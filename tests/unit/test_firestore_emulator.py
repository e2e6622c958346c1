"""The emulator launcher's look-up, and the pytest plugin's behaviour without the jar."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox.firestore_emulator import (
    JAR_ENV,
    EmulatorError,
    EmulatorUnavailable,
    FirestoreEmulator,
    find_emulator,
)
from tests.fixtures.firestore import live_group_members

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_jar_named_by_the_environment_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "cloud-firestore-emulator.jar"
    monkeypatch.setenv(JAR_ENV, str(missing))

    with pytest.raises(EmulatorUnavailable) as caught:
        find_emulator()

    assert str(caught.value) == f"Firestore emulator jar not found: {missing} (from {JAR_ENV})"


def test_a_java_home_without_java_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jar = tmp_path / "emulator.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv(JAR_ENV, str(jar))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))

    with pytest.raises(EmulatorUnavailable) as caught:
        find_emulator()

    assert str(caught.value) == (
        f"java executable not found: {tmp_path / 'jdk' / 'bin' / 'java'} (from JAVA_HOME)"
    )


def test_java_missing_from_path_and_a_missing_jar_are_both_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(JAR_ENV, str(tmp_path / "x.jar"))

    with pytest.raises(EmulatorUnavailable) as caught:
        find_emulator()

    message = str(caught.value)
    assert "java command not found on PATH" in message
    assert f"jar not found: {tmp_path / 'x.jar'}" in message


def test_an_unstarted_emulator_has_no_host_and_stop_is_harmless() -> None:
    emulator = FirestoreEmulator()

    with pytest.raises(EmulatorError, match="call start"):
        _ = emulator.host
    emulator.stop()
    assert not emulator.running


def test_without_the_jar_emulator_tests_are_skipped_loudly_and_nothing_else(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing" / "cloud-firestore-emulator.jar"
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.emulator
            def test_marked():
                raise AssertionError("must be skipped")

            def test_using_the_fixture(firestore_env):
                raise AssertionError("must be skipped")

            def test_plain():
                pass
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, JAR_ENV: str(missing), "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path / "test_inner.py"),
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "tests.fixtures.firestore",
            "-p",
            "no:cacheprovider",
            "-rs",
            "--color=no",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "1 passed, 2 skipped" in out
    header, _, summary = out.partition("test session starts")[2].partition("collected")
    assert f"FIRESTORE EMULATOR UNAVAILABLE: Firestore emulator jar not found: {missing}" in (
        header
    )
    banner = summary.split("FIRESTORE EMULATOR UNAVAILABLE", 1)[1]
    assert f"Firestore emulator jar not found: {missing}" in banner
    assert "2 test(s) marked 'emulator' were SKIPPED" in banner
    assert summary.count("SKIPPED [1] test_inner.py") == 2
    assert str(missing) in summary.split("short test summary info", 1)[1]


def fake_java(tmp_path: Path, body: str) -> Path:
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    java.chmod(0o755)
    return java


def group_alive(pgid: int) -> bool:
    return bool(live_group_members(pgid))


def test_a_jvm_that_dies_at_start_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    java = fake_java(tmp_path, 'echo "Error: could not find or load main class"; exit 3')
    emulator = FirestoreEmulator(java=java, jar=tmp_path / "x.jar")

    with pytest.raises(EmulatorError) as caught:
        emulator.start()

    message = str(caught.value)
    assert "exited with code 3" in message
    assert "could not find or load main class" in message
    assert not emulator.running


def test_a_jvm_that_never_answers_times_out_with_its_log_tail_and_is_ended(
    tmp_path: Path,
) -> None:
    java = fake_java(tmp_path, 'echo "warming up"; exec sleep 60')
    emulator = FirestoreEmulator(java=java, jar=tmp_path / "x.jar", start_timeout=0.5)

    with pytest.raises(EmulatorError) as caught:
        emulator.start()

    assert "did not answer" in str(caught.value) and "warming up" in str(caught.value)
    assert not emulator.running


def test_stop_ends_the_whole_process_group_and_removes_its_own_log(tmp_path: Path) -> None:
    # A "JVM" with a child of its own: stop() must reach both.
    java = fake_java(tmp_path, "sleep 60 & exec sleep 60")
    emulator = FirestoreEmulator(java=java, jar=tmp_path / "x.jar")
    emulator.port = 1
    emulator._spawn()
    assert emulator._process is not None
    pgid = emulator._process.pid
    log = emulator.log_path
    assert log is not None and log.exists() and group_alive(pgid)

    emulator.stop()

    assert not group_alive(pgid)
    assert not log.exists()
