"""Published files: compressed images (the same bytes whatever the machine), Raspberry Pi
Imager's list (valid against Imager's own schema), the sizes a build ends with, shell
completion (no build)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.outputs import compressed, imager, report
from imagesmith.outputs.base import Release
from imagesmith.outputs.inventory import Inventory

Write = Callable[[str, str], Path]
SCHEMA = Path(__file__).parent / "data" / "rpi-imager" / "os-list-schema.json"


def sample_image(path: Path) -> Path:
    """A sparse file with some data: like an image, small."""
    with open(path, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        for offset in range(0, 7 * 1024 * 1024, 1024 * 1024 // 2):
            handle.seek(offset)
            handle.write(hashlib.sha256(str(offset).encode()).digest() * 2048)
    return path


@pytest.mark.parametrize("kind", ["xz", "zstd", "gzip"])
def test_compressed_images_are_the_same_bytes_with_any_number_of_threads(kind: str, tmp_path: Path) -> None:
    digests = set()
    for threads in (1, 2, 4):
        (tmp_path / str(threads)).mkdir()
        image = sample_image(tmp_path / str(threads) / "a.img")
        # xz: 1 MiB blocks here (64 MiB in builds), so that every thread count has blocks to share
        subprocess.run(
            compressed.command(kind, image, threads, block="1MiB"), check=True, capture_output=True
        )
        packed = image.with_name(image.name + compressed.SUFFIXES[kind])
        digests.add(hashlib.sha256(packed.read_bytes()).hexdigest())
        unpacked = subprocess.run(
            {"xz": ["xz", "-dc"], "zstd": ["zstd", "-dc"], "gzip": ["gzip", "-dc"]}[kind] + [str(packed)],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert unpacked == image.read_bytes()
    assert len(digests) == 1, digests


def release_for(spec: Any, work: Path, image: Path) -> Release:
    return Release(spec, Runner(), work, image, Inventory([], {}, ""), datetime(2026, 12, 3, tzinfo=UTC))


def test_the_imager_list_is_valid_for_imager(write: Write, tmp_path: Path) -> None:
    spec = load_spec(
        write(
            "p.yaml",
            "name: kiosk\ndevice: pi4\npublish:\n  compress: xz\n"
            "  imager: {url: 'https://images.example.com/pi/', description: Our kiosk}\n",
        )
    )
    image = sample_image(tmp_path / "kiosk.img")
    subprocess.run(compressed.command("xz", image, 2), check=True)
    [made] = imager.OUTPUT.make(release_for(spec, tmp_path, image))
    data = json.loads(made.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    (item,) = data["os_list"]
    packed = tmp_path / "kiosk.img.xz"
    assert item["url"] == "https://images.example.com/pi/kiosk.img.xz"
    assert item["extract_size"] == image.stat().st_size
    assert item["extract_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert item["image_download_size"] == packed.stat().st_size
    assert item["image_download_sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert (item["devices"], item["release_date"], item["name"]) == (["pi4-64bit"], "2026-12-03", "kiosk")
    assert item["init_format"] == "none" and item["architecture"] == "armv8"


def test_imager_lists_raspberry_pis_only(write: Write) -> None:
    spec = load_spec(
        write("q.yaml", "name: q\ndevice: qemu-amd64\npublish:\n  imager: {url: 'https://x.example/'}\n")
    )
    with pytest.raises(ImagesmithError, match="is not a Raspberry Pi") as caught:
        imager.check(spec)
    assert caught.value.exit_code == 2 and "q.yaml:4" in str(caught.value.location)


def test_publishing_only_a_compressed_image_needs_a_compression(write: Write) -> None:
    with pytest.raises(ImagesmithError, match="a file must hold the image") as caught:
        load_spec(write("r.yaml", "name: r\ndevice: pi4\npublish: {raw: false}\n"))
    assert caught.value.exit_code == 2


def test_the_sizes_a_build_ends_with() -> None:
    manifest = {
        "partitions": [
            {"number": 1, "name": "boot", "role": "boot", "fs": "vfat", "size": 256 << 20, "used": 60 << 20,
             "mount": "/boot/firmware"},
            {"number": 2, "name": "root", "role": "root", "fs": "ext4", "size": 900 << 20, "used": 600 << 20,
             "mount": "/"},
        ],
        "sizes": {"rootfs": 600 << 20, "image": 1200 << 20, "compressed": 200 << 20},
    }  # fmt: skip
    lines = report.sizes(manifest)
    assert lines[0].split() == [
        "p1",
        "boot",
        "boot",
        "vfat",
        "256.0",
        "MiB",
        "files",
        "60.0",
        "MiB",
        "/boot/firmware",
    ]
    assert lines[-1] == "rootfs files 600.0 MiB; image 1200.0 MiB; compressed 200.0 MiB"


def test_shell_completion_knows_devices_layouts_and_layers() -> None:
    script = CliRunner().invoke(main, ["completion", "bash"])
    assert script.exit_code == 0 and "_IMAGESMITH_COMPLETE=bash_complete" in script.output

    from click.shell_completion import BashComplete

    def complete(words: str) -> list[str]:
        *args, incomplete = words.split()[1:]
        shell = BashComplete(main, {}, "imagesmith", "_IMAGESMITH_COMPLETE")
        return [item.value for item in shell.get_completions(args, incomplete)]

    assert complete("imagesmith build --set dev") == ["device="]
    assert "device=pi5" in complete("imagesmith build --set device=p")
    assert "layout=ab-tryboot" in complete("imagesmith build --set layout=ab")
    assert complete("imagesmith layers show net") == ["network-manager", "networkd"]
