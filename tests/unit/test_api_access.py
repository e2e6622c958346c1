"""The access table, the filters, the config and the small parts of the API (no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from daemon.api import access, api_config
from daemon.api.app import ROUTERS
from daemon.api.errors import _validation_detail
from daemon.api.eventlog import LogLine
from daemon.api.filters import parse_level, parse_since
from daemon.api.settings import ApiConfig
from daemon.store import EventLevel, Role, RunRow, RunStatus

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_table_lists_exactly_the_routes() -> None:
    served = {("GET", "/openapi.json")}
    for router in ROUTERS:
        for route in router.routes:
            served |= {(m, route.path) for m in route.methods if m != "HEAD"}  # type: ignore[attr-defined]
    assert served == set(access.ACCESS)


def test_roles_nest_and_only_admins_erase() -> None:
    for (method, path), allowed in access.ACCESS.items():
        if allowed is None:
            continue
        if Role.AUDITOR in allowed:
            assert Role.OPERATOR in allowed, path
        if Role.OPERATOR in allowed:
            assert Role.ADMIN in allowed, path
        if method == "POST" and path.startswith("/api/v1/erasures"):
            assert allowed == {Role.ADMIN}, path
        if method == "POST" and path.startswith("/api/v1/") and path != "/api/v1/ledger/verify":
            assert Role.AUDITOR not in allowed, path  # auditors change nothing


def test_only_probes_docs_and_the_login_are_public() -> None:
    public = {e for e, allowed in access.ACCESS.items() if allowed is None}
    assert public == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/dashboard/login"),
        ("POST", "/dashboard/login"),
        ("POST", "/dashboard/logout"),
        ("GET", "/dashboard/style.css"),
    }
    assert access.allowed_roles(access.METRICS, metrics_public=True) is None
    assert access.allowed_roles(access.METRICS, metrics_public=False) == access.READERS
    assert access.describe(access.OPERATORS) == "admin, operator"
    assert access.describe(None) == "public"


def test_a_task_instruction_is_for_operators() -> None:
    assert access.ACCESS[("GET", "/api/v1/tasks/{task_id}")] == access.OPERATORS
    assert access.ACCESS[("GET", "/api/v1/tasks")] == access.READERS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("15m", NOW - timedelta(minutes=15)),
        ("24h", NOW - timedelta(hours=24)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-02-28T10:00:00Z", datetime(2026, 2, 28, 10, tzinfo=UTC)),
        ("2026-02-28T10:00:00+01:00", datetime(2026, 2, 28, 9, tzinfo=UTC)),
        ("2026-02-28 10:00", datetime(2026, 2, 28, 10, tzinfo=UTC)),
    ],
)
def test_since_takes_durations_and_times(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "24", "h", "-3h", "kari@x.no", "9999-12-31T23:59:59-23:00"]
)
def test_a_bad_since_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_since(text, now=NOW)
    # One message for every bad input: it never repeats what was given.
    assert str(raised.value) == (
        "since: give a number with s, m, h or d (e.g. 24h), or an ISO 8601 time"
    )


def test_a_huge_duration_is_capped() -> None:
    assert parse_since("999999d", now=NOW) >= NOW - timedelta(days=3700)


def test_levels() -> None:
    assert parse_level("WARNING") is EventLevel.WARNING
    with pytest.raises(ValueError):
        parse_level("fatal")


def test_api_config() -> None:
    config = ApiConfig(listen="127.0.0.1:8787")
    assert (config.host, config.port) == ("127.0.0.1", 8787)
    assert ApiConfig(listen="[::1]:9000").host == "::1"
    assert ApiConfig().listen is None and ApiConfig().metrics_public
    for bad in ("8787", "localhost", "127.0.0.1:0", "127.0.0.1:99999", "host:port"):
        with pytest.raises(ValidationError):
            ApiConfig(listen=bad)
    with pytest.raises(ValidationError):
        ApiConfig(listen="127.0.0.1:1", token="x")  # type: ignore[call-arg]
    assert api_config(SimpleNamespace()) == ApiConfig()  # Settings without [api] yet
    assert api_config(SimpleNamespace(api=config)) is config


def test_validation_errors_drop_the_input() -> None:
    error = RequestValidationError(
        [
            {
                "loc": ("body", "emails", 0),
                "msg": "String should have at most 320 characters",
                "type": "string_too_long",
                "input": "kari.nordmann@fjordkraft.no",
                "ctx": {"max_length": 320, "value": "kari.nordmann@fjordkraft.no"},
            }
        ]
    )
    detail = _validation_detail(error)
    assert detail == [
        {
            "loc": ["body", "emails", 0],
            "type": "string_too_long",
            "msg": "String should have at most 320 characters",
        }
    ]


def run_row(status: RunStatus, **summary: object) -> RunRow:
    return RunRow(
        id="0123456789abcdef",
        kind="sync",
        customer_id="acme",
        trigger="schedule",
        status=status,
        instance_id="i",
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=2.25),
        summary=summary,
    )


def test_log_lines_for_runs() -> None:
    failed = LogLine.run_finished(run_row(RunStatus.FAILED, error="zisson: 401 for kari@x.no"))
    assert failed.level is EventLevel.ERROR and failed.event == "run.failed sync"
    assert failed.detail == {"seconds": 2.2, "error": "zisson: 401 for [email]"}
    done = LogLine.run_finished(
        run_row(
            RunStatus.COMPLETED, applied={"zisson.update.applied": 2, "zisson.update.manual": 1}
        )
    )
    assert done.level is EventLevel.INFO and done.detail == {"seconds": 2.2, "changes": 2}
    assert done.text().startswith("2026-03-01 12:00:02  INFO     acme          01234567  -")
    assert '"run_id": "0123456789abcdef"' in done.json()
    waiting = LogLine.run_finished(run_row(RunStatus.AWAITING_APPROVAL))
    assert waiting.level is EventLevel.WARNING
