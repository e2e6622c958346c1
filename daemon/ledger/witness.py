"""Witnesses: copies of the signed checkpoints kept outside the store.

Whoever can write the store can delete its newest rows together with the checkpoints
that signed them; a copy of each checkpoint held elsewhere makes that visible
(`pdsync ledger verify` proves the store's tree extends every witnessed one, RFC 9162
§2.1.4). `[ledger] witness` names the witness:

- a file, or a directory (then its file `ledger-checkpoints.jsonl`), preferably on
  other storage: each checkpoint is appended as one line of canonical JSON and synced
  to disk. The directory must exist: a missing mount is an error, not a local copy.
- an `http://` or `https://` URL: each checkpoint is POSTed as canonical JSON
  (`Content-Type: application/json`; any 2xx is success); a GET on the same URL
  returns what it holds, as JSON lines or a JSON array of checkpoints.

A witness that cannot be written to does not stop the ledger (the checkpoint is in the
store, and the next one is offered again); `ledger verify` says what it holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from daemon.ledger.entry import Checkpoint

WITNESS_FILE_NAME = "ledger-checkpoints.jsonl"
HTTP_TIMEOUT_SECONDS = 10.0


class WitnessError(Exception):
    """The witness cannot be written or read; the message names it, never a secret."""


class Witness(Protocol):
    """Where checkpoints are copied to, outside the store."""

    def publish(self, checkpoint: Checkpoint) -> None:
        """Hand over one checkpoint. Raises WitnessError."""

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint the witness holds, in the order given. Raises WitnessError."""

    def describe(self) -> str:
        """Where the witness is, for messages."""


class FileWitness:
    """Append-only JSON lines in a file (or `ledger-checkpoints.jsonl` in a directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        if target.is_dir() or os.fspath(path).endswith(os.sep):
            target = target / WITNESS_FILE_NAME
        self.path = target

    def describe(self) -> str:
        return str(self.path)

    def publish(self, checkpoint: Checkpoint) -> None:
        if not self.path.parent.is_dir():
            raise WitnessError(f"witness {self.path}: the directory {self.path.parent} is missing")
        line = checkpoint.to_json() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WitnessError(f"witness {self.path}: cannot append: {exc.strerror}") from None

    def checkpoints(self) -> list[Checkpoint]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                raise WitnessError(
                    f"witness {self.path}: the directory {self.path.parent} is missing"
                ) from None
            return []
        except OSError as exc:
            raise WitnessError(f"witness {self.path}: cannot read: {exc.strerror}") from None
        return parse_checkpoints(data, str(self.path))


class HttpWitness:
    """POST each checkpoint to a URL; GET the same URL for what it holds."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout

    def describe(self) -> str:
        import httpx  # here, not at the top: the store (and every CLI command) imports this

        url = httpx.URL(self.url)  # without user info or query: they may hold a secret
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}{url.path}"

    def publish(self, checkpoint: Checkpoint) -> None:
        import httpx

        try:
            response = httpx.post(
                self.url,
                content=checkpoint.to_json(),
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise WitnessError(f"witness {self.describe()}: {type(exc).__name__}") from None
        if not response.is_success:
            raise WitnessError(f"witness {self.describe()}: HTTP {response.status_code}")

    def checkpoints(self) -> list[Checkpoint]:
        import httpx

        try:
            response = httpx.get(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise WitnessError(f"witness {self.describe()}: {type(exc).__name__}") from None
        if not response.is_success:
            raise WitnessError(f"witness {self.describe()}: HTTP {response.status_code}")
        return parse_checkpoints(response.content, self.describe())


def witness_for(spec: str) -> Witness:
    """The witness `[ledger] witness` names: an http(s) URL, else a file or directory."""
    if spec.startswith(("http://", "https://")):
        return HttpWitness(spec)
    if "://" in spec:
        raise ValueError("ledger.witness: give a file or directory path, or an http(s) URL")
    return FileWitness(Path(spec).expanduser())


def parse_checkpoints(data: bytes, source: str) -> list[Checkpoint]:
    """Checkpoints from JSON lines, a JSON array, one checkpoint object, or a
    certificate (its checkpoint). Raises WitnessError naming the source and line."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return []
    try:
        whole: Any = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        items: list[tuple[int, Any]] = list(enumerate(whole, start=1))
    elif isinstance(whole, dict):
        ledger = whole.get("ledger")
        inner = ledger.get("checkpoint") if isinstance(ledger, dict) else None
        items = [(1, inner if inner is not None else whole)]
    else:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except ValueError:
                raise WitnessError(f"{source}: line {number} is not JSON") from None
    result: list[Checkpoint] = []
    for number, item in items:
        try:
            result.append(Checkpoint.from_dict(item))
        except ValueError as exc:
            raise WitnessError(f"{source}: item {number}: {exc}") from None
    return result
