"""NAME.rpi-imager.json: the image as an entry of a Raspberry Pi Imager repository list
(``os_list``), for a team that serves its images to Imager (``rpi-imager --repo URL``).

The entry points at the compressed image when there is one (Imager reads .xz, .gz and
.zst), else at the raw image; sizes and hashes are those of the files this build wrote,
the release date the build's epoch, the device tags the device catalog's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagesmith.config.load import Spec
from imagesmith.errors import config_error
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.compressed import SUFFIXES
from imagesmith.outputs.files import sha256

SUFFIX = ".rpi-imager.json"


def check(spec: Spec) -> None:
    """Before a build: Imager lists Raspberry Pi images only."""
    if spec.config.publish.imager is not None and not spec.device.imager_tags:
        raise config_error(
            f"device {spec.device.device} is not a Raspberry Pi: Raspberry Pi Imager cannot list it",
            spec.locate("publish", "imager"),
            "leave publish.imager out for this device",
        )


def entry(release: Release) -> dict[str, Any]:
    spec = release.spec
    imager = spec.config.publish.imager
    assert imager is not None
    check(spec)
    compress = spec.config.publish.compress
    download = release.image
    if compress != "none":
        download = release.image.with_name(release.image.name + SUFFIXES[compress])
    found: dict[str, Any] = {
        "name": imager.name or spec.config.name,
        "description": imager.description,
        "icon": imager.icon,
        "url": imager.url + download.name,
        "extract_size": release.image.stat().st_size,
        "extract_sha256": sha256(release.image),
        "image_download_size": download.stat().st_size,
        "image_download_sha256": sha256(download),
        "release_date": release.created.strftime("%Y-%m-%d"),
        "devices": list(spec.device.imager_tags),
        "init_format": "none",  # the image is configured at build time, not by Imager
        "architecture": {"arm64": "armv8"}.get(spec.device.arch, spec.device.arch),
    }
    if imager.website:
        found["website"] = imager.website
    return found


class ImagerList(Output):
    name = "imager"
    phase = "image"

    def wanted(self, release: Release) -> bool:
        return release.spec.config.publish.imager is not None

    def make(self, release: Release) -> list[Path]:
        target = release.work / f"{release.spec.config.name}{SUFFIX}"
        text = json.dumps({"os_list": [entry(release)]}, indent=2, ensure_ascii=False) + "\n"
        target.write_text(text, encoding="utf-8")
        return [target]


OUTPUT = ImagerList()
