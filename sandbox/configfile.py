"""Writes a daemon config file (TOML) for systems running on loopback.

Used by `sandbox up` and by tests that start the daemon as a separate process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from connectors.outlook.settings import OutlookBinding, OutlookSettings
from connectors.zisson.settings import ZissonBinding


@dataclass(frozen=True, kw_only=True)
class CustomerEntry:
    id: str
    name: str
    firestore_id: str
    zisson: ZissonBinding | None
    outlook: OutlookBinding | None = None


def _model_lines(section: str, model: BaseModel) -> list[str]:
    lines = [f"[{section}]"]
    for key, value in model.model_dump(exclude_none=True).items():
        if isinstance(value, dict):  # a secret reference, or a table such as retention_days
            inner = ", ".join(f"{k} = {_value(v)}" for k, v in value.items() if v is not None)
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {_value(value)}")
    return lines


def _value(value: object) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = [str(v) if isinstance(v, Path) else v for v in value]
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def render(
    *,
    store_url: str,
    master_key_file: Path,
    firestore_project: str,
    firestore_host: str,
    zisson_url: str | None,
    customers: Sequence[CustomerEntry],
    write_mode: str = "api",
    interval_seconds: int = 30,
    max_deletions: int = 25,
    max_share: float = 0.5,
    log_format: str = "auto",
    signing_key_file: Path | None = None,
    require_second_admin: bool = True,
    outlook: OutlookSettings | None = None,
    api_listen: str | None = None,
) -> str:
    lines = [
        "[store]",
        f"url = {_value(store_url)}",
        f"master_key = {{ file = {_value(master_key_file)} }}",
        "",
        "[log]",
        f"format = {_value(log_format)}",
        "",
        "[sync]",
        f"interval_seconds = {interval_seconds}",
        'authority = "firestore"',
        "",
        "[erasure]",
        f"require_second_admin = {'true' if require_second_admin else 'false'}",
        "",
        "[sync.deletion_threshold]",
        f"max_count = {max_deletions}",
        f"max_share = {max_share}",
        "",
        "[systems.firestore]",
        f"project = {_value(firestore_project)}",
        f"emulator_host = {_value(firestore_host)}",
        "",
    ]
    if signing_key_file is not None:
        lines += ["[ledger]", f"signing_key = {{ file = {_value(signing_key_file)} }}", ""]
    if api_listen is not None:
        lines += ["[api]", f"listen = {_value(api_listen)}", ""]
    if zisson_url is not None:
        lines += [
            "[systems.zisson]",
            f"base_url = {_value(zisson_url)}",
            f"write_mode = {_value(write_mode)}",
            "",
        ]
    if outlook is not None:
        lines += [*_model_lines("systems.outlook", outlook), ""]
    for customer in customers:
        lines += [
            "[[customers]]",
            f"id = {_value(customer.id)}",
            f"name = {_value(customer.name)}",
            "[customers.firestore]",
            f"customer_id = {_value(customer.firestore_id)}",
        ]
        if customer.zisson is not None:
            lines += _model_lines("customers.zisson", customer.zisson)
        if customer.outlook is not None:
            lines += _model_lines("customers.outlook", customer.outlook)
        lines.append("")
    return "\n".join(lines)
