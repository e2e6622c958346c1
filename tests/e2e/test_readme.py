"""The README's shell blocks run as written, against the sandbox as `make run` starts it.

The test starts what `make run` runs (`python -m sandbox.run`), with its data in
WORK/.sandbox and WORK/.venv standing for the checkout's venv, waits until the daemon's
API answers, then runs every ```sh block of README.md in one bash, in order, from WORK:
a person at the checkout, in one terminal, pasting the examples. A block is left out
only when the paragraph just above it starts with SKIP_MARKER, visibly, in the README;
those blocks are listed here (SKIPPED), so leaving one out is a decision made twice.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP_MARKER = "*Not run by the README test"
# Each block the README marks as not run, by its first three words, in order.
SKIPPED = [
    "make run #",  # the test starts it
    "pdsync erase subject",  # shapes, with ids to fill in; a second admin
    "pdsync config check",  # a config of one's own
    "pdsync zisson set-token",  # a token Zisson issued
]


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    text: str
    skipped: bool


def shell_blocks(markdown: str) -> list[Block]:
    """Every ```sh block, and whether the paragraph above it marks it as not run."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        end = lines.index("```", i + 1)
        above = i - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        start = above
        while start > 0 and lines[start - 1].strip():
            start -= 1
        skipped = above >= 0 and lines[start].startswith(SKIP_MARKER)
        blocks.append(Block(line=i + 1, text="\n".join(lines[i + 1 : end]), skipped=skipped))
        i = end + 1
    return blocks


def test_shell_blocks_are_found_and_only_the_marked_ones_skipped() -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert [" ".join(b.text.split()[:3]) for b in blocks if b.skipped] == SKIPPED
    assert len([b for b in blocks if not b.skipped]) >= 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_api(data: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
        api = data / "api"
        if api.exists():
            try:
                url = api.read_text(encoding="utf-8").strip()
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    pytest.fail("make run did not serve its API in time:\n" + log.read_text()[-3000:])


def test_the_readme_shell_blocks_run_as_written_against_the_sandbox(tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    data = work / ".sandbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    log = tmp_path / "make-run.log"
    make_run = [sys.executable, "-m", "sandbox.run", "--data-dir", str(data)]
    # kunde-01 alone (seeded as among make run's three): less for the daemon to do
    make_run += ["--customers", "1", "--api-port", str(free_port())]
    with log.open("wb") as sink:
        daemon = subprocess.Popen(
            make_run,
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_api(data, daemon, log)
        script = ["set -euo pipefail"]
        for block in shell_blocks(README.read_text(encoding="utf-8")):
            if not block.skipped:
                script += [f"echo '### README.md line {block.line}' >&2", block.text]
        result = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,  # a guard only: about 40 s of CPU in all
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    said = result.stdout + result.stderr
    failed_at = re.findall(r"### README.md line \d+", result.stderr)
    assert result.returncode == 0, f"{failed_at[-1:]}: {said[-3000:]}"
    assert "Traceback" not in said
    assert "alembic" not in said.lower()  # no library log lines in a command's output
    assert "certificate.json: valid" in result.stdout
    assert "ledger OK" in result.stdout
    assert (work / "certificate.pdf").read_bytes().startswith(b"%PDF")
    assert '"kind":"sync"' in result.stdout.replace(" ", "")  # the API's runs, as JSON
    assert daemon.returncode == 0, log.read_text(encoding="utf-8")[-2000:]
