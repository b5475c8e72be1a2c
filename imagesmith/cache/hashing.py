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


def _relative(root: Path, items: Iterable[Path] | None) -> list[str]:
    """The paths under ``root`` (``items``, else all of them) relative to it, in the order
    of their parts (what sorting the paths gives), as strings: pathlib's own costs are most
    of the time over a rootfs's small files."""
    if items is not None:
        cut = len(str(root)) + 1
        found = [str(item)[cut:] for item in items]
    else:
        found = []
        top = str(root)
        for dirpath, dirnames, filenames in os.walk(top):
            here = os.path.relpath(dirpath, top)
            prefix = "" if here == "." else here + "/"
            found += [prefix + name for name in [*dirnames, *filenames]]
    return sorted(found, key=lambda rel: rel.split("/"))


def tree(root: Path, items: Iterable[Path] | None = None, *, owners: bool = False) -> str:
    """The digest of ``root`` (a file, or the ``items`` under a directory: all by default)."""
    h = hashlib.sha256()
    if not root.is_dir():
        _feed([h], [root.name], str(root), owners)
        return h.hexdigest()
    top = str(root)
    for rel in _relative(root, items):
        _feed([h], [rel], f"{top}/{rel}", owners)
    return h.hexdigest()


def tree_and_parts(root: Path, items: Iterable[Path]) -> tuple[str, dict[str, str]]:
    """``tree(root, items)``, and the digest of each top-level name under ``root`` as
    ``tree(root / name)`` gives it: in one pass, each file read once."""
    whole = hashlib.sha256()
    parts: dict[str, Any] = {}
    top = str(root)
    for rel in _relative(root, items):
        name, _, below = rel.partition("/")
        part = parts.setdefault(name, hashlib.sha256())
        path = f"{top}/{rel}"
        if below:  # under a directory part: named from it
            _feed([whole, part], [rel, below], path, False)
        elif os.path.isdir(path) and not os.path.islink(path):  # a directory part: not in its own digest
            _feed([whole], [rel], path, False)
        else:  # a file part: named by its name
            _feed([whole, part], [name, name], path, False)
    return whole.hexdigest(), {name: digest.hexdigest() for name, digest in parts.items()}


class _Fanout:
    """Feeds the same bytes to several digests."""

    def __init__(self, digests: list[Any]) -> None:
        self.digests = digests

    def update(self, data: bytes | memoryview) -> None:
        for digest in self.digests:
            digest.update(data)


def _feed(digests: list[Any], names: list[str], item: str, owners: bool) -> None:
    """One path into each digest, under the name each gives it: its name, type, mode
    (owner), and link target, content or device numbers."""
    info = os.lstat(item)
    for digest, name in zip(digests, names, strict=True):
        digest.update(f"{name}\0{stat.S_IFMT(info.st_mode)}\0{stat.S_IMODE(info.st_mode)}\0".encode())
        if owners:
            digest.update(f"{info.st_uid}:{info.st_gid}\0".encode())
    out = _Fanout(digests) if len(digests) > 1 else digests[0]
    if stat.S_ISLNK(info.st_mode):
        out.update(os.readlink(item).encode())
    elif stat.S_ISREG(info.st_mode):
        with open(item, "rb") as handle:
            _update(out, handle.fileno())
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        out.update(f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}".encode())
    out.update(b"\0")
