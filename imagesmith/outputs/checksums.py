"""SHA256SUMS: the sha256 of every output before it, as `sha256sum -c` reads them."""

from __future__ import annotations

from pathlib import Path

from imagesmith.config.load import Spec
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import SUMS, checksums


class Checksums(Output):
    name = "checksums"
    vouches = True

    def make(self, release: Release) -> list[Path]:
        target = release.work / SUMS
        checksums(release.files, target)
        return [target]

    def names(self, spec: Spec) -> list[str]:
        return [SUMS]


OUTPUT = Checksums()
