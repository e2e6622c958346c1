"""`StoreTokenVault`: connectors' rotating tokens in pdsync's store, shared by every instance.

The contract is connectors/vault.py. An exchange holds the account's secret through
`Store.secret_exchange` (an advisory lock on PostgreSQL, a file lock on SQLite) from
reading the token until the rotated one is stored, so no other instance or process
spends it meanwhile. An account the store has no token for yet is seeded from its
file (the binding's `refresh_token_file`), once: the import is stored with the
exchange's outcome, so a token the server refuses is not imported. From then on the
store is the truth; the file is not read again, and a person provisions a new token
with `pdsync <system> set-token`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from types import TracebackType

import structlog

from connectors.base import AuthError, ConnectorError, FatalError, RetriableError
from connectors.vault import TokenAccount
from connectors.zisson.auth import token_account
from daemon.config import CustomerConfig, Settings
from daemon.store import Store, StoreError, StoreUnavailable
from daemon.store.secrets import LOCK_WAIT, SecretSlot

log = structlog.get_logger("pdsync.vault")


class _StoreSlot:
    def __init__(self, secret: SecretSlot, token: str) -> None:
        self._secret = secret
        self._token = token

    @property
    def token(self) -> str:
        return self._token

    def save(self, token: str) -> None:
        self._secret.stage(token)


class StoreTokenVault:
    """Tokens encrypted in `store`; one exchange per account at a time across instances."""

    def __init__(self, store: Store, *, wait: timedelta = LOCK_WAIT) -> None:
        self.store = store
        self.wait = wait

    @contextlib.asynccontextmanager
    async def exchange(self, account: TokenAccount) -> AsyncIterator[_StoreSlot]:
        held = contextlib.ExitStack()
        secret = await self._hold(held, account)
        imported = secret.value is None
        try:
            if secret.value is None:
                token = await asyncio.to_thread(self._import, account)
                secret.stage(token)  # stored with the exchange's outcome, or not at all
            else:
                token = secret.value
            yield _StoreSlot(secret, token)
        except BaseException as exc:
            await self._release(held, account, exc)
            raise
        await self._release(held, account, None)
        if imported:
            log.info(
                "token_imported_from_file",
                system=account.system,
                account=account.key,
                file=str(account.file),
                note="the store holds the token from now on; the file is not read again",
            )
        elif secret.staged is not None:
            log.debug("token_rotated", system=account.system, account=account.key)

    def remedy(self, account: TokenAccount) -> str:
        return (
            f"Provision a new one with `pdsync {account.system} set-token --customer ID` "
            "(any customer on this account)."
        )

    async def _hold(self, held: contextlib.ExitStack, account: TokenAccount) -> SecretSlot:
        exchange = self.store.secret_exchange(account.system, account.key, wait=self.wait)
        entering = asyncio.ensure_future(asyncio.to_thread(held.enter_context, exchange))
        try:
            return await asyncio.shield(entering)
        except asyncio.CancelledError:
            # The thread goes on waiting for the lock: let go of it once it has it.
            await asyncio.wait([entering])
            if not entering.cancelled() and entering.exception() is None:
                await asyncio.to_thread(held.close)
            raise
        except Exception as exc:
            raise _translated(account, exc) from None

    async def _release(
        self, held: contextlib.ExitStack, account: TokenAccount, error: BaseException | None
    ) -> None:
        """End the exchange: store what was staged, or (after `error`) roll it back."""
        details: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
        details = (None, None, None) if error is None else (type(error), error, error.__traceback__)
        # Shielded: even a cancelled caller must not leave the lock and connection held.
        ending = asyncio.ensure_future(asyncio.to_thread(held.__exit__, *details))
        try:
            await asyncio.shield(ending)
        except Exception as exc:
            if exc is error:
                return  # handed back unchanged: nothing was stored
            if error is None:
                raise _translated(account, exc) from None
            # The exchange failed already and nothing was stored; say that, not this.
            log.warning(
                "token_release_failed",
                system=account.system,
                account=account.key,
                error=type(exc).__name__,
            )
        except BaseException as exc:
            if exc is not error:
                raise

    def _import(self, account: TokenAccount) -> str:
        if account.file is None:
            raise AuthError(
                f"{account.system}: the store has no token for {account.key} and there is no "
                f"file to import one from. {self.remedy(account)}",
                system=account.system,
            )
        try:
            token = account.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(
                f"{account.system}: the store has no token for {account.key} yet, and the "
                f"token file {account.file} cannot be read ({exc.strerror})",
                system=account.system,
            ) from None
        if not token:
            raise AuthError(
                f"{account.system}: the store has no token for {account.key} yet, and the "
                f"token file {account.file} is empty",
                system=account.system,
            )
        return token


def _translated(account: TokenAccount, exc: Exception) -> ConnectorError:
    """The store's error as the connector contract has it (nothing else may escape)."""
    if isinstance(exc, ConnectorError):
        return exc
    # Not a StoreError: a database error the store did not expect. Its text may hold a
    # statement and its parameters, so only its type is named.
    reason = str(exc) if isinstance(exc, StoreError) else type(exc).__name__
    message = f"{account.system}: the store cannot keep the token of {account.key} ({reason})"
    if isinstance(exc, StoreUnavailable):
        return RetriableError(message, system=account.system)
    return FatalError(message, system=account.system)


def own_token_accounts(settings: Settings, customer_id: str) -> list[tuple[str, str]]:
    """(system, account) of the stored tokens only this customer's bindings use: what a
    whole-customer erasure forgets (an account another configured customer shares stays)."""

    def accounts(customer: CustomerConfig) -> set[tuple[str, str]]:
        binding = customer.zisson
        if binding is None or binding.api != "json":
            return set()
        account = token_account(binding)
        return {(account.system, account.key)}

    others: set[tuple[str, str]] = set()
    for customer in settings.customers:
        if customer.id != customer_id:
            others |= accounts(customer)
    return sorted(accounts(settings.customer(customer_id)) - others)
