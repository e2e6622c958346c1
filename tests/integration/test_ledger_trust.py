"""Certificates verify against trusted keys only: the processor's published key set, a
public key given in full, or the config; a forged certificate fails however it names
its key; what `certificate export` and `show` print is exactly what verifies."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdf
import pytest
from typer.testing import CliRunner, Result

from daemon import config as config_module
from daemon.certificate import Certificate, Issuer, issue_certificate, verify_certificate
from daemon.cli import app
from daemon.config import Settings
from daemon.ledger import KeySet, Ledger, MemoryLedgerStore, Signer, generate_key_file
from daemon.proof import certifier_for, open_ledger, trusted_verifiers
from daemon.store import ErasureState, Store
from tests.unit.test_certificate import make_facts


@dataclass
class ProofWorld:
    """A config on disk (SQLite store, signing key, optional witness) and its settings."""

    config: Path
    secrets: Path
    store_url: str

    @property
    def settings(self) -> Settings:
        return config_module.load(self.config)

    def store(self) -> Store:
        settings = self.settings
        return Store.open(settings.store.url, master_key=settings.store.master_key_bytes())

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--config", str(self.config)])


def private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def proof_world(tmp_path: Path, *, ledger: str = "") -> ProofWorld:
    """`ledger`: further lines of the [ledger] table (witness, retired keys, ...)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    master = private_file(secrets / "master.key", os.urandom(32).hex())
    signing = secrets / "ledger.pem"
    generate_key_file(signing)
    store_url = f"sqlite:///{tmp_path / 'pdsync.db'}"
    config = tmp_path / "pdsync.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\nmaster_key = {{ file = "{master}" }}\n\n'
        '[systems.firestore]\nproject = "demo"\nemulator_host = "127.0.0.1:9"\n\n'
        f'[ledger]\nsigning_key = {{ file = "{signing}" }}\n{ledger}\n',
        encoding="utf-8",
    )
    return ProofWorld(config=config, secrets=secrets, store_url=store_url)


def certified_erasure(world: ProofWorld, store: Store, reason: str = "ticket 9") -> str:
    """A completed erasure in the store with its certificate, issued as the daemon does;
    its request id."""
    now = datetime.now(UTC)
    request_id = store.create_erasure(
        "acme",
        scope="subject",
        identifiers="{}",
        masked={"emails": ["o***@f***.no"], "phones": [], "names": []},
        requested_by="kari",
        reason=reason,
        deadline=timedelta(days=30),
    )
    outcome = {
        "zisson": {
            "outcome": "executed",
            "counts": {"contact": 1},
            "verified_absent": True,
            "verified_at": now.isoformat(),
        }
    }
    store.update_erasure(
        request_id, state=ErasureState.COMPLETED, outcome=outcome, completed_at=now
    )
    settings = world.settings
    certify = certifier_for(settings, open_ledger(settings, store))
    assert certify is not None
    store.update_erasure(request_id, certificate=certify(store.get_erasure(request_id), ()))
    return request_id


@pytest.fixture
def world(tmp_path: Path, cli_logging_restored: None) -> Iterator[ProofWorld]:
    yield proof_world(tmp_path)


def test_export_to_stdout_and_to_a_file_and_show_are_the_bytes_that_verify(
    world: ProofWorld, tmp_path: Path
) -> None:
    with world.store() as store:
        request_id = certified_erasure(world, store)

    piped = world.cli("certificate", "export", request_id)
    assert piped.exit_code == 0, piped.stderr
    saved = tmp_path / "c.json"
    written = world.cli("certificate", "export", request_id, "-o", str(saved))
    assert written.exit_code == 0 and written.stdout == ""  # the message goes to stderr
    shown = world.cli("certificate", "show", request_id)
    assert piped.stdout_bytes == saved.read_bytes() == shown.stdout_bytes

    from_stdout = tmp_path / "from-stdout.json"
    from_stdout.write_bytes(piped.stdout_bytes)  # `pdsync certificate export ID > c.json`
    for path in (from_stdout, saved):
        verdict = world.cli("certificate", "verify", str(path))
        assert verdict.exit_code == 0, verdict.stderr
        assert "valid" in verdict.stdout

    pdf = tmp_path / "c.pdf"
    assert (
        world.cli("certificate", "export", request_id, "--format", "pdf", "-o", str(pdf)).exit_code
        == 0
    )
    text = "".join(
        page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.read_bytes())).pages
    )
    assert hashlib.sha256(saved.read_bytes()).hexdigest() in "".join(text.split())

    # A line break added by an editor is named as such, not as tampering in general.
    with_newline = tmp_path / "newline.json"
    with_newline.write_bytes(saved.read_bytes() + b"\n")
    verdict = world.cli("certificate", "verify", str(with_newline))
    assert verdict.exit_code == 1 and "line break" in verdict.stderr


