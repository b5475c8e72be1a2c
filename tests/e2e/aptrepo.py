"""A real signed apt archive made on the spot: .debs built with dpkg-deb, Packages.xz and
Release written as apt reads them, InRelease clear-signed with a throwaway GnuPG key."""

from __future__ import annotations

import hashlib
import lzma
import subprocess
from dataclasses import dataclass
from pathlib import Path

ARCHES = ("amd64", "arm64")


@dataclass
class Deb:
    name: str
    version: str
    files: dict[str, str]  # path in the package → content
    architecture: str = "all"


def make_key(home: Path, name: str) -> Path:
    """A signing key in GnuPG home ``home``; its public half, armored, in ``home/NAME.asc``."""
    home.mkdir(parents=True, mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)  # fmt: skip
    public = home / f"{name}.asc"
    public.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout)
    stop_agent(home)
    return public


def stop_agent(home: Path) -> None:
    """gpg starts an agent for the key; it must not outlive the test."""
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True
    )


def build_deb(deb: Deb, into: Path) -> Path:
    tree = into / f"{deb.name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {deb.name}\nVersion: {deb.version}\nArchitecture: {deb.architecture}\n"
        "Maintainer: imagesmith tests <tests@example.invalid>\n"
        f"Description: {deb.name}, made by the test suite\n"
    )
    for path, content in deb.files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    out = into / f"{deb.name}_{deb.version}_{deb.architecture}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)], check=True,
                   capture_output=True)  # fmt: skip
    return out


def archive(root: Path, suite: str, debs: list[Deb], signing_home: Path) -> None:
    """``root`` as an apt archive of ``suite`` (component main) holding ``debs``, its
    InRelease signed with the key in ``signing_home``."""
    pool = root / "pool" / "main"
    pool.mkdir(parents=True)
    stanzas = []
    for deb in debs:
        path = build_deb(deb, pool)
        data = path.read_bytes()
        control = subprocess.run(["dpkg-deb", "-f", str(path)], check=True, capture_output=True, text=True)
        stanzas.append(
            control.stdout.rstrip("\n")
            + f"\nFilename: {path.relative_to(root)}\nSize: {len(data)}\n"
            + f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = "\n".join(stanzas).encode()
    listed = []
    for arch in ARCHES:
        directory = root / "dists" / suite / "main" / f"binary-{arch}"
        directory.mkdir(parents=True)
        for name, content in (("Packages", packages), ("Packages.xz", lzma.compress(packages))):
            (directory / name).write_bytes(content)
            listed.append((f"main/binary-{arch}/{name}", content))
    release = (
        f"Origin: imagesmith-tests\nLabel: imagesmith-tests\nSuite: {suite}\nCodename: {suite}\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: {' '.join(ARCHES)}\nComponents: main\n"
        "SHA256:\n" + "".join(f" {hashlib.sha256(c).hexdigest()} {len(c)} {name}\n" for name, c in listed)
    )
    dists = root / "dists" / suite
    (dists / "Release").write_text(release)
    subprocess.run(
        ["gpg", "--homedir", str(signing_home), "--batch", "--passphrase", "", "--yes", "--clearsign",
         "-o", str(dists / "InRelease"), str(dists / "Release")],
        check=True, capture_output=True,
    )  # fmt: skip
    stop_agent(signing_home)
