"""artifacts: the block map and the checksums that ship with the image."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagesmith.stages.context import Context

SUMS = "SHA256SUMS"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def bmap(ctx: Context, image: Path) -> Path:
    target = image.with_name(image.name + ".bmap")
    ctx.runner.run(["bmaptool", "create", "-o", str(target), str(image)])
    return target


def checksums(files: list[Path], target: Path) -> None:
    """SHA256SUMS in the format `sha256sum -c` reads."""
    lines = [f"{sha256(path)}  {path.name}\n" for path in sorted(files, key=lambda p: p.name)]
    target.write_text("".join(lines), encoding="utf-8")
