"""Shared test set-up. Fixtures live in tests/fixtures/, one module per outside system."""

pytest_plugins = [
    "tests.fixtures.firestore",
    "tests.fixtures.zisson",
    "tests.fixtures.store",
    "tests.fixtures.graph",
]
