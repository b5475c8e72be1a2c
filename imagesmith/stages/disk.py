"""disk: the partition table and the partitions, written into one image file.

sfdisk writes the MBR on the image file; each filesystem image is then copied to its
offset, data extents only, so holes stay holes (the image is sparse and bmaptool maps
only what is written).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from imagesmith import ids
from imagesmith.stages.context import Context, PartitionImage
from imagesmith.stages.filesystems import align

SECTOR = 512
CHUNK = 8 * 1024 * 1024


def table_script(ctx: Context, offsets: list[int]) -> str:
    lines = ["label: dos", f"label-id: 0x{ids.disk_signature(ctx.spec)}", "unit: sectors", ""]
    for part, offset in zip(ctx.partitions, offsets, strict=True):
        fields = [f"start={offset // SECTOR}", f"size={part.size // SECTOR}", f"type={part.type}"]
        if part.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def layout_offsets(first: int, parts: list[PartitionImage]) -> tuple[list[int], int]:
    offsets, position = [], first
    for part in parts:
        position = align(position)
        offsets.append(position)
        position += part.size
    return offsets, align(position)


def copy_data(src: Path, dst: int, offset: int) -> None:
    """Copy the data extents of ``src`` into the open file ``dst`` at ``offset``."""
    with open(src, "rb") as handle:
        fd = handle.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            while start < stop:
                n = os.copy_file_range(fd, dst, min(CHUNK, stop - start), start, offset + start)
                if n == 0:
                    raise OSError(f"short copy from {src}")
                start += n
            pos = stop


def run(ctx: Context, target: Path) -> None:
    offsets, total = layout_offsets(ctx.spec.layout.first_offset, ctx.partitions)
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
