"""Zisson's rotating refresh token kept in the store (StoreTokenVault), against the
simulator, on SQLite and PostgreSQL: instances that share the store share one token
chain, the binding's file seeds it once, and nothing of it is stored in clear."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connectors.base import AuthError, FatalError
from connectors.zisson import ZissonBinding, ZissonConnector, ZissonSettings
from daemon.domain import Customer
from daemon.store import Store
from daemon.store.schema import connector_secrets
from daemon.token_vault import StoreTokenVault
from sandbox.zisson_sim import ZissonSimulator
from tests.fixtures.store import OpenStore, raw_bytes
from tests.fixtures.zisson import FAST_RETRIES

GUID = "00000000-0000-4000-8000-00000000c0de"
INITIAL = "rt-from-the-file-0"


@dataclass(frozen=True, kw_only=True)
class Account:
    sim: ZissonSimulator
    customer: Customer
    binding: ZissonBinding
    token_file: Path

    def connector(self, store: Store) -> ZissonConnector:
        """A connector as one instance of the daemon has it: its own jwt, lock and client."""
        settings = ZissonSettings(base_url=self.sim.url, timeout_seconds=5)
        return ZissonConnector(settings, retry_policy=FAST_RETRIES, vault=StoreTokenVault(store))

    def stored(self, store: Store) -> tuple[str, int]:
        secret = store.connector_secret("zisson", self.binding.account)
        assert secret is not None
        return secret.value, secret.version


def account_on(sim: ZissonSimulator, tmp_path: Path) -> Account:
    sim.add_account(
        GUID, username="sentralbord", password="pw", user_id="api-1", refresh_token=INITIAL
    )
    for n in range(3):
        sim.put_user(GUID, {"firstName": f"Åse {n}", "lastName": "Ødegård"})
    token_file = tmp_path / "zisson.token"
    token_file.write_text(INITIAL + "\n", encoding="utf-8")
    binding = ZissonBinding(
        api="json", user_id="api-1", customer_guid=GUID, refresh_token_file=token_file
    )
    customer = Customer(id="kunde", name="Kunde AS", bindings={"zisson": binding})
    return Account(sim=sim, customer=customer, binding=binding, token_file=token_file)


@pytest.fixture
def sim() -> Iterator[ZissonSimulator]:
    with ZissonSimulator(seed=0, jwt_ttl_seconds=300) as sim:
        yield sim


async def test_two_instances_share_one_token_chain_through_many_rotations(
    open_store: OpenStore, tmp_path: Path
) -> None:
    # Two instances, each in a thread of its own with its own event loop, Store and
    # connector, like two daemons. They go in rounds: between rounds, every other time,
    # Zisson revokes every jwt, so in the next round both exchange at the same moment (or
    # one after the other, in the rounds where they take turns); short-lived jwts add
    # rotations of their own.
    with ZissonSimulator(seed=0, jwt_ttl_seconds=0.3) as sim:
        account = account_on(sim, tmp_path)
        rounds = 16
        between = threading.Barrier(2)
        reads = [0, 0]

        async def instance(n: int, store: Store) -> None:
            connector = account.connector(store)
            try:
                for round_ in range(rounds):
                    await asyncio.to_thread(between.wait, 10)  # nobody reads now
                    if n == 0 and round_ % 2 == 0:
                        sim.expire_tokens(GUID)
                    await asyncio.to_thread(between.wait, 10)
                    if round_ % 4 == 3 and round_ // 4 % 2 != n:
                        await asyncio.sleep(0.05)  # the other one's turn
                        continue
                    results = await asyncio.gather(
                        *(connector.read(account.customer) for _ in range(3))
                    )
                    assert all(len(r.records) == 3 for r in results)
                    reads[n] += len(results)
                    await asyncio.sleep(0.05)
            finally:
                between.abort()  # a failure here must not leave the other one waiting
                await connector.aclose()

        stores = [open_store(), open_store()]
        await asyncio.gather(
            *(asyncio.to_thread(asyncio.run, instance(n, s)) for n, s in enumerate(stores))
        )

        counters = sim.counters
        spent = sim.spent_refresh_tokens(GUID)
        assert counters["refresh_refused"] == 0
        assert reads == [42, 42]
        assert counters["refreshes"] >= rounds  # both, after each revocation
        assert spent[0] == INITIAL and len(set(spent)) == len(spent) == counters["refreshes"]
        # Every rotated token reached the store; the last one is the one Zisson accepts.
        assert account.stored(stores[0]) == (sim.refresh_token(GUID), counters["refreshes"])


async def test_the_file_seeds_the_store_once_and_is_not_read_again(
    open_store: OpenStore, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    store = open_store()
    first = account.connector(store)
    with capture_logs() as logs:
        await first.read(account.customer)
    await first.aclose()

    assert account.stored(store) == (sim.refresh_token(GUID), 1)
    assert account.token_file.read_text().strip() == INITIAL  # left as given, spent
    [imported] = [line for line in logs if line["event"] == "token_imported_from_file"]
    assert imported["account"] == f"json:{GUID}" and imported["file"] == str(account.token_file)
    assert INITIAL not in str(logs) and sim.refresh_token(GUID) not in str(logs)

    account.token_file.write_text("rt-not-this-one\n")  # what the file says no longer counts
    sim.expire_tokens(GUID)
    second = account.connector(open_store())
    result = await second.read(account.customer)
    account.token_file.unlink()
    sim.expire_tokens(GUID)
    await second.read(account.customer)
    await second.aclose()

    assert len(result.records) == 3
    assert sim.counters["refresh_refused"] == 0 and sim.counters["refreshes"] == 3
    assert account.stored(store) == (sim.refresh_token(GUID), 3)


async def test_no_token_is_stored_in_clear(
    store: Store, store_url: str, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    connector = account.connector(store)
    for _ in range(3):
        await connector.read(account.customer)
        sim.expire_tokens(GUID)
    await connector.aclose()

    held = raw_bytes(store, store_url, connector_secrets, "value")
    tokens = [*sim.spent_refresh_tokens(GUID), sim.refresh_token(GUID)]
    assert len(tokens) == 4 and tokens[0] == INITIAL
    for token in tokens:
        assert token.encode() not in held
        assert token.encode("utf-16-le") not in held


async def test_a_refused_stored_token_saves_nothing_and_names_the_cli(
    store: Store, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    store.set_connector_secret("zisson", account.binding.account, "rt-spent-elsewhere")
    connector = account.connector(store)

    with pytest.raises(AuthError) as caught:
        await connector.read(account.customer)
    await connector.aclose()

    message = str(caught.value)
    assert "pdsync zisson set-token --customer" in message and GUID in message
    assert "rt-spent-elsewhere" not in message and INITIAL not in message
    assert account.stored(store) == ("rt-spent-elsewhere", 1)
    assert sim.refresh_token(GUID) == INITIAL  # the file's token was never tried


async def test_a_refused_file_token_is_not_imported(
    store: Store, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    account.token_file.write_text("rt-typo\n")
    connector = account.connector(store)
    with pytest.raises(AuthError, match="was refused"):
        await connector.read(account.customer)
    assert store.connector_secret("zisson", account.binding.account) is None

    account.token_file.write_text(INITIAL)  # corrected before it was ever imported
    await connector.read(account.customer)
    await connector.aclose()
    assert account.stored(store) == (sim.refresh_token(GUID), 1)


async def test_a_cancelled_read_still_stores_the_rotated_token(
    open_store: OpenStore, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    store = open_store()
    connector = account.connector(store)
    sim.set_faults(latency_ms=300)
    reading = asyncio.create_task(connector.read(account.customer))
    while sim.counters["POST /web-api/v1/authenticate/refresh-token"] == 0:
        await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    sim.set_faults()
    await connector.aclose()

    assert sim.counters["refreshes"] == 1
    assert account.stored(store) == (sim.refresh_token(GUID), 1)
    other = account.connector(open_store())  # another instance carries on with it
    assert len((await other.read(account.customer)).records) == 3
    await other.aclose()
    assert sim.counters["refresh_refused"] == 0


REFUSE_WRITES = {
    # What a full disk or a broken database does to the save: the write fails.
    "sqlite": [
        f"CREATE TRIGGER refuse_{when} BEFORE {when} ON connector_secrets "
        "BEGIN SELECT RAISE(ABORT, 'no space left'); END"
        for when in ("INSERT", "UPDATE")
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'no space left'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON connector_secrets "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}
ALLOW_WRITES = {
    "sqlite": ["DROP TRIGGER refuse_INSERT", "DROP TRIGGER refuse_UPDATE"],
    "postgresql": ["DROP TRIGGER refuse ON connector_secrets", "DROP FUNCTION refuse()"],
}


def run_sql(store: Store, statements: list[str]) -> None:
    with store._engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


async def test_a_rotated_token_the_store_cannot_save_is_kept_for_the_next_exchange(
    store: Store, sim: ZissonSimulator, tmp_path: Path
) -> None:
    account = account_on(sim, tmp_path)
    connector = account.connector(store)
    await connector.read(account.customer)
    run_sql(store, REFUSE_WRITES[store.dialect])
    sim.expire_tokens(GUID)

    with pytest.raises(FatalError, match="cannot save the rotated refresh token") as caught:
        await connector.read(account.customer)
    assert sim.refresh_token(GUID) not in str(caught.value)
    assert "no space left" not in str(caught.value)  # the database's text is not passed on
    run_sql(store, ALLOW_WRITES[store.dialect])
    result = await connector.read(account.customer)
    await connector.aclose()

    assert len(result.records) == 3
    assert sim.counters["refresh_refused"] == 0 and sim.counters["refreshes"] == 3
    assert account.stored(store) == (sim.refresh_token(GUID), 2)
