"""Proof commands of the `pdsync` CLI: `certificate show|export|verify`, `ledger verify`,
`ledger keys export|rotate`, and `store rekey`.

daemon/cli.py registers them with `cli_proof.register(app)`.
Exit codes as in cli.py: 0 done, 1 invalid or tampered, 2 bad usage or configuration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daemon.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    err,
    fail,
    get_erasure,
    load_settings,
    open_store,
    out,
    query,
)
from daemon.config import CONFIG_ENV, ConfigError

if TYPE_CHECKING:
    from daemon.ledger import Checkpoint
    from daemon.ledger.keys import KeySet

certificate_app = typer.Typer(help="Deletion certificates.", no_args_is_help=True)
ledger_app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)
keys_app = typer.Typer(help="The ledger's signing keys, as customers verify with them.")
store_app = typer.Typer(help="The store's own keys.", no_args_is_help=True)
ledger_app.add_typer(keys_app, name="keys", no_args_is_help=True)


def _write_data(data: bytes, output: Path | None) -> None:
    """Data that a later command reads (a certificate, a key set): byte for byte the
    same on stdout and in `-o FILE`. On a terminal a line break follows, for the
    prompt; a pipe or a file gets exactly the bytes."""
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        if sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise fail(f"{output}: {exc.strerror}") from None
    err.print(f"wrote {output}", highlight=False, markup=False)


@certificate_app.command("show")
def certificate_show(request_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a certificate's JSON: exactly the signed bytes, as `export` writes them."""
    _write_data(_certificate_json(config, request_id).encode("utf-8"), None)


def _certificate_json(config: Path, request_id: str) -> str:
    row = query(config, lambda store: get_erasure(store, request_id))
    if not row.certificate:
        err.print(f"erasure {row.id} has no certificate (state {row.state})")
        raise typer.Exit(2)
    return str(row.certificate)


