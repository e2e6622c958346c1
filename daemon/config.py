"""Configuration: one TOML file, validated at start, with PDSYNC_* environment overrides.

Secrets are never in the file: every secret is a reference (`{ env = "NAME" }` or
`{ file = "/path" }`). A bad file stops the daemon at start with the key and the reason.
Environment overrides use `PDSYNC_` and `__` between levels, e.g.
`PDSYNC_STORE__URL=postgresql+psycopg://…` or `PDSYNC_SYNC__INTERVAL_SECONDS=60`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from connectors.firestore.settings import FirestoreBinding, FirestoreSettings
from connectors.outlook.settings import OutlookBinding, OutlookSettings
from connectors.secrets import SecretRef
from connectors.zisson.settings import ZissonBinding, ZissonSettings
from daemon import normalize
from daemon.api.settings import ApiConfig
from daemon.domain import SYNC_FIELDS, Customer
from daemon.identity import DEFAULT_ROLE_ADDRESSES, IdentityRules
from daemon.policy import DeletionThreshold, FieldPolicy, ForeignChange, ShrinkGuard, SyncPolicy

CONFIG_ENV = "PDSYNC_CONFIG"
ENV_PREFIX = "PDSYNC_"  # of every override from the environment
SYSTEMS = ("firestore", "zisson", "outlook")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Model):
    url: str = "sqlite:///pdsync.db"
    # 32 random bytes, base64 or hex, that wrap the per-customer keys.
    master_key: SecretRef
    # How long backups of this store are kept, as your backup policy says: a backup from
    # before an erasure keeps what it removed (encrypted) until then, so certificates
    # list it with the other residual windows.
    backup_retention: str = "as long as the operator's backup policy keeps them"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql+psycopg://", "postgresql://")):
            raise ValueError("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    def master_key_bytes(self) -> bytes:
        try:
            text = self.master_key.reveal()
        except LookupError as exc:  # names the variable or file, never a value
            raise ConfigError(f"store.master_key: {exc}") from None
        for decode in (bytes.fromhex, base64.b64decode):
            try:
                key = decode(text)
            except (ValueError, binascii.Error):
                continue
            if len(key) == 32:
                return key
        raise ConfigError(
            f"store.master_key ({self.master_key.describe()}): not 32 bytes in hex or base64"
        )


class DaemonConfig(_Model):
    # A work item's lease: a dead instance's work is taken over this long after it died.
    lease_seconds: float = Field(default=60, ge=3)
    workers: int = Field(default=2, ge=1, le=16)  # work items carried out at once
    # How often an instance that does not lead tries to take over.
    leader_poll_seconds: float = Field(default=3, gt=0, le=60)
    # `pdsync run` carries out syncs, retention runs and erasures in a worker process of
    # its own (daemon/worker.py), started when such work is queued and ended once none
    # came for `worker_idle_seconds`: the connectors' libraries (google-cloud-firestore
    # with grpc, msal) and what a large sync leaves on the heap are given back while the
    # daemon idles. False: all in the daemon's process.
    worker_process: bool = True
    worker_idle_seconds: float = Field(default=120, ge=1)


class LogConfig(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class FieldPolicyConfig(_Model):
    authority: str | None = None
    on_foreign_change: ForeignChange | None = None


class DeletionThresholdConfig(_Model):
    max_count: int = Field(default=25, ge=0)
    max_share: float = Field(default=0.5, ge=0.0, le=1.0)


class ShrinkGuardConfig(_Model):
    max_share: float = Field(default=0.5, gt=0.0, le=1.0)


class SyncConfig(_Model):
    interval_seconds: int = Field(default=300, ge=5)
    authority: Literal["firestore", "zisson", "outlook"] = "firestore"
    on_foreign_change: ForeignChange = ForeignChange.REVERT
    on_foreign_record: ForeignChange = ForeignChange.DISPUTE
    fields: dict[str, FieldPolicyConfig] = Field(default_factory=dict)
    deletion_threshold: DeletionThresholdConfig = DeletionThresholdConfig()
    creation_threshold: DeletionThresholdConfig = DeletionThresholdConfig()
    shrink_guard: ShrinkGuardConfig = ShrinkGuardConfig()
    # Local parts of e-mail addresses that name a role, not a person (`post@`,
    # `faktura@`): shared by whoever holds them, never evidence of who someone is.
    role_addresses: list[str] = Field(default_factory=lambda: sorted(DEFAULT_ROLE_ADDRESSES))

    @field_validator("role_addresses")
    @classmethod
    def _local_parts(cls, parts: list[str]) -> list[str]:
        for i, part in enumerate(parts):
            if not part.strip() or "@" in part or any(ch.isspace() for ch in part.strip()):
                raise ValueError(f"entry {i + 1} is not the local part of an address (no @)")
        return [normalize.email(p) for p in parts]

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, FieldPolicyConfig]) -> dict[str, FieldPolicyConfig]:
        for name, policy in fields.items():
            if name not in SYNC_FIELDS:
                raise ValueError(f"unknown field {name!r}; fields are {', '.join(SYNC_FIELDS)}")
            if policy.authority is not None and policy.authority not in SYSTEMS:
                raise ValueError(f"{name}.authority must be one of {', '.join(SYSTEMS)}")
        return fields

    def policy(self) -> SyncPolicy:
        return SyncPolicy(
            authority=self.authority,
            on_foreign_change=self.on_foreign_change,
            on_foreign_record=self.on_foreign_record,
            fields={
                name: FieldPolicy(
                    authority=p.authority or self.authority,
                    on_foreign_change=p.on_foreign_change or self.on_foreign_change,
                )
                for name, p in self.fields.items()
            },
            deletion_threshold=DeletionThreshold(
                max_count=self.deletion_threshold.max_count,
                max_share=self.deletion_threshold.max_share,
            ),
            creation_threshold=DeletionThreshold(
                max_count=self.creation_threshold.max_count,
                max_share=self.creation_threshold.max_share,
            ),
            shrink_guard=ShrinkGuard(max_share=self.shrink_guard.max_share),
            identity=IdentityRules(role_addresses=frozenset(self.role_addresses)),
        )


class ErasureConfig(_Model):
    # The statement promises erasure "at once"; the law allows a month. Alerts fire
    # when a request nears or passes its deadline.
    deadline_hours: int = Field(default=24 * 30, ge=1)
    # A whole-customer erasure waits for a second admin (not the requester) to approve.
    require_second_admin: bool = True
    # How often the daemon's worker moves open requests on (and re-checks manual ones).
    worker_interval_seconds: int = Field(default=60, ge=5)


class RetentionConfig(_Model):
    # How often mail past each customer's retention rule (customers[].outlook.retention_days)
    # is looked for and deleted.
    interval_seconds: int = Field(default=6 * 3600, ge=10)


class HistoryConfig(_Model):
    """How long pdsync keeps the records of its own work (issue 15; O3 applies to them
    too: they are processing next to personal data). The daemon prunes them once a day,
    in chunks, and records the counts in the ledger (`history.pruned`); the ledger
    itself is never pruned: it keeps the proof after the history behind it is gone.
    """

    # Runs and their events (`pdsync log`, the dashboard, the processing report): half a
    # year covers a customer's complaint window and two quarterly reviews.
    runs_days: int = Field(default=180, ge=1)
    # Quiet runs: syncs that completed with nothing to plan, apply, review or warn
    # about. At a sync a minute they are nearly every run (300 customers: ~430,000 a
    # day, tens of gigabytes in half a year) and say only that all was well, so they
    # are kept two days (`pdsync log` shows the last ones), then counted per customer
    # and day (the processing report reads the counts) until `runs_days`. At most
    # `runs_days`.
    quiet_runs_days: int = Field(default=2, ge=1)
    # Finished (done or failed) op-journal entries: they only stop a change from being
    # applied twice after a crash, which the vendors' idempotency windows (hours) bound;
    # a month leaves time to investigate an incident. Pending entries are never pruned.
    journal_days: int = Field(default=30, ge=1)
    # Finished work items: queue bookkeeping, a week for "what ran where".
    work_days: int = Field(default=7, ge=1)
    # Quarantined records (encrypted copies of what could not be read) released this
    # long ago, or not seen again in a sync for this long (gone or fixed at the source).
    quarantine_days: int = Field(default=30, ge=1)
    # Instances (daemon processes) not seen for this long.
    instances_days: int = Field(default=7, ge=1)
    # Rows deleted per transaction, so pruning never holds the store's write lock long.
    chunk_rows: int = Field(default=500, ge=10, le=50_000)


# The data processor, as the data processing statement names it.
DEFAULT_PROCESSOR_NAME = "We4you AS"


class ProcessorConfig(_Model):
    """The data processor running pdsync: named on deletion certificates."""

    name: str = Field(default=DEFAULT_PROCESSOR_NAME, min_length=1)


class SubprocessorConfig(_Model):
    """A subprocessor as the register (and every processing report) names it."""

    name: str = Field(min_length=1)
    service: str = Field(min_length=1)  # what it is used for
    categories: list[str] = Field(min_length=1)  # the personal data it holds
    location: str = ""  # where the data is processed, as the contract says


# The register as the data processing statement has it today (O8); `[subprocessors.X]`
# replaces a system's entry.
DEFAULT_SUBPROCESSORS: dict[str, SubprocessorConfig] = {
    "zisson": SubprocessorConfig(
        name="Zisson AS",
        service="Telephony system: the switchboard's directory",
        categories=["names of the customer's departments and employees", "phone numbers"],
    ),
    "firestore": SubprocessorConfig(
        name="Google Cloud (Firestore)",
        service="The customer card",
        categories=[
            "the customer's instructions",
            "names",
            "job titles",
            "phone numbers",
            "e-mail addresses",
        ],
    ),
    "outlook": SubprocessorConfig(
        name="Microsoft (Outlook, Exchange Online)",
        service="Sending and receiving e-mail",
        categories=[
            "messages and information from the customer",
            "messages sent to the customer on behalf of callers",
            "contacts (names, job titles, phone numbers, e-mail addresses)",
        ],
    ),
}


class RetiredKeyConfig(_Model):
    # A signing key no longer in use: trusted for what it signed before `valid_until`.
    public_key: str  # Ed25519 public key: 64 hex digits, base64, PEM, or a file holding one
    valid_from: datetime | None = None
    valid_until: datetime  # when it was retired

    @field_validator("public_key")
    @classmethod
    def _a_public_key(cls, value: str) -> str:
        from daemon.ledger.keys import parse_public_key

        parse_public_key(value)  # ValueError says which forms are accepted
        return value

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give the time with its zone, e.g. 2026-12-01T00:00:00Z")
        return value


class LedgerConfig(_Model):
    # Ed25519 private key (PEM) that signs ledger checkpoints and deletion certificates.
    signing_key: SecretRef | None = None
    # Since when the signing key signs (published with the key set); optional.
    signing_key_since: datetime | None = None
    # Earlier signing keys, kept trusted for what they signed (rotation).
    retired_keys: list[RetiredKeyConfig] = Field(default_factory=list)
    # A checkpoint once this many entries follow the last one, and on this interval.
    checkpoint_every: int = Field(default=100, ge=1)
    checkpoint_interval_seconds: int = Field(default=300, ge=10)
    # Where each checkpoint is also written, outside the store: a file or directory on
    # other storage, or an http(s) URL that takes a POST (see daemon/ledger/witness.py).
    witness: str | None = None

    @field_validator("witness")
    @classmethod
    def _a_witness(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith(("http://", "https://")):
            raise ValueError("give a file or directory path, or an http(s) URL")
        return value


class SystemsConfig(_Model):
    firestore: FirestoreSettings | None = None
    zisson: ZissonSettings | None = None
    outlook: OutlookSettings | None = None


class CustomerConfig(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str
    firestore: FirestoreBinding | None = None
    zisson: ZissonBinding | None = None
    outlook: OutlookBinding | None = None

    def bindings(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in SYSTEMS if getattr(self, s) is not None}

    def to_customer(self) -> Customer:
        return Customer(id=self.id, name=self.name, bindings=self.bindings())

    def retention_rules(self) -> dict[str, dict[str, int]]:
        """Per system with rules, the customer's retention rules (where -> days)."""
        rules = {}
        for system, binding in self.bindings().items():
            days = getattr(binding, "retention_days", None)
            if days:
                rules[system] = dict(days)
        return rules


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PDSYNC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    store: StoreConfig
    log: LogConfig = LogConfig()
    api: ApiConfig = ApiConfig()
    daemon: DaemonConfig = DaemonConfig()
    sync: SyncConfig = SyncConfig()
    erasure: ErasureConfig = ErasureConfig()
    retention: RetentionConfig = RetentionConfig()
    history: HistoryConfig = HistoryConfig()
    ledger: LedgerConfig = LedgerConfig()
    processor: ProcessorConfig = ProcessorConfig()
    systems: SystemsConfig = SystemsConfig()
    customers: list[CustomerConfig] = Field(default_factory=list)
    # The register of subprocessors, per system; DEFAULT_SUBPROCESSORS where not given.
    subprocessors: dict[str, SubprocessorConfig] = Field(default_factory=dict)

    def subprocessor(self, system: str) -> SubprocessorConfig:
        return self.subprocessors.get(system) or DEFAULT_SUBPROCESSORS[system]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        configured = {s for s in SYSTEMS if getattr(self.systems, s) is not None}
        for system in self.subprocessors:
            if system not in SYSTEMS:
                raise ValueError(
                    f"subprocessors.{system}: not a system pdsync knows"
                    f" ({', '.join(sorted(SYSTEMS))})"
                )
        if self.sync.authority not in configured:
            raise ValueError(
                f"sync.authority is {self.sync.authority!r} but [systems.{self.sync.authority}]"
                " is not configured"
            )
        seen: set[str] = set()
        for i, customer in enumerate(self.customers):
            if customer.id in seen:
                raise ValueError(f"customers[{i}].id: {customer.id!r} appears twice")
            seen.add(customer.id)
            for system in customer.bindings():
                if system not in configured:
                    raise ValueError(
                        f"customers[{i}].{system}: binds to {system} but [systems.{system}]"
                        " is not configured"
                    )
            if self.sync.authority not in customer.bindings():
                raise ValueError(
                    f"customers[{i}]: has no [{self.sync.authority}] binding, the authority"
                )
        return self

    def customer(self, customer_id: str) -> CustomerConfig:
        for customer in self.customers:
            if customer.id == customer_id:
                return customer
        known = ", ".join(c.id for c in self.customers) or "none"
        raise ConfigError(f"unknown customer {customer_id!r} (configured: {known})")


