"""disk: the partition table and the partitions, written into one image file.

sfdisk writes the MBR on the image file; each filesystem image is then copied to its
offset, data extents only, so holes stay holes (the image is sparse and bmaptool maps
only what is written).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from imagesmith.cache.store import Entry
from imagesmith.disk import ids, table
from imagesmith.disk.sparse import copy_data
from imagesmith.disk.table import align
from imagesmith.outputs import files, handlers
from imagesmith.outputs.base import Release
from imagesmith.stages import customize, filesystems
from imagesmith.stages.base import KeyInputs, Stage, digest, source_digest
from imagesmith.stages.context import Context, PartitionImage


def table_script(ctx: Context, offsets: list[int]) -> str:
    spec = ctx.spec
    identity = spec.identity
    entries = [
        table.Entry(offset, part.size, part.type, ids.partuuid(identity, index), part.label, part.bootable)
        for index, (part, offset) in enumerate(zip(ctx.partitions, offsets, strict=True), start=1)
    ]
    return table.script(spec.layout.table, ids.disk_id(identity), entries)


def layout_offsets(first: int, parts: list[PartitionImage], tail: int = 0) -> tuple[list[int], int]:
    """Each partition's offset (aligned), and the image's size with ``tail`` bytes after
    the last partition (the backup GPT)."""
    offsets, position = [], first
    for part in parts:
        position = align(position)
        offsets.append(position)
        position += part.size
    return offsets, align(position + tail)


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
    finally:
        os.close(fd)
    files.flush_ahead(target)  # on disk before it is published, meanwhile the outputs are made
    ctx.image = target
    for line in report(ctx, offsets):
        ctx.runner.info(line)


def report(ctx: Context, offsets: list[int]) -> list[str]:
    """One line per partition: number, name, role (and slot), filesystem, label, offset,
    size, mount point."""
    mib = 1024 * 1024
    lines = []
    for number, (part, image, offset) in enumerate(
        zip(ctx.spec.layout.partitions, ctx.partitions, offsets, strict=True), start=1
    ):
        lines.append(
            f"p{number} {part.name:<10} {part.role or '-':<7} {part.fs:<5} {part.label:<11} "
            f"at {offset // mib:>5} MiB  {image.size // mib:>6} MiB  {part.mount or '-'}"
        )
    return lines


def read_table(ctx: Context, image: Path) -> dict[str, object]:
    out = ctx.runner.run(["sfdisk", "--json", str(image)], capture=True)
    table: dict[str, object] = json.loads(out)["partitiontable"]
    return table


def image_path(ctx: Context) -> Path:
    return ctx.work / f"{ctx.spec.config.name}.img"


def release(ctx: Context) -> Release:
    """What the outputs describe: the image, its inventory, the epoch's time."""
    return Release(
        ctx.spec, ctx.runner, ctx.work, image_path(ctx), ctx.products[customize.INVENTORY],
        files.created(ctx.known_epoch), usage={p.name: p.used for p in ctx.partitions},
        partitions={p.name: p.path for p in ctx.partitions},
    )  # fmt: skip


class Disk(Stage):
    """The image file, and the outputs that depend only on it and its inventory (block map,
    SBOMs). The cache keeps no image: it is put together again from the filesystems'
    entry (sfdisk and the copy are deterministic) and must match the sha256 recorded."""

    name = "disk"
    code = ("stages/disk.py", "disk/ids.py", "disk/table.py", "disk/sparse.py")
    restore_with = ("filesystems", "customize")

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        spec = given.spec
        return {
            "layout": digest(spec.layout.model_dump(mode="json")),
            "identity": digest([spec.config.name, spec.device.device]),  # the disk signature
            # the outputs this stage keeps, by their code
            "outputs": digest([(h.name, source_digest(h)) for h in handlers.of_phase("image")]),
            "publish": digest(spec.config.publish.model_dump(mode="json")),  # compressed, Imager's list
        }

    def title(self, ctx: Context) -> str:
        return f"{ctx.spec.layout.table} partition table → {image_path(ctx).name}"

    def prepare(self, ctx: Context) -> None:
        for handler in handlers.of_phase("image"):
            handler.prepare(ctx.runner)

    def run(self, ctx: Context) -> None:
        run(ctx, image_path(ctx))
        files.hash_ahead(image_path(ctx))  # read while the block map and the SBOMs are made
        made, kept = release(ctx), {}
        for handler in handlers.of_phase("image"):
            if handler.wanted(made):
                kept[handler.name] = handler.make(made)
                made.files += kept[handler.name]
        ctx.products[OUTPUTS] = kept

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        kept: dict[str, list[str]] = {}
        for name, paths in ctx.products[OUTPUTS].items():
            for path in paths:
                shutil.copyfile(path, entry / path.name)
            kept[name] = [path.name for path in paths]
        (entry / OUTPUTS).write_text(json.dumps(kept), encoding="utf-8")
        return {"sha256": files.sha256(image_path(ctx))}

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        entry = entries[self.name]
        if not customize.STAGE.restore(ctx, entries):
            return False
        ctx.partitions[:] = filesystems.cached_partitions(entries["filesystems"].path, None)
        image = image_path(ctx)
        run(ctx, image)
        if files.sha256(image) != entry.meta.get("sha256"):
            ctx.partitions.clear()
            image.unlink()
            return False
        kept: dict[str, list[Path]] = {}
        for name, paths in json.loads((entry.path / OUTPUTS).read_text(encoding="utf-8")).items():
            for path in paths:
                shutil.copyfile(entry.path / path, ctx.work / path)
            kept[name] = [ctx.work / path for path in paths]
        ctx.products[OUTPUTS] = kept
        return True


#: the files the image phase of the outputs made (the disk stage's cache entry keeps them)
OUTPUTS = "outputs.json"

STAGE = Disk()
