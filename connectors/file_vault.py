"""`FileTokenVault`: a rotating token in a file of its own, for one process.

The file is read at every exchange and replaced atomically (mode 0600) when the block
that saved a new token ends. Nothing excludes another process: two processes with the
same file would spend each other's tokens. The daemon therefore keeps tokens in its
store (daemon/token_vault.py); this backend is for a connector used on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from connectors.base import AuthError, FatalError
from connectors.vault import TokenAccount


class _FileSlot:
    def __init__(self, token: str) -> None:
        self.token = token
        self.saved: str | None = None

    def save(self, token: str) -> None:
        self.saved = token


class FileTokenVault:
    """Each account's token in its `TokenAccount.file`, rewritten on every rotation."""

    @contextlib.asynccontextmanager
    async def exchange(self, account: TokenAccount) -> AsyncIterator[_FileSlot]:
        path = _file_of(account)
        slot = _FileSlot(await asyncio.to_thread(_read_token, account, path))
        yield slot
        if slot.saved is not None and slot.saved != slot.token:
            try:
                await asyncio.to_thread(write_secret_file, path, slot.saved)
            except OSError as exc:
                raise FatalError(
                    f"{account.system}: the token file {path} of {account.key} cannot be "
                    f"written ({exc.strerror})",
                    system=account.system,
                ) from None

    def remedy(self, account: TokenAccount) -> str:
        return f"Put a new one in {account.file}."


def _file_of(account: TokenAccount) -> Path:
    if account.file is None:
        raise AuthError(f"{account.system}: {account.key} has no token file", system=account.system)
    return account.file


def _read_token(account: TokenAccount, path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthError(
            f"{account.system}: the token file {path} of {account.key} cannot be read "
            f"({exc.strerror})",
            system=account.system,
        ) from None
    if not token:
        raise AuthError(
            f"{account.system}: the token file {path} of {account.key} is empty",
            system=account.system,
        )
    return token


def write_secret_file(path: Path, value: str) -> None:
    """Replace `path` with `value` atomically and durably, readable by the owner only.

    A temporary file in the same directory is written and fsynced, renamed over `path`
    and the directory fsynced, so a crash leaves either the old or the new token.
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
