"""The disk image itself, as the disk stage made it."""

from __future__ import annotations

from pathlib import Path

from imagesmith.outputs.base import Output, Release


class Image(Output):
    name = "image"

    def wanted(self, release: Release) -> bool:
        """The raw image, unless only the compressed one is published."""
        return release.spec.config.publish.raw

    def make(self, release: Release) -> list[Path]:
        return [release.image]


OUTPUT = Image()
