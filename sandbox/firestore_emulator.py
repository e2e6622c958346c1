"""Google's Firestore emulator on loopback, for tests, benchmarks and `make run`.

The emulator is a JVM (Java 17) started from the jar the Google Cloud SDK ships. Each
`FirestoreEmulator` owns one JVM in its own process group; `stop()` ends the whole group,
and so do interpreter exit and the death of this process (a guard process watches a pipe
whose only writer is us, so even a SIGKILLed parent leaves no JVM behind).

Run it by hand with `python -m sandbox.firestore_emulator [--port P]`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

JAR_ENV = "PDSYNC_FIRESTORE_EMULATOR_JAR"
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
JAR_NAME = "cloud-firestore-emulator.jar"
_SDK_SUBDIR = Path("platform/cloud-firestore-emulator") / JAR_NAME
DEFAULT_JAR = Path("/usr/lib/google-cloud-sdk") / _SDK_SUBDIR
# Where distribution packages and the tarball installer put the Cloud SDK.
_SDK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),
    Path("/usr/share/google-cloud-sdk"),
    Path("/opt/google-cloud-sdk"),
    Path.home() / "google-cloud-sdk",
)
LOOPBACK = "127.0.0.1"
# Loopback never goes through an HTTP proxy, whatever http_proxy says.
_LOOPBACK_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorUnavailable(RuntimeError):
    """Java or the emulator jar is missing; the message names exactly what and where."""


class EmulatorError(RuntimeError):
    """The emulator did not start, died, or refused a request."""


def find_emulator() -> tuple[Path, Path]:
    """The java executable and the emulator jar.

    The jar comes from $PDSYNC_FIRESTORE_EMULATOR_JAR when set, else from the Cloud SDK
    (the usual install locations, then beside `gcloud` on PATH). Java comes from
    $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` on PATH. Raises
    EmulatorUnavailable naming every missing file or command.
    """
    missing: list[str] = []
    java = _find_java(missing)
    jar = _find_jar(missing)
    if missing:
        raise EmulatorUnavailable("; ".join(missing))
    assert java is not None and jar is not None
    return java, jar


def _find_java(missing: list[str]) -> Path | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        missing.append(f"java executable not found: {candidate} (from JAVA_HOME)")
        return None
    found = shutil.which("java")
    if found is None:
        missing.append("java command not found on PATH (install Java 17 or set JAVA_HOME)")
        return None
    return Path(found)


def _find_jar(missing: list[str]) -> Path | None:
    override = os.environ.get(JAR_ENV)
    if override:
        jar = Path(override)
        if jar.is_file():
            return jar
        missing.append(f"Firestore emulator jar not found: {jar} (from {JAR_ENV})")
        return None
    roots = list(_SDK_ROOTS)
    gcloud = shutil.which("gcloud")
    if gcloud is not None:
        # gcloud lives in <sdk>/bin/; distribution packages symlink it from /usr/bin.
        roots.append(Path(gcloud).resolve().parent.parent)
    for root in roots:
        jar = root / _SDK_SUBDIR
        if jar.is_file():
            return jar
    missing.append(
        f"Firestore emulator jar not found: {DEFAULT_JAR} "
        f"(install google-cloud-cli-firestore-emulator or set {JAR_ENV})"
    )
    return None


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


class FirestoreEmulator:
    """One emulator JVM on loopback; a context manager.

    `port=0` picks a free port. `start()` returns once the emulator answers HTTP and
    records the time it took in `startup_seconds`; it raises EmulatorUnavailable when
    java or the jar is missing and EmulatorError (with the log's tail) when the JVM dies
    or does not answer in `start_timeout` seconds. Output goes to `log_path`, or to a
    temporary file removed by `stop()`, so the JVM never blocks on a full pipe.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        java: Path | None = None,
        jar: Path | None = None,
        log_path: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._requested_port = port
        self.port = port
        self._java = java
        self._jar = jar
        self._log_path = log_path
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._owns_log = log_path is None

    @property
    def host(self) -> str:
        """ "127.0.0.1:PORT", the value for FIRESTORE_EMULATOR_HOST."""
        if not self.port:
            raise EmulatorError("the emulator has no port yet: call start() first")
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self._process is not None:
            raise EmulatorError("the emulator is already started")
        if self._java is None or self._jar is None:
            java, jar = find_emulator()
            self._java = self._java or java
            self._jar = self._jar or jar
        started = time.monotonic()
        # A port picked by us may be taken by someone else before the JVM binds it.
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port()
            if not _port_is_free(self.port):
                if attempt < attempts:
                    continue
                # Else the readiness probe would take whoever holds the port for our JVM.
                raise EmulatorError(f"port {self.port} on {LOOPBACK} is already in use")
            self._spawn()
            try:
                self._wait_ready(started)
            except _ExitedEarly as exc:
                tail = self.log_tail()
                self.stop()
                if attempt < attempts and "already in use" in tail.lower():
                    continue
                raise EmulatorError(f"{exc}; log tail:\n{tail}") from None
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - started
            return

    def _spawn(self) -> None:
        assert self._java is not None and self._jar is not None
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._owns_log = True
        self._log = self._log_path.open("ab")
        command = [
            str(self._java),
            # As gcloud's wrapper does: the emulator only speaks English.
            "-Duser.language=en",
            "-cp",
            str(self._jar),
            MAIN_CLASS,
            f"--host={LOOPBACK}",
            f"--port={self.port}",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every thread
        )
        self._guard = _start_guard(self._process.pid)
        atexit.register(self.stop)

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.start_timeout
        url = f"http://{self.host}/"
        while True:
            code = self._process.poll()
            if code is not None:
                raise _ExitedEarly(f"the Firestore emulator exited with code {code}")
            try:
                with _LOOPBACK_HTTP.open(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                exc.close()  # up, but not ready yet
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                tail = self.log_tail()
                raise EmulatorError(
                    f"the Firestore emulator did not answer on {url} within "
                    f"{self.start_timeout:.0f} s; its log ends with:\n{tail}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """End the JVM's whole process group and wait for it; idempotent."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        guard, self._guard = self._guard, None
        if guard is not None:
            # The guard goes first so it cannot signal a process group id reused later.
            with contextlib.suppress(ProcessLookupError):
                guard.kill()
            guard.wait()
            if guard.stdin is not None:
                guard.stdin.close()
        if process is not None:
            _end_group(process)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._log_path.unlink()
            self._log_path = None

    def reset(self, project: str) -> None:
        """Delete every document of `project` in the default database."""
        url = f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents"
        request = urllib.request.Request(url, method="DELETE")
        try:
            with _LOOPBACK_HTTP.open(request, timeout=10.0) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            raise EmulatorError(f"reset of the Firestore emulator failed: {exc}") from exc
        if status != 200:
            raise EmulatorError(f"reset of the Firestore emulator answered HTTP {status}")

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        if self._log is not None:
            self._log.flush()
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ExitedEarly(Exception):
    pass


# Blocks reading a pipe whose only writer is this process; EOF means we are gone, however
# we went (even SIGKILL), and then it takes the JVM's group with it: TERM, up to 5 s for
# the JVM to go, then KILL. `kill -SIG -PGID` without `--`, which dash does not know.
_GUARD_SCRIPT = """
read _
kill -TERM "-$1" 2>/dev/null || exit 0
n=0
while [ $n -lt 50 ] && kill -0 "-$1" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
kill -KILL "-$1" 2>/dev/null
exit 0
"""


def _start_guard(pgid: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["/bin/sh", "-c", _GUARD_SCRIPT, "firestore-emulator-guard", str(pgid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outside the JVM's group, and not hit by our Ctrl-C
    )


def _end_group(process: subprocess.Popen[bytes]) -> None:
    pgid = process.pid  # start_new_session made it the group leader
    # Signal only while the leader is unreaped: after wait() its id may be reused.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            process.wait(timeout=10.0)
            return
        except subprocess.TimeoutExpired:
            continue
    raise EmulatorError(f"the Firestore emulator (pid {pgid}) survived SIGKILL")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run Google's Firestore emulator on loopback.")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        emulator = FirestoreEmulator(args.port)
        emulator.start()
    except (EmulatorUnavailable, EmulatorError) as exc:
        print(f"firestore emulator: {exc}", file=sys.stderr)
        return 1
    up = f"{emulator.startup_seconds:.2f}"
    print(f"export FIRESTORE_EMULATOR_HOST={emulator.host}  # up in {up} s")
    print(f"log: {emulator.log_path}")
    # Blocked only now: a blocked mask would be inherited by the JVM and the guard.
    waited = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        signal.sigwait(waited)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
