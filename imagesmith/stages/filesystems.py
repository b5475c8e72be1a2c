"""filesystems: one filesystem image per partition, made from the rootfs without mounting.

vfat partitions take the contents of their mount point (e.g. /boot/firmware) with
mkfs.vfat + mcopy; the root partition is made by ``mke2fs -d`` from the rest. Each
image is checked with its fsck before it is used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath

from imagesmith.cache.store import Entry
from imagesmith.config.model import Partition
from imagesmith.disk import ids
from imagesmith.disk.sparse import copy_file
from imagesmith.disk.table import MiB, align
from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import inside
from imagesmith.repro.reproducible import clamp_times, fix_ext4_change_times, fixed_time_env
from imagesmith.stages import customize
from imagesmith.stages.base import KeyInputs, Stage, digest
from imagesmith.stages.context import Context, PartitionImage

FAT32_MIN = 64 * MiB


def tree_usage(root: Path) -> tuple[int, int]:
    """(bytes the files under ``root`` occupy, number of inodes) — streamed, never loaded."""
    used, count = 0, 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                count += 1
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                used += max(info.st_blocks * 512, 4096 if entry.is_dir(follow_symlinks=False) else 0)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return used, count


def resolve_links(ctx: Context, part: Partition) -> None:
    """FAT has no symbolic links and mcopy would follow them on the build host: each link
    under a FAT partition's mount point becomes a copy of the file it names *in the image*;
    a link to a directory, or to nothing, is an error."""
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
    source = inside(ctx.rootfs, part.mount)
    staged = ctx.work / f"part-{part.name}"
    if staged.exists():
        shutil.rmtree(staged)
    if source.is_dir():
        mode = source.stat().st_mode
        source.rename(staged)
        source.mkdir()
        os.chmod(source, mode & 0o7777)
    else:
        source.mkdir(parents=True, exist_ok=True)
        staged.mkdir()
    return staged


def make_vfat(ctx: Context, part: Partition, content: Path, target: Path) -> int:
    used, _count = tree_usage(content)
    size = part.size if isinstance(part.size, int) else max(FAT32_MIN, align(int(used * 1.1) + part.free))
    if used > size * 0.95:
        raise ImagesmithError(
            f"partition {part.name!r} is too small: its files take {used // MiB} MiB of {size // MiB} MiB",
            hint=f"raise the size of partition {part.name!r} in the layout",
        )
    with open(target, "wb") as handle:
        handle.truncate(size)
    r = ctx.runner
    r.run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            part.label.upper(),
            "-i",
            ids.vfat_volume_id(ctx.spec, part.name),
            "--invariant",
            str(target),
        ]
    )
    entries = sorted(str(p) for p in content.iterdir())
    if entries:
        r.run(
            ["mcopy", "-s", "-p", "-m", "-i", str(target), *entries, "::/"],
            env=fixed_time_env(ctx.known_epoch),
        )
    r.run(["fsck.vfat", "-n", str(target)], hint=f"the {part.name} filesystem failed its check")
    return size


def make_ext4(ctx: Context, part: Partition, content: Path, target: Path) -> int:
    used, count = tree_usage(content)
    # auto: the files, ext4 metadata (inode tables, journal) and the requested free space
    size = part.size if isinstance(part.size, int) else align(int(used * 1.10) + 64 * MiB + part.free)
    inodes = max(count + count // 4 + 1024, size // 16384)
    r = ctx.runner
    r.run(
        [
            "mke2fs",
            "-F",
            "-q",
            "-t",
            "ext4",
            "-L",
            part.label,
            "-U",
            ids.fs_uuid(ctx.spec, part.name),
            "-E",
            f"root_owner=0:0,hash_seed={ids.ext4_hash_seed(ctx.spec, part.name)}",
            "-N",
            str(inodes),
            "-d",
            str(content),
            str(target),
            f"{size // 1024}k",
        ],
        env=fixed_time_env(ctx.known_epoch),
        hint=f"partition {part.name!r} may be too small for its files ({used // MiB} MiB)",
    )
    nodes = device_nodes(content) if part.role == "root" else []
    fix_ext4_change_times(r, target, content, ctx.known_epoch, first=nodes)
    r.run(["e2fsck", "-fn", str(target)], hint=f"the {part.name} filesystem failed its check")
    return size


#: what the kernel and init open before devtmpfs is mounted over /dev: name, type,
#: major, minor, mode (owned by root)
DEVICE_NODES = [("console", "c", 5, 1, 0o600), ("null", "c", 1, 3, 0o666)]


def device_nodes(content: Path) -> list[str]:
    """debugfs commands that make the device nodes in the filesystem image: no mknod, so
    no privilege (mmdebstrap's unshare mode leaves /dev empty, as root or not)."""
    if not (content / "dev").is_dir():
        return []
    script = ["cd /dev"]
    for name, kind, major, minor, mode in DEVICE_NODES:
        if not (content / "dev" / name).exists():
            script += [f"mknod {name} {kind} {major} {minor}", f"sif {name} mode 0{0o20000 | mode:o}"]
    return script


def run(ctx: Context) -> None:
    """Fill ``ctx.partitions`` in layout order."""
    layout = ctx.spec.layout
    staged: dict[str, Path] = {}
    # every non-root mount point leaves the rootfs first, so root holds only its own files
    for part in layout.partitions:
        if part.fs == "vfat":
            resolve_links(ctx, part)
    for part in layout.partitions:
        if part.role != "root":
            staged[part.name] = take_mountpoint(ctx, part)
    for tree in [ctx.rootfs, *staged.values()]:
        clamp_times(tree, ctx.known_epoch)  # no time of this build reaches the filesystems
    for part in layout.partitions:
        content = ctx.rootfs if part.role == "root" else staged[part.name]
        target = ctx.work / f"{part.name}.{part.fs}"
        maker = make_vfat if part.fs == "vfat" else make_ext4
        size = maker(ctx, part, content, target)
        ctx.partitions.append(PartitionImage(part.name, target, size, part.kind, part.label, part.bootable))


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


class Filesystems(Stage):
    """One checked filesystem image per partition of the layout."""

    name = "filesystems"
    code = ("stages/filesystems.py", "disk/ids.py", "repro/reproducible.py")
    restore_with = ("customize",)  # the inventory of what they hold

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        spec = given.spec
        return {
            "layout": digest(spec.layout.model_dump(mode="json")),
            "identity": digest([spec.config.name, spec.device.device]),  # UUIDs and volume ids
        }

    def title(self, ctx: Context) -> str:
        return ", ".join(f"{p.name} ({p.fs})" for p in ctx.spec.layout.partitions)

    def run(self, ctx: Context) -> None:
        run(ctx)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        rows = []
        for part in ctx.partitions:
            copy_file(part.path, entry / part.path.name)
            row = {"name": part.name, "file": part.path.name, "size": part.size, "type": part.type}
            rows.append({**row, "label": part.label, "bootable": part.bootable})
        (entry / PARTITIONS).write_text(json.dumps(rows), encoding="utf-8")
        return {}

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        ctx.partitions[:] = cached_partitions(entries[self.name].path, ctx.work)
        return customize.STAGE.restore(ctx, entries)


STAGE = Filesystems()
