"""Proof commands of the `pdsync` CLI: `certificate show|export|verify`, `ledger verify`.

daemon/cli.py registers them with `cli_proof.register(app)`.
Exit codes as in cli.py: 0 done, 1 invalid or tampered, 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    err,
    get_erasure,
    load_settings,
    open_store,
    out,
    query,
)
from daemon.config import CONFIG_ENV, ConfigError

certificate_app = typer.Typer(help="Deletion certificates.", no_args_is_help=True)
ledger_app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)


@certificate_app.command("show")
def certificate_show(request_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a certificate's JSON."""
    out.print(_certificate_json(config, request_id), highlight=False, markup=False, soft_wrap=True)


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
    """Write a certificate as signed JSON or as a PDF (Norwegian and English)."""
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
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
    else:
        output.write_bytes(data)
        out.print(f"wrote {output}")


@certificate_app.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="A certificate JSON file.")],
    key_id: Annotated[str | None, typer.Option(help="The issuer's published key id.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar=CONFIG_ENV, help="Take the trusted key id from this config."
        ),
    ] = None,
) -> None:
    """Check a certificate offline: signature, ledger inclusion proof, checkpoint."""
    from daemon.certificate import verify_certificate

    trusted = key_id
    if trusted is None and config is not None and config.exists():
        from daemon.proof import signer_from

        signer = signer_from(load_settings(config))
        trusted = signer.key_id if signer else None
    try:
        data = file.read_bytes()
    except OSError as exc:
        err.print(f"{file}: {exc.strerror}")
        raise typer.Exit(2) from None
    problems = verify_certificate(data, trusted_key_id=trusted)
    if problems:
        for problem in problems:
            err.print(f"INVALID: {problem}", highlight=False, markup=False)
        raise typer.Exit(1)
    out.print(
        f"{file}: valid"
        + (
            f" (signed by key {trusted})"
            if trusted
            else " (signature checked against the key inside; pass --key-id to pin the issuer)"
        )
    )


@ledger_app.command("verify")
def ledger_verify(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Recompute every ledger row and checkpoint; name the first row that was changed,
    removed or reordered."""
    from daemon.ledger import verify_ledger
    from daemon.proof import trusted_verifiers

    settings = load_settings(config)
    try:
        verifiers = trusted_verifiers(settings)
    except ConfigError as exc:
        err.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(2) from None
    store = open_store(settings)
    try:
        report = verify_ledger(store, verifiers)
    finally:
        store.close()
    if report.ok:
        out.print(f"ledger OK: {report.rows} entries, {report.checkpoints} signed checkpoints")
        return
    for finding in report.findings:
        err.print(f"TAMPERED: {finding}", highlight=False, markup=False)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the proof commands to the `pdsync` app (idempotent)."""
    if any(group.name == "certificate" for group in app.registered_groups):
        return
    app.add_typer(certificate_app, name="certificate")
    app.add_typer(ledger_app, name="ledger")