@certificate_app.command("export")
def certificate_export(
    request_id: str,
    format: Annotated[str, typer.Option("--format", help="json or pdf")] = "json",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout for json)")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write a certificate as signed JSON or as a PDF (Norwegian and English).

    The JSON is the same bytes on stdout and in -o FILE, and the PDF prints their SHA-256.
    """
    from daemon.certificate import Certificate, render_pdf

    text = _certificate_json(config, request_id)
    if format == "json":
        data = text.encode("utf-8")
    elif format == "pdf":
        if output is None:
            err.print("--format pdf needs -o FILE")
            raise typer.Exit(2)
        data = render_pdf(Certificate.from_json(text.encode("utf-8")))
    else:
        err.print("--format is json or pdf")
        raise typer.Exit(2)
    _write_data(data, output)


@certificate_app.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="A certificate JSON file.")],
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            metavar="FILE",
            help="The processor's published key set (`ledger keys export`).",
        ),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            metavar="PUBLIC_KEY",
            help="A trusted Ed25519 public key: hex, base64, PEM, or a file holding it.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar=CONFIG_ENV,
            help="Trust the keys this config signs with (the signing key and retired keys).",
        ),
    ] = None,
) -> None:
    """Check a certificate offline against trusted keys: that one of them signed it
    (the whole public key, not only its id), the ledger inclusion proof, the checkpoint."""
    from daemon.certificate import verify_certificate

    trusted = _trusted_keys(keys, key or [], config)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    problems = verify_certificate(data, trusted)
    if problems:
        for problem in problems:
            err.print(f"INVALID: {problem}", highlight=False, markup=False)
        raise typer.Exit(1)
    from daemon.certificate import Certificate

    key_id = Certificate.from_json(data).issuer.key_id
    out.print(f"{file}: valid (signed by trusted key {key_id})", highlight=False, markup=False)


def _trusted_keys(keys: Path | None, key: list[str], config: Path | None) -> KeySet:
    """The trusted keys from every source given; exit 2 when none is, or one is bad."""
    from daemon.ledger.keys import KeySet, PublishedKey, parse_public_key
    from daemon.proof import trusted_verifiers

    published: list[PublishedKey] = []
    if keys is not None:
        try:
            published += KeySet.load(keys).all()
        except ValueError as exc:
            raise fail(f"--keys: {exc}") from None
    for text in key:
        try:
            published.append(PublishedKey(verifier=parse_public_key(text)))
        except ValueError as exc:
            raise fail(f"--key: {exc}") from None
    if config is not None:
        try:
            published += trusted_verifiers(load_settings(config)).all()
        except ConfigError as exc:
            raise fail(f"--config: {exc}") from None
    if not published:
        raise fail(
            "no trusted key: give --keys FILE (the key set from `pdsync ledger keys export`), "
            f"--key PUBLIC_KEY, or --config FILE (or set {CONFIG_ENV})"
        )
    try:
        return KeySet(published)
    except ValueError as exc:
        raise fail(str(exc)) from None


@ledger_app.command("verify")
def ledger_verify(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="A checkpoint kept outside the store: a certificate, a checkpoint, or a "
            "witness file. The ledger must extend it.",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Recompute every ledger row and checkpoint; name the first row that was changed,
    removed or reordered. Rows removed from the end are found against the witness
    ([ledger] witness) and the checkpoints given with --checkpoint."""
    from daemon.ledger import verify_ledger
    from daemon.ledger.witness import WitnessError, parse_checkpoints
    from daemon.proof import trusted_verifiers, witness_from

    settings = load_settings(config)
    try:
        verifiers = trusted_verifiers(settings)
        witness = witness_from(settings)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    external: list[Checkpoint] = []
    try:
        if witness is not None:
            external += witness.checkpoints()
        for path in checkpoint or []:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise fail(f"--checkpoint {path}: {exc.strerror}") from None
            held = parse_checkpoints(data, str(path))
            if not held:
                raise fail(f"--checkpoint {path}: holds no checkpoint")
            external += held
    except WitnessError as exc:
        raise fail(str(exc)) from None
    store = open_store(settings)
    try:
        report = verify_ledger(store, verifiers, external=external)
    finally:
        store.close()
    if not report.ok:
        for finding in report.findings:
            err.print(f"TAMPERED: {finding}", highlight=False, markup=False)
        raise typer.Exit(1)
    line = f"ledger OK: {report.rows} entries, {report.checkpoints} signed checkpoints"
    if external:
        line += (
            f"; {report.external} checkpoints held outside the store agree, the newest "
            f"covering {report.external_size} of {report.rows} entries"
        )
    out.print(line, highlight=False, markup=False)
    if not external:
        where = (
            f"the witness {witness.describe()} holds no checkpoint yet"
            if witness is not None
            else "no witness ([ledger] witness)"
        )
        err.print(
            f"note: {where} and no --checkpoint FILE was given: rows removed from the end "
            "together with their checkpoints cannot be told",
            highlight=False,
            markup=False,
        )


@keys_app.command("export")
def ledger_keys_export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write the public signing keys, current and retired, with the time each was in
    use: the key set customers keep and verify certificates with (--keys FILE)."""
    from daemon.proof import trusted_verifiers

    settings = load_settings(config)
    try:
        key_set = trusted_verifiers(settings)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    _write_data(key_set.to_json(), output)


@keys_app.command("rotate")
def ledger_keys_rotate(
    new_key: Annotated[
        Path,
        typer.Option("--new-key", metavar="FILE", help="Where to write the new signing key."),
    ],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Make a new signing key and print the [ledger] settings that retire the current one.

    Stop the daemon first: the current key is retired as of now, and what it signs after
    this does not verify. Then replace signing_key in the config with the lines printed,
    start the daemon, and publish the new key set (ledger keys export)."""
    from datetime import UTC, datetime

    from daemon.ledger import canonical, generate_key_file
    from daemon.proof import signer_from

    settings = load_settings(config)
    try:
        current = signer_from(settings)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if current is None:
        raise fail("ledger.signing_key is not configured: there is no key to rotate")
    try:
        generate_key_file(new_key)
    except FileExistsError:
        raise fail(f"--new-key {new_key} exists: give a new file") from None
    except OSError as exc:
        raise fail(f"--new-key {new_key}: {exc.strerror}") from None
    now = canonical.format_ts(datetime.now(UTC))
    since = settings.ledger.signing_key_since
    lines = [
        "[ledger]",
        f'signing_key = {{ file = "{new_key.resolve()}" }}',
        f'signing_key_since = "{now}"',
        "",
        "[[ledger.retired_keys]]",
        f'public_key = "{current.public_key_hex}"',
        *([f'valid_from = "{canonical.format_ts(since)}"'] if since else []),
        f'valid_until = "{now}"',
    ]
    out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    err.print(
        f"wrote {new_key}. In {config}: replace signing_key and signing_key_since with the "
        "lines above and add the [[ledger.retired_keys]] entry (keep earlier ones), then "
        "start the daemon and publish the key set: pdsync ledger keys export",
        highlight=False,
        markup=False,
    )


