"""disk: the partition table and the partitions, written into one image file.

sfdisk writes the MBR on the image file; each filesystem image is then copied to its
offset, data extents only, so holes stay holes (the image is sparse and bmaptool maps
only what is written).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from imagesmith.disk import ids, table
from imagesmith.stages.context import Context, PartitionImage
from imagesmith.stages.filesystems import align

CHUNK = 8 * 1024 * 1024
BLOCK = 4096
ZERO = bytes(BLOCK)


def table_script(ctx: Context, offsets: list[int]) -> str:
    spec = ctx.spec
    entries = [
        table.Entry(offset, part.size, part.type, ids.partuuid(spec, index), part.label, part.bootable)
        for index, (part, offset) in enumerate(zip(ctx.partitions, offsets, strict=True), start=1)
    ]
    return table.script(spec.layout.table, ids.disk_id(spec), entries)


def layout_offsets(first: int, parts: list[PartitionImage], tail: int = 0) -> tuple[list[int], int]:
    """Each partition's offset (aligned), and the image's size with ``tail`` bytes after
    the last partition (the backup GPT)."""
    offsets, position = [], first
    for part in parts:
        position = align(position)
        offsets.append(position)
        position += part.size
    return offsets, align(position + tail)


def copy_data(src: Path, dst: int, offset: int) -> None:
    """Copy ``src`` into the open file ``dst`` at ``offset``, leaving holes for every
    all-zero block.

    Which blocks a file holds as data depends on how it was written (mke2fs, the build
    host's filesystem): only zero-or-not depends on the bytes. So the image's holes, and
    the block map made from them, are the same in every build of the same image."""
    with open(src, "rb") as handle:
        fd = handle.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            start -= start % BLOCK
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            while start < stop:
                chunk = os.pread(fd, min(CHUNK, stop - start), start)
                if not chunk:
                    raise OSError(f"short read from {src}")
                _write_nonzero(dst, chunk, offset + start)
                start += len(chunk)
            pos = stop


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


def run(ctx: Context, target: Path) -> None:
    layout = ctx.spec.layout
    offsets, total = layout_offsets(layout.first_offset, ctx.partitions, table.tail_room(layout.table))
    with open(target, "wb") as handle:
        handle.truncate(total)
    ctx.runner.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never", str(target)],
        input=table_script(ctx, offsets),
    )
    fd = os.open(target, os.O_WRONLY)
    try:
        for part, offset in zip(ctx.partitions, offsets, strict=True):
            copy_data(part.path, fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    ctx.image = target


def read_table(ctx: Context, image: Path) -> dict[str, object]:
    out = ctx.runner.run(["sfdisk", "--json", str(image)], capture=True)
    table: dict[str, object] = json.loads(out)["partitiontable"]
    return table
