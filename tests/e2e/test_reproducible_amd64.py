"""`build --check-reproducible` on a small native image: passes, or names what differs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import imagesmith

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "cache"
NONCE = """\
includes: [image.yaml]
name: nonce
scripts:
  - {run: nonce.sh, in: chroot}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repro") / "p"
    shutil.copytree(DATA, root, symlinks=True)
    (root / "nonce.yaml").write_text(NONCE)
    # a build step that is not reproducible: a random value in the image
    (root / "nonce.sh").write_text("#!/bin/sh\nhead -c 16 /dev/urandom | od -An -tx1 > /etc/build-nonce\n")
    return root


def test_a_reproducible_config_passes_the_check(project: Path) -> None:
    out = project / "out"
    proc = imagesmith("build", str(project / "image.yaml"), "-o", str(out), "--check-reproducible")
    assert "reproducible: both builds gave identical outputs" in proc.stderr
    for name in ("cached.img", "cached.spdx.json", "cached.cdx.json", "manifest.json", "cached.img.bmap"):
        assert f"identical: {name}  sha256" in proc.stderr
    # the first build's outputs are published; the second's are gone
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, check=True, capture_output=True)
    assert not (out / "check-reproducible").exists()


def test_the_check_names_the_partition_and_file_that_differ(project: Path) -> None:
    out = project / "out-nonce"
    proc = imagesmith(
        "build", str(project / "nonce.yaml"), "-o", str(out), "--check-reproducible", check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "not reproducible" in proc.stderr
    assert "nonce.img differs: partition 2 (first at byte" in proc.stderr
    assert "/etc/build-nonce (content)" in proc.stderr
    assert "manifest.json differs" in proc.stderr  # it records the image's sha256
    assert (out / "check-reproducible" / "nonce.img").is_file()  # kept for comparison
