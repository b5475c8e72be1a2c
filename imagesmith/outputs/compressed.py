"""NAME.img.xz, .img.zst or .img.gz: the image as people download and flash it.

Reproducible whatever the machine: xz always runs its multithreaded encoder with a fixed
block size (its single-threaded one writes other bytes), zstd's output does not depend on
its thread count, gzip writes no name or time. The block map is made from the raw image;
bmaptool and Raspberry Pi Imager read the compressed file with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagesmith.outputs.base import Output, Release

#: compression → the suffix it adds to NAME.img (files.IMAGES lists the results)
SUFFIXES = {"xz": ".xz", "zstd": ".zst", "gzip": ".gz"}


def command(kind: str, image: Path, threads: int, block: str = "64MiB") -> list[str]:
    """The command that writes IMAGE + its suffix next to IMAGE (``block``: xz's block size)."""
    if kind == "xz":
        return ["xz", "--keep", "--force", f"--threads=+{threads}", f"--block-size={block}", "-6", str(image)]
    if kind == "zstd":
        return ["zstd", "--quiet", "--force", f"-T{threads}", "-12", str(image), "-o", f"{image}.zst"]
    if kind == "gzip":
        return ["gzip", "--keep", "--force", "--no-name", "-9", str(image)]
    raise ValueError(f"unknown compression {kind!r}")


class Compressed(Output):
    name = "compressed"
    phase = "image"

    def wanted(self, release: Release) -> bool:
        return release.spec.config.publish.compress != "none"

    def make(self, release: Release) -> list[Path]:
        kind = release.spec.config.publish.compress
        threads = max(1, len(os.sched_getaffinity(0)))
        target = release.image.with_name(release.image.name + SUFFIXES[kind])
        release.runner.run(command(kind, release.image, threads), name=f"{kind} (the published image)")
        return [target]


OUTPUT = Compressed()