def test_verify_without_a_trusted_key_says_how_to_give_one(
    world: ProofWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PDSYNC_CONFIG", raising=False)
    with world.store() as store:
        request_id = certified_erasure(world, store)
    saved = tmp_path / "c.json"
    world.cli("certificate", "export", request_id, "-o", str(saved))

    result = CliRunner().invoke(app, ["certificate", "verify", str(saved)])
    assert result.exit_code == 2
    assert "--keys FILE" in result.stderr and "--key PUBLIC_KEY" in result.stderr
    assert "valid" not in result.stdout


def test_the_exported_key_set_and_a_full_public_key_are_trust_anchors(
    world: ProofWorld, tmp_path: Path
) -> None:
    with world.store() as store:
        request_id = certified_erasure(world, store)
    saved = tmp_path / "c.json"
    world.cli("certificate", "export", request_id, "-o", str(saved))
    keys = tmp_path / "keys.json"
    assert world.cli("ledger", "keys", "export", "-o", str(keys)).exit_code == 0
    assert world.cli("ledger", "keys", "export").stdout_bytes == keys.read_bytes()
    key_set = KeySet.load(keys)
    (published,) = key_set.all()
    assert published.current and published.valid_until is None

    signer = Signer.from_pem((world.secrets / "ledger.pem").read_bytes())
    pem = tmp_path / "public.pem"
    pem.write_bytes(signer.verifier.public_key_pem())
    raw = bytes.fromhex(signer.public_key_hex)
    for anchor in (
        ["--keys", str(keys)],
        ["--key", signer.public_key_hex],
        ["--key", base64.b64encode(raw).decode()],
        ["--key", str(pem)],
    ):
        result = CliRunner().invoke(app, ["certificate", "verify", str(saved), *anchor])
        assert result.exit_code == 0, (anchor, result.stderr)

    doctored = tmp_path / "doctored.json"
    doctored.write_bytes(keys.read_bytes().replace(signer.key_id.encode(), b"0" * 16))
    result = CliRunner().invoke(app, ["certificate", "verify", str(saved), "--keys", str(doctored)])
    assert result.exit_code == 2 and "key_id does not belong to its public key" in result.stderr

    stranger = Signer.generate()
    result = CliRunner().invoke(
        app, ["certificate", "verify", str(saved), "--key", stranger.public_key_hex]
    )
    assert result.exit_code == 1 and "not in the trusted key set" in result.stderr


def _forged(signer: Signer) -> Certificate:
    """A certificate any key can make: its own ledger, its own checkpoint, "verified
    absent" everywhere, consistent in itself."""
    ledger = Ledger(MemoryLedgerStore(), signer)
    ledger.record("sync.completed", customer_id="acme", changed=1)
    return issue_certificate(make_facts(), ledger=ledger, signer=signer)


def test_a_certificate_forged_with_another_key_fails(world: ProofWorld, tmp_path: Path) -> None:
    forged = _forged(Signer.generate())
    assert verify_certificate(forged.to_json()) == []  # consistent in itself: not proof
    trusted = trusted_verifiers(world.settings)
    problems = verify_certificate(forged.to_json(), trusted)
    assert problems and "not in the trusted key set" in problems[0]

    path = tmp_path / "forged.json"
    path.write_bytes(forged.to_json())
    result = world.cli("certificate", "verify", str(path))
    assert result.exit_code == 1 and "INVALID" in result.stderr and "valid (" not in result.stdout


def test_substituting_the_key_or_its_id_does_not_make_a_forgery_verify(
    world: ProofWorld,
) -> None:
    genuine = Signer.from_pem((world.secrets / "ledger.pem").read_bytes())
    trusted = trusted_verifiers(world.settings)
    attacker = Signer.generate()
    forged = _forged(attacker)

    # The genuine key and id on the certificate and its checkpoint, signed by another.
    claims_genuine = dataclasses.replace(
        forged,
        issuer=Issuer(key_id=genuine.key_id, public_key=genuine.public_key_hex),
        ledger=dataclasses.replace(
            forged.ledger,
            checkpoint=dataclasses.replace(forged.ledger.checkpoint, key_id=genuine.key_id),
        ),
    )
    resigned = dataclasses.replace(
        claims_genuine, signature=attacker.sign_hex(claims_genuine.signed_bytes())
    )
    problems = verify_certificate(resigned.to_json(), trusted)
    assert "the signature does not match the certificate" in problems
    assert "the checkpoint's signature does not match it" in problems

    # The genuine key id beside the attacker's own public key: pinned by the whole key.
    id_only = dataclasses.replace(
        forged, issuer=Issuer(key_id=genuine.key_id, public_key=attacker.public_key_hex)
    )
    id_only = dataclasses.replace(id_only, signature=attacker.sign_hex(id_only.signed_bytes()))
    problems = verify_certificate(id_only.to_json(), trusted)
    assert any("not in the trusted key set" in p for p in problems)
