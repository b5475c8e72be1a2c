"""The outputs of a build, in the order they are made (each sees the files made before it)."""

from __future__ import annotations

from imagesmith.outputs import bmap, bundle, checksums, compressed, image, imager, manifest, sbom, sign
from imagesmith.outputs.base import Output

HANDLERS: tuple[Output, ...] = (
    image.OUTPUT,
    bmap.OUTPUT,
    compressed.OUTPUT,
    imager.OUTPUT,
    bundle.OUTPUT,
    sbom.SPDX,
    sbom.CYCLONEDX,
    manifest.OUTPUT,
    checksums.OUTPUT,
    sign.OUTPUT,
)


def of_phase(phase: str) -> list[Output]:
    return [handler for handler in HANDLERS if handler.phase == phase]
