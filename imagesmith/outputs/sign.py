"""Ed25519 signatures of SHA256SUMS, and the checks of `imagesmith verify`.

A build with a signing key writes ``SHA256SUMS.sig``: the raw 64-byte Ed25519 signature
of SHA256SUMS (made with the ``cryptography`` library). Anyone with the public key can
check it with imagesmith or with OpenSSL alone:

    openssl pkeyutl -verify -pubin -inkey release.pub -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig

Keys are PEM files, as ``openssl genpkey -algorithm ed25519`` makes them; an encrypted
private key takes its passphrase from IMAGESMITH_SIGNING_KEY_PASSPHRASE.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from imagesmith import redact
from imagesmith.config.load import Spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import IMAGES, SUMS, output_file, sha256

SIG = "SHA256SUMS.sig"
PASSPHRASE_ENV = "IMAGESMITH_SIGNING_KEY_PASSPHRASE"
KEYGEN_HINT = (
    "make a key pair with `openssl genpkey -algorithm ed25519 -out release.pem` and "
    "`openssl pkey -in release.pem -pubout -out release.pub`"
)


def _key_error(path: Path, what: str) -> ImagesmithError:
    return ImagesmithError(f"{path}: {what}", hint=KEYGEN_HINT, exit_code=EXIT_CONFIG)


def load_private_key(path: Path) -> object:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _key_error(path, f"cannot read the signing key: {exc.strerror}") from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        redact.register(passphrase)
    try:
        key = load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise ImagesmithError(
            f"{path}: the signing key is encrypted",
            hint=f"give its passphrase in the environment variable {PASSPHRASE_ENV}",
            exit_code=EXIT_CONFIG,
        ) from None
    except ValueError:
        raise _key_error(path, "not a PEM private key (or the passphrase is wrong)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _key_error(path, "the signing key must be an Ed25519 key")
    return key


def load_public_key(path: Path) -> object:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise _key_error(path, f"cannot read the public key: {exc.strerror}") from None
    except ValueError:
        raise _key_error(path, "not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _key_error(path, "the public key must be an Ed25519 key")
    return key


def sign(sums: Path, key_path: Path, target: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = load_private_key(key_path)
    assert isinstance(key, Ed25519PrivateKey)
    target.write_bytes(key.sign(sums.read_bytes()))


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    signature: str = "absent"  # absent | good | not checked

    @property
    def ok(self) -> bool:
        return not self.failed


def verify(outdir: Path, public_key: Path | None) -> Report:
    """Check every file SHA256SUMS names, and its signature when there is one."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    report = Report()
    sums = output_file(outdir, SUMS)
    named: set[str] = set()
    for number, line in enumerate(sums.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        if not match:
            report.failed.append((f"{SUMS}:{number}", "not a checksum line"))
            continue
        expected, name = match.groups()
        named.add(name)
        path = outdir / name
        if "/" in name or not path.is_file():
            report.failed.append((name, "missing"))
        elif sha256(path) != expected:
            report.failed.append((name, "checksum differs"))
        else:
            report.checked.append(name)
    # a list with lines taken out still checks: it must name the image and the manifest
    images = sorted(p.name for p in outdir.iterdir() if p.name.endswith(IMAGES) and p.is_file())
    if not named:
        report.failed.append((SUMS, "names no file"))
    elif not any(name.endswith(IMAGES) for name in named):
        report.failed.append((SUMS, "names no image"))
    for name in [*images, *(["manifest.json"] if (outdir / "manifest.json").is_file() else [])]:
        if name not in named:
            report.failed.append((name, f"not named in {SUMS}"))
    signature = outdir / SIG
    if public_key is not None:
        key = load_public_key(public_key)
        assert isinstance(key, Ed25519PublicKey)
        if not signature.is_file():
            report.failed.append((SIG, "missing"))
        else:
            try:
                key.verify(signature.read_bytes(), sums.read_bytes())
                report.signature = "good"
            except InvalidSignature:
                report.failed.append((SIG, f"not a valid signature of {SUMS} by {public_key.name}"))
    elif signature.is_file():
        report.signature = "not checked"
    return report


class Signature(Output):
    name = "signature"
    vouches = True

    def wanted(self, release: Release) -> bool:
        return release.signing_key is not None

    def make(self, release: Release) -> list[Path]:
        assert release.signing_key is not None
        target = release.work / SIG
        sign(release.work / SUMS, release.signing_key, target)
        return [target]

    def names(self, spec: Spec) -> list[str]:
        return [SIG]


OUTPUT = Signature()