# Files the config names that must be there to start (refresh_token_file is only the
# first token, imported once into the store: not needed afterwards).
_REQUIRED_FILES = frozenset({"credentials_file", "certificate_file", "ca_bundle"})


def _places(
    settings: Settings, file_fields: frozenset[str]
) -> Iterator[tuple[str, SecretRef | Path]]:
    """Every secret reference in the config, and every path field named in
    `file_fields`, with its key ("customers[0].zisson.password")."""

    def walk(value: Any, path: str) -> Iterator[tuple[str, SecretRef | Path]]:
        if isinstance(value, SecretRef):
            yield path, value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                field_value = getattr(value, name)
                key = f"{path}.{name}" if path else name
                if name in file_fields and isinstance(field_value, Path):
                    yield key, field_value
                else:
                    yield from walk(field_value, key)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k, item in value.items():
                yield from walk(item, f"{path}.{k}")

    return walk(settings, "")


def unreachable_secrets(settings: Settings) -> list[str]:
    """Every secret reference that cannot be read and every named file that is missing,
    as "key: reason" (values never shown). Empty when all is there."""
    problems: list[str] = []
    for key, place in _places(settings, _REQUIRED_FILES):
        if isinstance(place, SecretRef):
            try:
                place.reveal()
            except LookupError as exc:
                problems.append(f"{key}: {exc}")
        elif not os.access(place, os.R_OK):
            problems.append(f"{key}: file {place} cannot be read")
    return problems


