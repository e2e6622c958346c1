"""Shared test set-up. Fixtures live in tests/fixtures/, one module per outside system
(and one for the CLI)."""

pytest_plugins = [
    "tests.fixtures.firestore",
    "tests.fixtures.zisson",
    "tests.fixtures.store",
    "tests.fixtures.graph",
    "tests.fixtures.cli",
    "tests.integration.sync_world",
]
