"""Writes a daemon config file (TOML) for systems running on loopback.

Used by `sandbox up` and by tests that start the daemon as a separate process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connectors.zisson.settings import ZissonBinding


@dataclass(frozen=True, kw_only=True)
class CustomerEntry:
    id: str
    name: str
    firestore_id: str
    zisson: ZissonBinding | None


def _value(value: object) -> str:
    if isinstance(value, Path):
        value = str(value)
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
    if zisson_url is not None:
        lines += [
            "[systems.zisson]",
            f"base_url = {_value(zisson_url)}",
            f"write_mode = {_value(write_mode)}",
            "",
        ]
    for customer in customers:
        lines += [
            "[[customers]]",
            f"id = {_value(customer.id)}",
            f"name = {_value(customer.name)}",
            "[customers.firestore]",
            f"customer_id = {_value(customer.firestore_id)}",
        ]
        if customer.zisson is not None:
            lines.append("[customers.zisson]")
            for key, value in customer.zisson.model_dump(exclude_none=True).items():
                if isinstance(value, dict):  # a secret reference
                    inner = ", ".join(f"{k} = {_value(v)}" for k, v in value.items() if v)
                    lines.append(f"{key} = {{ {inner} }}")
                else:
                    lines.append(f"{key} = {_value(value)}")
        lines.append("")
    return "\n".join(lines)
