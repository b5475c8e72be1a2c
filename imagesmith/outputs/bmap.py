"""IMAGE.img.bmap: the block map bmaptool uses to write only the image's data (and check it)."""

from __future__ import annotations

from pathlib import Path

from imagesmith.outputs.base import Output, Release


class BlockMap(Output):
    name = "bmap"
    phase = "image"

    def make(self, release: Release) -> list[Path]:
        target = release.work / f"{release.image.name}.bmap"
        release.runner.run(["bmaptool", "create", "-o", str(target), str(release.image)])
        return [target]


OUTPUT = BlockMap()