@store_app.command("rekey")
def store_rekey(
    new_key: Annotated[
        Path,
        typer.Option(
            "--new-key",
            metavar="FILE",
            help="The new master key: 32 bytes in hex or base64, in a file only you can read.",
        ),
    ],
    generate: Annotated[
        bool, typer.Option("--generate", help="Make a new random key in --new-key FILE first.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Re-wrap customer keys and connector secrets under a new master key.

    Stop the daemon first. Resumable: if interrupted, run it again with the same new
    key. Afterwards point store.master_key at the new key file."""
    from connectors.secrets import SecretRef
    from daemon.config import StoreConfig
    from daemon.store import Store, StoreError, WrongMasterKey

    settings = load_settings(config)
    if generate:
        _generate_master_key(new_key)
    try:
        mode = new_key.stat().st_mode
    except OSError as exc:
        raise fail(f"--new-key {new_key}: {exc.strerror} (add --generate to make one)") from None
    if mode & 0o077:
        raise fail(f"--new-key {new_key} is open to others; run `chmod 600 {new_key}`")
    try:
        old = settings.store.master_key_bytes()
    except (ConfigError, LookupError) as exc:
        raise fail(f"config error\n{exc}") from None
    try:
        new = StoreConfig(url=settings.store.url, master_key=SecretRef(file=new_key))
        new_bytes = new.master_key_bytes()
    except (ConfigError, LookupError) as exc:
        raise fail(str(exc).replace("store.master_key", "--new-key")) from None
    try:
        store = Store.open(settings.store.url, master_key=old, finishing_rekey=True)
    except WrongMasterKey:
        try:
            Store.open(settings.store.url, master_key=new_bytes).close()
        except StoreError:
            raise fail(
                "store.master_key does not open the store (nor does the new key): "
                "give the key the store uses now in the config"
            ) from None
        err.print(
            f"the store already uses the key in {new_key}: set store.master_key to "
            f'{{ file = "{new_key}" }}',
            highlight=False,
            markup=False,
        )
        return
    try:
        result = store.rekey(new_bytes)
    except ValueError as exc:
        raise fail(f"--new-key: {exc}") from None
    finally:
        store.close()
    err.print(
        f"{'finished' if result.resumed else 'done'}: re-wrapped {result.customer_keys} "
        f"customer keys and {result.connector_secrets} connector secrets. Now set "
        f'store.master_key to {{ file = "{new_key}" }} in {config} and start the daemon; '
        "keep the old key until a backup under the new one exists.",
        highlight=False,
        markup=False,
    )


def _generate_master_key(path: Path) -> None:
    from daemon.crypto import new_key

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise fail(f"--new-key {path} exists: drop --generate to use it") from None
    except OSError as exc:
        raise fail(f"--new-key {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, new_key().hex().encode() + b"\n")
    finally:
        os.close(fd)


def register(app: typer.Typer) -> None:
    """Add the proof commands to the `pdsync` app (idempotent)."""
    if any(group.name == "certificate" for group in app.registered_groups):
        return
    app.add_typer(certificate_app, name="certificate")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(store_app, name="store")
