"""Schemathesis against the OpenAPI document: whatever the schema allows, and what it does
not, the API never answers 5xx. SQLite only, a bounded number of examples per operation.

One test per operation and mode (valid input, invalid input). Calls carry an admin token
(admins may call everything), so the handlers get the generated input, not only the
access control. (schemathesis's pytest loader, `from_fixture`, does not work with
pytest 9 yet, so the strategies are driven with Hypothesis's `@given` directly.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from daemon.api import access
from daemon.api.testing import ApiWorld, api_world
from daemon.store import Store

EXAMPLES = int(os.environ.get("PDSYNC_SCHEMATHESIS_EXAMPLES", "10"))
# The operations in the OpenAPI document: everything but the dashboard's HTML pages.
OPERATIONS = sorted(
    (method, path)
    for method, path in access.ACCESS
    if not path.startswith("/dashboard") and path not in ("/docs", "/openapi.json")
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    """One world for the module: what the calls change (new erasures, closed tasks)
    only gives later operations more to chew on."""
    directory = tmp_path_factory.mktemp("schemathesis")
    key = os.urandom(32)
    store = Store.open(f"sqlite:///{directory / 'store.db'}", master_key=key)
    try:
        yield api_world(store, key, directory)
    finally:
        store.close()


@pytest.fixture(scope="module")
def schema(world: ApiWorld) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", world.app)


def test_every_operation_is_in_the_schema(schema: schemathesis.BaseSchema) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations())
    assert found == OPERATIONS


def _takes_input(definition: dict[str, Any]) -> bool:
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_makes_a_5xx(
    world: ApiWorld, schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]
    if mode is GenerationMode.NEGATIVE and not _takes_input(operation.definition.raw):
        return  # nothing to get wrong: the positive run covers it
    headers = world.auth("bob")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    check()