# Path fields that hold a secret (the other secrets are SecretRefs).
_SECRET_FILES = frozenset({"credentials_file", "certificate_file", "refresh_token_file"})


def exposed_secret_files(settings: Settings) -> list[str]:
    """Every secret file (a `{ file = … }` reference, a credentials, certificate or token
    file) that its group or others may read or write, as "key: reason and fix"."""
    problems: list[str] = []
    for key, place in _places(settings, _SECRET_FILES):
        path = place.file if isinstance(place, SecretRef) else place
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # missing or unreadable: unreachable_secrets says so
        if mode & 0o077:
            problems.append(
                f"{key}: secret file {path} is open to others (mode {mode & 0o777:04o}); "
                f"run `chmod 600 {path}`"
            )
    return problems


def _location(loc: Iterable[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text or "(top level)"


def describe(error: ValidationError, source: str) -> str:
    """One line per problem: `FILE: key.path: reason`, never the offending value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [p for p in item["loc"] if p not in ("function-after[_consistent()]",)]
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {_location(loc)}: {message}")
    return "\n".join(lines)


def load(path: str | Path) -> Settings:
    """Read and validate the config file; raise ConfigError naming the key and reason."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # The table read above (what TomlConfigSettingsSource would read again).
            overridden = _secrets_replaced(table, env_settings())
            return (env_settings, InitSettingsSource(settings_cls, overridden))

    try:
        return _FromFile()  # type: ignore[call-arg]  # the values come from the sources
    except ValidationError as exc:
        raise ConfigError(describe(exc, str(path))) from None
    except SettingsError as exc:  # an override from the environment that does not parse
        raise ConfigError(_environment_problem(exc)) from None


def _secrets_replaced(table: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`table` with each secret reference the environment overrides taken out of it.

    Overrides are merged into the file's tables key by key, so `PDSYNC_STORE__MASTER_KEY=
    '{"env": "KEY"}'` over `master_key = { file = "..." }` would give both; a reference
    is replaced whole."""
    found = dict(table)
    for key, value in overrides.items():
        if not isinstance(value, dict) or not isinstance(found.get(key), dict):
            continue
        if value and set(value) <= {"env", "file"}:
            del found[key]
        else:
            found[key] = _secrets_replaced(found[key], value)
    return found


def _environment_problem(exc: SettingsError) -> str:
    """Which PDSYNC_ variables could not be read (names only: a value may be a secret)."""
    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"{ENV_PREFIX}{field.group(1).upper()}__" if field else ENV_PREFIX
    names = sorted(n for n in os.environ if n.upper().startswith(prefix)) or [prefix + "…"]
    return (
        f"environment: {', '.join(names)}: not valid; a nested value such as a secret"
        ' reference is JSON, e.g. PDSYNC_STORE__MASTER_KEY=\'{"file": "/path/master.key"}\''
    )
