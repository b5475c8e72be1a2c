"""artifacts: the block map, SBOMs, manifest, checksums and signature that ship with the image."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from imagesmith.cache.hashing import file_sha256
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.stages.context import Context

SUMS = "SHA256SUMS"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256(path: Path) -> str:
    """The file's sha256, read once per version of the file (an image is read only once)."""
    info = path.stat()
    key = (str(path.resolve()), info.st_mtime_ns, info.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def created() -> datetime:
    """The build's timestamp: SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    return datetime.now(tz=UTC).replace(microsecond=0)


def bmap(ctx: Context, image: Path, target: Path) -> Path:
    ctx.runner.run(["bmaptool", "create", "-o", str(target), str(image)])
    return target


def checksums(files: list[Path], target: Path) -> None:
    """SHA256SUMS in the format `sha256sum -c` reads."""
    lines = [f"{sha256(path)}  {path.name}\n" for path in sorted(files, key=lambda p: p.name)]
    target.write_text("".join(lines), encoding="utf-8")


def output_file(outdir: Path, name: str) -> Path:
    """A file of a build's output directory, or a clear error when it is not there."""
    path = outdir / name
    if not path.is_file():
        raise ImagesmithError(
            f"no {name} in {outdir}",
            hint="give the output directory of an imagesmith build (e.g. out/minimal)",
            exit_code=EXIT_CONFIG,
        )
    return path
