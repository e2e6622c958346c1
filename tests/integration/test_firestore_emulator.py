"""The emulator launcher with the real JVM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from sandbox.firestore_emulator import EmulatorError, FirestoreEmulator
from tests.fixtures.firestore import FirestoreEnv, live_group_members

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]


def client(emulator: FirestoreEmulator, project: str) -> firestore.Client:
    made = firestore.Client(project=project, credentials=AnonymousCredentials())
    assert made._target == emulator.host
    return made


def test_reset_empties_one_project_and_leaves_the_others(firestore_env: FirestoreEnv) -> None:
    emulator = firestore_env.emulator
    mine, other = client(emulator, "reset-a"), client(emulator, "reset-b")
    mine.collection("customers").document("c").set({"name": "Ærlig AS"})
    other.collection("customers").document("c").set({"name": "Ørn AS"})

    emulator.reset("reset-a")

    assert not mine.collection("customers").document("c").get().exists
    assert other.collection("customers").document("c").get().exists
    emulator.reset("reset-b")


def test_the_session_emulator_answers_and_reports_its_start_up(
    firestore_env: FirestoreEnv,
) -> None:
    emulator = firestore_env.emulator

    assert emulator.running
    assert emulator.host.startswith("127.0.0.1:")
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == emulator.host
    assert emulator.startup_seconds is not None and emulator.startup_seconds < 60


def test_a_second_emulator_on_a_taken_port_is_refused(firestore_env: FirestoreEnv) -> None:
    with pytest.raises(EmulatorError, match="already in use"):
        FirestoreEmulator(firestore_env.emulator.port).start()


def group_alive(pgid: int) -> bool:
    return bool(live_group_members(pgid))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_no_jvm_outlives_the_process_that_started_it(how: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from sandbox.firestore_emulator import FirestoreEmulator

        emulator = FirestoreEmulator(log_path=Path(sys.argv[2]))
        emulator.start()
        print(emulator._process.pid, flush=True)
        if sys.argv[1] == "exit":
            sys.exit(0)  # without stop(): atexit and the guard must clean up
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, how, str(tmp_path / "emulator.log")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            pgid = int(parent.stdout.readline())
            assert group_alive(pgid)
            if how == "sigkill":
                parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=30)

            deadline = time.monotonic() + 15
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)

            assert not group_alive(pgid)
        finally:
            if parent.poll() is None:
                parent.kill()
