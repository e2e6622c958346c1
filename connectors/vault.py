"""Where a connector keeps a rotating, single-use token between uses: the `TokenVault`.

Some systems authenticate with a refresh token that is spent by the exchange that uses
it and answered with the next one (Zisson's JSON API). Whoever spends it must save the
next one, and no one else may spend it meanwhile, or the account is lost until a person
provisions a new token. A vault gives that:

    async with vault.exchange(account) as slot:
        answer = await post(slot.token)       # the one HTTP call that spends it
        slot.save(answer.refresh_token)       # durable when the block ends

Backends: `FileTokenVault` (connectors/file_vault.py: the token in a file, one process;
what a connector uses on its own) and the daemon's `StoreTokenVault` (daemon/token_vault.py:
encrypted in pdsync's store, shared by every instance on it).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenAccount:
    """One account's token: whose it is, and the file it is (or was first) given in.

    `key` names the account within `system` (Zisson: "json:<customer guid>"); it goes
    into logs and error messages, so it holds no secret and no personal data.
    """

    system: str
    key: str
    file: Path | None = None


class TokenSlot(Protocol):
    """The account's token, held exclusively until the `exchange` block ends."""

    @property
    def token(self) -> str:
        """The token to spend now."""
        ...

    def save(self, token: str) -> None:
        """Keep `token` from now on (the rotated one). It is durable once the block ends
        without an error; an error out of the block leaves the previous token in place."""
        ...


class TokenVault(Protocol):
    """Keeps rotating tokens, and lets one exchange per account run at a time.

    The exclusion is the backend's: within one process for files, across every instance
    on the store for the store. Within a process, callers still serialise their own
    exchanges (one asyncio.Lock per account), so a vault is never asked twice at once
    for the same account by one connector.
    """

    def exchange(self, account: TokenAccount) -> AbstractAsyncContextManager[TokenSlot]:
        """Exclusive use of the account's token for one exchange (one HTTP call).

        Entering raises AuthError when there is no token to spend (none provisioned, or
        its file cannot be read), RetriableError when the vault cannot be reached now or
        another exchange of the account held it too long. Leaving the block normally
        makes what was saved durable and may raise the same errors; the caller then
        holds the only copy of the rotated token and must keep it for its next exchange.
        The block must be allowed to finish (shield it from cancellation): a token the
        server has rotated must reach the vault.
        """
        ...

    def remedy(self, account: TokenAccount) -> str:
        """What a person does when the server refuses the account's token (a sentence)."""
        ...
