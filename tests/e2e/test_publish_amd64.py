"""Publishing on a real build of the native target: the compressed image is the raw one,
bmaptool writes it with the block map, verify checks it, the build ends with its sizes, and
an image published compressed only is the same file."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from .conftest import imagesmith

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("publish")
    config = base / "image.yaml"
    config.write_text("name: pub\ndevice: qemu-amd64\nlayers: [base]\n")
    return config


@pytest.fixture(scope="module")
def both(project: Path) -> tuple[Path, str]:
    """Built with --compress xz: the raw image and the compressed one."""
    out = project.parent / "both"
    proc = imagesmith("build", str(project), "-o", str(out), "--compress", "xz")
    return out, proc.stderr + proc.stdout


def digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def unpacked_digest(*command: str) -> str:
    """The sha256 of what ``command`` writes, read as it comes (an image does not fit in memory)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found = hashlib.file_digest(proc.stdout, "sha256").hexdigest()
    assert proc.wait() == 0, command
    return found


def test_the_compressed_image_is_the_raw_one_and_is_vouched_for(both: tuple[Path, str]) -> None:
    out, _ = both
    assert unpacked_digest("xz", "-dc", str(out / "pub.img.xz")) == digest(out / "pub.img")
    assert "pub.img.xz" in (out / "SHA256SUMS").read_text()
    verified = imagesmith("verify", str(out))
    assert "ok      pub.img.xz" in verified.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sizes"]["compressed"] == (out / "pub.img.xz").stat().st_size
    assert manifest["sizes"]["image"] == (out / "pub.img").stat().st_size


def test_bmaptool_writes_the_compressed_image_with_the_block_map(
    both: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = both
    target = tmp_path / "card.img"
    bmap, packed = str(out / "pub.img.bmap"), str(out / "pub.img.xz")
    subprocess.run(["bmaptool", "copy", "--bmap", bmap, packed, str(target)], check=True, capture_output=True)
    assert digest(target) == digest(out / "pub.img")


def test_the_build_ends_with_the_sizes(both: tuple[Path, str]) -> None:
    _, printed = both
    assert "rootfs files " in printed and "; compressed " in printed
    assert "p2 root       root    ext4" in printed


def test_only_the_compressed_image_is_published_when_asked(project: Path, both: tuple[Path, str]) -> None:
    out = project.parent / "zst-only"
    imagesmith("build", str(project), "-o", str(out), "--compress", "zstd", "--set", "publish.raw=false")
    assert not (out / "pub.img").exists() and (out / "pub.img.bmap").exists()
    assert unpacked_digest("zstd", "-dc", str(out / "pub.img.zst")) == digest(both[0] / "pub.img")
    assert "pub.img " not in (out / "SHA256SUMS").read_text() + " "
    assert "ok      pub.img.zst" in imagesmith("verify", str(out)).stdout
