"""Helpers for the files a build publishes: their sha256, SHA256SUMS, the build's time."""

from __future__ import annotations

import os
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from imagesmith import background
from imagesmith.cache.hashing import file_sha256
from imagesmith.errors import EXIT_CONFIG, ImagesmithError

SUMS = "SHA256SUMS"
#: how a published image's file name ends: raw, or compressed (outputs/compressed.py)
IMAGES = (".img", ".img.xz", ".img.zst", ".img.gz")


_DIGESTS: dict[tuple[str, int, int], str] = {}
#: digests being computed in a thread (``hash_ahead``), by the same key
_AHEAD: dict[tuple[str, int, int], Future[str]] = {}


def _key(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return (str(path.resolve()), info.st_mtime_ns, info.st_size)


def sha256(path: Path) -> str:
    """The file's sha256, read once per version of the file (an image is read only once)."""
    key = _key(path)
    if key not in _DIGESTS:
        ahead = _AHEAD.pop(key, None)
        _DIGESTS[key] = ahead.result() if ahead is not None else file_sha256(path)
    return _DIGESTS[key]


def hash_ahead(path: Path) -> None:
    """Start reading the file's sha256 in a thread (``sha256`` then waits for it): the
    programs and the Python run meanwhile overlap it (hashlib lets go of the GIL)."""
    key = _key(path)
    if key in _DIGESTS or key in _AHEAD:
        return
    _AHEAD[key] = background.start(lambda: file_sha256(path), f"sha256 {path.name}", daemon=True)


#: files being flushed to disk in a thread (``flush_ahead``), by their resolved path
_FLUSHING: dict[str, Future[None]] = {}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_ahead(path: Path) -> None:
    """Start flushing the file to disk in a thread; ``flushed`` waits for it (before the
    file is published: an output that a later build trusts is on disk whole)."""
    _FLUSHING[str(path.resolve())] = background.start(lambda: _fsync(path), f"fsync {path.name}")


def flushed(path: Path) -> None:
    """The flush ``flush_ahead`` started for ``path`` is done (its error, if any, raised)."""
    flushing = _FLUSHING.pop(str(path.resolve()), None)
    if flushing is not None:
        flushing.result()


def created(epoch: int) -> datetime:
    """The build's timestamp as the outputs show it: the epoch (SOURCE_DATE_EPOCH)."""
    return datetime.fromtimestamp(epoch, tz=UTC)


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
