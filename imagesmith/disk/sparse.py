"""Sparse copies: only the data of a file is written, every all-zero block stays a hole."""

from __future__ import annotations

import os
from pathlib import Path

from imagesmith.cache.hashing import extents

CHUNK = 8 * 1024 * 1024
BLOCK = 4096
ZERO = bytes(BLOCK)


def copy_data(src: Path, dst: int, offset: int) -> None:
    """Copy ``src`` into the open file ``dst`` at ``offset``, leaving holes for every
    all-zero block.

    Which blocks a file holds as data depends on how it was written (mke2fs, the build
    host's filesystem): only zero-or-not depends on the bytes. So the image's holes, and
    the block map made from them, are the same in every build of the same image."""
    with open(src, "rb") as handle:
        fd = handle.fileno()
        for first, stop in extents(fd):
            start = first - first % BLOCK
            while start < stop:
                chunk = os.pread(fd, min(CHUNK, stop - start), start)
                if not chunk:
                    raise OSError(f"short read from {src}")
                _write_nonzero(dst, chunk, offset + start)
                start += len(chunk)


def _write_nonzero(dst: int, chunk: bytes, at: int) -> None:
    """Write the runs of ``chunk`` that are not all-zero blocks."""
    view = memoryview(chunk)
    run_start = None
    for i in range(0, len(chunk), BLOCK):
        zero = view[i : i + BLOCK] == ZERO[: len(view[i : i + BLOCK])]
        if not zero and run_start is None:
            run_start = i
        elif zero and run_start is not None:
            os.pwrite(dst, view[run_start:i], at + run_start)
            run_start = None
    if run_start is not None:
        os.pwrite(dst, view[run_start:], at + run_start)


def copy_file(source: Path, target: Path) -> None:
    """A (sparse) file copied by its data extents: holes stay holes."""
    with open(target, "wb") as handle:
        handle.truncate(source.stat().st_size)
        copy_data(source, handle.fileno(), 0)
