"""filesystems: one filesystem image per partition, made from the rootfs without mounting.

Each partition other than the root takes the contents of its mount point (e.g.
/boot/firmware), the root partition the rest; the maker of each partition's filesystem
kind (``disk/fs``) writes and checks its image.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from imagesmith.cache.store import Entry
from imagesmith.disk import fs
from imagesmith.disk.layout import Partition
from imagesmith.disk.sparse import copy_file
from imagesmith.errors import ImagesmithError
from imagesmith.host import overlay
from imagesmith.host.rootfs import copy_tree, inside
from imagesmith.repro.reproducible import clamp_times
from imagesmith.stages import customize, storage
from imagesmith.stages.base import KeyInputs, Stage, digest, source_digest
from imagesmith.stages.context import Context, PartitionImage


def resolve_links(ctx: Context, part: Partition) -> None:
    """FAT has no symbolic links and mcopy would follow them on the build host: each link
    under a FAT partition's mount point becomes a copy of the file it names *in the image*;
    a link to a directory, or to nothing, is an error."""
    if part.mount is None:
        return
    top = inside(ctx.rootfs, part.mount)
    if not top.is_dir():
        return
    mount = PurePosixPath(part.mount)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            where = mount / link.relative_to(top)
            real = inside(ctx.rootfs, where)
            if not real.is_file():
                raise ImagesmithError(
                    f"{where} is a symbolic link to {os.readlink(link)}, which is not a file in the image: "
                    f"the {part.fs} partition {part.name!r} cannot hold it",
                    hint="make it a regular file (a script or an overlay put the link there)",
                )
            link.unlink()
            shutil.copy2(real, link)


def take_mountpoint(ctx: Context, part: Partition) -> Path:
    """Move what is under ``part.mount`` out of the rootfs, leaving the empty mount point."""
    assert part.mount is not None
    source = inside(ctx.rootfs, part.mount)
    staged = ctx.work / f"part-{part.name}"
    if staged.exists():
        shutil.rmtree(staged)
    if source.is_dir():
        mode = source.stat().st_mode
        try:
            source.rename(staged)
        except OSError as exc:  # a rootfs over a cache entry (host/overlay.py) is another mount
            if exc.errno != errno.EXDEV:
                raise
            copy_tree(ctx.runner, source, staged)
            shutil.rmtree(source)
        source.mkdir()
        os.chmod(source, mode & 0o7777)
    else:
        source.mkdir(parents=True, exist_ok=True)
        staged.mkdir()
    return staged


def run(ctx: Context) -> None:
    """Fill ``ctx.partitions`` in layout order. The root (slot A's) takes the rootfs, every
    other partition with a mount point the tree under it; slot B's root is a copy of slot
    A's image, slot B's boot partition slot A's files with its own cmdline.txt, and a
    tryboot common boot partition holds autoboot.txt."""
    layout = ctx.spec.layout
    if ctx.lower is not None:  # the rootfs is an overlay over a cache entry
        overlay.rejoin_links(ctx.runner, ctx.rootfs, ctx.lower)
    staged: dict[str, Path] = {}
    # every non-root mount point leaves the rootfs first, so root holds only its own files
    for part in layout.partitions:
        if not fs.get(part.fs).links:
            resolve_links(ctx, part)
    for part in layout.partitions:
        if part is not layout.root and part.mount is not None:
            staged[part.name] = take_mountpoint(ctx, part)
    boot_a, boot_b = layout.role("boot-a"), layout.role("boot-b")
    if boot_a is not None and boot_b is not None:
        storage.slot_b_boot(ctx.spec, staged[boot_a.name], ctx.work / f"part-{boot_b.name}")
        staged[boot_b.name] = ctx.work / f"part-{boot_b.name}"
    for part in layout.partitions:
        if part.mount is None and part.role == "boot":
            staged[part.name] = tree = ctx.work / f"part-{part.name}"
            tree.mkdir(exist_ok=True)
            (tree / "autoboot.txt").write_text(storage.autoboot_txt(ctx.spec))
    for part in layout.partitions:  # no time of this build reaches the filesystems
        times_of = ctx.rootfs if part is layout.root else staged.get(part.name)
        if times_of is not None and not fs.get(part.fs).clamps_times:
            clamp_times(times_of, ctx.known_epoch)
    made: dict[str, PartitionImage] = {}
    for part in sorted(layout.partitions, key=lambda p: p.role == "root-b"):  # root-b copies root-a
        target = ctx.work / f"{part.name}.{part.fs}"
        if part.role == "root-b":
            copy_file(made[layout.root.name].path, target)
            size, used = made[layout.root.name].size, made[layout.root.name].used
        else:
            content = ctx.rootfs if part is layout.root else staged.get(part.name)
            if content is None:
                raise ImagesmithError(
                    f"partition {part.name!r} ({part.role}) has nothing to hold",
                    hint="give it a mount point in the layout",
                )
            job = fs.Job(ctx.runner, ctx.spec.identity, part, content, target, ctx.known_epoch)
            size, used = fs.get(part.fs).make(job), job.usage.files
        made[part.name] = PartitionImage(part.name, target, size, part.kind, part.label, part.bootable, used)
    ctx.partitions.extend(made[part.name] for part in layout.partitions)


PARTITIONS = "partitions.json"


def cached_partitions(entry: Path, into: Path | None) -> list[PartitionImage]:
    """The partition images of a filesystems entry: copied into ``into``, or (None) read
    where they are."""
    found = []
    for item in json.loads((entry / PARTITIONS).read_text(encoding="utf-8")):
        source = entry / item.pop("file")
        if into is not None:
            copy_file(source, into / source.name)
            source = into / source.name
        found.append(PartitionImage(path=source, **item))
    return found


def keep(image: Path, target: Path) -> None:
    """A partition image into the cache entry: a second name for the same file where both
    are on one filesystem (no copy: nothing writes to a partition image once it is made,
    the disk stage and the bundle only read it), else a copy."""
    try:
        os.link(image, target)
    except OSError:
        copy_file(image, target)


class Filesystems(Stage):
    """One checked filesystem image per partition of the layout."""

    name = "filesystems"
    code = ("stages/filesystems.py", "stages/storage.py", "disk/ids.py", "disk/fs/base.py",
            "repro/reproducible.py")  # fmt: skip
    restore_with = ("customize",)  # the inventory of what they hold
    commit_in_background = True  # the partition images hashed while the disk stage reads them

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        spec = given.spec
        kinds = sorted({part.fs for part in spec.layout.partitions})
        return {
            "layout": digest(spec.layout.model_dump(mode="json")),
            "identity": digest([spec.config.name, spec.device.device]),  # UUIDs and volume ids
            "filesystems": digest([(kind, source_digest(fs.get(kind))) for kind in kinds]),  # their makers
        }

    def title(self, ctx: Context) -> str:
        return ", ".join(f"{p.name} ({p.fs})" for p in ctx.spec.layout.partitions)

    def run(self, ctx: Context) -> None:
        run(ctx)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        rows = []
        for part in ctx.partitions:
            keep(part.path, entry / part.path.name)
            row = {"name": part.name, "file": part.path.name, "size": part.size, "type": part.type}
            rows.append({**row, "label": part.label, "bootable": part.bootable, "used": part.used})
        (entry / PARTITIONS).write_text(json.dumps(rows), encoding="utf-8")
        return {}

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        if not customize.STAGE.restore(ctx, entries):
            return False
        ctx.partitions[:] = cached_partitions(entries[self.name].path, ctx.work)
        return True


STAGE = Filesystems()
