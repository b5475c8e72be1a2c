"""One digest of a file tree: names, types, modes, link targets and contents (and, where
it matters, owners), in a stable order. Stage keys hash the user's input trees with it;
the stage cache hashes what an entry holds, to check it before it is used."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
_ZEROS = bytes(CHUNK)


def extents(fd: int) -> Iterator[tuple[int, int]]:
    """The (start, stop) ranges of an open file that may hold data, in order; what lies
    between them is a hole, which reads as zeros."""
    end = os.fstat(fd).st_size
    pos = 0
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        stop = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, stop
        pos = stop


def _update(digest: Any, fd: int) -> None:
    """Feed the whole file to ``digest`` without reading its holes: the zeros of a hole
    come from memory. Reading a hole makes the kernel fill a page of zeros for each of
    its pages, which on a just-written disk image costs seconds; the digest is the same."""
    info = os.fstat(fd)
    if info.st_blocks * 512 >= info.st_size:  # no hole to skip: read it straight through
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
        return
    pos = 0
    for start, stop in [*extents(fd), (info.st_size, -1)]:
        while pos < start:  # the hole before this extent
            size = min(CHUNK, start - pos)
            digest.update(_ZEROS if size == CHUNK else memoryview(_ZEROS)[:size])
            pos += size
        while 0 <= pos < stop:
            chunk = os.pread(fd, min(CHUNK, stop - pos), pos)
            if not chunk:  # the file was shortened meanwhile
                raise OSError(f"short read at {pos}")
            digest.update(chunk)
            pos += len(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        _update(digest, handle.fileno())
    return digest.hexdigest()


def everything(root: Path, skip: frozenset[str] = frozenset()) -> list[Path]:
    """Every path under ``root`` (links not followed), but the top-level names in ``skip``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        found += [here / name for name in [*dirnames, *filenames]]
    return found


def tree(root: Path, items: Iterable[Path] | None = None, *, owners: bool = False) -> str:
    """The digest of ``root`` (a file, or the ``items`` under a directory: all by default)."""
    h = hashlib.sha256()
    paths = [root] if not root.is_dir() else sorted(everything(root) if items is None else items)
    for item in paths:
        info = item.lstat()
        rel = item.name if item == root else str(item.relative_to(root))
        h.update(f"{rel}\0{stat.S_IFMT(info.st_mode)}\0{stat.S_IMODE(info.st_mode)}\0".encode())
        if owners:
            h.update(f"{info.st_uid}:{info.st_gid}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            h.update(os.readlink(item).encode())
        elif stat.S_ISREG(info.st_mode):
            with open(item, "rb") as handle:
                _update(h, handle.fileno())
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            h.update(f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}".encode())
        h.update(b"\0")
    return h.hexdigest()
